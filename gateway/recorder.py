"""The recorder: every connection hands it frames; one writer task owns the session log.

Connections never touch the disk: ``record()`` appends to a list in memory. The writer task encodes the
batch, writes it with one system call and fsyncs on a group-commit clock, so the fsync cost is shared.
Only ``durable()`` (strict mode, before a request is forwarded) makes a connection wait for the disk.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Literal

import msgspec

from parsers.events import RequestHead, ResponseHead
from storage.codec import Frame, encode_frame
from storage.redact import redact_headers
from storage.segments import SegmentLog

logger = logging.getLogger("wardgate.recorder")


class RecordingFailed(Exception):
    """The log could not be written; nothing more may be forwarded as recorded."""


class RecorderStats(msgspec.Struct, kw_only=True):
    frames: int = 0
    bytes: int = 0
    batches: int = 0
    syncs: int = 0
    backpressure_waits: int = 0  # times a connection waited because the writer fell behind
    last_sync_ms: float = 0.0


class Recorder:
    """Accepts frames from all connections and writes them, in order, to the segment log."""

    def __init__(
        self,
        log: SegmentLog,
        *,
        durability: Literal["strict", "batched"],
        group_commit_s: float,
        max_pending: int,
        redact_key: bytes,
        on_flush: Callable[[], None] = lambda: None,
    ) -> None:
        self._log = log
        self.durability = durability
        self._group_commit_s = group_commit_s
        self._max_pending = max_pending
        self._redact_key = redact_key
        self._on_flush = on_flush
        self._pending: list[Frame] = []
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._submitted = 0  # frames handed to record()
        self._written = 0  # frames written to the OS
        self._sync_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._dirty = False
        self._last_sync = time.monotonic()
        self._closing = False
        self.failure: BaseException | None = None
        self.stats = RecorderStats()

    @property
    def healthy(self) -> bool:
        return self.failure is None and not self._closing

    def record(self, frame: Frame) -> bool:
        """Queue a frame. Returns False when the writer is behind: the caller should ``await room()``.

        Raises:
            RecordingFailed: the log is not writable; the caller must not forward unrecorded traffic.
        """
        if self.failure is not None:
            raise RecordingFailed(str(self.failure))
        event = frame.event
        if isinstance(event, RequestHead | ResponseHead):
            # Secrets never reach the queue, let alone the disk.
            redacted = redact_headers(event.headers, self._redact_key)
            if redacted is not event.headers:
                frame = msgspec.structs.replace(frame, event=msgspec.structs.replace(event, headers=redacted))
        self._pending.append(frame)
        self._submitted += 1
        if not self._wake.is_set():
            self._wake.set()
        if len(self._pending) >= self._max_pending:
            self._room.clear()
            return False
        return True

    async def room(self) -> None:
        """Wait until the writer has caught up below the high-water mark."""
        self.stats.backpressure_waits += 1
        await self._room.wait()

    async def durable(self) -> None:
        """Wait until every frame recorded so far is on stable storage (fsync'd).

        Raises:
            RecordingFailed: the log could not be written or synced.
        """
        if self.failure is not None:
            raise RecordingFailed(str(self.failure))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sync_waiters.append((self._submitted, future))
        self._wake.set()
        await future

    async def run(self) -> None:
        """The writer loop. Returns after ``close()`` once everything queued is written and synced."""
        try:
            while True:
                if not self._pending and not self._sync_waiters:
                    if self._closing:
                        break
                    try:
                        async with asyncio.timeout(self._group_commit_s):
                            await self._wake.wait()
                    except TimeoutError:
                        pass
                self._wake.clear()
                self._write_pending()
                if self._sync_waiters or (
                    self._dirty and time.monotonic() - self._last_sync >= self._group_commit_s
                ):
                    await self._sync()
                if self._log.needs_rotation:
                    # Rotation fsyncs the old segment: off the loop, like every fsync.
                    await asyncio.to_thread(self._log.rotate)
            await self._sync()
        except OSError as exc:
            self._fail(exc)
            raise RecordingFailed(f"session log write failed: {exc}") from exc

    def close(self) -> None:
        """Ask the writer to finish: it drains, syncs and returns."""
        self._closing = True
        self._wake.set()

    def _write_pending(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        log = self._log
        size = 0
        for frame in batch:
            payload = encode_frame(frame)
            size += len(payload)
            log.append(payload)
        log.flush()
        self._written += len(batch)
        self._dirty = True
        self.stats.frames += len(batch)
        self.stats.bytes += size
        self.stats.batches += 1
        if not self._room.is_set():
            self._room.set()
        self._on_flush()

    async def _sync(self) -> None:
        if not self._dirty:
            self._resolve_waiters(self._written)
            return
        covered = self._written
        started = time.monotonic()
        # fsync blocks for milliseconds; a thread keeps it off every connection's path (STYLE §6).
        await asyncio.to_thread(self._log.sync)
        self._last_sync = time.monotonic()
        self.stats.syncs += 1
        self.stats.last_sync_ms = (self._last_sync - started) * 1000
        if self._written == covered:
            self._dirty = False
        self._resolve_waiters(covered)

    def _resolve_waiters(self, covered: int) -> None:
        keep: list[tuple[int, asyncio.Future[None]]] = []
        for target, future in self._sync_waiters:
            if target <= covered:
                if not future.done():
                    future.set_result(None)
            else:
                keep.append((target, future))
        self._sync_waiters = keep

    def _fail(self, exc: BaseException) -> None:
        logger.error("session log write failed, refusing traffic: %s", exc)
        self.failure = exc
        for _, future in self._sync_waiters:
            if not future.done():
                future.set_exception(RecordingFailed(str(exc)))
        self._sync_waiters = []
        self._room.set()


__all__ = ["Recorder", "RecorderStats", "RecordingFailed"]
