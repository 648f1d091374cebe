"""The relay fast path of ``Http1Connection``: raw body bytes out, the same events as h11, at every split."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parsers.body_framing import Chunked, ContentLength, Framing
from parsers.errors import ParseError
from parsers.events import BodyChunk, Event, MessageEnd, ParseFailed, RequestHead, ResponseHead
from parsers.http1 import Http1Connection, Role
from tests.parsers.test_http1 import normalize as _normalize

PIPELINED = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
CHUNKED_REQUEST_HEAD = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: llm.local\r\nTransfer-Encoding: chunked\r\n\r\n"
)
CHUNKED_REQUEST_BODY = b'7\r\n{"a": 1\r\n1;ext=1\r\n}\r\n0\r\nX-Trailer: yes\r\n\r\n'
LENGTH_REQUEST_HEAD = b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n"
LENGTH_REQUEST_BODY = b'{"input":1}'
SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
SSE_BODY = b'f\r\ndata: {"a":1}\n\n\r\nE;x="y"\r\ndata: [DONE]\n\n\r\n0\r\n\r\n'
JSON_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 13\r\n\r\n"
JSON_BODY = b'{"choices":1}'

SERVER_CASES = {
    "chunked": (CHUNKED_REQUEST_HEAD, CHUNKED_REQUEST_BODY),
    "length": (LENGTH_REQUEST_HEAD, LENGTH_REQUEST_BODY),
}
CLIENT_CASES = {"sse": (SSE_HEAD, SSE_BODY), "json": (JSON_HEAD, JSON_BODY)}


def normalize(events: list[Event]) -> list[object]:
    return _normalize(list(events))


def client_conn(*, relay: bool = True, method: bytes = b"POST") -> Http1Connection:
    """An upstream-facing connection that has sent its request."""
    conn = Http1Connection(Role.CLIENT, relay_bodies=relay)
    conn.send(RequestHead(method=method, target=b"/v1/x", headers=[(b"Host", b"x")]))
    conn.send(MessageEnd())
    return conn


def finish_server_cycle(conn: Http1Connection) -> None:
    conn.send(ResponseHead(status=200, headers=[(b"Content-Length", b"0")]))
    conn.send(MessageEnd())


def relay(conn: Http1Connection, pieces: list[bytes]) -> tuple[list[Event], bytes, bytes]:
    """Feed pieces the way the proxy does. Returns the events, the relayed wire bytes, and what came after."""
    events: list[Event] = []
    wire = b""
    later = b""
    in_body = done = False
    for piece in pieces:
        if done:
            later += piece
            continue
        if not in_body:
            events.extend(conn.feed(piece))
            if conn.body_framing is None:
                continue
            in_body, piece = True, b""
        body = conn.feed_body(piece)
        wire += body.wire
        if body.data:
            events.append(BodyChunk(data=body.data))
        if body.done:
            events.append(MessageEnd(trailers=body.trailers))
            done = True
    return events, wire, later


def next_cycle_events(conn: Http1Connection, later: bytes) -> list[Event]:
    if conn.role is Role.SERVER:
        finish_server_cycle(conn)
    assert conn.reusable
    return [*conn.next_cycle(), *conn.feed(later)]


@pytest.mark.parametrize("name", sorted(SERVER_CASES))
def test_request_body_relayed_at_every_split(name: str) -> None:
    head, body = SERVER_CASES[name]
    data = head + body + PIPELINED
    reference = Http1Connection(Role.SERVER)
    expected = normalize([*reference.feed(data)])
    finish_server_cycle(reference)
    expected_next = reference.next_cycle()
    assert isinstance(expected_next[0], RequestHead)
    for cut in range(len(data) + 1):
        for cut2 in (cut, min(len(data), cut + 7)):
            conn = Http1Connection(Role.SERVER, relay_bodies=True)
            events, wire, later = relay(conn, [data[:cut], data[cut:cut2], data[cut2:]])
            assert normalize(list(events)) == expected, (cut, cut2)
            assert wire == body, (cut, cut2)  # byte-identical: framing, extensions and trailers as sent
            assert next_cycle_events(conn, later) == expected_next, (cut, cut2)


@pytest.mark.parametrize("name", sorted(CLIENT_CASES))
def test_response_body_relayed_at_every_split(name: str) -> None:
    head, body = CLIENT_CASES[name]
    data = head + body
    expected = normalize(client_conn(relay=False).feed(data))
    for cut in range(len(data) + 1):
        conn = client_conn()
        events, wire, later = relay(conn, [data[:cut], data[cut:]])
        assert normalize(list(events)) == expected, cut
        assert wire == body, cut
        assert later == b""
        assert conn.reusable
        assert conn.next_cycle() == []


def test_one_read_per_token_gives_one_chunk_per_read() -> None:
    conn = client_conn()
    tokens = [b'data: {"t":%d}\n\n' % i for i in range(20)]
    assert conn.feed(SSE_HEAD)
    assert conn.body_framing == Chunked()
    for token in tokens:
        wire = b"%x\r\n%s\r\n" % (len(token), token)
        body = conn.feed_body(wire)
        assert (body.wire, body.data, body.done) == (wire, token, False)
    assert conn.feed_body(b"0\r\n\r\n").done


BAD_BODIES = {
    "size-junk": b"zz\r\nabc\r\n0\r\n\r\n",
    "size-0x": b"0x3\r\nabc\r\n0\r\n\r\n",
    "size-too-long": b"f" * 30 + b"\r\n",
    "size-bare-lf": b"3\nabc\r\n0\r\n\r\n",
    "data-longer-than-size": b"3\r\nabcd\r\n0\r\n\r\n",
    "data-bare-lf": b"3\r\nabc\n0\r\n\r\n",
    "negative-size": b"-1\r\nabc\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_bad_chunked_bodies_rejected_like_h11_at_every_split(name: str) -> None:
    data = CHUNKED_REQUEST_HEAD + BAD_BODIES[name]
    assert isinstance(Http1Connection(Role.SERVER).feed(data)[-1], ParseFailed)
    for cut in range(len(data) + 1):
        conn = Http1Connection(Role.SERVER, relay_bodies=True)
        with pytest.raises(ParseError):
            relay(conn, [data[:cut], data[cut:]])
        assert not conn.reusable
        with pytest.raises(ParseError):
            conn.feed_body(b"0\r\n\r\n")  # inert after an error


def test_content_length_mismatch_leaves_the_rest_to_the_next_cycle() -> None:
    # Three bytes declared, more sent: the rest is the next request's, and it must parse as one.
    conn = Http1Connection(Role.SERVER, relay_bodies=True)
    events, wire, _ = relay(conn, [b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcXYZ\r\n\r\n"])
    assert wire == b"abc"
    assert events[-1] == MessageEnd()
    finish_server_cycle(conn)
    assert isinstance(conn.next_cycle()[-1], ParseFailed)


def test_smuggled_bare_lf_request_after_a_relayed_body_is_refused() -> None:
    conn = Http1Connection(Role.SERVER, relay_bodies=True)
    _, wire, _ = relay(
        conn, [LENGTH_REQUEST_HEAD + LENGTH_REQUEST_BODY + b"GET /admin HTTP/1.1\nHost: x\n\n"]
    )
    assert wire == LENGTH_REQUEST_BODY
    finish_server_cycle(conn)
    assert isinstance(conn.next_cycle()[-1], ParseFailed)


def test_upstream_sending_past_its_response_is_not_reused() -> None:
    conn = client_conn()
    _, wire, _ = relay(conn, [JSON_HEAD + JSON_BODY + b"HTTP/1.1 200 OK\r\n"])
    assert wire == JSON_BODY
    assert not conn.reusable


def test_closed_mid_body_is_an_error() -> None:
    conn = client_conn()
    relay(conn, [SSE_HEAD + b"5\r\nab"])
    assert "closed mid-body" in str(conn.feed_body_eof())
    assert not conn.reusable


@pytest.mark.parametrize(
    ("head", "method"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", b"HEAD"),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b"GET"),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n", b"GET"),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc", b"GET"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"GET"),
        (b"HTTP/1.1 200 OK\r\n\r\nuntil close", b"GET"),
        (b"HTTP/1.1 100 Continue\r\n\r\n", b"POST"),
    ],
)
def test_unusual_responses_stay_with_h11(head: bytes, method: bytes) -> None:
    conn = client_conn(method=method)
    assert conn.feed(head)
    assert conn.body_framing is None


def test_ambiguous_framing_turns_the_relay_off_for_the_connection() -> None:
    conn = client_conn()
    both = b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    events = conn.feed(both)
    assert conn.body_framing is None
    assert events[-1] == MessageEnd()  # h11 decided: T-E beats C-L (RFC 9112 §6.3)
    conn.next_cycle()
    conn.send(RequestHead(method=b"GET", target=b"/", headers=[(b"Host", b"x")]))
    conn.send(MessageEnd())
    assert conn.feed(SSE_HEAD + SSE_BODY)[-1] == MessageEnd()
    assert conn.body_framing is None


def test_http10_request_stays_with_h11() -> None:
    conn = Http1Connection(Role.SERVER, relay_bodies=True)
    events = conn.feed(b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc")
    assert conn.body_framing is None
    assert events[-1] == MessageEnd()


# --- the send side: relay_body agrees only with the framing h11 really uses -------------------------

FRAMINGS: list[Framing] = [Chunked(), ContentLength(3)]  # the framings the relay takes on


def _h11_frames_as(conn: Http1Connection, head: bytes, framing: Framing) -> bool:
    """Whether h11 frames a 3-byte body the way ``framing`` says (checked by what it writes)."""
    try:
        out = conn.send(BodyChunk(data=b"abc")) + conn.send(MessageEnd())
    except ParseError:
        return framing == ContentLength(0)
    match framing:
        case Chunked():
            return out == b"3\r\nabc\r\n0\r\n\r\n"
        case ContentLength(length=3):
            return out == b"abc" and b"\r\ncontent-length: 3\r\n" in head.lower()
        case _:
            return False


@pytest.mark.parametrize(
    "headers",
    [
        [(b"Content-Length", b"3")],
        [(b"Transfer-Encoding", b"chunked")],
        [],
        [(b"Content-Length", b"3"), (b"Connection", b"close")],
    ],
)
@pytest.mark.parametrize("status", [200, 204, 304])
@pytest.mark.parametrize("request_line", [b"GET / HTTP/1.1", b"HEAD / HTTP/1.1", b"GET / HTTP/1.0"])
def test_relay_body_agrees_with_h11_response_framing(
    headers: list[tuple[bytes, bytes]], status: int, request_line: bytes
) -> None:
    for framing in FRAMINGS:
        conn = Http1Connection(Role.SERVER, relay_bodies=True)
        conn.feed(request_line + b"\r\nHost: x\r\n\r\n")
        conn.send(ResponseHead(status=status, headers=headers))
        probe = Http1Connection(Role.SERVER)
        probe.feed(request_line + b"\r\nHost: x\r\n\r\n")
        head = probe.send(ResponseHead(status=status, headers=headers))
        assert conn.relay_body(framing) == _h11_frames_as(probe, head, framing), framing


@pytest.mark.parametrize(
    "headers", [[(b"Content-Length", b"3")], [(b"Transfer-Encoding", b"chunked")], [(b"Accept", b"*")]]
)
def test_relay_body_agrees_with_h11_request_framing(headers: list[tuple[bytes, bytes]]) -> None:
    for framing in FRAMINGS:
        conn = Http1Connection(Role.CLIENT, relay_bodies=True)
        conn.send(RequestHead(method=b"POST", target=b"/", headers=[(b"Host", b"x"), *headers]))
        probe = Http1Connection(Role.CLIENT)
        head = probe.send(RequestHead(method=b"POST", target=b"/", headers=[(b"Host", b"x"), *headers]))
        assert conn.relay_body(framing) == _h11_frames_as(probe, head, framing), framing


def test_relayed_cycle_keeps_the_connection_only_if_both_heads_allow() -> None:
    conn = Http1Connection(Role.SERVER, relay_bodies=True)
    relay(conn, [LENGTH_REQUEST_HEAD[:-2] + b"Connection: close\r\n\r\n" + LENGTH_REQUEST_BODY])
    finish_server_cycle(conn)
    assert not conn.reusable
    conn = client_conn()
    relay(conn, [JSON_HEAD[:-2] + b"Connection: close\r\n\r\n" + JSON_BODY])
    assert not conn.reusable


_BODY_TOKENS = [
    b"3\r\n",
    b"abc",
    b"\r\n",
    b"0\r\n",
    b"\n",
    b"\r",
    b";x=1",
    b"X: y",
    b"f",
    b" ",
    b"1\r\nz",
    b"\x00",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_BODY_TOKENS), max_size=12).map(b"".join), st.integers(0, 80))
def test_relay_and_h11_agree_on_arbitrary_chunked_bodies(body: bytes, cut: int) -> None:
    data = CHUNKED_REQUEST_HEAD + body
    expected = Http1Connection(Role.SERVER).feed(data)
    failed = bool(expected) and isinstance(expected[-1], ParseFailed)
    split = len(CHUNKED_REQUEST_HEAD) + min(cut, len(body))
    conn = Http1Connection(Role.SERVER, relay_bodies=True)
    try:
        events, _, _ = relay(conn, [data[:split], data[split:]])
    except ParseError:
        assert failed, body
        return
    assert not failed, body
    assert normalize(list(events)) == normalize(
        expected[: next((i + 1 for i, e in enumerate(expected) if isinstance(e, MessageEnd)), len(expected))]
    )
