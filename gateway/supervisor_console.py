"""The auditor console of a multi-process gateway, served by its supervisor.

The supervisor serves no traffic, so its own segment series (``storage.series.SUPERVISOR_SERIES``, under
``<data>/supervisor``) holds only ``ConsoleAccess`` frames and checkpoints, with its own hash chain. It is
written by the same ``Recorder`` a gateway uses, so an access is fsync'd before it is answered, and followed
into the shared index by an index follower of its own (the audit trail reads the index). The console
reads the shared index and every series (the workers' and this one) as one log; held tool calls live in
the workers and are asked for and decided over their sockets (``gateway.hold_channel``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway.admin import Readiness
from gateway.config import Config
from gateway.console import AdminListener
from gateway.hold_source import HoldSource
from gateway.identity.authenticator import Authenticator
from gateway.indexer import FollowerProcess
from gateway.metrics import Exposition
from gateway.recorder import Recorder
from storage.segments import SegmentLog
from storage.series import SUPERVISOR_SERIES, series_root
from storage.signing import SigningKey


class SupervisorConsole:
    """The supervisor's recorder (its own series) and the console listener in front of it."""

    def __init__(self, log: SegmentLog, recorder: Recorder, listener: AdminListener, data_dir: Path) -> None:
        self._log = log
        self._recorder = recorder
        self._listener = listener
        self._writer: asyncio.Task[None] | None = None
        self._indexer = FollowerProcess(data_dir, series=SUPERVISOR_SERIES)
        self._log_closed = asyncio.Event()
        self._following: asyncio.Task[None] | None = None
        self.address = listener.address

    @classmethod
    async def open(
        cls,
        config: Config,
        *,
        redact_key: bytes,
        signing_key: SigningKey,
        readiness: Callable[[], Readiness],
        metrics: Callable[[Exposition], None],
        refresh: Callable[[], Awaitable[None]],
        version: str,
        holds: HoldSource,
    ) -> SupervisorConsole:
        """Open the supervisor's series and bind the admin listener; ``start`` then serves.

        Raises:
            ConfigError: an auth setting that cannot work.
            OSError: the address cannot be bound.
            StorageError: the series or the index cannot be opened.
        """
        storage = config.storage
        authenticator = Authenticator.from_config(config.auth)  # the data plane's (OIDC, API keys)
        log = SegmentLog.open(
            series_root(config.data_dir, SUPERVISOR_SERIES), max_segment_bytes=storage.max_segment_bytes
        )
        try:
            recorder = Recorder.from_storage(log, storage, redact_key=redact_key, signing_key=signing_key)
            listener = await AdminListener.open(
                config.admin,
                data_dir=config.data_dir,
                recorder=recorder,
                credentials=authenticator,
                readiness=readiness,
                metrics=metrics,
                version=version,
                refresh=refresh,
                holds=holds,
                approvals=config.approvals,
            )
        except BaseException:
            log.close()
            raise
        return cls(log, recorder, listener, config.data_dir)

    def start(self, tasks: asyncio.TaskGroup) -> None:
        self._writer = tasks.create_task(self._recorder.run(), name="supervisor-recorder")
        self._following = tasks.create_task(self._indexer.run(self._log_closed), name="supervisor-indexer")
        self._listener.start(tasks)

    async def close(self) -> None:
        """Stop the listener (answers in progress finish and are recorded), then flush and close the log."""
        try:
            await self._listener.close()
        finally:
            self._recorder.close()
            if self._writer is not None:
                await self._writer
            self._log.close()
            self._log_closed.set()  # the follower's last pass now sees every frame
            if self._following is not None:
                await self._following


__all__ = ["SupervisorConsole"]
