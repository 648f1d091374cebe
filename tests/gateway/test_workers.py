"""``wardgate serve --workers 2`` as real processes: traffic spread over both workers is recorded completely,
each worker's series verifies, reindex rebuilds the same index, a SIGKILLed worker comes back (its torn
tail recovered), and SIGTERM drains both."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import msgspec

from gateway.inspect import exchange_frames, response_parts
from gateway.mock_llm import MockLlm, MockLlmConfig
from parsers.events import ExchangeStarted, GatewayStarted, Recovered
from storage.assemble import ExchangeRecord
from storage.errors import DataDirBusy
from storage.index import SqliteIndex, index_path
from storage.lock import DataDirLock
from storage.query import ExchangeQuery
from storage.reader import iter_frames, iter_log
from storage.series import SUPERVISOR_SERIES, series_root
from tests.gateway.processes import ROOT, free_port, wait_port, wardgate

NO_KEEPALIVE = httpx.Limits(max_keepalive_connections=0)  # a new connection (new hash) per request


class Supervised:
    def __init__(self, proc: asyncio.subprocess.Process, port: int, admin: int, data_dir: Path) -> None:
        self.proc, self.port, self.admin, self.data_dir = proc, port, admin, data_dir

    async def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            return await self.proc.wait()


# The supervisor's admin listener is the console's: /metrics wants a metrics key unless made public.
PUBLIC_METRICS = "[admin]\npublic_metrics = true\n"


@asynccontextmanager
async def supervised(
    upstream: int, data_dir: Path, workers: int = 2, config: str = PUBLIC_METRICS
) -> AsyncIterator[Supervised]:
    port, admin = free_port(), free_port()
    config_file = data_dir.parent / "wardgate.toml"
    config_file.write_text(config)
    proc = await asyncio.create_subprocess_exec(
        *(
            sys.executable,
            "-m",
            "gateway.cli",
            "serve",
            "--workers",
            str(workers),
            "--config",
            str(config_file),
        ),
        *("--listen", f"127.0.0.1:{port}", "--upstream", f"http://127.0.0.1:{upstream}"),
        *("--data-dir", str(data_dir), "--admin-listen", f"127.0.0.1:{admin}", "--durability", "strict"),
        *("--log-level", "warning"),
        cwd=ROOT,
    )
    gateway = Supervised(proc, port, admin, data_dir)
    try:
        await wait_port(admin)  # the supervisor listens for admin once every worker serves
        await wait_port(port)
        yield gateway
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def chat(http: httpx.AsyncClient, port: int, n: int, *, stream: bool) -> tuple[str, bytes]:
    """One chat completion; returns the exchange id and the body bytes exactly as the client got them."""
    body = {"model": "m", "stream": stream, "messages": [{"role": "user", "content": f"request {n}"}]}
    async with http.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body) as response:
        data = b"".join([piece async for piece in response.aiter_raw()])
    assert response.status_code == 200, data
    return response.headers["x-wardgate-exchange"], data


def sse_events(body: bytes) -> int:
    return sum(1 for line in body.split(b"\n") if line.startswith(b"data: "))


async def indexed(data_dir: Path) -> dict[str, ExchangeRecord]:
    async with await SqliteIndex.open(index_path(data_dir), readonly=True) as index:
        return {r.exchange_id: r for r in await index.exchanges(ExchangeQuery(limit=10_000))}


async def admin_get(gw: Supervised, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(f"http://127.0.0.1:{gw.admin}{path}")


async def test_two_workers_record_concurrent_traffic_completely(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with (
        MockLlm(MockLlmConfig(tokens=12, token_delay_ms=1)) as mock,
        supervised(mock.port, data_dir) as gw,
        httpx.AsyncClient(timeout=20, limits=NO_KEEPALIVE) as http,
    ):
        results = await asyncio.gather(*(chat(http, gw.port, n, stream=n % 2 == 0) for n in range(40)))
        metrics = (await admin_get(gw, "/metrics")).text
        ready = await admin_get(gw, "/readyz")
        assert await gw.stop() == 0
    assert ready.status_code == 200, ready.text
    assert "wardgate_exchanges_total 40" in metrics  # summed over both workers
    assert "wardgate_workers 2" in metrics
    assert "wardgate_workers_scraped 2" in metrics

    client = dict(results)
    assert len(client) == 40  # exchange ids are unique across workers
    started = [
        s
        for s in iter_log(data_dir)
        if isinstance(s.frame.event, ExchangeStarted) and s.frame.exchange_id in client
    ]
    assert sorted(s.frame.exchange_id for s in started) == sorted(client)  # each recorded exactly once
    assert {s.series for s in started} == {0, 1}  # the kernel spread the connections over both workers
    assert (data_dir / "workers" / "1" / "segments").is_dir()

    records = await indexed(data_dir)
    assert set(records) == set(client)
    for exchange_id, body in client.items():
        record = records[exchange_id]
        assert (record.outcome, record.status) == ("complete", 200)
        assert record.response_bytes == len(body)
        if record.stream:
            assert record.chunks == sse_events(body) > 12  # every SSE message the client got, [DONE] too
        _, recorded = response_parts(exchange_frames(data_dir, record))  # what `replay --raw` writes
        assert b"".join(recorded) == body  # read back from the right worker's series
    for series in (0, 1):
        exchange_id = next(x for x, r in records.items() if r.series == series)
        replay = wardgate("replay", exchange_id, "--raw", "--data-dir", str(data_dir))
        assert replay.returncode == 0, replay.stderr
        assert replay.stdout == client[exchange_id]

    verify = wardgate("verify", "--data-dir", str(data_dir), "--json")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    reports = [msgspec.json.decode(line) for line in verify.stdout.splitlines()]
    assert [r["series"] for r in reports] == [0, 1, SUPERVISOR_SERIES]  # the supervisor's: console audit
    assert all(r["ok"] for r in reports)
    assert all(r["anchored"] and r["unanchored"] is None for r in reports[:2])
    assert sum(r["frames"] for r in reports) == sum(1 for _ in iter_log(data_dir))

    reindex = wardgate("reindex", "--data-dir", str(data_dir))
    assert reindex.returncode == 0, reindex.stderr
    assert await indexed(data_dir) == records


def worker_pid(data_dir: Path, series: int) -> int:
    """The pid the newest GatewayStarted record of ``series`` names."""
    pids = [
        s.frame.event.pid
        for s in iter_frames(data_dir, series=series)
        if isinstance(s.frame.event, GatewayStarted)
    ]
    return pids[-1]


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout_s: float = 30) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            if await condition():
                return
            await asyncio.sleep(0.05)


async def test_a_killed_worker_comes_back_recovered_and_sigterm_drains_both(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with (
        MockLlm(MockLlmConfig(tokens=30, token_delay_ms=20)) as mock,
        supervised(mock.port, data_dir) as gw,
        httpx.AsyncClient(timeout=20, limits=NO_KEEPALIVE) as http,
    ):
        await asyncio.gather(*(chat(http, gw.port, n, stream=True) for n in range(10)))
        victim = worker_pid(data_dir, 1)
        segments = sorted((series_root(data_dir, 1) / "segments").glob("*.wgseg"))
        # Freeze the supervisor so the kill and the torn write land before the restart.
        gw.proc.send_signal(signal.SIGSTOP)
        try:
            os.kill(victim, signal.SIGKILL)

            async def dead() -> bool:
                return _dead(victim)

            await wait_for(dead)
            with segments[-1].open("ab") as f:
                f.write(b"\x40\x00\x00\x00\x01\x02")  # half a record head: what a crash mid-write leaves
        finally:
            gw.proc.send_signal(signal.SIGCONT)

        async def restarted() -> bool:
            metrics = (await admin_get(gw, "/metrics")).text
            ready = await admin_get(gw, "/readyz")
            return "wardgate_worker_restarts_total 1" in metrics and ready.status_code == 200

        await wait_for(restarted)
        assert worker_pid(data_dir, 1) != victim
        after = await asyncio.gather(*(chat(http, gw.port, n, stream=n % 2 == 0) for n in range(20)))

        # Then SIGTERM with streams in flight on both workers: each drains its own.
        streams: list[asyncio.Future[tuple[str, bytes]]] = []
        since_ns = time.time_ns()

        async def on_both_workers() -> bool:
            streams.append(asyncio.ensure_future(chat(http, gw.port, len(streams), stream=True)))
            await asyncio.sleep(0.05)
            started = {
                s.series
                for s in iter_log(data_dir)
                if isinstance(s.frame.event, ExchangeStarted) and s.frame.ts_ns >= since_ns
            }
            return started == {0, 1}

        await wait_for(on_both_workers, timeout_s=10)
        gw.proc.send_signal(signal.SIGTERM)
        bodies = await asyncio.gather(*streams)
        async with asyncio.timeout(30):
            assert await gw.proc.wait() == 0

    for _, body in bodies:
        assert body.endswith(b"data: [DONE]\n\n")  # every stream in flight finished
    torn = list((series_root(data_dir, 1) / "recovered").glob("*.torn"))
    assert [p.read_bytes() for p in torn] == [b"\x40\x00\x00\x00\x01\x02"]
    recovered = [
        s.frame.event for s in iter_frames(data_dir, series=1) if isinstance(s.frame.event, Recovered)
    ]
    assert [(r.kind, r.bytes_cut) for r in recovered] == [("torn_tail", 6)]
    records = await indexed(data_dir)
    assert all(records[x].outcome == "complete" for x, _ in after + bodies)
    assert {records[x].series for x, _ in bodies} == {0, 1}
    verify = wardgate("verify", "--data-dir", str(data_dir))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert b"series 1: OK" in verify.stdout


def _dead(pid: int) -> bool:
    """Gone, or a zombie its (stopped) parent has not reaped yet."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_a_worker_that_cannot_start_stops_the_gateway(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    broken = series_root(data_dir, 1) / "segments" / "000000000001.wgseg"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a segment header, not at all: worker 1 cannot open its log")
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "gateway.cli", "serve", "--workers", "2", "--listen", "127.0.0.1:0"),
        *("--data-dir", str(data_dir), "--admin-listen", "", "--upstream", "http://127.0.0.1:9"),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        _, stderr = await proc.communicate()
    assert proc.returncode == 1, stderr
    assert b"bad magic" in stderr
    assert b"worker 1 failed to start" in stderr
    with DataDirLock(data_dir):  # every worker is gone: nothing holds the lock any more
        pass


async def test_workers_of_a_killed_supervisor_drain_and_free_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with (
        MockLlm(MockLlmConfig(tokens=4)) as mock,
        supervised(mock.port, data_dir) as gw,
        httpx.AsyncClient(timeout=20, limits=NO_KEEPALIVE) as http,
    ):
        done = await asyncio.gather(*(chat(http, gw.port, n, stream=False) for n in range(6)))
        gw.proc.kill()
        await gw.proc.wait()
        lock = DataDirLock(data_dir)

        async def free() -> bool:
            try:
                lock.acquire()  # held while any worker still writes: they inherited it
            except DataDirBusy:
                return False
            return True

        await wait_for(free)
        lock.release()
    records = await indexed(data_dir)  # each worker's follower made its last pass
    assert all(records[x].outcome == "complete" for x, _ in done)
    verify = wardgate("verify", "--data-dir", str(data_dir))
    assert verify.returncode == 0, verify.stdout + verify.stderr
