"""HTTP/2 through h2, sans-IO: a real h2 peer's bytes in, our events out, split at every byte.

The peer is the h2 library itself (a different object from the one we wrap, configured as the other
side), so these tests check our translation, not h2's framing.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import pytest
from hyperframe.frame import ContinuationFrame, HeadersFrame
from hypothesis import given
from hypothesis import strategies as st

from parsers.errors import ParseError
from parsers.events import (
    BodyChunk,
    ConnectionClosed,
    Event,
    GoAway,
    MessageEnd,
    ParseFailed,
    RequestHead,
    ResponseHead,
    StreamReset,
)
from parsers.http1 import Role
from parsers.http2 import (
    CANCEL,
    ENHANCE_YOUR_CALM,
    NO_ERROR,
    PREFACE,
    PROTOCOL_ERROR,
    Http2Connection,
    pseudo_header,
)
from parsers.registry import BUILTIN
from tests.parsers.playbook import Playbook

REQUEST_BLOCK = [
    (b":method", b"POST"),
    (b":scheme", b"https"),
    (b":authority", b"llm.local"),
    (b":path", b"/v1/chat/completions"),
    (b"content-type", b"application/json"),
    (b"cookie", b"a=1"),
    (b"cookie", b"b=2"),  # crumbs stay separate: recorded as they came
]


def peer(*, client: bool = True) -> h2.connection.H2Connection:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=client, header_encoding=None))
    conn.initiate_connection()
    return conn


def client_bytes() -> bytes:
    """Two streams from a real h2 client: one POST with a body and trailers, one bare GET."""
    c = peer()
    c.send_headers(1, REQUEST_BLOCK)
    c.send_data(1, b'{"model": "m",', pad_length=3)
    c.send_data(1, b' "stream": true}')
    c.send_headers(1, [(b"x-checksum", b"abc")], end_stream=True)
    c.send_headers(3, [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"h"), (b":path", b"/m")])
    c.end_stream(3)
    return c.data_to_send()


EXPECTED: list[object] = [
    RequestHead(
        stream_id=1,
        method=b"POST",
        target=b"/v1/chat/completions",
        headers=REQUEST_BLOCK,
        http_version=b"2",
    ),
    BodyChunk(stream_id=1, data=b'{"model": "m", "stream": true}'),
    MessageEnd(stream_id=1, trailers=[(b"x-checksum", b"abc")]),
    RequestHead(
        stream_id=3,
        method=b"GET",
        target=b"/m",
        headers=[(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"h"), (b":path", b"/m")],
        http_version=b"2",
    ),
    MessageEnd(stream_id=3),
]


def normalize(events: list[object]) -> list[object]:
    """Join adjacent body chunks of one stream: how bytes split into frames and reads is no meaning."""
    out: list[object] = []
    for event in events:
        last = out[-1] if out else None
        if isinstance(event, BodyChunk) and isinstance(last, BodyChunk) and last.stream_id == event.stream_id:
            out[-1] = BodyChunk(stream_id=event.stream_id, data=last.data + event.data)
        else:
            out.append(event)
    return out


def fed(conn: Http2Connection, data: bytes, cuts: list[int]) -> list[object]:
    events: list[object] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        events.extend(conn.feed(data[start:cut]))
        start = max(start, cut)
    return normalize(events)


def test_registered_by_name() -> None:
    assert BUILTIN["h2"] is Http2Connection
    assert Http2Connection.name == "h2"


def test_client_streams_as_a_transcript() -> None:
    data = client_bytes()
    assert (
        Playbook(Http2Connection(Role.SERVER), normalize=normalize)
        >> data
        << EXPECTED[0]
        << EXPECTED[1]
        << EXPECTED[2]
        << EXPECTED[3]
        << EXPECTED[4]
    )


def test_client_streams_at_every_split_point() -> None:
    data = client_bytes()
    for cut in range(len(data) + 1):
        assert fed(Http2Connection(Role.SERVER), data, [cut]) == EXPECTED, cut


@given(st.lists(st.integers(min_value=0, max_value=len(client_bytes())), max_size=16))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    assert fed(Http2Connection(Role.SERVER), client_bytes(), cuts) == EXPECTED


@given(st.binary(max_size=400))
def test_random_bytes_after_the_preface_give_events_or_parse_failed(noise: bytes) -> None:
    conn = Http2Connection(Role.SERVER)
    events = conn.feed(PREFACE + noise)
    for event in events:
        assert isinstance(event, Event)
    failed = [e for e in events if isinstance(e, ParseFailed)]
    if failed:
        assert events[-1] is failed[0]
        assert conn.sent_goaway is not None
        assert conn.feed(b"more") == []  # inert after a failure


def test_not_a_preface_is_parse_failed_with_goaway() -> None:
    conn = Http2Connection(Role.SERVER)
    [failed] = conn.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(failed, ParseFailed)
    assert failed.error.startswith("h2: ")
    assert conn.sent_goaway == GoAway(error_code=PROTOCOL_ERROR, last_stream_id=0)
    frames = peer().receive_data(conn.data_to_send())
    assert [type(e) for e in frames][-1] is h2.events.ConnectionTerminated


def test_response_round_trip_through_both_roles() -> None:
    """Our server side sends, our client side parses: heads, chunks, trailers, each with its stream."""
    client, server = Http2Connection(Role.CLIENT), Http2Connection(Role.SERVER)
    client.send(RequestHead(stream_id=1, method=b"GET", target=b"/v1/models", headers=[(b"Host", b"up")]))
    client.send(MessageEnd(stream_id=1))
    [head, end] = server.feed(client.data_to_send())
    assert isinstance(head, RequestHead)
    assert pseudo_header(head.headers, b":authority") == b"up"
    assert pseudo_header(head.headers, b":scheme") == b"https"
    assert (head.target, end) == (b"/v1/models", MessageEnd(stream_id=1))
    server.send(ResponseHead(stream_id=1, status=200, headers=[(b"Content-Type", b"application/json")]))
    server.send(BodyChunk(stream_id=1, data=b"[1,"))
    server.send(BodyChunk(stream_id=1, data=b"2]"))
    server.send(MessageEnd(stream_id=1, trailers=[(b"X-Usage", b"7")]))
    events = normalize(list(client.feed(server.data_to_send())))
    assert events == [
        ResponseHead(
            stream_id=1,
            status=200,
            headers=[(b":status", b"200"), (b"content-type", b"application/json")],
            http_version=b"2",
        ),
        BodyChunk(stream_id=1, data=b"[1,2]"),
        MessageEnd(stream_id=1, trailers=[(b"x-usage", b"7")]),
    ]


def test_data_waits_for_the_peers_window_and_goes_when_it_opens() -> None:
    c = peer()
    c.send_headers(1, REQUEST_BLOCK, end_stream=True)
    server = Http2Connection(Role.SERVER)
    server.feed(c.data_to_send())
    server.send(ResponseHead(stream_id=1, status=200, headers=[]))
    server.send(BodyChunk(stream_id=1, data=b"x" * 100_000))
    server.send(MessageEnd(stream_id=1))
    assert server.buffered(1) == 100_000 - 65_535  # the peer's default window went out, no more
    assert not server.stream_done(1)
    got = 0
    for event in c.receive_data(server.data_to_send()):
        if isinstance(event, h2.events.DataReceived):
            got += len(event.data)
            c.acknowledge_received_data(event.flow_controlled_length, 1)
    assert got == 65_535
    assert server.feed(c.data_to_send()) == []  # WINDOW_UPDATE: nothing to record, the rest goes
    assert (server.buffered(1), server.stream_done(1)) == (0, True)
    ended = [e for e in c.receive_data(server.data_to_send()) if isinstance(e, h2.events.StreamEnded)]
    assert len(ended) == 1


def test_received_data_is_acked_only_when_passed_on() -> None:
    c = peer()
    c.send_headers(1, REQUEST_BLOCK)
    for _ in range(4):
        c.send_data(1, b"y" * 15_000)
    server = Http2Connection(Role.SERVER)
    server.feed(c.data_to_send())
    c.receive_data(server.data_to_send())
    assert c.local_flow_control_window(1) == 65_535 - 60_000
    server.ack(1, 60_000)
    c.receive_data(server.data_to_send())
    assert c.local_flow_control_window(1) == 65_535


def test_stream_reset_and_goaway_from_the_client() -> None:
    c = peer()
    c.send_headers(1, REQUEST_BLOCK)
    c.send_headers(3, REQUEST_BLOCK)
    c.reset_stream(1, CANCEL)
    c.close_connection(NO_ERROR, b"bye")
    events = Http2Connection(Role.SERVER).feed(c.data_to_send())
    assert events[-2:] == [
        StreamReset(stream_id=1, error_code=CANCEL),
        GoAway(error_code=NO_ERROR, last_stream_id=0, debug=b"bye"),
    ]


def test_sending_on_a_reset_stream_is_a_parse_error() -> None:
    c = peer()
    c.send_headers(1, REQUEST_BLOCK)
    c.reset_stream(1, CANCEL)
    server = Http2Connection(Role.SERVER)
    server.feed(c.data_to_send())
    with pytest.raises(ParseError, match="stream 1"):
        server.send(ResponseHead(stream_id=1, status=200, headers=[]))


def test_goaway_we_send_names_the_last_stream() -> None:
    c = peer()
    c.send_headers(1, REQUEST_BLOCK, end_stream=True)
    server = Http2Connection(Role.SERVER)
    server.feed(c.data_to_send())
    server.send(ResponseHead(stream_id=1, status=204, headers=[]))
    server.send(MessageEnd(stream_id=1))
    server.send(GoAway(error_code=NO_ERROR, last_stream_id=server.highest_stream_id))
    [*_, terminated] = c.receive_data(server.data_to_send())
    assert isinstance(terminated, h2.events.ConnectionTerminated)
    assert (terminated.error_code, terminated.last_stream_id) == (NO_ERROR, 1)


def test_more_streams_than_advertised_is_a_protocol_error() -> None:
    server = Http2Connection(Role.SERVER, max_concurrent_streams=2)
    c = peer()  # never reads our SETTINGS, so it does not hold back
    for sid in (1, 3, 5):
        c.send_headers(sid, REQUEST_BLOCK)
    events = server.feed(c.data_to_send())
    assert isinstance(events[-1], ParseFailed)
    assert "Max inbound streams is 2" in events[-1].error
    assert server.sent_goaway == GoAway(error_code=PROTOCOL_ERROR, last_stream_id=3)


def test_oversized_header_list_is_enhance_your_calm() -> None:
    server = Http2Connection(Role.SERVER, max_header_list_bytes=1024)
    c = peer()
    c.send_headers(1, [*REQUEST_BLOCK, (b"x-big", b"z" * 4000)])
    [failed] = server.feed(c.data_to_send())
    assert isinstance(failed, ParseFailed)
    assert failed.status_hint == 431
    assert server.sent_goaway is not None
    assert server.sent_goaway.error_code == ENHANCE_YOUR_CALM


def test_continuation_flood_is_cut() -> None:
    c = peer()
    flood = bytearray(c.data_to_send())
    flood += HeadersFrame(1, data=b"").serialize()  # no END_HEADERS: the block never ends
    for _ in range(200):
        flood += ContinuationFrame(1, data=b"\x00" * 10).serialize()
    server = Http2Connection(Role.SERVER)
    events = server.feed(bytes(flood))
    assert isinstance(events[-1], ParseFailed)
    assert "continuation" in events[-1].error.lower()
    assert server.sent_goaway is not None
    assert server.sent_goaway.error_code == PROTOCOL_ERROR


def test_eof_is_connection_closed_once() -> None:
    server = Http2Connection(Role.SERVER)
    assert server.feed_eof() == [ConnectionClosed()]
    assert server.feed_eof() == []


def test_cannot_send_a_gateway_record() -> None:
    with pytest.raises(ParseError, match="cannot send ConnectionClosed"):
        Http2Connection(Role.SERVER).send(ConnectionClosed())


def test_server_bytes_at_every_split_point_for_the_client_role() -> None:
    c = peer()
    c.send_headers(1, REQUEST_BLOCK, end_stream=True)
    server = Http2Connection(Role.SERVER)
    server.feed(c.data_to_send())
    server.send(ResponseHead(stream_id=1, status=200, headers=[(b"content-type", b"text/event-stream")]))
    server.send(BodyChunk(stream_id=1, data=b'data: {"a":1}\n\n'))
    server.send(MessageEnd(stream_id=1, trailers=[(b"x-done", b"1")]))
    data = server.data_to_send()
    expected = [
        ResponseHead(
            stream_id=1,
            status=200,
            headers=[(b":status", b"200"), (b"content-type", b"text/event-stream")],
            http_version=b"2",
        ),
        BodyChunk(stream_id=1, data=b'data: {"a":1}\n\n'),
        MessageEnd(stream_id=1, trailers=[(b"x-done", b"1")]),
    ]
    for cut in range(len(data) + 1):
        client = Http2Connection(Role.CLIENT)
        client.send(RequestHead(stream_id=1, method=b"GET", target=b"/", headers=[(b"host", b"h")]))
        client.send(MessageEnd(stream_id=1))
        assert fed(client, data, [cut]) == expected, cut
