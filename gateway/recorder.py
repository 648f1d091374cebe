"""The recorder: every connection hands it frames; one writer task owns the session log.

Connections never touch the disk: ``record()`` appends to a list in memory. The writer task encodes the
batch, writes it with one system call and fsyncs on a group-commit clock, so the fsync cost is shared.
Only ``durable()`` (strict mode, before a request is forwarded) makes a connection wait for the disk.
The writer also signs checkpoints (every N frames or T seconds, at rotation and at shutdown) and records
what it repaired (``Recovered``) and what retention removed (``Retention``).

Fail-closed. When a write or fsync fails the recorder turns unhealthy at once: ``record()`` and
``durable()`` raise ``RecordingFailed`` (the proxy answers new requests 503 and cuts streams in flight),
every ``durable()`` waiter fails, and the segment is sealed, never synced again. In the background it
retries (``retry_s``, doubling up to ``retry_max_s``): re-read the sealed segment up to its last fsync'd
record, start a new segment with a ``Recovered`` record, and write again every frame that was not yet
fsync'd. It turns healthy by itself once that is on disk.

What can be lost. Nothing the recorder accepted is dropped while the process lives: frames queued,
buffered or written-but-not-fsync'd when the failure hit are kept in memory and written into the new
segment. After the failure nothing new is accepted, so nothing new is forwarded. If the process dies
while unhealthy, or the machine loses power, what was not fsync'd is lost:
- ``strict``: never a request that reached the upstream (forwarding waited for ``durable()``); at most the
  response frames of the last ``group_commit_ms`` before the failure (clients may have seen them).
- ``batched``: additionally the requests recorded in that window, which may already be upstream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import msgspec

from gateway.config import StorageConfig
from gateway.masking import RecordMasking
from parsers.events import Direction, RecordedEvent, Recovered, RequestHead, ResponseHead, Retention
from storage.checkpoints import CheckpointFile, sign_checkpoint
from storage.codec import Frame, encode_frame
from storage.errors import LogWriteFailed, StorageError
from storage.redact import redact_headers
from storage.segments import SEALED, TORN_TAIL, Anchor, SegmentLog
from storage.signing import SigningKey

logger = logging.getLogger("wardgate.recorder")

GATEWAY_CONN_ID = ""  # frames about the log itself belong to no connection
_HEADS = (RequestHead, ResponseHead)  # a tuple: ``A | B`` would build a union object per call
MAX_KNOWN_SECRETS = 4096  # redaction results kept for reuse; forgotten all at once past this


class RecordingFailed(Exception):
    """The log could not be written; nothing more may be forwarded as recorded."""


class RecorderStats(msgspec.Struct, kw_only=True):
    frames: int = 0
    bytes: int = 0
    batches: int = 0
    syncs: int = 0
    backpressure_waits: int = 0  # times a connection waited because the writer fell behind
    checkpoints: int = 0
    checkpoint_file_errors: int = 0  # checkpoints only in the log: the checkpoint file could not be written
    failures: int = 0  # times the log turned unwritable
    recoveries: int = 0  # times recording resumed in a new segment
    carried_frames: int = 0  # unsynced frames written again after a failure
    refused_frames: int = 0  # record() calls refused while unhealthy


class Recorder:
    """Accepts frames from all connections and writes them, in order, to the segment log."""

    @classmethod
    def from_storage(
        cls,
        log: SegmentLog,
        storage: StorageConfig,
        *,
        redact_key: bytes,
        signing_key: SigningKey | None,
        observe_write_s: Callable[[float], None] = lambda seconds: None,
        observe_sync_s: Callable[[float], None] = lambda seconds: None,
        masking: RecordMasking | None = None,
    ) -> Recorder:
        """A recorder tuned by ``[storage]`` (the gateway's workers and the supervisor's console)."""
        return cls(
            log,
            group_commit_s=storage.group_commit_ms / 1000,
            max_pending=storage.max_pending_frames,
            redact_key=redact_key,
            signing_key=signing_key,
            checkpoint_every_frames=storage.checkpoint_every_frames,
            checkpoint_interval_s=storage.checkpoint_interval_s,
            retry_s=storage.recovery_retry_s,
            retry_max_s=storage.recovery_retry_max_s,
            observe_write_s=observe_write_s,
            observe_sync_s=observe_sync_s,
            masking=masking,
        )

    def __init__(
        self,
        log: SegmentLog,
        *,
        group_commit_s: float,
        max_pending: int,
        redact_key: bytes,
        signing_key: SigningKey | None = None,
        checkpoint_every_frames: int = 10_000,
        checkpoint_interval_s: float = 5.0,
        retry_s: float = 1.0,
        retry_max_s: float = 10.0,
        observe_write_s: Callable[[float], None] = lambda seconds: None,
        observe_sync_s: Callable[[float], None] = lambda seconds: None,
        masking: RecordMasking | None = None,
    ) -> None:
        self._log = log
        self._group_commit_s = group_commit_s
        self._max_pending = max_pending
        self._redact_key = redact_key
        self._known_secrets: dict[bytes, bytes] = {}
        self._key = signing_key
        self._checkpoint_every = checkpoint_every_frames
        self._checkpoint_interval_s = checkpoint_interval_s
        self._retry_s = retry_s
        self._retry_max_s = retry_max_s
        self._observe_write = observe_write_s
        self._observe_sync = observe_sync_s
        self.masking = masking
        self._pending: list[Frame] = []
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._submitted = 0  # frames handed to record()
        self._written = 0  # frames handed to the log
        self._sync_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._checkpoint_waiters: list[asyncio.Future[None]] = []
        self._dirty = False
        self._last_sync = time.monotonic()
        self._last_checkpoint = time.monotonic()
        self._records_at_checkpoint = -1  # the first due checkpoint also anchors what earlier runs left
        self._checkpoints: CheckpointFile | None = None
        self._seq = 0  # of the frames the recorder makes itself
        self._retry_delay = retry_s
        self._closing = False
        self._stopped = False  # the writer loop has returned: nobody would ever answer a waiter
        self.failure: BaseException | None = None
        self.stats = RecorderStats()

    @property
    def healthy(self) -> bool:
        return self.failure is None and not self._closing

    @property
    def log(self) -> SegmentLog:
        return self._log

    def record(self, frame: Frame) -> bool:
        """Queue a frame. Returns False when the writer is behind: the caller should ``await room()``.

        Raises:
            RecordingFailed: the log is not writable; the caller must not forward unrecorded traffic.
        """
        if self.failure is not None:
            self.stats.refused_frames += 1
            raise RecordingFailed(str(self.failure))
        event = frame.event
        if isinstance(event, _HEADS):
            # Secrets never reach the queue, let alone the disk.
            if len(self._known_secrets) > MAX_KNOWN_SECRETS:
                self._known_secrets.clear()
            redacted = redact_headers(event.headers, self._redact_key, self._known_secrets)
            if redacted is not event.headers:
                frame = msgspec.structs.replace(frame, event=msgspec.structs.replace(event, headers=redacted))
        # Masking happens here, the one place every recorded frame passes, whichever relay made it.
        if self.masking is not None and (masked := self.masking.frames(frame)) is not None:
            self._pending += masked
            self._submitted += len(masked)
        else:
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
        self._check_writable()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sync_waiters.append((self._submitted, future))
        self._wake.set()
        await future

    def record_gateway_event(self, event: RecordedEvent) -> None:
        """Queue a record about the gateway itself (no connection, no exchange)."""
        self._check_writable()
        self._pending.append(self._gateway_frame(event, time.time_ns()))
        self._submitted += 1
        self._wake.set()

    async def checkpoint(self) -> None:
        """Write a signed checkpoint after everything recorded so far and wait until it is in the
        checkpoint file too (just ``durable()`` without a signing key).

        Raises:
            RecordingFailed: the log could not be written or synced.
        """
        if self._key is None:
            await self.durable()
            return
        self._check_writable()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._checkpoint_waiters.append(future)
        self._wake.set()
        await future

    async def record_retention(self, event: Retention) -> None:
        """Record what retention is about to remove, anchored by a checkpoint, before anything is removed.

        Raises:
            RecordingFailed: the log could not be written; nothing may be removed.
        """
        self.record(self._gateway_frame(event, time.time_ns()))
        await self.checkpoint()

    async def run(self) -> None:
        """The writer loop. Returns after ``close()`` once everything queued is written and synced
        (or, if the log is still unwritable then, after one last attempt to resume)."""
        await self._start()
        while True:
            if self.failure is not None:
                if not await self._retry():
                    break
                continue
            if not (self._pending or self._sync_waiters or self._checkpoint_waiters):
                if self._closing:
                    if await self._guard(self._finish()):
                        break
                    continue
                try:
                    async with asyncio.timeout(self._group_commit_s):
                        await self._wake.wait()
                except TimeoutError:
                    pass
            self._wake.clear()
            await self._guard(self._step())
        self._stopped = True
        if self._checkpoints is not None:
            self._checkpoints.close()

    def close(self) -> None:
        """Ask the writer to finish: it drains, syncs, checkpoints and returns."""
        self._closing = True
        self._wake.set()

    def _check_writable(self) -> None:
        if self.failure is not None:
            raise RecordingFailed(str(self.failure))
        if self._stopped:
            raise RecordingFailed("the recorder has stopped")

    # --- the writer ------------------------------------------------------------------------------

    async def _start(self) -> None:
        if self._key is not None:
            try:
                self._checkpoints = await asyncio.to_thread(
                    CheckpointFile.open, self._log.data_dir, ops=self._log.ops
                )
            except (OSError, StorageError) as exc:
                self.stats.checkpoint_file_errors += 1
                logger.error("checkpoint file unusable, checkpoints go to the log only: %s", exc)
        if (cut := self._log.recovered) is not None:
            event = Recovered(
                kind=TORN_TAIL,
                segment=cut.segment,
                offset=cut.offset,
                bytes_cut=cut.bytes_cut,
                reason=cut.reason,
            )
            self._log.append(encode_frame(self._gateway_frame(event, time.time_ns())))
            self._log.recovered = None
            self._dirty = True
            try:
                self._log.flush()
            except LogWriteFailed as exc:
                self._fail(exc)

    async def _step(self) -> None:
        self._write_pending()
        if self._log.needs_rotation:
            await self._rotate()
        if self._sync_waiters or (self._dirty and time.monotonic() - self._last_sync >= self._group_commit_s):
            await self._sync()
        if self._checkpoint_waiters or self._checkpoint_due():
            await self._checkpoint("requested" if self._checkpoint_waiters else "interval")

    async def _finish(self) -> None:
        self._write_pending()
        if self._log.records > self._records_at_checkpoint:
            await self._checkpoint("shutdown")
        else:
            await self._sync()

    async def _guard(self, step: Awaitable[None]) -> bool:
        """Run one writer step; a failed write or fsync turns the recorder unhealthy instead of raising."""
        try:
            await step
        except LogWriteFailed as exc:
            self._fail(exc)
            return False
        return True

    def _write_pending(self) -> None:
        if not self._pending:
            return
        started = time.monotonic()
        batch, self._pending = self._pending, []
        log = self._log
        payloads = [encode_frame(frame) for frame in batch]
        size = sum(map(len, payloads))
        log.append_batch(payloads)
        self._written += len(batch)  # handed over: a failure from here on carries them to a new segment
        self._dirty = True
        if not self._room.is_set():
            self._room.set()
        log.flush()
        self.stats.frames += len(batch)
        self.stats.bytes += size
        self.stats.batches += 1
        self._observe_write(time.monotonic() - started)

    async def _sync(self) -> None:
        if not self._dirty:
            self._resolve_waiters(self._written)
            return
        covered = self._written
        records = self._log.records
        started = time.monotonic()
        # fsync blocks for milliseconds; a thread keeps it off every connection's path (STYLE §6).
        await asyncio.to_thread(self._log.sync)
        self._last_sync = time.monotonic()
        self.stats.syncs += 1
        self._observe_sync(self._last_sync - started)
        if self._log.records == records:
            self._dirty = False
        self._resolve_waiters(covered)

    def _checkpoint_due(self) -> bool:
        since = self._log.records - self._records_at_checkpoint
        if self._key is None or since <= 0:
            return False
        overdue = time.monotonic() - self._last_checkpoint >= self._checkpoint_interval_s
        return since >= self._checkpoint_every or overdue

    async def _checkpoint(self, reason: str) -> None:
        if self._key is None:
            await self._sync()
            return
        payload = self._signed(self._key, self._log.anchor, reason)
        self._log.append(payload)
        self._log.flush()
        self._dirty = True
        await self._sync()
        await self._anchored(payload)

    async def _rotate(self) -> None:
        await self._sync()  # the old segment's waiters need not wait for the new file
        key = self._key
        opening = self._signed(key, self._log.next_anchor, "rotation") if key is not None else None
        await asyncio.to_thread(self._log.rotate, opening)
        if opening is not None:
            await self._anchored(opening)

    async def _anchored(self, payload: bytes) -> None:
        """A checkpoint is on disk in the log: copy it to the checkpoint file, release its waiters."""
        self._records_at_checkpoint = self._log.records
        self._last_checkpoint = time.monotonic()
        self.stats.checkpoints += 1
        if self._checkpoints is not None:
            try:
                await asyncio.to_thread(self._checkpoints.append, payload)
            except OSError as exc:
                self.stats.checkpoint_file_errors += 1
                logger.error("checkpoint in the log, but not in the checkpoint file: %s", exc)
        waiters, self._checkpoint_waiters = self._checkpoint_waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(None)

    def _signed(self, key: SigningKey, anchor: Anchor, reason: str) -> bytes:
        event = sign_checkpoint(key, anchor, time.time_ns(), reason)
        return encode_frame(self._gateway_frame(event, event.ts_ns))

    def _gateway_frame(self, event: RecordedEvent, ts_ns: int) -> Frame:
        self._seq += 1
        return Frame(
            conn_id=GATEWAY_CONN_ID,
            seq=self._seq - 1,
            ts_ns=ts_ns,
            direction=Direction.FROM_CLIENT,
            event=event,
        )

    def _resolve_waiters(self, covered: int) -> None:
        keep: list[tuple[int, asyncio.Future[None]]] = []
        for target, future in self._sync_waiters:
            if target <= covered:
                if not future.done():
                    future.set_result(None)
            else:
                keep.append((target, future))
        self._sync_waiters = keep

    # --- failure and recovery --------------------------------------------------------------------

    def _fail(self, exc: LogWriteFailed) -> None:
        if self.failure is None:
            logger.error("session log write failed, refusing traffic until it can be written: %s", exc)
            self.stats.failures += 1
            self._retry_delay = self._retry_s
        self.failure = exc
        failed = RecordingFailed(str(exc))
        for _, future in self._sync_waiters:
            if not future.done():
                future.set_exception(failed)
        for future in self._checkpoint_waiters:
            if not future.done():
                future.set_exception(failed)
        self._sync_waiters = []
        self._checkpoint_waiters = []
        self._room.set()

    async def _retry(self) -> bool:
        """Wait (unless closing), then try to resume in a new segment. False: closing and still failed."""
        if not self._closing:
            try:
                async with asyncio.timeout(self._retry_delay):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
        if await self._resume():
            return True
        self._retry_delay = min(self._retry_delay * 2, self._retry_max_s)
        if self._closing:
            lost = len(self._pending) + self._log.unsynced_records
            logger.error("shutting down with the session log unwritable: %d frames were not recorded", lost)
            return False
        return True

    async def _resume(self) -> bool:
        log = self._log
        try:
            sealed = await asyncio.to_thread(log.seal_tail)
            opening: list[bytes] = []
            if self._key is not None:
                opening.append(self._signed(self._key, log.next_anchor, "recovery"))
            event = Recovered(
                kind=SEALED,
                segment=sealed.segment,
                offset=sealed.offset,
                bytes_cut=sealed.bytes_cut,
                reason=str(self.failure),
                carried_frames=sealed.carried,
            )
            opening.append(encode_frame(self._gateway_frame(event, time.time_ns())))
            await asyncio.to_thread(log.restart, opening)
            self._dirty = True
            self._write_pending()
            log.flush()
            await self._sync()
        except LogWriteFailed as exc:
            self.failure = exc
            logger.warning("session log still not writable (next try in %.0f s): %s", self._retry_delay, exc)
            return False
        except StorageError as exc:
            logger.error("cannot resume the session log: %s", exc)
            return False
        self.failure = None
        self.stats.recoveries += 1
        self.stats.carried_frames += sealed.carried
        logger.warning(
            "session log writable again: segment %012d sealed at offset %d, %d frames written again in "
            "segment %012d",
            sealed.segment,
            sealed.offset,
            sealed.carried,
            log.position.segment,
        )
        if self._key is not None:
            await self._anchored(opening[0])
        return True


__all__ = ["GATEWAY_CONN_ID", "Recorder", "RecorderStats", "RecordingFailed"]
