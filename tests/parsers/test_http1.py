"""HTTP/1.1 parsing through h11, as transcripts and at every byte split."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parsers.errors import ParseError
from parsers.events import (
    BodyChunk,
    ConnectionClosed,
    Event,
    MessageEnd,
    ParseFailed,
    RequestHead,
    ResponseHead,
)
from parsers.http1 import Http1Connection, Role, _HeadGuard, end_to_end, render_response
from tests.parsers.playbook import Playbook, eof

REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\n"
    b"Host: llm.local\r\n"
    b"Content-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"\r\n"
    b"7\r\n"
    b'{"a": 1\r\n'
    b"1;ext=1\r\n"
    b"}\r\n"
    b"0\r\n"
    b"X-Trailer: yes\r\n"
    b"\r\n"
)

SSE_RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream\r\n"
    b"transfer-encoding: chunked\r\n"
    b"\r\n"
    b'f\r\ndata: {"a":1}\n\n\r\n'
    b"e\r\ndata: [DONE]\n\n\r\n"
    b"0\r\n\r\n"
)


def normalize(events: list[object]) -> list[object]:
    """Join adjacent body chunks: how bytes split into reads is not part of the meaning."""
    out: list[object] = []
    for event in events:
        if isinstance(event, BodyChunk) and out and isinstance(out[-1], BodyChunk):
            out[-1] = BodyChunk(data=out[-1].data + event.data)
        else:
            out.append(event)
    return out


def feed_split(conn: Http1Connection, data: bytes, cut: int) -> list[Event]:
    return [*conn.feed(data[:cut]), *conn.feed(data[cut:])]


def test_request_transcript() -> None:
    assert (
        Playbook(Http1Connection(Role.SERVER))
        >> b"GET /v1/models HTTP/1.1\r\nHost: x\r\n"
        >> b"X-Mixed-Case: v\r\n\r\n"
        << RequestHead(
            method=b"GET", target=b"/v1/models", headers=[(b"Host", b"x"), (b"X-Mixed-Case", b"v")]
        )
        << MessageEnd()
    )


def test_request_at_every_split_point() -> None:
    whole = normalize(list(Http1Connection(Role.SERVER).feed(REQUEST)))
    assert whole == [
        RequestHead(
            method=b"POST",
            target=b"/v1/chat/completions",
            headers=[
                (b"Host", b"llm.local"),
                (b"Content-Type", b"application/json"),
                (b"Transfer-Encoding", b"chunked"),
            ],
        ),
        BodyChunk(data=b'{"a": 1}'),
        MessageEnd(trailers=[(b"X-Trailer", b"yes")]),
    ]
    for cut in range(len(REQUEST) + 1):
        assert normalize(list(feed_split(Http1Connection(Role.SERVER), REQUEST, cut))) == whole, cut


def upstream_conn(method: bytes = b"POST") -> Http1Connection:
    conn = Http1Connection(Role.CLIENT)
    conn.send(RequestHead(method=method, target=b"/", headers=[(b"Host", b"u"), (b"Content-Length", b"0")]))
    conn.send(MessageEnd())
    return conn


def test_sse_response_at_every_split_point() -> None:
    whole = normalize(list(upstream_conn().feed(SSE_RESPONSE)))
    assert whole[1:] == [BodyChunk(data=b'data: {"a":1}\n\ndata: [DONE]\n\n'), MessageEnd()]
    assert isinstance(whole[0], ResponseHead)
    assert whole[0].status == 200
    for cut in range(len(SSE_RESPONSE) + 1):
        assert normalize(list(feed_split(upstream_conn(), SSE_RESPONSE, cut))) == whole, cut


@given(st.lists(st.integers(min_value=0, max_value=len(REQUEST)), max_size=12))
def test_request_random_rechunking(cuts: list[int]) -> None:
    conn = Http1Connection(Role.SERVER)
    events: list[Event] = []
    last = 0
    for cut in sorted(cuts):
        events.extend(conn.feed(REQUEST[last:cut]))
        last = cut
    events.extend(conn.feed(REQUEST[last:]))
    assert normalize(list(events)) == normalize(list(Http1Connection(Role.SERVER).feed(REQUEST)))


@given(st.binary(max_size=300))
def test_random_bytes_only_give_events_or_parse_failed(data: bytes) -> None:
    conn = Http1Connection(Role.SERVER)
    events = [*conn.feed(data), *conn.feed_eof()]
    failures = [e for e in events if isinstance(e, ParseFailed)]
    assert len(failures) <= 1
    if failures:
        assert events[-1] is failures[0]  # inert after failing
        assert conn.feed(b"GET / HTTP/1.1\r\n\r\n") == []


def test_head_response_has_no_body() -> None:
    conn = upstream_conn(b"HEAD")
    events = conn.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
    assert [type(e) for e in events] == [ResponseHead, MessageEnd]


def test_content_length_and_transfer_encoding_refused() -> None:
    events = Http1Connection(Role.SERVER).feed(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    assert len(events) == 1
    assert isinstance(events[0], ParseFailed)
    assert "both Content-Length and Transfer-Encoding" in events[0].error


def test_oversized_head_hints_431() -> None:
    conn = Http1Connection(Role.SERVER, max_head_bytes=1024)
    events = conn.feed(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 4096)
    assert len(events) == 1
    assert isinstance(events[0], ParseFailed)
    assert events[0].status_hint == 431


def test_head_completed_past_the_limit_in_one_read_hints_431() -> None:
    # h11 checks only incomplete heads; a complete one arriving in a single read must be refused too.
    conn = Http1Connection(Role.SERVER, max_head_bytes=1024)
    events = conn.feed(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n")
    assert len(events) == 1
    assert isinstance(events[0], ParseFailed)
    assert events[0].status_hint == 431


def test_upstream_eof_mid_body_fails() -> None:
    conn = upstream_conn()
    events = conn.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    events += conn.feed_eof()
    assert isinstance(events[-1], ParseFailed)
    assert "upstream" in events[-1].error


def test_eof_between_requests_is_a_clean_close() -> None:
    assert Playbook(Http1Connection(Role.SERVER)) >> eof() << ConnectionClosed()


def test_pipelined_request_is_released_by_next_cycle() -> None:
    conn = Http1Connection(Role.SERVER)
    events = conn.feed(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [type(e) for e in events] == [RequestHead, MessageEnd]
    conn.send(ResponseHead(status=204, headers=[]))
    conn.send(MessageEnd())
    assert conn.reusable
    second = conn.next_cycle()
    assert isinstance(second[0], RequestHead)
    assert second[0].target == b"/b"


def test_send_in_wrong_state_raises_parse_error() -> None:
    conn = Http1Connection(Role.SERVER)
    with pytest.raises(ParseError, match="cannot send"):
        conn.send(BodyChunk(data=b"x"))


def test_end_to_end_drops_hop_by_hop_and_connection_listed_fields() -> None:
    headers = [
        (b"Connection", b"keep-alive, X-Secret-Hop"),
        (b"X-Secret-Hop", b"1"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Content-Type", b"application/json"),
    ]
    assert end_to_end(headers) == [(b"Content-Type", b"application/json")]


def test_render_response() -> None:
    assert (
        render_response(400, b"Bad Request", [(b"A", b"b")], b"x")
        == b"HTTP/1.1 400 Bad Request\r\nA: b\r\n\r\nx"
    )


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", "obs-fold"),
        (b"GET / HTTP/1.1\nHost: x\n\n", "bare LF"),
        (b"GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n", "bare LF"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: \x1b[31m\r\n\r\n", "control character"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1_0\r\n\r\n", "Content-Length"),
    ],
)
def test_head_guard_refuses_what_h11_tolerates(raw: bytes, problem: str) -> None:
    for cut in range(len(raw) + 1):
        conn = Http1Connection(Role.SERVER)
        events = feed_split(conn, raw, cut)
        assert len(events) == 1, cut
        assert isinstance(events[0], ParseFailed)
        assert problem in events[0].error


def test_head_guard_checks_a_pipelined_request() -> None:
    conn = Http1Connection(Role.SERVER)
    conn.feed(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\nHost: x\n\n")
    conn.send(ResponseHead(status=204, headers=[]))
    conn.send(MessageEnd())
    events = conn.next_cycle()
    assert len(events) == 1
    assert isinstance(events[0], ParseFailed)


header_names = st.from_regex(rb"\A[A-Za-z][A-Za-z0-9-]{0,15}\Z")
header_values = st.from_regex(rb"\A[!-~]([ \t!-~]{0,30}[!-~])?\Z")


@given(st.lists(st.tuples(header_names, header_values), max_size=8))
def test_head_guard_passes_every_well_formed_request(headers: list[tuple[bytes, bytes]]) -> None:
    headers = [
        (n, v) for n, v in headers if n.lower() not in (b"host", b"content-length", b"transfer-encoding")
    ]
    writer = Http1Connection(Role.CLIENT)
    raw = writer.send(RequestHead(method=b"GET", target=b"/x", headers=[(b"Host", b"h"), *headers]))
    events = Http1Connection(Role.SERVER).feed(raw)
    assert isinstance(events[0], RequestHead), events


_HEAD_PIECES = [
    b"GET / HTTP/1.1",
    b"\r\n",
    b"\n",
    b"\r",
    b"Host: x",
    b"X-A: a",
    b" ",
    b"\t",
    b"\x1b",
    b"\x7f",
    b"\x00",
]


@given(st.lists(st.sampled_from(_HEAD_PIECES), max_size=10).map(b"".join))
def test_head_guard_whole_head_check_agrees_with_the_line_by_line_one(middle: bytes) -> None:
    head = b"GET / HTTP/1.1\r\n" + middle + b"\r\n\r\n"
    whole = _HeadGuard().feed(head)
    line_by_line = _HeadGuard()
    problem = next((p for p in (line_by_line.feed(head[i : i + 1]) for i in range(len(head))) if p), "")
    assert bool(whole) == bool(problem), (head, whole, problem)
