"""The running gateway: owns the data dir, the recorder, the index follower and the listeners.

Startup order matters: load the TLS material (bad files fail before anything is touched), take the
data-dir lock, recover the log tail, open the index, then listen. Shutdown runs in reverse and leaves
the log synced and indexed. As one of several worker processes (``gateway.supervisor``) it writes its own
segment series and serves on listening sockets the supervisor bound; the supervisor holds the lock.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from pathlib import Path
from typing import NamedTuple

from gateway.admin import AdminServer, Readiness
from gateway.approvals.guard import GuardSettings, guard_settings
from gateway.approvals.registry import HoldRegistry
from gateway.config import Config, ConfigError, parse_upstream, split_host_port
from gateway.console import AdminListener, Credentials
from gateway.dispatch import AnyConnection, accept
from gateway.h2_connection import H2ClientConnection
from gateway.h2_upstream import H2UpstreamPool
from gateway.hold_channel import HoldChannel, socket_path
from gateway.hold_source import LocalHolds
from gateway.identity.access import AccessControl
from gateway.ids import new_id
from gateway.indexer import FollowerProcess
from gateway.masking import MaskingPlan, record_masking
from gateway.metrics import Exposition, Histogram
from gateway.proxy import ProxyContext
from gateway.recorder import Recorder
from gateway.retention import retention_loop
from gateway.sessions import SessionTracker
from gateway.tls import ALPN_H2, UPSTREAM_ALPN, ServerTls, upstream_context
from gateway.upstream import UpstreamPool
from parsers.events import GatewayStarted
from storage.index import SqliteIndex, index_path
from storage.lock import DataDirLock
from storage.redact import load_or_create_key
from storage.retention import RetentionPolicy
from storage.segments import SegmentLog
from storage.series import series_root
from storage.signing import SigningKey, load_or_create_signing_key, signing_key_path

logger = logging.getLogger("wardgate")
VERSION = importlib.metadata.version("wardgate")


def _summed(dicts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for d in dicts:
        for key, value in d.items():
            total[key] = total.get(key, 0) + value
    return total


def key_path(data_dir: Path) -> Path:
    return data_dir / "keys" / "fingerprint.key"


class WorkerRole(NamedTuple):
    """What makes a gateway one worker of several: its segment series and the listening sockets (one
    per listener, in config order) the supervisor bound and passed down."""

    series: int
    workers: int  # how many there are in all
    listen_fds: list[int]


class Gateway:
    """One gateway process: ``await run()`` serves until ``stop()``."""

    def __init__(
        self,
        config: Config,
        *,
        on_ready: Callable[[Gateway], None] = lambda gw: None,
        worker: WorkerRole | None = None,
        credentials: Credentials | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.worker = worker
        self.credentials = credentials  # the admin console's; default: the data plane's authenticator
        self._environ: Mapping[str, str] = environ or {}  # for the upstream credential's variable
        self.access: AccessControl | None = None
        self.masking: MaskingPlan | None = None
        self.guard: GuardSettings | None = None  # approval rules and client-scope masking of responses
        self._on_ready = on_ready
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._connections: set[AnyConnection] = set()
        self._force = False
        self.addresses: list[tuple[str, int]] = []
        self.contexts: list[ProxyContext] = []
        self.tls: list[ServerTls | None] = []  # per listener: its TLS termination, None for plaintext
        self._upstream_tls: list[ssl.SSLContext | None] = []
        self.recorder: Recorder | None = None
        self.index: SqliteIndex | None = None
        self.indexer = FollowerProcess(config.data_dir, series=worker.series if worker else 0)
        self.admin_address: tuple[str, int] | None = None
        self.holds = HoldRegistry()  # tool calls held for a decision (decided through the admin API)
        self.write_seconds = Histogram()
        self.fsync_seconds = Histogram()

    @property
    def port(self) -> int:
        """The first listener's port (handy when it was bound to port 0)."""
        return self.addresses[0][1]

    def stop(self, *, force: bool = False) -> None:
        """Begin shutdown: stop accepting, let exchanges in flight finish. ``force`` cuts them now."""
        if force or self._stop.is_set():
            self._force = True
        self._stop.set()

    def load_tls(self) -> None:
        """Build every listener's TLS contexts. Raises ConfigError naming the listener's field."""
        self.tls, self._upstream_tls = [], []
        for i, listener in enumerate(self.config.listeners):
            field = f"listeners[{i}]"
            self.tls.append(ServerTls(listener, field=field) if listener.tls_cert else None)
            if not parse_upstream(listener.upstream, field=f"{field}.upstream").tls:
                self._upstream_tls.append(None)
                continue
            if listener.upstream_insecure:
                logger.warning(
                    "INSECURE: listener %s forwards to %s WITHOUT verifying its TLS certificate "
                    "(upstream_insecure = true): anyone on the path can read and alter the traffic",
                    listener.name,
                    listener.upstream,
                )
            self._upstream_tls.append(
                upstream_context(
                    ca_file=listener.upstream_ca,
                    insecure=listener.upstream_insecure,
                    field=field,
                    alpn=(ALPN_H2,) if listener.upstream_protocol == "h2" else UPSTREAM_ALPN,
                )
            )

    def reload_tls(self) -> None:
        """Re-read every listener's certificate and key (SIGHUP). A bad file keeps the previous ones."""
        if not any(self.tls):
            logger.info("no TLS listener: nothing to reload")
        for server_tls in self.tls:
            if server_tls is None:
                continue
            try:
                fingerprint = server_tls.reload()
            except ConfigError as exc:
                logger.error(
                    "listener %s: TLS reload failed, still serving the previous certificate: %s",
                    server_tls.name,
                    exc,
                )
                continue
            logger.info(
                "listener %s: TLS certificate reloaded from %s (sha256 %s)",
                server_tls.name,
                server_tls.cert_file,
                fingerprint,
            )

    async def run(self) -> None:
        cfg = self.config
        data_dir = cfg.data_dir
        self.load_tls()
        self.access = AccessControl.from_config(cfg, self._environ)  # a bad auth setting fails here
        self.masking = MaskingPlan(cfg.masking)  # every rule compiled once, here
        self.guard = guard_settings(
            cfg.approvals,
            self.masking,
            approver_groups=cfg.admin.approver_groups,
            registry=self.holds,
            max_body_bytes=cfg.limits.max_body_bytes,
        )
        data_dir.mkdir(parents=True, exist_ok=True)
        # A worker runs under its supervisor's lock (inherited: it stays held while any worker lives).
        lock: AbstractContextManager[object] = DataDirLock(data_dir) if self.worker is None else nullcontext()
        with lock:
            key = load_or_create_key(key_path(data_dir))
            signing_key, created = load_or_create_signing_key(data_dir)
            if created:
                path, fingerprint = signing_key_path(data_dir), signing_key.public.fingerprint
                logger.warning("created the checkpoint signing key %s (%s)", path, fingerprint)
            series = self.worker.series if self.worker else 0
            log = SegmentLog.open(
                series_root(data_dir, series), max_segment_bytes=cfg.storage.max_segment_bytes
            )
            if log.recovered_bytes:
                logger.warning(
                    "recovered the log%s: cut %d bytes of a torn tail",
                    f" (series {series})" if self.worker else "",
                    log.recovered_bytes,
                )
            try:
                index = await SqliteIndex.open(index_path(data_dir))
                try:
                    await self._serve(log, index, key, signing_key)
                finally:
                    await index.close()
            finally:
                log.close()

    async def _serve(self, log: SegmentLog, index: SqliteIndex, key: bytes, signing_key: SigningKey) -> None:
        cfg = self.config
        recorder = Recorder.from_storage(
            log,
            cfg.storage,
            redact_key=key,
            signing_key=signing_key,
            observe_write_s=self.write_seconds.observe,
            observe_sync_s=self.fsync_seconds.observe,
            masking=record_masking(self.config.masking),
        )
        # First record of this process: the index closes whatever a crashed predecessor left open.
        recorder.record_gateway_event(GatewayStarted(boot_id=new_id("b_"), pid=os.getpid(), version=VERSION))
        self.recorder, self.index = recorder, index
        sessions = SessionTracker(
            idle_timeout_s=cfg.sessions.idle_timeout_s, max_tracked=cfg.sessions.max_tracked
        )
        log_closed = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            writer = tasks.create_task(recorder.run(), name="recorder")
            tasks.create_task(self.indexer.run(log_closed), name="indexer")
            retention = cfg.retention
            if retention.max_age_s or retention.max_total_bytes:
                # Each worker keeps its own series within an equal share of the byte budget.
                workers = self.worker.workers if self.worker else 1
                policy = RetentionPolicy(
                    max_age_s=retention.max_age_s, max_total_bytes=-(-retention.max_total_bytes // workers)
                )
                loop = retention_loop(
                    cfg.data_dir,
                    recorder,
                    index,
                    policy,
                    stop=self._stop,
                    interval_s=retention.interval_s,
                    series=self.worker.series if self.worker else 0,
                )
                tasks.create_task(loop, name="retention")
            servers = [await self._listen(i, recorder, sessions) for i in range(len(cfg.listeners))]
            admin: AdminListener | None = None
            channel: HoldChannel | None = None
            if self.worker is not None and cfg.approvals.rules:
                # The supervisor's console asks every worker for its holds over this socket.
                channel = await HoldChannel.open(socket_path(cfg.data_dir, self.worker.series), self.holds)
            if cfg.admin.listen and self.worker is not None:
                # A worker's own listener only answers its supervisor's scrapes (the supervisor serves
                # health, metrics and the console).
                host, port = split_host_port(cfg.admin.listen, field="admin.listen")
                scrapes = AdminServer(self.readiness, self.metrics)
                servers.append(await asyncio.start_server(scrapes.handle, host, port))
                sock = servers[-1].sockets[0].getsockname()
                self.admin_address = (str(sock[0]), int(sock[1]))
            elif cfg.admin.listen:
                admin = await AdminListener.open(
                    cfg.admin,
                    data_dir=cfg.data_dir,
                    recorder=recorder,
                    # The data plane's authenticator (OIDC, API keys) unless the caller gave others.
                    credentials=self.credentials or (self.access.authenticator if self.access else None),
                    readiness=self.readiness,
                    metrics=self.metrics,
                    version=VERSION,
                    holds=LocalHolds(self.holds),
                    approvals=cfg.approvals,
                )
                admin.start(tasks)
                self.admin_address = admin.address
            self.ready.set()
            self._on_ready(self)
            await self._stop.wait()
            for server in servers:
                server.close()
            if admin is not None:
                await admin.close()  # before the recorder: it records who looked
            if channel is not None:
                await channel.close()
            await self._close_connections()
            for ctx in self.contexts:
                ctx.pool.close()
            recorder.close()
            await writer
            log_closed.set()  # the follower's last pass now sees every frame

    async def _listen(self, i: int, recorder: Recorder, sessions: SessionTracker) -> asyncio.Server:
        listener = self.config.listeners[i]
        limits = self.config.limits
        host, port = split_host_port(listener.listen, field=f"listeners[{i}].listen")
        upstream = parse_upstream(listener.upstream, field=f"listeners[{i}].upstream")
        server_tls = self.tls[i]
        ctx = ProxyContext(
            listener=listener.name,
            durability=listener.durability or self.config.storage.durability,
            limits=limits,
            recorder=recorder,
            sessions=sessions,
            pool=H2UpstreamPool(
                upstream.host,
                upstream.port,
                connect_timeout_s=limits.upstream_connect_timeout_s,
                max_head_bytes=limits.max_head_bytes,
                tls=self._upstream_tls[i],
            )
            if listener.upstream_protocol == "h2"
            else UpstreamPool(
                upstream.host,
                upstream.port,
                connect_timeout_s=limits.upstream_connect_timeout_s,
                max_idle=limits.upstream_pool_size,
                max_head_bytes=limits.max_head_bytes,
                tls=self._upstream_tls[i],
            ),
            upstream_authority=upstream.authority.encode(),
            upstream_prefix=upstream.prefix.encode(),
            access=self.access,
            masking=self.masking,
            guard=self.guard,
        )
        self.contexts.append(ctx)
        handler = functools.partial(self._handle, ctx)
        # A handshake is part of the request head's budget: a silent client cannot hold a slot.
        handshake_s = limits.header_timeout_s if server_tls else None
        tls_context = server_tls.context if server_tls else None
        if self.worker is not None:
            sock = socket.socket(fileno=self.worker.listen_fds[i])
            server = await asyncio.start_server(
                handler, sock=sock, limit=64 * 1024, ssl=tls_context, ssl_handshake_timeout=handshake_s
            )
        else:
            server = await asyncio.start_server(
                handler,
                host,
                port,
                limit=64 * 1024,
                backlog=4096,
                ssl=tls_context,
                ssl_handshake_timeout=handshake_s,
            )
        sock = server.sockets[0].getsockname()
        self.addresses.append((str(sock[0]), int(sock[1])))
        return server

    def readiness(self) -> Readiness:
        reasons = []
        if self.recorder is None or self.recorder.failure is not None:
            failure = self.recorder.failure if self.recorder else "not started"
            reasons.append(f"session log not writable: {failure}")
        if self._stop.is_set():
            reasons.append("shutting down")
        return Readiness(ready=not reasons, reasons=tuple(reasons))

    def metrics(self, out: Exposition) -> None:
        """One Prometheus scrape of everything the gateway counts."""
        stats = [ctx.stats for ctx in self.contexts]
        out.metric("wardgate_connections_open", "gauge", "Client connections open", len(self._connections))
        out.metric(
            "wardgate_connections_total",
            "counter",
            "Client connections accepted",
            sum(s.connections for s in stats),
        )
        out.metric(
            "wardgate_exchanges_total", "counter", "Requests received", sum(s.exchanges for s in stats)
        )
        busy = sum(
            len(conn.streams) if isinstance(conn, H2ClientConnection) else int(conn.busy)
            for conn in self._connections
        )
        out.metric("wardgate_exchanges_in_flight", "gauge", "Exchanges (streams included) in progress", busy)
        out.metric("wardgate_exchanges_ended_total", "counter", "Exchanges ended, by outcome")
        out.labelled("wardgate_exchanges_ended_total", "outcome", _summed(s.outcomes for s in stats))
        out.metric("wardgate_errors_total", "counter", "Answers and cuts the gateway made itself, by kind")
        out.labelled("wardgate_errors_total", "kind", _summed(s.errors for s in stats))
        out.metric(
            "wardgate_request_bytes_total",
            "counter",
            "Request body bytes",
            sum(s.request_bytes for s in stats),
        )
        out.metric(
            "wardgate_response_bytes_total",
            "counter",
            "Response body bytes",
            sum(s.response_bytes for s in stats),
        )
        pools = [ctx.pool for ctx in self.contexts]
        out.metric(
            "wardgate_upstream_connects_total",
            "counter",
            "New upstream connections",
            sum(p.connects for p in pools),
        )
        out.metric(
            "wardgate_upstream_reuses_total",
            "counter",
            "Kept-alive upstream reuses",
            sum(p.reuses for p in pools),
        )
        if self.recorder is not None:
            rec = self.recorder.stats
            out.metric(
                "wardgate_log_healthy",
                "gauge",
                "1 while the session log is writable",
                int(self.recorder.healthy),
            )
            out.metric(
                "wardgate_log_frames_total", "counter", "Frames written to the session log", rec.frames
            )
            out.metric("wardgate_log_bytes_total", "counter", "Frame payload bytes written", rec.bytes)
            out.metric("wardgate_log_syncs_total", "counter", "fsync calls (group commits)", rec.syncs)
            out.metric(
                "wardgate_log_backpressure_waits_total",
                "counter",
                "Times a connection waited for the log writer",
                rec.backpressure_waits,
            )
            lag = max(0, rec.frames - self.indexer.indexed_frames)
            out.metric("wardgate_index_lag_frames", "gauge", "Frames written but not yet indexed", lag)
        out.histogram("wardgate_log_write_seconds", "Time to write one batch of frames", self.write_seconds)
        out.histogram(
            "wardgate_log_fsync_seconds", "Time of one fsync of the session log", self.fsync_seconds
        )
        out.metric(
            "wardgate_index_follower_up",
            "gauge",
            "1 while the index follower process runs",
            int(self.indexer.running),
        )

    async def _handle(
        self, ctx: ProxyContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        conn = await accept(ctx, reader, writer)  # HTTP/1.1 or HTTP/2, by ALPN or the preface
        if conn is None:
            writer.transport.abort()
            return
        self._connections.add(conn)
        ctx.stats.connections += 1
        try:
            if len(self._connections) > self.config.limits.max_connections:
                await conn.refuse_overloaded()
            else:
                await conn.run()
        except Exception:
            logger.exception("connection %s from %s failed", conn.conn_id, conn.client_addr)
        finally:
            self._connections.discard(conn)
            writer.transport.abort()

    async def _close_connections(self) -> None:
        """Idle connections close now; exchanges in flight get ``shutdown_grace_s`` to finish."""
        for ctx in self.contexts:
            ctx.closing = True
        # Held tool calls are answered now, with a denial the agent can read, instead of being cut.
        self.holds.fail_all("the gateway is shutting down")
        for conn in list(self._connections):
            if isinstance(conn, H2ClientConnection):
                conn.begin_shutdown()  # refuse new streams; GOAWAY once the last one ends
        deadline = asyncio.get_running_loop().time() + self.config.limits.shutdown_grace_s
        while self._connections:
            for conn in list(self._connections):
                if not conn.busy:
                    conn.writer.transport.abort()
            if self._force or asyncio.get_running_loop().time() >= deadline:
                for conn in list(self._connections):
                    conn.writer.transport.abort()
            await asyncio.sleep(0.02)


@asynccontextmanager
async def running(
    config: Config, *, credentials: Credentials | None = None, environ: Mapping[str, str] | None = None
) -> AsyncIterator[Gateway]:
    """Run a gateway in this event loop for the duration of the block (tests, bench, demo)."""
    gateway = Gateway(config, credentials=credentials, environ=environ)
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(gateway.run(), name="gateway")
        ready = asyncio.ensure_future(gateway.ready.wait())
        done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED, timeout=30)
        if ready not in done:
            ready.cancel()
            if task.done():
                task.result()  # raises the startup error
            raise TimeoutError("gateway did not start within 30 s")
        try:
            yield gateway
        finally:
            gateway.stop()


__all__ = ["Gateway", "WorkerRole", "key_path", "running"]
