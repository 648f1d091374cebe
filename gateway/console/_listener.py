"""The admin listener: uvicorn serving the console app inside the gateway's event loop, as one task.

uvicorn's ``Server`` is used without its signal handling (the gateway owns SIGTERM/SIGHUP) and on a
socket bound here, so the address is known (port 0 in tests) before the task starts. Data-plane work
never waits on it: its handlers await aiosqlite or worker threads for every read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import uvicorn

from gateway.admin import Readiness
from gateway.approvals.config import ApprovalsConfig
from gateway.config import AdminConfig, split_host_port
from gateway.console._app import build_app
from gateway.console._audit import AuditTrail
from gateway.console._auth import Access, Credentials
from gateway.console._reading import LogReader
from gateway.hold_source import HoldSource
from gateway.metrics import Exposition
from gateway.recorder import Recorder

logger = logging.getLogger("wardgate.admin")
SHUTDOWN_GRACE_S = 2  # answers in progress get this long; live tails end at once


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the gateway's own handlers stay in place


class AdminListener:
    """Owns the console's socket, its index connection and the uvicorn task."""

    def __init__(self, config: AdminConfig, reader: LogReader, server: _EmbeddedServer, sock: socket.socket):
        self.config = config
        self._reader = reader
        self._server = server
        self._sock = sock
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        address = sock.getsockname()
        self.address = (str(address[0]), int(address[1]))

    @classmethod
    async def open(
        cls,
        config: AdminConfig,
        *,
        data_dir: Path,
        recorder: Recorder,
        credentials: Credentials | None,
        readiness: Callable[[], Readiness],
        metrics: Callable[[Exposition], None],
        version: str,
        refresh: Callable[[], Awaitable[None]] | None = None,
        holds: HoldSource | None = None,
        approvals: ApprovalsConfig | None = None,
    ) -> AdminListener:
        """Bind the socket and open the index; ``start`` then serves.

        Raises:
            OSError: the address cannot be bound.
            StorageError: the index cannot be opened.
        """
        host, port = split_host_port(config.listen, field="admin.listen")
        reader = await LogReader.open(data_dir)
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.create_server((host, port), family=family, backlog=128)
        except BaseException:
            await reader.close()
            raise
        sock.setblocking(False)
        # uvicorn writes a head and a body separately: without NODELAY (inherited by accepted sockets)
        # the body waits for the peer's delayed ACK, 40 ms per answer.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Whoever some rule lets decide needs the approver role to reach the decision endpoints; the
        # registry then checks the hold's own approver groups.
        rules = approvals.rules if approvals else []
        access = Access.of(
            credentials,
            auditors=config.auditor_groups,
            approvers=[*config.approver_groups, *(g for rule in rules for g in rule.approver_groups)],
            metrics=config.metrics_groups,
        )
        stopping = asyncio.Event()
        app = build_app(
            access=access,
            audit=AuditTrail(recorder),
            reader=reader,
            readiness=readiness,
            metrics=metrics,
            public_metrics=config.public_metrics,
            version=version,
            stopping=stopping,
            refresh=refresh,
            holds=holds,
        )
        uv_config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
            ssl_certfile=config.tls_cert or None,
            ssl_keyfile=config.tls_key or None,
        )
        listener = cls(config, reader, _EmbeddedServer(uv_config), sock)
        listener._stopping = stopping
        return listener

    def start(self, tasks: asyncio.TaskGroup) -> None:
        self._task = tasks.create_task(self._server.serve(sockets=[self._sock]), name="admin")

    async def close(self) -> None:
        """Stop accepting, end live tails, let answers in progress finish, close the index."""
        self._stopping.set()
        self._server.should_exit = True
        try:
            if self._task is not None:
                await self._task
        finally:
            self._sock.close()
            await self._reader.close()


__all__ = ["AdminListener"]
