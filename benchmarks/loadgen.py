"""The load generator process: pre-built requests over raw uvloop transports, minimal response parsing.

Runs as its own process (``python -m benchmarks.loadgen``) so its CPU never counts against the gateway.
It reads one JSON command per line on stdin and answers on stdout; it never starts other processes and
never reads the gateway's files. Responses are parsed only as far as timing needs: the head, the
Content-Length or chunked framing, and SSE events counted by their blank-line terminators.
"""

from __future__ import annotations

import asyncio
import base64
import resource
import sys
import time
from collections.abc import Callable
from typing import Any, Final

import msgspec
import uvloop

PROGRESS_EVERY_S: Final = 0.25
# Connections not yet known to be accepted, at most: stays under asyncio's default accept backlog (100),
# past which the kernel drops SYNs and the client retries only after a second.
MAX_CONNECTING: Final = 64
_HEAD, _LENGTH, _SIZE, _DATA, _DATA_END, _TRAILER = range(6)


def percentiles(values: list[float], *qs: float) -> list[float]:
    """Nearest-rank percentiles (0 for an empty list)."""
    if not values:
        return [0.0 for _ in qs]
    ordered = sorted(values)
    last = len(ordered) - 1
    return [ordered[min(last, max(0, round(q / 100 * last)))] for q in qs]


def raise_nofile_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit: thousands of open streams need thousands of fds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Job:
    """One measured run: counters shared by all its connections, and when it is over."""

    def __init__(self, request: bytes, *, deadline: float | None, max_requests: int | None) -> None:
        self.request = request
        self.deadline = deadline
        self.max_requests = max_requests
        self.started = 0
        self.completed = 0
        self.errors = 0
        self.error_samples: list[str] = []
        self.events = 0
        self.body_bytes = 0
        self.latencies: list[float] = []
        self.ttfts: list[float] = []
        self.gaps: list[float] = []
        self.first_events = 0  # responses that have delivered their first SSE event
        self.last_done = 0.0
        self.live = 0
        self.all_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def may_start(self, now: float) -> bool:
        if self.max_requests is not None and self.started >= self.max_requests:
            return False
        return self.deadline is None or now < self.deadline

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what)

    def connection_finished(self) -> None:
        self.live -= 1
        if self.live == 0 and not self.all_done.done():
            self.all_done.set_result(None)


