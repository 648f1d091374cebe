"""HTTP/2 clients end to end: httpx over TLS (ALPN) and h2c (prior knowledge), the openai SDK, a hand-driven
h2 client for resets, floods and slow readers; every stream recorded as its own exchange."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h11
import httpx
import msgspec
import openai
import pytest
import trustme
from hyperframe.frame import ContinuationFrame, HeadersFrame, PingFrame

from gateway.config import AdminConfig, Config, LimitsConfig, ListenerConfig, StorageConfig
from gateway.h2_connection import WRITE_HIGH_WATER, H2ClientConnection
from gateway.h2_stream import STREAM_HIGH_WATER
from gateway.inspect import exchange_frames, response_parts
from gateway.mock_llm import MockLlm, MockLlmConfig
from gateway.server import Gateway, running
from parsers.events import (
    ExchangeEnded,
    ExchangeStarted,
    GatewayError,
    GoAway,
    MessageEnd,
    RequestHead,
    StreamReset,
)
from parsers.http2 import CANCEL, ENHANCE_YOUR_CALM, NO_ERROR, PROTOCOL_ERROR
from storage.codec import Frame
from storage.reader import iter_frames
from tests.gateway.processes import record_of, wardgate
from tests.gateway.test_tls import trusting, write_cert

SECRET = "sk-test-h2-7Jq2Lw9"


def config(data_dir: Path, upstream_port: int, **kwargs: Any) -> Config:
    listener = {k: v for k, v in kwargs.items() if k.startswith("tls_")}
    durability = kwargs.pop("durability", "batched")
    limits = {k: v for k, v in kwargs.items() if not k.startswith("tls_")}
    return Config(
        listeners=[
            ListenerConfig(listen="127.0.0.1:0", upstream=f"http://127.0.0.1:{upstream_port}", **listener)
        ],
        storage=StorageConfig(data_dir=str(data_dir), durability=durability, group_commit_ms=5),
        limits=msgspec.structs.replace(LimitsConfig(), **limits),
        admin=AdminConfig(listen=""),
    )


@asynccontextmanager
async def gateway(
    data_dir: Path, mock_config: MockLlmConfig, **kwargs: Any
) -> AsyncIterator[tuple[Gateway, MockLlm]]:
    async with (
        asyncio.timeout(60),
        MockLlm(mock_config) as mock,
        running(config(data_dir, mock.port, **kwargs)) as gw,
    ):
        yield gw, mock


def frames(data_dir: Path) -> list[Frame]:
    return [stored.frame for stored in iter_frames(data_dir)]


def chat(content: str, *, stream: bool = True, max_tokens: int = 8) -> dict[str, Any]:
    return {
        "model": "mock-gpt",
        "messages": [{"role": "user", "content": content}],
        "stream": stream,
        "max_tokens": max_tokens,
    }


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


# --- httpx over TLS and h2c -------------------------------------------------------------------------


@pytest.mark.parametrize("tls", [True, False], ids=["tls-alpn", "h2c-prior-knowledge"])
async def test_concurrent_streams_on_one_connection_each_recorded_and_replayable(
    tls: bool, ca: trustme.CA, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    tls_files: dict[str, str] = {}
    if tls:
        cert_file, key_file = write_cert(ca.issue_cert("localhost"), tmp_path / "tls", "gw")
        tls_files = {"tls_cert": str(cert_file), "tls_key": str(key_file)}
    bodies: dict[str, bytes] = {}
    # Strict durability over TLS (bodies held until on disk), batched over h2c: both request paths.
    durability = "strict" if tls else "batched"
    # Tokens 15 ms apart: each arrives in a read of its own even on a loaded machine (record masking
    # costs CPU per token), so the recording has many timed chunks.
    mock = MockLlmConfig(tokens=10, token_delay_ms=15)
    async with gateway(data_dir, mock, durability=durability, **tls_files) as (gw, _):
        scheme = "https" if tls else "http"
        client = httpx.AsyncClient(
            base_url=f"{scheme}://localhost:{gw.port}",
            http2=True,
            http1=tls,  # plaintext: prior knowledge, no Upgrade dance
            verify=trusting(ca) if tls else False,
            timeout=10,
        )
        async with client:

            async def one(i: int) -> None:
                async with client.stream("POST", "/v1/chat/completions", json=chat(f"question {i}")) as resp:
                    assert resp.status_code == 200
                    assert resp.http_version == "HTTP/2"
                    body = b"".join([piece async for piece in resp.aiter_raw()])
                assert body.endswith(b"data: [DONE]\n\n")
                bodies[resp.headers["x-wardgate-exchange"]] = body

            await asyncio.gather(*(one(i) for i in range(12)))
            assert (await client.get("/v1/models")).json()["data"]
    assert len(bodies) == 12
    started = [f for f in frames(data_dir) if isinstance(f.event, ExchangeStarted)]
    assert len(started) == 13
    assert len({f.conn_id for f in started}) == 1  # one connection, thirteen exchanges
    for frame in started:
        assert isinstance(frame.event, ExchangeStarted)
        assert frame.event.protocol == "h2"
        assert frame.event.alpn == ("h2" if tls else "")
        assert bool(frame.event.tls_version) == tls
    heads = [
        f.event for f in frames(data_dir) if isinstance(f.event, RequestHead) and f.event.http_version == b"2"
    ]
    assert sorted(h.stream_id for h in heads) == list(range(1, 27, 2))
    for exchange_id, body in bodies.items():
        record = await record_of(data_dir, exchange_id)
        assert (record.protocol, record.status, record.outcome, record.stream) == (
            "h2",
            200,
            "complete",
            True,
        )
        assert record.response_text
        head, pieces = response_parts(exchange_frames(data_dir, record))
        assert head is not None
        assert head.http_version == b"2"
        assert b"".join(pieces) == body
        assert len(pieces) > 1  # chunk by chunk, each with its own time
    some = next(iter(bodies))
    replay = wardgate("replay", some, "--raw", "--head", "--data-dir", str(data_dir))
    assert replay.returncode == 0, replay.stderr
    status_and_fields, _, replayed = replay.stdout.partition(b"\r\n\r\n")
    assert status_and_fields.startswith(b"HTTP/2 200\r\n")
    assert b"x-wardgate-exchange: " + some.encode() in status_and_fields.split(b"\r\n")
    assert replayed == bodies[some]


async def test_openai_sdk_over_tls_with_a_custom_ca_on_http2(ca: trustme.CA, tmp_path: Path) -> None:
    cert_file, key_file = write_cert(ca.issue_cert("localhost"), tmp_path / "tls", "gw")
    data_dir = tmp_path / "data"
    async with (
        gateway(data_dir, MockLlmConfig(tokens=10), tls_cert=str(cert_file), tls_key=str(key_file)) as (
            gw,
            _,
        ),
        openai.DefaultAsyncHttpxClient(verify=trusting(ca), http2=True, timeout=10) as http,
        openai.AsyncOpenAI(
            base_url=f"https://localhost:{gw.port}/v1", api_key=SECRET, max_retries=0, http_client=http
        ) as llm,
    ):
        raw = await llm.chat.completions.with_raw_response.create(
            model="mock-gpt", messages=[{"role": "user", "content": "an okapi fact over h2"}]
        )
        assert raw.http_response.http_version == "HTTP/2"
        assert raw.parse().choices[0].message.content
        stream = await llm.chat.completions.create(
            model="mock-gpt", messages=[{"role": "user", "content": "stream it"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text
        exchange_id = raw.headers["x-wardgate-exchange"]
    record = await record_of(data_dir, exchange_id)
    assert (record.protocol, record.alpn, record.status) == ("h2", "h2", 200)
    assert "okapi" in record.prompt_text


# --- a hand-driven h2 client -------------------------------------------------------------------------

GET_MODELS = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":authority", b"gw.test"),
    (b":path", b"/v1/models"),
]


def post_chat(content: str, **kwargs: Any) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = json.dumps(chat(content, **kwargs)).encode()
    head = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":authority", b"gw.test"),
        (b":path", b"/v1/chat/completions"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    return head, body


class RawH2:
    """The h2 library as a client on a real socket, driven by hand: resets, floods, unread streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(2**30)  # the connection never limits; streams do
        self.data: dict[int, bytearray] = {}
        self.unacked: dict[int, int] = {}  # DATA left unread, per stream
        self.events: list[h2.events.Event] = []
        self.closed = False

    @classmethod
    async def connect(cls, port: int, *, receive_buffer: int = 0) -> RawH2:
        """``receive_buffer``: a small kernel buffer, so what we do not read backs up to the gateway."""
        sock = socket.socket()
        if receive_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        return cls(reader, writer)

    def flush(self, extra: bytes = b"") -> None:
        self.writer.write(self.h2.data_to_send() + extra)

    def request(self, sid: int, head: list[tuple[bytes, bytes]], body: bytes = b"") -> None:
        self.h2.send_headers(sid, head, end_stream=not body)
        if body:
            self.h2.send_data(sid, body, end_stream=True)
        self.flush()

    async def until(
        self, done: Callable[[], bool], *, timeout_s: float = 10, ack: set[int] | None = None
    ) -> None:
        """Read until ``done()``; DATA of the streams in ``ack`` is acknowledged, the rest left unread."""
        async with asyncio.timeout(timeout_s):
            while not done():
                chunk = await self.reader.read(65536)
                if not chunk:
                    self.closed = True
                    return
                for event in self.h2.receive_data(chunk):
                    self.events.append(event)
                    if isinstance(event, h2.events.DataReceived):
                        self.data.setdefault(event.stream_id, bytearray()).extend(event.data)
                        if ack is None or event.stream_id in ack:
                            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                        else:
                            self.h2.increment_flow_control_window(event.flow_controlled_length)
                            self.unacked[event.stream_id] = (
                                self.unacked.get(event.stream_id, 0) + event.flow_controlled_length
                            )
                self.flush()

    def read_on(self, sid: int) -> None:
        """Read the DATA left unread on ``sid`` at last: its window opens again."""
        unacked = self.unacked.pop(sid, 0)
        if unacked:
            self.h2.increment_flow_control_window(unacked, stream_id=sid)
            self.flush()

    def ended(self, sid: int) -> bool:
        return any(isinstance(e, h2.events.StreamEnded) and e.stream_id == sid for e in self.events)

    def got(self, kind: type[h2.events.Event], sid: int | None = None) -> list[Any]:
        return [
            e for e in self.events if isinstance(e, kind) and sid in (None, getattr(e, "stream_id", None))
        ]

    def close(self) -> None:
        self.writer.transport.abort()


