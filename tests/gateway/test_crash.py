"""Crash safety: SIGKILL the gateway process at random points under concurrent streaming, many times.

After every kill it restarts on the same data dir. At the end: the log verifies, every exchange a
client saw complete is in the index, and (strict mode) every request the upstream received is in the log.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from parsers.events import BodyChunk, Direction, MessageEnd, RequestHead, ResponseHead
from parsers.http1 import Http1Connection, Role
from storage.index import SqliteIndex, index_path
from storage.reader import iter_frames
from tests.gateway.processes import free_port, wait_port, wardgate

ROUNDS = 6
CLIENTS = 6


class RecordingUpstream:
    """A tiny SSE upstream that remembers every request id it received."""

    def __init__(self) -> None:
        self.received: set[str] = set()
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        http = Http1Connection(Role.SERVER)
        try:
            while True:
                head: RequestHead | None = None
                ended = False
                while not ended:
                    data = await reader.read(65536)
                    if not data:
                        return
                    for event in http.feed(data):
                        if isinstance(event, RequestHead):
                            head = event
                        ended = ended or isinstance(event, MessageEnd)
                assert head is not None
                test_id = dict((n.lower(), v) for n, v in head.headers)[b"x-test-id"].decode()
                self.received.add(test_id)
                head_out = ResponseHead(
                    status=200, reason=b"OK", headers=[(b"content-type", b"text/event-stream")]
                )
                writer.write(http.send(head_out))
                for i in range(20):
                    token = b'data: {"choices":[{"delta":{"content":"t%d "}}]}\n\n' % i
                    writer.write(http.send(BodyChunk(data=token)))
                    await writer.drain()
                    await asyncio.sleep(0.003)
                writer.write(http.send(BodyChunk(data=b"data: [DONE]\n\n")) + http.send(MessageEnd()))
                await writer.drain()
                http.next_cycle()
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()


async def client_loop(port: int, prefix: str, completed: set[str], progress: asyncio.Event) -> None:
    """Stream requests back to back until the gateway dies under us."""
    async with httpx.AsyncClient(timeout=5) as http:
        for n in range(1000):
            test_id = f"{prefix}-{n}"
            try:
                async with http.stream(
                    "POST",
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    headers={"X-Test-Id": test_id},
                    json={"model": "m", "stream": True, "messages": [{"role": "user", "content": test_id}]},
                ) as response:
                    body = b"".join([piece async for piece in response.aiter_raw()])
            except httpx.HTTPError:
                return
            if response.status_code == 200 and body.endswith(b"data: [DONE]\n\n"):
                completed.add(response.headers["x-wardgate-exchange"])
                progress.set()


def start_gateway_process(port: int, upstream: int, data_dir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(serve_cmd(port, upstream, data_dir), stderr=subprocess.PIPE)


def serve_cmd(port: int, upstream: int, data_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "gateway.cli", "serve",
        "--listen", f"127.0.0.1:{port}", "--upstream", f"http://127.0.0.1:{upstream}",
        "--data-dir", str(data_dir), "--durability", "strict", "--admin-listen", "", "--log-level", "warning",
        "--workers", "1",
    ]  # fmt: skip


async def test_sigkill_at_random_points(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("WARDGATE_CRASH_SEED", "7")))
    upstream = RecordingUpstream()
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    upstream_port = server.sockets[0].getsockname()[1]
    data_dir = tmp_path / "data"
    completed: set[str] = set()
    async with server:
        for round_no in range(ROUNDS + 1):
            port = free_port()
            proc = start_gateway_process(port, upstream_port, data_dir)
            try:
                await wait_port(port, proc)
                if round_no == ROUNDS:
                    break  # the last start only recovers and indexes; it is stopped cleanly below
                progress = asyncio.Event()
                clients = [
                    asyncio.ensure_future(client_loop(port, f"r{round_no}c{c}", completed, progress))
                    for c in range(CLIENTS)
                ]
                async with asyncio.timeout(15):  # the kill lands in full flow, not during startup
                    await progress.wait()
                await asyncio.sleep(rng.uniform(0.0, 0.5))
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
                async with asyncio.timeout(15):
                    await asyncio.gather(*clients)
            finally:
                if proc.poll() is None and round_no != ROUNDS:
                    proc.kill()
                    proc.wait(timeout=10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0

    verify = wardgate("verify", "--data-dir", str(data_dir), "--json")
    assert verify.returncode == 0, verify.stdout + verify.stderr

    forwarded: set[str] = set()
    for stored in iter_frames(data_dir):
        event = stored.frame.event
        if isinstance(event, RequestHead) and stored.frame.direction == Direction.TO_UPSTREAM:
            forwarded.add(dict((n.lower(), v) for n, v in event.headers)[b"x-test-id"].decode())
    # Strict mode: nothing reached the upstream before its request was on disk.
    assert upstream.received <= forwarded, sorted(upstream.received - forwarded)[:5]

    async with await SqliteIndex.open(index_path(data_dir), readonly=True) as index:
        missing = [x for x in sorted(completed) if await index.exchange(x) is None]
    assert missing == [], f"{len(missing)} of {len(completed)} completed exchanges not indexed: {missing[:5]}"
    json.loads(verify.stdout.splitlines()[-1])