class Client(asyncio.Protocol):
    """One keep-alive connection: sends the job's request, parses the response, repeats."""

    def __init__(self, job: Job, on_first_event: Callable[[], None] | None = None) -> None:
        self.job = job
        self.on_first_event = on_first_event
        self.transport: asyncio.Transport | None = None
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buf = bytearray()
        self.state = _HEAD
        self.remaining = 0
        self.in_flight = False
        self.finished = False
        self.sent_at = 0.0
        self.first_event_at = 0.0
        self.last_event_at = 0.0
        self.last_byte_nl = False
        self.status = 0
        self.on_end: Callable[[], None] = lambda: None  # the connection left the job

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self.connected.done():
            self.connected.set_result(None)

    def send(self, now: float) -> None:
        if self.transport is None:
            raise RuntimeError("send before connection_made")
        self.job.started += 1
        self.in_flight = True
        self.state = _HEAD
        self.sent_at = now
        self.first_event_at = 0.0
        self.last_byte_nl = False
        self.transport.write(self.job.request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        buf = self.buf
        buf += data
        pos = 0
        end = len(buf)
        while pos < end:
            state = self.state
            if state == _HEAD:
                stop = buf.find(b"\r\n\r\n", pos)
                if stop < 0:
                    break
                head = bytes(buf[pos:stop]).lower()
                pos = stop + 4
                self.status = int(head[9:12])
                if b"\r\ntransfer-encoding: chunked" in head:
                    self.state = _SIZE
                else:
                    at = head.find(b"\r\ncontent-length:")
                    if at < 0:
                        self._fail("response without Content-Length or chunked framing")
                        return
                    line_end = head.find(b"\r\n", at + 2)
                    self.remaining = int(head[at + 17 : line_end if line_end > 0 else len(head)])
                    self.state = _LENGTH
                    if self.remaining == 0:
                        self._complete(now)
            elif state in (_LENGTH, _DATA):
                take = min(self.remaining, end - pos)
                self._body(buf, pos, pos + take, now)
                pos += take
                self.remaining -= take
                if self.remaining:
                    break
                if state == _LENGTH:
                    self._complete(now)
                else:
                    self.state = _DATA_END
            elif state == _DATA_END:
                if end - pos < 2:
                    break
                pos += 2
                self.state = _SIZE
            else:  # _SIZE or _TRAILER: one line each
                stop = buf.find(b"\r\n", pos)
                if stop < 0:
                    break
                line = buf[pos:stop]
                pos = stop + 2
                if state == _TRAILER:
                    if not line:
                        self._complete(now)
                    continue
                size = int(line.split(b";", 1)[0], 16)
                if size:
                    self.remaining = size
                    self.state = _DATA
                else:
                    self.state = _TRAILER
        del buf[:pos]

    def _body(self, buf: bytearray, start: int, stop: int, now: float) -> None:
        if start == stop:
            return
        job = self.job
        job.body_bytes += stop - start
        events = buf.count(b"\n\n", start, stop)
        if self.last_byte_nl and buf[start] == 10 and (stop - start < 2 or buf[start + 1] != 10):
            events += 1  # an event terminator split across reads or chunks
        self.last_byte_nl = buf[stop - 1] == 10
        if not events:
            return
        job.events += events
        if self.first_event_at == 0.0:
            self.first_event_at = now
            job.first_events += 1
            job.ttfts.append(now - self.sent_at)
            if self.on_first_event is not None:
                self.on_first_event()
            events -= 1
        else:
            job.gaps.append(now - self.last_event_at)
            events -= 1
        if events:
            job.gaps.extend([0.0] * events)
        self.last_event_at = now

    def _complete(self, now: float) -> None:
        job = self.job
        self.in_flight = False
        self.state = _HEAD
        if self.status == 200:
            job.completed += 1
            job.latencies.append(now - self.sent_at)
            job.last_done = now
        else:
            job.error(f"HTTP {self.status}")
        if job.may_start(now):
            self.send(now)
        else:
            self.finish()

    def _fail(self, what: str) -> None:
        self.job.error(what)
        self.finish()

    def finish(self) -> None:
        """Leave the job: close the connection and count it as done."""
        if not self.finished:
            self.finished = True
            self.job.connection_finished()
            self.on_end()
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connected.done():
            self.connected.set_exception(exc or ConnectionError("closed before connecting"))
        if not self.finished:
            if self.in_flight:
                self.job.error(f"connection lost mid-response: {exc or 'EOF'}")
            self.finish()


async def _connect_all(job: Job, host: str, port: int, n: int) -> list[Client]:
    """``n`` connections, established before the measured part starts (the target is idle then)."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(MAX_CONNECTING)
    clients: list[Client] = []

    async def one() -> None:
        client = Client(job)
        async with gate:
            try:
                await loop.create_connection(lambda: client, host, port)
            except OSError as exc:
                job.error(f"connect failed: {exc}")
                return
        clients.append(client)

    async with asyncio.TaskGroup() as tasks:
        for i in range(n):
            tasks.create_task(one(), name=f"connect-{i}")
    job.live = len(clients)
    if not clients:
        job.all_done.set_result(None)
    return clients


async def _open_streams(job: Job, host: str, port: int, n: int, ready: asyncio.Future[None]) -> None:
    """``n`` streams, each sent as soon as it connects; a slot frees when its first event arrives.

    A stream with its first event was certainly accepted, so the accept queue never overflows.
    """
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(MAX_CONNECTING)
    job.live = n

    async def one() -> None:
        await gate.acquire()
        slot: asyncio.Future[None] = loop.create_future()

        def first_event() -> None:
            if not slot.done():
                slot.set_result(None)
            if job.first_events == n and not ready.done():
                ready.set_result(None)

        client = Client(job, first_event)
        try:
            await loop.create_connection(lambda: client, host, port)
        except OSError as exc:
            job.error(f"connect failed: {exc}")
            job.connection_finished()
            gate.release()
            return
        client.on_end = lambda: None if slot.done() else slot.set_result(None)
        client.send(time.perf_counter())
        await slot
        gate.release()

    async with asyncio.TaskGroup() as tasks:
        for i in range(n):
            tasks.create_task(one(), name=f"stream-{i}")


def _summary(job: Job, op_started: float, started: float, cpu0: float) -> dict[str, Any]:
    lat = percentiles(job.latencies, 50, 99)
    ttft = percentiles(job.ttfts, 50, 99)
    gap = percentiles(job.gaps, 50, 99)
    return {
        "completed": job.completed,
        "errors": job.errors,
        "error_samples": job.error_samples,
        "elapsed_s": max(job.last_done - started, 1e-9) if job.completed else 0.0,
        "latency_ms": {"p50": lat[0] * 1e3, "p99": lat[1] * 1e3},
        "ttft_ms": {"p50": ttft[0] * 1e3, "p99": ttft[1] * 1e3},
        "gap_ms": {"p50": gap[0] * 1e3, "p99": gap[1] * 1e3, "mean": _mean(job.gaps) * 1e3},
        "events": job.events,
        "body_bytes": job.body_bytes,
        "cpu_s": time.process_time() - cpu0,
        "wall_s": time.perf_counter() - op_started,
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


class Worker:
    """Executes commands; ``emit`` writes one JSON line to the orchestrator."""

    def __init__(self, emit: Callable[[dict[str, Any]], None]) -> None:
        self.emit = emit

    async def _progress(self, job: Job) -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            self.emit({"progress": {"completed": job.completed, "body_bytes": job.body_bytes}})

    async def run(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Closed loop: ``concurrency`` connections, each sending the next request when one ends."""
        cpu0, op_started = time.process_time(), time.perf_counter()
        request = base64.b64decode(cmd["request"])
        job = Job(request, deadline=None, max_requests=cmd.get("max_requests"))
        clients = await _connect_all(job, cmd["host"], int(cmd["port"]), int(cmd["concurrency"]))
        started = time.perf_counter()
        duration = cmd.get("duration_s")
        job.deadline = None if duration is None else started + float(duration)
        async with asyncio.TaskGroup() as tasks:
            progress = tasks.create_task(self._progress(job), name="progress")
            for client in clients:
                if job.may_start(started):
                    client.send(started)
                else:
                    client.finish()
            await job.all_done
            progress.cancel()
        return _summary(job, op_started, started, cpu0)

    async def hold(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Open ``streams`` streams at once; say "ready" when every one has its first event, then wait."""
        cpu0, op_started = time.process_time(), time.perf_counter()
        n = int(cmd["streams"])
        job = Job(base64.b64decode(cmd["request"]), deadline=None, max_requests=n)
        started = time.perf_counter()
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        async with asyncio.TaskGroup() as tasks:
            progress = tasks.create_task(self._progress(job), name="progress")
            tasks.create_task(_open_streams(job, cmd["host"], int(cmd["port"]), n, ready), name="open")
            done = job.all_done
            await asyncio.wait([ready, done], return_when=asyncio.FIRST_COMPLETED)
            open_now = job.first_events - job.completed - job.errors
            self.emit({"ready": {"open": open_now, "ramp_s": time.perf_counter() - started}})
            await done
            progress.cancel()
        return _summary(job, op_started, started, cpu0)


async def serve(stdin: asyncio.StreamReader, emit: Callable[[dict[str, Any]], None]) -> None:
    worker = Worker(emit)
    decoder = msgspec.json.Decoder(dict[str, Any])
    while line := await stdin.readline():
        cmd = decoder.decode(line)
        match cmd.get("op"):
            case "run":
                emit({"result": await worker.run(cmd)})
            case "hold":
                emit({"result": await worker.hold(cmd)})
            case "quit":
                return
            case other:
                emit({"error": f"unknown op {other!r}"})


async def _main() -> None:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    encoder = msgspec.json.Encoder()
    out = sys.stdout.buffer

    def emit(message: dict[str, Any]) -> None:
        out.write(encoder.encode(message) + b"\n")
        out.flush()

    emit({"hello": {"nofile": raise_nofile_limit()}})
    await serve(stdin, emit)


if __name__ == "__main__":
    uvloop.run(_main())