async def h2_connection(gw: Gateway) -> H2ClientConnection:
    """The gateway's one HTTP/2 client connection, once it was accepted."""
    async with asyncio.timeout(10):
        while True:
            found = [c for c in gw._connections if isinstance(c, H2ClientConnection)]
            if found:
                return found[0]
            await asyncio.sleep(0.01)


def exchange_of(data_dir: Path, stream_id: int, conn_id: str | None = None) -> list[Frame]:
    """Every frame of the exchange that carried ``stream_id`` (on ``conn_id``)."""
    all_frames = frames(data_dir)
    for frame in all_frames:
        event = frame.event
        if (
            isinstance(event, RequestHead)
            and event.stream_id == stream_id
            and conn_id in (None, frame.conn_id)
        ):
            return [f for f in all_frames if f.exchange_id == frame.exchange_id]
    raise AssertionError(f"no exchange for stream {stream_id}")


async def test_client_rst_stream_cancels_exactly_that_exchange(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with gateway(data_dir, MockLlmConfig(tokens=400, token_delay_ms=10)) as (gw, _):
        client = await RawH2.connect(gw.port)
        try:
            head, body = post_chat("a long answer", max_tokens=400)
            client.request(1, head, body)
            await client.until(lambda: bool(client.data.get(1)))
            client.h2.reset_stream(1, CANCEL)
            client.request(3, GET_MODELS)
            await client.until(lambda: client.ended(3))
            assert json.loads(client.data[3])["data"]
            assert not client.ended(1)
        finally:
            client.close()
    cancelled = exchange_of(data_dir, 1)
    assert StreamReset(stream_id=1, error_code=CANCEL) in [f.event for f in cancelled]
    [ended] = [f.event for f in cancelled if isinstance(f.event, ExchangeEnded)]
    assert ended.outcome == "client_aborted"
    [error] = [f.event for f in cancelled if isinstance(f.event, GatewayError)]
    assert "reset stream 1" in error.message
    [other] = [f.event for f in exchange_of(data_dir, 3) if isinstance(f.event, ExchangeEnded)]
    assert (other.outcome, other.status) == ("complete", 200)


async def test_a_stream_left_unread_neither_buffers_without_bound_nor_stalls_another(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with gateway(data_dir, MockLlmConfig(tokens=20_000)) as (gw, _):
        client = await RawH2.connect(gw.port)
        try:
            head, body = post_chat("everything", max_tokens=20_000)
            client.request(1, head, body)
            await client.until(lambda: len(client.data.get(1, b"")) >= 65_535, ack=set())
            [conn] = [c for c in gw._connections if isinstance(c, H2ClientConnection)]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while conn.http.buffered(1) <= STREAM_HIGH_WATER:  # the gateway fills its share, then stops
                assert loop.time() < deadline, "stream 1 never backed up"
                await asyncio.sleep(0.01)
            head, body = post_chat("a short one", max_tokens=3)
            client.request(3, head, body)
            await client.until(lambda: client.ended(3), ack={3})
            assert client.data[3].endswith(b"data: [DONE]\n\n")
            assert conn.http.buffered(1) <= STREAM_HIGH_WATER + 64 * 1024  # at most one upstream read more
            assert 1 in conn.streams  # still in flight: its upstream is paused, not finished
            client.read_on(1)
            await client.until(lambda: client.ended(1), ack={1, 3}, timeout_s=30)
        finally:
            client.close()
    assert client.data[1].endswith(b"data: [DONE]\n\n")
    [ended] = [f.event for f in exchange_of(data_dir, 1) if isinstance(f.event, ExchangeEnded)]
    assert (ended.outcome, ended.response_bytes) == ("complete", len(client.data[1]))


async def test_graceful_shutdown_finishes_the_stream_in_flight_then_goaway(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with gateway(data_dir, MockLlmConfig(tokens=30, token_delay_ms=10)) as (gw, _):
        client = await RawH2.connect(gw.port)
        try:
            head, body = post_chat("finish me", max_tokens=30)
            client.request(1, head, body)
            await client.until(lambda: bool(client.data.get(1)))
            gw.stop()
            await client.until(lambda: bool(client.got(h2.events.ConnectionTerminated)))
        finally:
            client.close()
    assert client.ended(1)
    assert client.data[1].endswith(b"data: [DONE]\n\n")
    [terminated] = client.got(h2.events.ConnectionTerminated)
    assert (terminated.error_code, terminated.last_stream_id) == (NO_ERROR, 1)
    assert GoAway(error_code=NO_ERROR, last_stream_id=1) in [f.event for f in frames(data_dir)]


# --- abuse: each flood closes the offender only --------------------------------------------------------


def rapid_reset(client: RawH2) -> None:
    for sid in range(1, 400, 2):
        client.h2.send_headers(sid, GET_MODELS, end_stream=True)
        client.h2.reset_stream(sid, CANCEL)
    client.flush()


def continuation_flood(client: RawH2) -> None:
    flood = bytearray(HeadersFrame(1, data=b"").serialize())  # END_HEADERS never comes
    for _ in range(500):
        flood += ContinuationFrame(1, data=b"\x00" * 16).serialize()
    client.flush(bytes(flood))


def oversized_headers(client: RawH2) -> None:
    client.h2.send_headers(
        1, [*GET_MODELS, *[(b"x-pad-%d" % i, b"v" * 200) for i in range(100)]], end_stream=True
    )
    client.flush()


def too_many_streams(client: RawH2) -> None:
    for sid in range(1, 21, 2):  # held open: no END_STREAM
        client.h2.send_headers(sid, post_chat("x")[0])
    client.flush()


FLOODS = {
    "rapid-reset": (rapid_reset, ENHANCE_YOUR_CALM, "h2_rapid_reset"),
    "continuation-flood": (continuation_flood, PROTOCOL_ERROR, "h2_protocol_error"),
    "oversized-header-list": (oversized_headers, ENHANCE_YOUR_CALM, "h2_protocol_error"),
    "too-many-streams": (too_many_streams, PROTOCOL_ERROR, "h2_protocol_error"),
}


@pytest.mark.parametrize("case", list(FLOODS))
async def test_flood_closes_the_offender_with_goaway_and_others_keep_working(
    case: str, tmp_path: Path
) -> None:
    attack, code, kind = FLOODS[case]
    data_dir = tmp_path / "data"
    limits = {
        "h2_reset_burst": 10,
        "h2_resets_per_s": 1.0,
        "h2_max_concurrent_streams": 8,
        "max_head_bytes": 8192,
    }
    async with gateway(data_dir, MockLlmConfig(tokens=5), **limits) as (gw, _):
        bystander = await RawH2.connect(gw.port)
        offender = await RawH2.connect(gw.port)
        try:
            bystander.request(1, GET_MODELS)
            await bystander.until(lambda: bystander.ended(1))
            attack(offender)
            await offender.until(lambda: offender.closed, timeout_s=15)
            [terminated] = offender.got(h2.events.ConnectionTerminated)
            assert terminated.error_code == code
            # The bystander's connection and new connections are served as before.
            bystander.request(3, GET_MODELS)
            await bystander.until(lambda: bystander.ended(3))
            assert json.loads(bystander.data[3])["data"]
            async with httpx.AsyncClient(http1=False, http2=True, timeout=10) as fresh:
                assert (await fresh.get(f"http://127.0.0.1:{gw.port}/v1/models")).status_code == 200
        finally:
            bystander.close()
            offender.close()
    recorded = frames(data_dir)
    [error] = [f for f in recorded if isinstance(f.event, GatewayError) and f.event.kind == kind]
    goaways = [
        f.event for f in recorded if f.exchange_id == error.exchange_id and isinstance(f.event, GoAway)
    ]
    assert [g.error_code for g in goaways] == [code]


# --- trailers both ways, against an HTTP/1.1 upstream that uses them ---------------------------------


async def test_trailers_cross_both_ways_and_are_recorded(tmp_path: Path) -> None:
    """h2 request trailers reach the HTTP/1.1 upstream in a chunked body; its response trailers reach the
    HTTP/2 client as a trailing HEADERS frame. Both are recorded in the exchange's MessageEnd frames."""
    seen: dict[str, Any] = {}

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
                continue
            if isinstance(event, h11.Request):
                seen["headers"] = [(bytes(n), bytes(v)) for n, v in event.headers]
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                seen["trailers"] = [(bytes(n), bytes(v)) for n, v in event.headers]
                break
        seen["body"] = bytes(body)
        writer.write(conn.send(h11.Response(status_code=200, headers=[(b"transfer-encoding", b"chunked")])))
        writer.write(conn.send(h11.Data(data=b"streamed answer")))
        writer.write(conn.send(h11.EndOfMessage(headers=[(b"X-Usage-Tokens", b"42")])))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    data_dir = tmp_path / "data"
    try:
        async with asyncio.timeout(60), running(config(data_dir, port)) as gw:
            client = await RawH2.connect(gw.port)
            try:
                head = [*post_chat("x")[0][:5], (b"te", b"trailers")]  # no content-length: chunked upstream
                client.h2.send_headers(1, head)
                client.h2.send_data(1, b'{"model": "m"}')
                client.h2.send_headers(1, [(b"x-request-digest", b"abc")], end_stream=True)
                client.flush()
                await client.until(lambda: client.ended(1))
            finally:
                client.close()
    finally:
        server.close()
    assert seen["body"] == b'{"model": "m"}'
    assert seen["trailers"] == [(b"x-request-digest", b"abc")]
    names = [name for name, _ in seen["headers"]]
    assert b"te" not in names  # hop-by-hop in HTTP/1.1
    assert (b"transfer-encoding", b"chunked") in [(n.lower(), v) for n, v in seen["headers"]]
    assert bytes(client.data[1]) == b"streamed answer"
    [trailers] = client.got(h2.events.TrailersReceived, 1)
    assert trailers.headers == [(b"x-usage-tokens", b"42")]
    ends = [
        (f.direction.name, f.event.trailers)
        for f in exchange_of(data_dir, 1)
        if isinstance(f.event, MessageEnd)
    ]
    assert ends == [
        ("FROM_CLIENT", [(b"x-request-digest", b"abc")]),
        ("FROM_UPSTREAM", [(b"X-Usage-Tokens", b"42")]),
    ]


async def test_a_refused_stream_is_answered_alone_and_the_connection_goes_on(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with gateway(data_dir, MockLlmConfig(tokens=5), max_body_bytes=1000) as (gw, _):
        client = await RawH2.connect(gw.port)
        try:
            head, body = post_chat("y" * 2000)
            client.request(1, head, body)  # over max_body_bytes: 413 on this stream only
            client.request(3, [*GET_MODELS, (b"x-wardgate-session", b"not a valid id!")])
            client.request(5, GET_MODELS)
            await client.until(lambda: all(client.ended(sid) for sid in (1, 3, 5)))
        finally:
            client.close()
    statuses = {e.stream_id: dict(e.headers)[b":status"] for e in client.got(h2.events.ResponseReceived)}
    assert statuses == {1: b"413", 3: b"400", 5: b"200"}
    assert json.loads(client.data[1])["error"]["code"] == "body_too_large"
    assert not client.closed
    [ended] = [f.event for f in exchange_of(data_dir, 1) if isinstance(f.event, ExchangeEnded)]
    assert (ended.outcome, ended.status) == ("error", 413)


async def test_expect_100_continue_is_answered_by_the_gateway(tmp_path: Path) -> None:
    async with gateway(tmp_path / "data", MockLlmConfig(tokens=3)) as (gw, _):
        client = await RawH2.connect(gw.port)
        try:
            head, body = post_chat("wait for it", stream=False)
            client.h2.send_headers(1, [*head, (b"expect", b"100-continue")])
            client.flush()
            await client.until(lambda: bool(client.got(h2.events.InformationalResponseReceived, 1)))
            client.h2.send_data(1, body, end_stream=True)
            client.flush()
            await client.until(lambda: client.ended(1))
        finally:
            client.close()
    [informational] = client.got(h2.events.InformationalResponseReceived, 1)
    assert dict(informational.headers)[b":status"] == b"100"
    assert json.loads(client.data[1])["choices"]


async def test_over_the_connection_limit_an_h2_client_gets_goaway_before_any_stream(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with gateway(data_dir, MockLlmConfig(tokens=3), max_connections=1) as (gw, _):
        first = await RawH2.connect(gw.port)
        second = await RawH2.connect(gw.port)
        try:
            first.request(1, GET_MODELS)
            await first.until(lambda: first.ended(1))
            second.request(1, GET_MODELS)
            await second.until(lambda: second.closed)
        finally:
            first.close()
            second.close()
    [terminated] = second.got(h2.events.ConnectionTerminated)
    assert (terminated.error_code, terminated.last_stream_id, terminated.additional_data) == (
        NO_ERROR,
        0,
        b"overloaded",
    )
    assert not second.ended(1)
    errors = [f.event for f in frames(data_dir) if isinstance(f.event, GatewayError)]
    assert [e.kind for e in errors] == ["overloaded"]


async def test_httpx_reads_an_early_refusal_after_sending_its_whole_body(tmp_path: Path) -> None:
    """httpx sends a request's whole body before it reads: a refused stream takes the rest of the body
    (unrecorded, bounded by max_body_bytes) instead of resetting it, so the client gets the answer."""
    async with (
        gateway(tmp_path / "data", MockLlmConfig(tokens=3), max_body_bytes=100_000) as (gw, _),
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{gw.port}", http1=False, http2=True, timeout=10
        ) as client,
    ):

        async def body() -> AsyncIterator[bytes]:
            for _ in range(15):
                yield b"y" * 10_000

        too_big = await client.post("/v1/chat/completions", content=body())
        assert (too_big.status_code, too_big.json()["error"]["code"]) == (413, "body_too_large")
        bad_session = await client.post(
            "/v1/chat/completions", json=chat("x" * 50_000), headers={"x-wardgate-session": "not valid!"}
        )
        assert bad_session.status_code == 400
        assert (await client.get("/v1/models")).status_code == 200  # the same connection goes on


async def test_a_ping_flood_from_a_client_that_does_not_read_stays_bounded(tmp_path: Path) -> None:
    """h2 acks every PING by itself: the gateway stops reading a client that leaves the acks unread, so
    they cannot pile up, and closes it after client_write_timeout_s; other clients are served."""
    async with gateway(tmp_path / "data", MockLlmConfig(tokens=3), client_write_timeout_s=1.0) as (gw, _):
        offender = await RawH2.connect(gw.port, receive_buffer=4096)
        try:
            ping = PingFrame(0, opaque_data=b"12345678").serialize()
            offender.flush(ping * 300_000)  # 5.1 MB of PINGs, as many acks nobody reads
            conn = await h2_connection(gw)
            async with httpx.AsyncClient(http1=False, http2=True, timeout=10) as fresh:
                assert (await fresh.get(f"http://127.0.0.1:{gw.port}/v1/models")).status_code == 200
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 15
            while conn in gw._connections:  # cut after client_write_timeout_s without reading
                assert conn.writer.transport.get_write_buffer_size() <= WRITE_HIGH_WATER + 64 * 1024
                assert loop.time() < deadline, "the flooding connection was never closed"
                await asyncio.sleep(0.02)
        finally:
            offender.close()
