"""End to end over real sockets: the openai SDK and httpx through the gateway to the mock model server."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.mock_llm import MockLlm, MockLlmConfig
from parsers.events import Direction, ExchangeEnded, GatewayError, ParseFailed, RequestHead
from storage.index import SqliteIndex, index_path
from storage.query import ExchangeQuery
from storage.reader import iter_frames
from tests.gateway.conftest import GatewayFactory
from tests.gateway.processes import record_of, wardgate

SECRET = "sk-test-Zq8vXk3LmN0pQ7rS2tUvW9yZ"


def client(port: int) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key=SECRET, max_retries=0, timeout=10
    )


async def test_openai_sdk_non_streamed(start_gateway: GatewayFactory, mock: MockLlm, data_dir: Path) -> None:
    async with start_gateway() as gw, client(gw.port) as llm:
        raw = await llm.chat.completions.with_raw_response.create(
            model="mock-gpt", messages=[{"role": "user", "content": "what is a zebra crossing"}]
        )
        completion = raw.parse()
        exchange_id = raw.headers["x-wardgate-exchange"]
        session_id = raw.headers["x-wardgate-session"]
        body = raw.http_response.content
    assert completion.choices[0].message.content
    assert mock.requests == 1
    record = await record_of(data_dir, exchange_id)
    assert (record.session_id, record.status, record.outcome) == (session_id, 200, "complete")
    assert (record.method, record.path, record.model, record.api) == (
        "POST",
        "/v1/chat/completions",
        "mock-gpt",
        "chat.completions",
    )
    assert "zebra crossing" in record.prompt_text
    assert record.response_text == completion.choices[0].message.content
    assert record.total_tokens == completion.usage.total_tokens if completion.usage else True
    assert record.ttfb_ns is not None
    assert record.duration_ns >= record.ttfb_ns
    replay = wardgate("replay", exchange_id, "--raw", "--data-dir", str(data_dir))
    assert replay.returncode == 0, replay.stderr
    assert replay.stdout == body


async def test_openai_sdk_streamed_byte_for_byte(
    start_gateway: GatewayFactory, mock: MockLlm, data_dir: Path
) -> None:
    async with start_gateway() as gw, client(gw.port) as llm:
        stream = await llm.chat.completions.create(
            model="mock-gpt",
            messages=[{"role": "user", "content": "stream me a quokka fact"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        text = ""
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
        async with httpx.AsyncClient(timeout=10) as http:
            body = b""
            async with http.stream(
                "POST",
                f"http://127.0.0.1:{gw.port}/v1/chat/completions",
                json={
                    "model": "m",
                    "stream": True,
                    "messages": [{"role": "user", "content": "raw bytes please"}],
                },
            ) as response:
                async for piece in response.aiter_raw():
                    body += piece
                exchange_id = response.headers["x-wardgate-exchange"]
    assert text
    record = await record_of(data_dir, exchange_id)
    assert record.stream
    assert record.status == 200
    assert record.outcome == "complete"
    assert record.chunks >= 12  # one SSE message per token, recorded as it passed
    replay = wardgate("replay", exchange_id, "--raw", "--data-dir", str(data_dir))
    assert replay.returncode == 0, replay.stderr
    assert replay.stdout == body
    assert body.endswith(b"data: [DONE]\n\n")
    async with await SqliteIndex.open(index_path(data_dir), readonly=True) as index:
        hits = await index.exchanges(ExchangeQuery(text="quokka"))
    assert len(hits) == 1
    assert text in hits[0].response_text


async def test_chunks_recorded_as_they_pass_with_timing(
    start_gateway: GatewayFactory, data_dir: Path
) -> None:
    async with (
        MockLlm(MockLlmConfig(tokens=12, token_delay_ms=20)) as paced,
        start_gateway(upstream_port=paced.port) as gw,
        httpx.AsyncClient(timeout=10) as http,
    ):
        arrivals: list[float] = []
        loop = asyncio.get_running_loop()
        async with http.stream(
            "POST",
            f"http://127.0.0.1:{gw.port}/v1/chat/completions",
            json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "pace"}]},
        ) as response:
            async for _ in response.aiter_raw():
                arrivals.append(loop.time())
            exchange_id = response.headers["x-wardgate-exchange"]
    # Forwarded as they came: the client saw many separate reads spread over the stream's length.
    assert len(arrivals) >= 10
    assert arrivals[-1] - arrivals[0] >= 0.15
    chunk_times = [
        s.frame.ts_ns
        for s in iter_frames(data_dir)
        if s.frame.exchange_id == exchange_id
        and s.frame.direction == Direction.FROM_UPSTREAM
        and type(s.frame.event).__name__ == "BodyChunk"
    ]
    assert len(chunk_times) >= 12
    gaps = [b - a for a, b in itertools.pairwise(chunk_times)]
    assert sorted(gaps)[len(gaps) // 2] >= 10_000_000  # median gap ~20 ms: each chunk has its own time


async def test_upstream_dies_mid_stream(start_gateway: GatewayFactory, data_dir: Path) -> None:
    async with start_gateway() as gw, client(gw.port) as llm:
        stream = await llm.chat.completions.create(
            model="mock-gpt", messages=[{"role": "user", "content": "mock:fail-midstream"}], stream=True
        )
        received: list[object] = []
        with pytest.raises((openai.APIError, httpx.HTTPError)):
            await collect(stream, received)
    assert len(received) >= 1
    frames = [s.frame for s in iter_frames(data_dir)]
    ends = [f.event for f in frames if isinstance(f.event, ExchangeEnded)]
    assert [e.outcome for e in ends] == ["upstream_aborted"]
    errors = [f.event for f in frames if isinstance(f.event, GatewayError)]
    assert errors
    assert errors[0].kind == "upstream_aborted"
    chunks = [
        f for f in frames if f.direction == Direction.FROM_UPSTREAM and type(f.event).__name__ == "BodyChunk"
    ]
    assert len(chunks) >= 1
    verify = wardgate("verify", "--data-dir", str(data_dir))
    assert verify.returncode == 0, verify.stdout + verify.stderr


async def test_credentials_never_reach_the_disk(
    start_gateway: GatewayFactory, mock: MockLlm, data_dir: Path
) -> None:
    async with start_gateway() as gw, client(gw.port) as llm:
        await llm.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "hi"}])
        async with httpx.AsyncClient(timeout=10) as http:
            await http.get(
                f"http://127.0.0.1:{gw.port}/v1/models",
                headers={"Cookie": f"session={SECRET}", "X-Api-Key": SECRET, "api-key": SECRET},
            )
    # The upstream still got the client's credentials (the gateway holds none of its own yet).
    assert (b"X-Api-Key", SECRET.encode()) in mock.last_request_headers
    assert files_containing(data_dir, SECRET.encode()) == []
    heads = [s.frame.event for s in iter_frames(data_dir) if isinstance(s.frame.event, RequestHead)]
    auth = [v for h in heads for n, v in h.headers if n.lower() == b"authorization"]
    assert auth
    assert all(v.startswith(b"Bearer [redacted") for v in auth)
    # Same credential, same fingerprint: two requests can be correlated without the secret.
    assert len(set(auth)) == 1


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


async def collect(stream: openai.AsyncStream[Any], into: list[object]) -> None:
    async for item in stream:
        into.append(item)


async def raw_exchange(port: int, data: bytes, *, read_timeout: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        out = b""
        async with asyncio.timeout(read_timeout):
            while chunk := await reader.read(65536):
                out += chunk
        return out
    finally:
        writer.close()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@pytest.mark.parametrize(
    ("request_bytes", "status", "kind"),
    [
        (b"GARBAGE\r\n\r\n", 400, "bad_request"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431, "header_too_large"),
        (b"POST /v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n", 413, "body_too_large"),
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501, "not_implemented"),
        (
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            501,
            "not_implemented",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
            "bad_request",
        ),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Wardgate-Session: bad value!\r\n\r\n", 400, "bad_request"),
    ],
)
async def test_bad_input_is_answered_and_recorded(
    start_gateway: GatewayFactory, mock: MockLlm, data_dir: Path, request_bytes: bytes, status: int, kind: str
) -> None:
    async with start_gateway() as gw:
        response = await raw_exchange(gw.port, request_bytes)
        # The listener keeps serving others.
        async with client(gw.port) as llm:
            ok = await llm.models.list()
    assert status_of(response) == status
    assert b"x-wardgate-exchange:" in response.lower()
    body = json.loads(response.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == kind
    assert ok.data
    errors = [s.frame.event for s in iter_frames(data_dir) if isinstance(s.frame.event, GatewayError)]
    assert [(e.kind, e.status) for e in errors] == [(kind, status)]
    assert errors[0].client_addr.startswith("127.0.0.1:")
    assert mock.requests == 1  # only the good request reached the model


async def test_upstream_refused_is_502(start_gateway: GatewayFactory, data_dir: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    async with start_gateway(upstream_port=closed_port) as gw, client(gw.port) as llm:
        with pytest.raises(openai.InternalServerError) as info:
            await llm.models.list()
    assert info.value.status_code == 502
    errors = [s.frame.event for s in iter_frames(data_dir) if isinstance(s.frame.event, GatewayError)]
    assert [e.kind for e in errors] == ["upstream_refused"]


async def test_upstream_timeout_is_504(start_gateway: GatewayFactory, data_dir: Path) -> None:
    async with start_gateway(upstream_read_timeout_s=0.3) as gw, client(gw.port) as llm:
        with pytest.raises(openai.APIStatusError) as info:
            await llm.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "mock:slow-first-token"}]
            )
    assert info.value.status_code == 504
    errors = [s.frame.event for s in iter_frames(data_dir) if isinstance(s.frame.event, GatewayError)]
    assert [e.kind for e in errors] == ["upstream_timeout"]


async def test_sessions_by_header_and_by_client(start_gateway: GatewayFactory, data_dir: Path) -> None:
    async with start_gateway() as gw, httpx.AsyncClient(timeout=10) as http:
        url = f"http://127.0.0.1:{gw.port}/v1/models"
        named = await http.get(url, headers={"X-Wardgate-Session": "agent-run-42"})
        first = await http.get(url)
        second = await http.get(url)
    assert named.headers["x-wardgate-session"] == "agent-run-42"
    assert first.headers["x-wardgate-session"] == second.headers["x-wardgate-session"] != "agent-run-42"
    assert first.headers["x-wardgate-exchange"] != second.headers["x-wardgate-exchange"]


async def test_keep_alive_both_sides_and_forwarding_headers(
    start_gateway: GatewayFactory, mock: MockLlm
) -> None:
    async with start_gateway() as gw, httpx.AsyncClient(timeout=10) as http:
        url = f"http://127.0.0.1:{gw.port}/v1/models"
        for _ in range(3):
            response = await http.get(url, headers={"Connection": "keep-alive", "Keep-Alive": "timeout=5"})
            assert response.status_code == 200
        pool = gw.contexts[0].pool
        assert gw.contexts[0].stats.connections == 1
        assert (pool.connects, pool.reuses) == (1, 2)
    names = {name.lower(): value for name, value in mock.last_request_headers}
    assert b"keep-alive" not in names
    assert names[b"x-forwarded-for"] == b"127.0.0.1"
    assert names[b"forwarded"].startswith(b"for=127.0.0.1;proto=http")
    assert names[b"host"] == f"127.0.0.1:{mock.port}".encode()


async def test_expect_100_continue(start_gateway: GatewayFactory, data_dir: Path) -> None:
    body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
    async with start_gateway() as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        async with asyncio.timeout(5):
            interim = await reader.readuntil(b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100 ")
        writer.write(body)
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        writer.close()


async def test_request_body_over_limit_mid_stream(start_gateway: GatewayFactory, mock: MockLlm) -> None:
    async with start_gateway(max_body_bytes=1000) as gw:
        chunked = b"".join(b"100\r\n" + b"x" * 256 + b"\r\n" for _ in range(8)) + b"0\r\n\r\n"
        response = await raw_exchange(
            gw.port, b"POST /v1/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked
        )
    assert status_of(response) == 413
    assert mock.requests == 0  # strict mode holds the body until it is complete and recorded


async def test_recording_survives_restart_and_index_rebuilds(
    start_gateway: GatewayFactory, data_dir: Path
) -> None:
    for word in ("aardvark", "pangolin"):
        async with start_gateway() as gw, client(gw.port) as llm:
            await llm.chat.completions.create(
                model="mock-gpt", messages=[{"role": "user", "content": f"tell me about the {word}"}]
            )
    verify = wardgate("verify", "--data-dir", str(data_dir))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    reindex = wardgate("reindex", "--data-dir", str(data_dir))
    assert reindex.returncode == 0, reindex.stderr
    search = wardgate("search", "pangolin", "--json", "--data-dir", str(data_dir))
    assert search.returncode == 0, search.stderr
    rows = [json.loads(line) for line in search.stdout.splitlines()]
    assert len(rows) == 1
    assert "pangolin" in rows[0]["prompt_text"]


async def test_reindex_refuses_while_gateway_runs(start_gateway: GatewayFactory, data_dir: Path) -> None:
    async with start_gateway():
        result = await asyncio.to_thread(wardgate, "reindex", "--data-dir", str(data_dir))
    assert result.returncode == 2
    assert b"gateway" in result.stderr.lower()


async def test_batched_mode_forwards_body_as_it_arrives(
    start_gateway: GatewayFactory, mock: MockLlm, data_dir: Path
) -> None:
    async with start_gateway(durability="batched") as gw, client(gw.port) as llm:
        done = await llm.chat.completions.create(
            model="mock-gpt", messages=[{"role": "user", "content": "batched"}]
        )
    assert done.choices
    failures = [s for s in iter_frames(data_dir) if isinstance(s.frame.event, ParseFailed)]
    assert failures == []
    assert os.listdir(data_dir / "segments")
