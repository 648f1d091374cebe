"""The relay fast path end to end: bodies cross byte for byte, each upstream read is one recorded chunk,
and an upstream that breaks its framing is cut, recorded, and never reused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from gateway.masking import MaskingConfig
from gateway.mock_llm import MockLlm, MockLlmConfig
from parsers.events import BodyChunk, Direction, ExchangeEnded, GatewayError, MessageEnd
from storage.codec import Frame
from storage.reader import iter_frames
from tests.gateway.conftest import GatewayFactory
from tests.gateway.test_proxy import raw_exchange

GET = b"GET /v1/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
SSE_PIECES = [
    b"f;a=b\r\ndata: token-0\n\n\r\n",  # a chunk extension crosses as sent
    b"f\r\ndata: token-1\n\n\r\n",
    b"f\r\ndata: tok",  # a chunk split over two writes
    b"en-2\n\n\r\n",
    b"0\r\nx-trailer: t\r\n\r\n",
]
# These tests check the relay's one recorded chunk per read, byte for byte; masking (on by default) may
# hold an undecided tail of one read back into the next recorded chunk (tests/gateway/test_masking.py).
UNMASKED = MaskingConfig(enabled=False)
PAUSE_S = 0.02  # between the scripted upstream's writes: each arrives in a read of its own


class ScriptedUpstream:
    """An upstream that answers each request with the next script: writes, paused between; None closes."""

    def __init__(self, *scripts: list[bytes | None]) -> None:
        self.scripts = list(scripts)
        self.connections = 0
        self.port = 0

    @asynccontextmanager
    async def running(self) -> AsyncIterator[ScriptedUpstream]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        async with server:
            yield self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.scripts:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line[15:])
                        for line in head.lower().split(b"\r\n")
                        if line.startswith(b"content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                for piece in self.scripts.pop(0):
                    if piece is None:
                        return
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(PAUSE_S)
                if b"\r\nconnection: close\r\n" in head.lower():
                    return
            await reader.read()  # no script left: hold the connection until the peer closes it
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


def exchange_frames(data_dir: Path) -> list[Frame]:
    return [s.frame for s in iter_frames(data_dir) if s.frame.conn_id]


def upstream_chunks(frames: list[Frame]) -> list[bytes]:
    return [
        f.event.data
        for f in frames
        if f.direction == Direction.FROM_UPSTREAM and isinstance(f.event, BodyChunk)
    ]


def split_response(response: bytes) -> tuple[bytes, bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    return head, body


@pytest.mark.parametrize(
    "script",
    [
        [SSE_HEAD, *SSE_PIECES],
        [
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 21\r\n\r\n",
            b'{"a": 1,',
            b' "b": [1, 2]}',
        ],
    ],
    ids=["chunked", "content-length"],
)
async def test_bodies_cross_byte_identical_to_direct_and_recorded_per_read(
    start_gateway: GatewayFactory, data_dir: Path, script: list[bytes | None]
) -> None:
    upstream = ScriptedUpstream(list(script), list(script))
    async with (
        upstream.running(),
        start_gateway(upstream_port=upstream.port, durability="batched", masking=UNMASKED) as gw,
    ):
        direct = await raw_exchange(upstream.port, GET)
        through = await raw_exchange(gw.port, GET)
    body = b"".join(p for p in script[1:] if p is not None)
    assert split_response(direct)[1] == body
    assert split_response(through)[1] == body  # extensions, trailers, chunk sizes: as the upstream sent them
    assert b"x-wardgate-exchange:" in split_response(through)[0].lower()
    frames = exchange_frames(data_dir)
    chunks = upstream_chunks(frames)
    decoded = [p for p in script[1:] if p is not None]
    if script[0] == SSE_HEAD:
        decoded = [b"data: token-0\n\n", b"data: token-1\n\n", b"data: tok", b"en-2\n\n"]
        ends = [
            f.event
            for f in frames
            if isinstance(f.event, MessageEnd) and f.direction == Direction.FROM_UPSTREAM
        ]
        assert ends == [MessageEnd(trailers=[(b"x-trailer", b"t")])]
    assert chunks == decoded  # one recorded chunk per upstream read, nothing re-split or joined
    times = [
        f.ts_ns for f in frames if f.direction == Direction.FROM_UPSTREAM and isinstance(f.event, BodyChunk)
    ]
    assert times == sorted(times)
    assert times[-1] - times[0] >= (len(times) - 1) * PAUSE_S * 1e9 * 0.5  # each stamped as it arrived


async def test_recorded_chunk_count_equals_the_upstreams_token_count(
    start_gateway: GatewayFactory, data_dir: Path
) -> None:
    tokens = 8
    async with (
        MockLlm(MockLlmConfig(tokens=tokens, token_delay_ms=25)) as paced,
        start_gateway(upstream_port=paced.port, durability="batched", masking=UNMASKED) as gw,
    ):
        body = json.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "count"}]})
        request = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body.encode())
        )
        response = await raw_exchange(gw.port, request)
    assert response.startswith(b"HTTP/1.1 200 ")
    chunks = upstream_chunks(exchange_frames(data_dir))
    with_token = [c for c in chunks if b'"content":"' in c and b'"content":""' not in c]
    # The mock writes each token after a pause; every token is one read, one recorded chunk.
    assert len(with_token) == tokens
    assert all(c.count(b'"content":"') <= 1 for c in with_token)
    assert len(chunks) <= tokens + 2  # plus the role chunk and the closing events


@pytest.mark.parametrize(
    ("bad", "kind"),
    [
        (b"zz\r\nabc\r\n", "upstream_protocol_error"),
        (b"3\nabc\r\n", "upstream_protocol_error"),  # bare LF ends the chunk-size line
        (b"3\r\nabcd\r\n", "upstream_protocol_error"),  # more data than the chunk size
        (b"-3\r\nabc\r\n", "upstream_protocol_error"),
        (None, "upstream_aborted"),  # closed mid-body
    ],
    ids=["size-junk", "size-bare-lf", "data-too-long", "negative-size", "closed"],
)
async def test_upstream_breaking_its_framing_cuts_the_client(
    start_gateway: GatewayFactory, data_dir: Path, bad: bytes | None, kind: str
) -> None:
    good = b"5\r\nhello\r\n"
    upstream = ScriptedUpstream([SSE_HEAD, good, bad, b"0\r\n\r\n"])
    async with (
        upstream.running(),
        start_gateway(upstream_port=upstream.port, durability="batched", masking=UNMASKED) as gw,
    ):
        response = await raw_exchange(gw.port, GET)
    head, body = split_response(response)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body == good  # what was sound went through; no final chunk: the client sees a truncation
    frames = exchange_frames(data_dir)
    errors = [f.event for f in frames if isinstance(f.event, GatewayError)]
    assert [e.kind for e in errors] == [kind]
    ends = [f.event for f in frames if isinstance(f.event, ExchangeEnded)]
    assert [e.outcome for e in ends] == ["upstream_aborted"]
    assert upstream_chunks(frames) == [b"hello"]


@pytest.mark.parametrize(("extra", "connections"), [(b"", 1), (b"EXTRA", 2)])
async def test_upstream_sending_past_content_length_is_not_reused(
    start_gateway: GatewayFactory, data_dir: Path, extra: bytes, connections: int
) -> None:
    reply = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
    upstream = ScriptedUpstream([reply + extra], [reply])
    async with (
        upstream.running(),
        start_gateway(upstream_port=upstream.port, durability="batched", masking=UNMASKED) as gw,
    ):
        first = await raw_exchange(gw.port, GET)
        second = await raw_exchange(gw.port, GET)
    assert split_response(first)[1] == b"hello"
    assert split_response(second)[1] == b"hello"
    assert upstream.connections == connections


async def test_pipelined_requests_after_relayed_bodies(start_gateway: GatewayFactory, mock: MockLlm) -> None:
    def post(text: str, close: bool = False) -> bytes:
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": text}]}).encode()
        connection = b"Connection: close\r\n" if close else b""
        return (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (connection, len(body), body)
        )

    async with start_gateway(durability="batched") as gw:
        response = await raw_exchange(gw.port, post("one") + post("two") + post("three", close=True))
    assert response.count(b"HTTP/1.1 200 OK") == 3
    assert mock.requests == 3


async def test_upstream_silent_mid_body_is_cut_at_the_read_timeout(
    start_gateway: GatewayFactory, data_dir: Path
) -> None:
    upstream = ScriptedUpstream([SSE_HEAD, b"5\r\nhello\r\n"])  # then silence, connection open
    async with (
        upstream.running(),
        start_gateway(upstream_port=upstream.port, durability="batched", upstream_read_timeout_s=0.4) as gw,
    ):
        loop = asyncio.get_running_loop()
        started = loop.time()
        response = await raw_exchange(gw.port, GET)
        elapsed = loop.time() - started
    assert split_response(response)[1] == b"5\r\nhello\r\n"
    assert elapsed >= 0.4
    frames = exchange_frames(data_dir)
    assert [f.event.kind for f in frames if isinstance(f.event, GatewayError)] == ["upstream_timeout"]
