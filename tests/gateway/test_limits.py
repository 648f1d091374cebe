"""Limits and timeouts over real sockets: slow clients, slow readers, long exchanges, HEAD, bad config."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from gateway.mock_llm import MockLlm, MockLlmConfig
from parsers.events import BodyChunk, Direction, GatewayError
from storage.reader import iter_frames
from tests.gateway.conftest import GatewayFactory
from tests.gateway.processes import wardgate

STREAM_REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
)


def chat_request(body: bytes) -> bytes:
    return STREAM_REQUEST % len(body) + body


async def read_all(reader: asyncio.StreamReader, timeout_s: float = 10) -> bytes:
    out = b""
    async with asyncio.timeout(timeout_s):
        while chunk := await reader.read(65536):
            out += chunk
    return out


async def test_slowloris_cut_at_header_timeout_while_others_are_served(
    start_gateway: GatewayFactory, data_dir: Path
) -> None:
    async with start_gateway(header_timeout_s=0.5) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def trickle() -> None:
            writer.write(b"GET /v1/models HTTP/1.1\r\n")
            for i in range(40):
                await asyncio.sleep(0.05)
                if writer.is_closing():
                    return
                writer.write(b"X-%d: y\r\n" % i)

        trickler = asyncio.ensure_future(trickle())
        # A normal client is served while the slow one trickles.
        r2, w2 = await asyncio.open_connection("127.0.0.1", gw.port)
        w2.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        normal = await read_all(r2)
        w2.close()
        answer = await read_all(reader)
        elapsed = loop.time() - started
        trickler.cancel()
        writer.close()
    assert normal.startswith(b"HTTP/1.1 200 ")
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert elapsed < 1.9  # cut at the head deadline, not after the 2 s trickle
    kinds = [s.frame.event.kind for s in iter_frames(data_dir) if isinstance(s.frame.event, GatewayError)]
    assert kinds == ["request_timeout"]


async def test_idle_connection_closed_quietly(start_gateway: GatewayFactory, data_dir: Path) -> None:
    async with start_gateway(header_timeout_s=0.3) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        assert await read_all(reader, timeout_s=5) == b""
        writer.close()
    assert not [s for s in iter_frames(data_dir) if isinstance(s.frame.event, GatewayError)]


async def test_exchange_cut_at_max_exchange_s(start_gateway: GatewayFactory, data_dir: Path) -> None:
    async with (
        MockLlm(MockLlmConfig(tokens=400, token_delay_ms=10)) as slow,
        start_gateway(upstream_port=slow.port, max_exchange_s=0.4) as gw,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(chat_request(b'{"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]}'))
        body = await read_all(reader)
        writer.close()
    assert body.startswith(b"HTTP/1.1 200 ")
    assert not body.endswith(b"0\r\n\r\n")  # cut, never a clean end
    kinds = [s.frame.event.kind for s in iter_frames(data_dir) if isinstance(s.frame.event, GatewayError)]
    assert kinds == ["exchange_too_long"]


async def test_slow_reader_pauses_the_upstream(start_gateway: GatewayFactory, data_dir: Path) -> None:
    """Back-pressure: a client that stops reading stops the gateway reading, memory stays bounded."""
    tokens = 400_000
    async with MockLlm(MockLlmConfig(tokens=tokens)) as fast, start_gateway(upstream_port=fast.port) as gw:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gw.port))
        _, writer = await asyncio.open_connection(sock=sock, limit=4096)
        writer.write(chat_request(b'{"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]}'))
        await asyncio.sleep(1.5)  # the client reads nothing meanwhile
        buffered = [c.writer.transport.get_write_buffer_size() for c in gw._connections]
        writer.transport.abort()
    assert buffered
    assert max(buffered) <= 256 * 1024
    relayed = sum(
        len(s.frame.event.data)
        for s in iter_frames(data_dir)
        if s.frame.direction == Direction.FROM_UPSTREAM and isinstance(s.frame.event, BodyChunk)
    )
    # The full stream is tens of MB; with the client not reading, only socket buffers' worth moved.
    assert relayed < 16 * 1024 * 1024


async def test_head_request_has_no_body(start_gateway: GatewayFactory) -> None:
    async with start_gateway() as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"HEAD /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = await read_all(reader)
        writer.close()
    head, _, rest = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 ")
    assert rest == b""


def test_bad_config_names_the_field_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "wardgate.toml"
    config.write_text('[limits]\nmax_head_bytes = "lots"\n')
    result = wardgate("serve", "--config", str(config))
    assert result.returncode == 2
    assert "limits.max_head_bytes" in result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()
    config.write_text("[limits]\nno_such_limit = 1\n")
    result = wardgate("serve", "--config", str(config))
    assert result.returncode == 2
    assert "no_such_limit" in result.stderr.decode()


def test_bad_flag_value_exits_2(tmp_path: Path) -> None:
    result = wardgate("serve", "--listen", "nonsense", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "listen" in result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()
