"""``wardgate serve --workers N``: N gateway worker processes under one supervisor, which serves no traffic.

Sockets: the supervisor binds one SO_REUSEPORT listening socket per worker and listener, all on the same
address, and keeps its copies open. The kernel spreads new connections over them by hash (no thundering
herd, no accept lock), port 0 resolves once for every worker, and a worker that dies loses no queued
connection: its socket and backlog stay open here and the restarted worker takes them over.
Lock: the supervisor takes the data-dir lock and every worker inherits the locked descriptor, so the
lock is held while any process of this gateway still writes. Workers run in their own session (a
terminal's Ctrl-C reaches only the supervisor); SIGTERM/SIGINT and SIGHUP are forwarded to each of them.
Admin: the supervisor serves the auditor console (``gateway.supervisor_console``) over every worker's
series, recording who looked in its own; its ``/metrics`` sums its workers' scrapes; ``/readyz`` is ready
when all of them are.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from gateway.admin import Readiness
from gateway.config import Config, split_host_port
from gateway.hold_channel import WorkerHolds, socket_path
from gateway.metrics import Exposition
from gateway.server import VERSION, Gateway, key_path
from gateway.supervisor_console import SupervisorConsole
from gateway.worker import READY, WorkerSpec
from storage.index import SqliteIndex, index_path
from storage.lock import DataDirLock
from storage.redact import load_or_create_key
from storage.signing import SigningKey, load_or_create_signing_key, signing_key_path

logger = logging.getLogger("wardgate.supervisor")

BACKLOG = 4096
RESTART_DELAY_S = 0.2
RESTART_MAX_DELAY_S = 5.0
STABLE_S = 10.0  # a worker that ran this long is restarted after the shortest delay again
SCRAPE_TIMEOUT_S = 2.0
WORKER_ADMIN = "127.0.0.1:0"  # each worker's own admin listener, for the supervisor's scrapes only
# Health gauges: the gateway is only as healthy as its least healthy worker.
_MINIMUM = frozenset({"wardgate_log_healthy", "wardgate_index_follower_up"})


@dataclass
class _Worker:
    number: int
    process: asyncio.subprocess.Process | None = None
    admin: tuple[str, int] | None = None
    ever_ready: bool = False
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    restarts: int = 0
    readiness: Readiness | None = None  # as last scraped
    metrics: str = ""


class Supervisor:
    """Runs ``workers`` worker processes until ``stop()``; ``await run()`` returns the exit code."""

    def __init__(
        self,
        config: Config,
        workers: int,
        *,
        log_level: str = "info",
        on_ready: Callable[[Supervisor], None] = lambda s: None,
    ) -> None:
        self.config = config
        self.log_level = log_level
        self.addresses: list[tuple[str, int]] = []
        self.admin_address: tuple[str, int] | None = None
        self.workers = [_Worker(number) for number in range(workers)]
        self._on_ready = on_ready
        self._stop = asyncio.Event()
        self._failure = 0  # exit code of a worker that failed to start

    def stop(self) -> None:
        """Forward SIGTERM to every worker: the first drains, a second cuts what is left."""
        self._stop.set()
        self._signal(signal.SIGTERM)

    def reload_tls(self) -> None:
        """Forward SIGHUP: every worker re-reads its TLS certificates and keys."""
        self._signal(signal.SIGHUP)

    def _signal(self, sig: signal.Signals) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(sig)

    async def run(self) -> int:
        data_dir = self.config.data_dir
        Gateway(self.config).load_tls()  # bad certificate files fail here, before anything is touched
        data_dir.mkdir(parents=True, exist_ok=True)
        with DataDirLock(data_dir) as lock:
            # Created once here, before the workers race to: keys, and the index schema.
            redact_key = load_or_create_key(key_path(data_dir))
            signing_key, created = load_or_create_signing_key(data_dir)
            if created:
                path, fingerprint = signing_key_path(data_dir), signing_key.public.fingerprint
                logger.warning("created the checkpoint signing key %s (%s)", path, fingerprint)
            index = await SqliteIndex.open(index_path(data_dir))
            await index.close()
            sockets = self._bind()
            try:
                await self._supervise(lock.fileno, sockets, redact_key, signing_key)
            finally:
                for sock in (s for per_worker in sockets for s in per_worker):
                    sock.close()
        return self._failure

    def _bind(self) -> list[list[socket.socket]]:
        """One listening socket per worker and listener: ``[worker][listener]``."""
        per_worker: list[list[socket.socket]] = [[] for _ in self.workers]
        try:
            for i, listener in enumerate(self.config.listeners):
                host, port = split_host_port(listener.listen, field=f"listeners[{i}].listen")
                family, _, _, _, address = socket.getaddrinfo(
                    host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
                )[0]
                for sockets in per_worker:
                    sock = socket.socket(family, socket.SOCK_STREAM)
                    sockets.append(sock)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                    if family == socket.AF_INET6:
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    sock.bind(address)
                    sock.listen(BACKLOG)
                    address = sock.getsockname()  # port 0 resolved: the other workers bind the same
                self.addresses.append((str(address[0]), int(address[1])))
        except BaseException:
            for sock in (s for sockets in per_worker for s in sockets):
                sock.close()
            raise
        return per_worker

    async def _supervise(
        self, lock_fd: int, sockets: list[list[socket.socket]], redact_key: bytes, signing_key: SigningKey
    ) -> None:
        console: SupervisorConsole | None = None
        async with asyncio.TaskGroup() as tasks:
            for worker, own in zip(self.workers, sockets, strict=True):
                run = self._keep_running(worker, lock_fd, [s.fileno() for s in own])
                tasks.create_task(run, name=f"worker-{worker.number}")
            stopped = asyncio.ensure_future(self._stop.wait())
            all_ready = asyncio.ensure_future(asyncio.gather(*(w.ready.wait() for w in self.workers)))
            waiters: set[asyncio.Future[Any]] = {stopped, all_ready}
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            all_ready.cancel()
            if not self._stop.is_set():
                if self.config.admin.listen:
                    console = await SupervisorConsole.open(
                        self.config,
                        redact_key=redact_key,
                        signing_key=signing_key,
                        readiness=self.readiness,
                        metrics=self.metrics,
                        refresh=self.scrape,
                        version=VERSION,
                        holds=WorkerHolds(self._hold_sockets),
                    )
                    console.start(tasks)
                    self.admin_address = console.address
                logger.info("%d workers serving", len(self.workers))
                self._on_ready(self)
            await stopped
            if console is not None:
                await console.close()
            # The workers close their copies as they drain; once ours are closed too, connecting is refused.
            for sock in (s for own in sockets for s in own):
                sock.close()

    async def _keep_running(self, worker: _Worker, lock_fd: int, fds: list[int]) -> None:
        loop = asyncio.get_running_loop()
        delay = RESTART_DELAY_S
        config = self.config
        if config.admin.listen:
            config = msgspec.structs.replace(
                config, admin=msgspec.structs.replace(config.admin, listen=WORKER_ADMIN)
            )
        spec = WorkerSpec(
            config=config,
            worker=worker.number,
            workers=len(self.workers),
            listen_fds=fds,
            log_level=self.log_level,
        )
        line = msgspec.json.encode(spec) + b"\n"
        while True:
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway.cli",
                "worker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                pass_fds=(lock_fd, *fds),
                start_new_session=True,
            )
            started = loop.time()
            worker.process = child
            assert child.stdin is not None
            child.stdin.write(line)  # the pipe stays open: its EOF tells the worker the supervisor is gone
            if self._stop.is_set():
                child.send_signal(signal.SIGTERM)  # a stop that came while it was being started
            await self._read_status(worker, child)
            code = await child.wait()
            worker.process, worker.admin, worker.readiness = None, None, None
            worker.ready.clear()
            child.stdin.close()
            if self._stop.is_set():
                if code:
                    logger.error("worker %d exited with %s while stopping", worker.number, code)
                return
            if not worker.ever_ready:
                logger.error("worker %d failed to start (exit code %s); stopping", worker.number, code)
                self._failure = code or 1
                self.stop()
                return
            worker.restarts += 1
            if loop.time() - started >= STABLE_S:
                delay = RESTART_DELAY_S
            logger.error("worker %d exited with %s; restarting it in %.1f s", worker.number, code, delay)
            try:
                async with asyncio.timeout(delay):
                    await self._stop.wait()
                return
            except TimeoutError:
                delay = min(delay * 2, RESTART_MAX_DELAY_S)

    async def _read_status(self, worker: _Worker, child: asyncio.subprocess.Process) -> None:
        assert child.stdout is not None
        while line := await child.stdout.readline():
            words = line.split()
            if len(words) == 2 and words[0] == READY and words[1].startswith(b"admin="):
                host, _, port = words[1][len(b"admin=") :].decode().rpartition(":")
                worker.admin = (host, int(port)) if host else None
                worker.ever_ready = True
                worker.ready.set()

    # --- admin ------------------------------------------------------------------------------------

    def _hold_sockets(self) -> list[Path]:
        """The held-call sockets of the workers serving now (a dead one's holds died with it)."""
        if not self.config.approvals.rules:
            return []  # nothing is ever held: the workers serve no socket
        data_dir = self.config.data_dir
        return [socket_path(data_dir, w.number) for w in self.workers if w.ready.is_set()]

    async def scrape(self) -> None:
        """Ask every worker for its readiness and metrics (what ``readiness``/``metrics`` then report)."""
        await asyncio.gather(*(self._scrape(worker) for worker in self.workers))

    async def _scrape(self, worker: _Worker) -> None:
        worker.readiness, worker.metrics = None, ""
        if worker.admin is None:
            return
        try:
            async with asyncio.timeout(SCRAPE_TIMEOUT_S):
                status, body = await _get(worker.admin, b"/readyz")
                reasons = msgspec.json.decode(body, type=dict[str, object]).get("reasons", [])
                worker.readiness = Readiness(
                    ready=status == 200,
                    reasons=tuple(str(r) for r in reasons) if isinstance(reasons, list) else (),
                )
                status, body = await _get(worker.admin, b"/metrics")
                worker.metrics = body.decode() if status == 200 else ""
        except (OSError, TimeoutError, ValueError, msgspec.DecodeError) as exc:
            logger.warning("worker %d did not answer its admin scrape: %s", worker.number, exc)

    def readiness(self) -> Readiness:
        reasons: list[str] = []
        if self._stop.is_set():
            reasons.append("shutting down")
        for worker in self.workers:
            if worker.readiness is None:
                reasons.append(f"worker {worker.number}: not running or not answering")
            elif not worker.readiness.ready:
                reasons += [f"worker {worker.number}: {reason}" for reason in worker.readiness.reasons]
        return Readiness(ready=not reasons, reasons=tuple(reasons))

    def metrics(self, out: Exposition) -> None:
        out.merged([w.metrics for w in self.workers if w.metrics], minimum=_MINIMUM)
        out.metric("wardgate_workers", "gauge", "Worker processes configured", len(self.workers))
        out.metric(
            "wardgate_workers_scraped",
            "gauge",
            "Workers whose metrics this scrape sums",
            sum(1 for w in self.workers if w.metrics),
        )
        out.metric(
            "wardgate_worker_restarts_total",
            "counter",
            "Workers restarted after they died",
            sum(w.restarts for w in self.workers),
        )


async def _get(address: tuple[str, int], path: bytes) -> tuple[int, bytes]:
    """One GET to a worker's admin listener, which answers with Connection: close and closes.

    Raises:
        OSError, ValueError: no answer, or not an HTTP response.
    """
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(b"GET %s HTTP/1.1\r\nHost: worker\r\nConnection: close\r\n\r\n" % path)
        data = await reader.read()
    finally:
        writer.close()
    head, separator, body = data.partition(b"\r\n\r\n")
    words = head.split(b" ", 2)
    if not separator or len(words) < 2 or not words[0].startswith(b"HTTP/"):
        raise ValueError(f"not an HTTP response from {address[0]}:{address[1]}")
    return int(words[1]), body


__all__ = ["Supervisor"]
