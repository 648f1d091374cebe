"""Graceful shutdown of a real gateway process: SIGTERM drains streams in flight; a second SIGTERM cuts."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from gateway.mock_llm import MockLlm, MockLlmConfig
from parsers.events import ExchangeEnded, RequestHead
from storage.reader import iter_frames
from tests.gateway.processes import ROOT, free_port, wait_port, wardgate


def start(port: int, upstream: int, data_dir: Path) -> subprocess.Popen[bytes]:
    listen, upstream_url = f"127.0.0.1:{port}", f"http://127.0.0.1:{upstream}"
    command = ["serve", "--listen", listen, "--upstream", upstream_url, "--data-dir", str(data_dir)]
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", *command, "--admin-listen", "", "--workers", "1"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
    )


def verify(data_dir: Path) -> subprocess.CompletedProcess[bytes]:
    return wardgate("verify", "--data-dir", str(data_dir))


async def stream_body(http: httpx.AsyncClient, port: int, started: asyncio.Event | None = None) -> bytes:
    async with http.stream(
        "POST",
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "drain me"}]},
    ) as response:
        pieces: list[bytes] = []
        async for piece in response.aiter_raw():
            pieces.append(piece)
            if started is not None:
                started.set()
        return b"".join(pieces)


async def refused_soon(port: int, within_s: float) -> bool:
    """True once a new connection is refused; polls, since the signal lands at the gateway's pace.

    Each probe opens its own connection: a pooled keep-alive one would be closed by the drain and
    read as a disconnect, not a refusal. A connection accepted just as the drain begins may be cut
    the same way, so a disconnect means "try again", not a failure.
    """
    deadline = asyncio.get_running_loop().time() + within_s
    no_reuse = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=2, limits=no_reuse) as probe:
        while asyncio.get_running_loop().time() < deadline:
            try:
                await probe.get(f"http://127.0.0.1:{port}/v1/models")
            except httpx.ConnectError:
                return True
            except httpx.RemoteProtocolError:
                pass
            await asyncio.sleep(0.05)
    return False


async def test_sigterm_lets_streams_in_flight_finish(tmp_path: Path) -> None:
    port = free_port()
    # 120 tokens 25 ms apart: the streams outlast the signal's arrival and the refusal check below.
    async with MockLlm(MockLlmConfig(tokens=120, token_delay_ms=25)) as mock:
        proc = start(port, mock.port, tmp_path / "data")
        try:
            await wait_port(port)
            async with httpx.AsyncClient(timeout=10) as http:
                started = [asyncio.Event() for _ in range(4)]
                streams = [asyncio.ensure_future(stream_body(http, port, s)) for s in started]
                async with asyncio.timeout(10):  # every stream is under way before the signal
                    await asyncio.gather(*(s.wait() for s in started))
                proc.send_signal(signal.SIGTERM)
                refused = await refused_soon(port, within_s=2.0)
                bodies = await asyncio.gather(*streams)
            code = await asyncio.to_thread(proc.wait, 30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code == 0
    assert refused  # no new connections once shutting down
    assert all(body.endswith(b"data: [DONE]\n\n") for body in bodies)
    frames = [s.frame for s in iter_frames(tmp_path / "data")]
    # Only the four streams: the refusal probe's GETs answered before the signal landed end too.
    chats = {
        f.exchange_id
        for f in frames
        if isinstance(f.event, RequestHead) and f.event.target == b"/v1/chat/completions"
    }
    outcomes = [
        f.event.outcome for f in frames if isinstance(f.event, ExchangeEnded) and f.exchange_id in chats
    ]
    assert len(chats) == 4
    assert outcomes == ["complete"] * 4
    assert verify(tmp_path / "data").returncode == 0


async def test_second_sigterm_cuts_and_leaves_a_valid_log(tmp_path: Path) -> None:
    port = free_port()
    async with MockLlm(MockLlmConfig(tokens=400, token_delay_ms=25)) as mock:
        proc = start(port, mock.port, tmp_path / "data")
        try:
            await wait_port(port)
            async with httpx.AsyncClient(timeout=10) as http:
                stream = asyncio.ensure_future(stream_body(http, port))
                await asyncio.sleep(0.3)
                proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.2)
                proc.send_signal(signal.SIGTERM)
                code = await asyncio.to_thread(proc.wait, 10)  # well before the 10 s stream would end
                try:
                    body = await stream
                except httpx.HTTPError:
                    body = b""
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code == 0
    assert not body.endswith(b"data: [DONE]\n\n")
    assert verify(tmp_path / "data").returncode == 0
