"""The load generator process: pre-built requests over raw uvloop transports, minimal response parsing.

Runs as its own process (``python -m benchmarks.loadgen``) so its CPU never counts against the gateway.
It reads one JSON command per line on stdin and answers on stdout; it never starts other processes and
never reads the gateway's files. Responses are parsed only as far as timing needs: the head, the
Content-Length or chunked framing, and SSE events counted by their blank-line terminators. A command may
ask for TLS (trusting a given CA, ALPN http/1.1 or h2) and for HTTP/2 (``loadgen_h2``).
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import sys
import time
from collections.abc import Callable
from typing import Any, Final, NamedTuple, Protocol

import msgspec
import uvloop

from benchmarks.certs import client_context
from benchmarks.loadgen_h2 import H2Client, h2_request
from benchmarks.loadjob import MAX_CONNECTING, Job, Response, percentiles, raise_nofile_limit

PROGRESS_EVERY_S: Final = 0.25
_HEAD, _LENGTH, _SIZE, _DATA, _DATA_END, _TRAILER = range(6)


class Dial(NamedTuple):
    """Where the job's connections go, and over TLS with which client context."""

    host: str
    port: int
    tls: ssl.SSLContext | None = None

    async def connect(self, protocol: asyncio.Protocol) -> None:
        """Connected (and, over TLS, handshaken) when it returns. Raises: OSError, ssl.SSLError."""
        await asyncio.get_running_loop().create_connection(
            lambda: protocol,
            self.host,
            self.port,
            ssl=self.tls,
            server_hostname=self.host if self.tls else None,
        )


class Client(asyncio.Protocol):
    """One keep-alive connection: sends the job's request, parses the response, repeats."""

    def __init__(self, job: Job, on_first_event: Callable[[], None] | None = None) -> None:
        self.job = job
        self.response = Response(on_first_event)
        self.transport: asyncio.Transport | None = None
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buf = bytearray()
        self.state = _HEAD
        self.remaining = 0
        self.in_flight = False
        self.finished = False
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
        self.response.sent(now)
        self.transport.write(self.job.request)

    def start(self, now: float) -> None:
        """The measured part begins: send the first request, or leave when the job is already over."""
        if self.job.may_start(now):
            self.send(now)
        else:
            self.finish()

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
                self.response.status = int(head[9:12])
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
                self.response.body(self.job, buf, pos, pos + take, now)
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

    def _complete(self, now: float) -> None:
        job = self.job
        self.in_flight = False
        self.state = _HEAD
        job.complete(self.response, now)
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


class JobConnection(Protocol):
    """What the runner needs of a connection: begin the measured part, or leave the job."""

    def start(self, now: float) -> None: ...

    def finish(self) -> None: ...


async def _connect_all(
    job: Job, dial: Dial, n: int, make: Callable[[int], asyncio.Protocol]
) -> list[asyncio.Protocol]:
    """``n`` connections made by ``make(i)``, established before the measured part starts (the target
    is idle then)."""
    gate = asyncio.Semaphore(MAX_CONNECTING)
    clients: list[asyncio.Protocol] = []

    async def one(i: int) -> None:
        client = make(i)
        async with gate:
            try:
                await dial.connect(client)
            except (OSError, ssl.SSLError) as exc:
                job.error(f"connect failed: {exc}")
                return
        clients.append(client)

    async with asyncio.TaskGroup() as tasks:
        for i in range(n):
            tasks.create_task(one(i), name=f"connect-{i}")
    job.live = len(clients)
    if not clients:
        job.all_done.set_result(None)
    return clients


async def _open_streams(job: Job, dial: Dial, n: int, ready: asyncio.Future[None]) -> None:
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
            await dial.connect(client)
        except (OSError, ssl.SSLError) as exc:
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

    def __init__(
        self, emit: Callable[[dict[str, Any]], None], commands: asyncio.StreamReader | None = None
    ) -> None:
        self.emit = emit
        self.commands = commands  # where a "go" comes from, after a "connected" (``"connect_first"``)
        self._contexts: dict[tuple[str | None, str], ssl.SSLContext] = {}

    def dial(self, cmd: dict[str, Any]) -> Dial:
        """Host, port and (with ``"tls": {"ca": PATH or null}``) a client context, built once per CA."""
        tls = cmd.get("tls")
        if tls is None:
            return Dial(cmd["host"], int(cmd["port"]))
        # ALPN says which protocol the connection speaks: the gateway chooses its handler by it.
        alpn = "h2" if cmd.get("http") == "h2" else "http/1.1"
        key = (tls.get("ca"), alpn)
        if key not in self._contexts:
            self._contexts[key] = client_context(key[0], (alpn,))
        return Dial(cmd["host"], int(cmd["port"]), self._contexts[key])

    async def _progress(self, job: Job) -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            self.emit({"progress": {"completed": job.completed, "body_bytes": job.body_bytes}})

    async def run(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Closed loop: ``concurrency`` requests in flight, each followed by the next when it ends.

        HTTP/1.1: one connection per request in flight. HTTP/2 (``"http": "h2"``): the requests are
        streams spread over ``connections`` connections.
        """
        cpu0, op_started = time.process_time(), time.perf_counter()
        request = base64.b64decode(cmd["request"])
        job = Job(request, deadline=None, max_requests=cmd.get("max_requests"))
        dial, concurrency = self.dial(cmd), int(cmd["concurrency"])
        clients: list[JobConnection]
        if cmd.get("http") == "h2":
            head, body = h2_request(request, tls=dial.tls is not None)
            n = max(1, min(int(cmd.get("connections", 1)), concurrency))
            slots = [concurrency // n + (1 if i < concurrency % n else 0) for i in range(n)]
            made = await _connect_all(job, dial, n, lambda i: H2Client(job, slots[i], head, body))
            clients = [c for c in made if isinstance(c, H2Client)]
        else:
            made = await _connect_all(job, dial, concurrency, lambda i: Client(job))
            clients = [c for c in made if isinstance(c, Client)]
        if cmd.get("connect_first"):
            await self._connected(len(clients))
        started = time.perf_counter()
        duration = cmd.get("duration_s")
        job.deadline = None if duration is None else started + float(duration)
        async with asyncio.TaskGroup() as tasks:
            progress = tasks.create_task(self._progress(job), name="progress")
            for client in clients:
                client.start(started)
            await job.all_done
            progress.cancel()
        return _summary(job, op_started, started, cpu0)

    async def _connected(self, connections: int) -> None:
        """Say every connection is up (handshakes done), then wait for "go": the orchestrator reads the
        target's CPU in between, so connection setup and steady traffic are measured apart."""
        self.emit({"connected": {"connections": connections}})
        if self.commands is None:
            return
        line = await self.commands.readline()
        if msgspec.json.decode(line or b"{}", type=dict[str, Any]).get("op") != "go":
            raise RuntimeError(f"expected a go after connected, got {line!r}")

    async def hold(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Open ``streams`` streams at once; say "ready" when every one has its first event, then wait."""
        cpu0, op_started = time.process_time(), time.perf_counter()
        n = int(cmd["streams"])
        job = Job(base64.b64decode(cmd["request"]), deadline=None, max_requests=n)
        started = time.perf_counter()
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        async with asyncio.TaskGroup() as tasks:
            progress = tasks.create_task(self._progress(job), name="progress")
            tasks.create_task(_open_streams(job, self.dial(cmd), n, ready), name="open")
            done = job.all_done
            await asyncio.wait([ready, done], return_when=asyncio.FIRST_COMPLETED)
            open_now = job.first_events - job.completed - job.errors
            self.emit({"ready": {"open": open_now, "ramp_s": time.perf_counter() - started}})
            await done
            progress.cancel()
        return _summary(job, op_started, started, cpu0)


async def serve(stdin: asyncio.StreamReader, emit: Callable[[dict[str, Any]], None]) -> None:
    worker = Worker(emit, stdin)
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
