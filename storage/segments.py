"""The append-only segment log writer: one owner (the gateway's recorder) appends, flushes, syncs, rotates.

Appends only buffer in memory; ``flush`` is one ``write``; ``sync`` is the only fsync on the hot path.
Opening repairs a torn tail of the newest segment (the cut bytes are kept under ``<data>/recovered/``)
and refuses a log that is bad anywhere else. A failed write or fsync *seals* the segment: it is never
synced again (after a failed fsync the kernel may have dropped the data and a retried fsync can still
report success). ``seal_tail`` + ``restart`` continue in a new segment from the last fsync'd record and
write everything appended after it again. The caller must hold ``DataDirLock``; no threads here.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path
from typing import NamedTuple

from storage._anchors import records_before
from storage._format import (
    HEADER_BYTES,
    MAX_RECORD_BYTES,
    RECORD_HEAD,
    ZERO_CHAIN,
    Anchor,
    Position,
    SegmentScan,
    list_segments,
    next_chain,
    segment_path,
    segments_dir,
)
from storage._segment_files import (
    OS_FILE_OPS,
    FileOps,
    OsFileOps,
    close_quietly,
    create_segment,
    cut_tail,
    read_back,
    remove_stale_temporaries,
    truncate_quietly,
)
from storage.errors import LogWriteFailed, StorageError

_FIRST_SEGMENT = 1
TORN_TAIL = "torn_tail"  # Recovered.kind: a torn tail cut when the log was opened after a crash
SEALED = "sealed"  # Recovered.kind: a segment sealed after a failed write; the next one goes on


class Recovery(NamedTuple):
    """What opening the log cut away: a torn tail of the newest segment after a crash."""

    segment: int
    offset: int  # where the good records end
    bytes_cut: int
    reason: str
    saved_as: Path  # the cut bytes, kept for forensics


class SealedTail(NamedTuple):
    """A segment sealed after a failed write: its good records end at ``offset``."""

    segment: int
    offset: int
    bytes_cut: int  # bytes after ``offset`` that were cut (or could not be cut and are superseded)
    carried: int  # records appended after the last fsync; ``restart`` writes them again


class SegmentLog:
    """Appends records to ``<data>/segments/<number>.wgseg``, chaining each to the one before it."""

    def __init__(
        self,
        data_dir: Path,
        number: int,
        fd: int,
        size: int,
        chain: bytes,
        max_segment_bytes: int,
        *,
        records: int = 0,
        ops: FileOps = OS_FILE_OPS,
    ) -> None:
        self.data_dir = data_dir
        self.max_segment_bytes = max_segment_bytes
        self.recovered: Recovery | None = None
        self.failure: LogWriteFailed | None = None
        self._ops = ops
        self._number = number
        self._fd: int | None = fd
        self._size = size  # bytes written to the file
        self._buffer = bytearray()
        self._chain = chain  # after every appended record, buffered ones included
        self._records = records  # records in the whole log, buffered ones included
        self._flushed = Anchor(Position(number, size), chain, records)
        self._synced = self._flushed  # the last point known to be on stable storage
        self._unsynced: list[bytes] = []  # payloads appended after ``_synced``, in order
        self._sealed: SealedTail | None = None  # seal_tail's answer, kept for the retries of restart

    @classmethod
    def open(
        cls, data_dir: Path, *, max_segment_bytes: int = 64 << 20, ops: FileOps = OS_FILE_OPS
    ) -> SegmentLog:
        """Open the newest segment for appending (creating the first one if there is none).

        Raises:
            CorruptLog: a bad header, or a bad record before the tail of the newest segment.
            StorageError: an unreadable format version.
        """
        segments_dir(data_dir).mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(data_dir)
        numbers = list_segments(data_dir)
        if not numbers:
            fd, size, chain = create_segment(data_dir, _FIRST_SEGMENT, ZERO_CHAIN, [], ops)
            return cls(data_dir, _FIRST_SEGMENT, fd, size, chain, max_segment_bytes, ops=ops)
        number = numbers[-1]
        path = segment_path(data_dir, number)
        scan = SegmentScan(path, number)
        records = sum(1 for _ in scan)
        recovery = None
        if scan.tail_bytes:
            saved = cut_tail(data_dir, path, number, scan.end)
            recovery = Recovery(number, scan.end, saved.stat().st_size, scan.tail_reason, saved)
        records += records_before(data_dir, number)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        log = cls(data_dir, number, fd, scan.end, scan.chain, max_segment_bytes, records=records, ops=ops)
        log.recovered = recovery
        return log

    @property
    def ops(self) -> FileOps:
        return self._ops

    @property
    def unsynced_records(self) -> int:
        """Records appended after the last successful fsync (what a failure now would carry over)."""
        return len(self._unsynced)

    @property
    def recovered_bytes(self) -> int:
        return self.recovered.bytes_cut if self.recovered is not None else 0

    @property
    def position(self) -> Position:
        """Where the next appended record will start."""
        return Position(self._number, self._size + len(self._buffer))

    @property
    def chain(self) -> bytes:
        """Chain hash after the last appended record (buffered ones included)."""
        return self._chain

    @property
    def records(self) -> int:
        """Records in the whole log so far (buffered ones included)."""
        return self._records

    @property
    def anchor(self) -> Anchor:
        """The log as a checkpoint appended now would describe it."""
        return Anchor(self.position, self._chain, self._records)

    @property
    def next_anchor(self) -> Anchor:
        """What the next segment's opening record follows: after ``rotate``, or after ``restart``."""
        last = self._synced if self.failure is not None else Anchor(self.position, self._chain, self._records)
        return Anchor(Position(self._number + 1, HEADER_BYTES), last.chain, last.records)

    @property
    def synced(self) -> Anchor:
        """The last point known to be on stable storage."""
        return self._synced

    @property
    def needs_rotation(self) -> bool:
        return self._size + len(self._buffer) >= self.max_segment_bytes

    def append(self, payload: bytes) -> Position:
        """Buffer one record; returns where it will land. No system call.

        Raises:
            StorageError: the payload is longer than a record may be.
        """
        length = len(payload)
        if length > MAX_RECORD_BYTES:
            raise StorageError(f"record of {length} bytes exceeds the {MAX_RECORD_BYTES} byte limit")
        position = self.position
        self._chain = next_chain(self._chain, payload)
        self._records += 1
        self._unsynced.append(payload)
        buffer = self._buffer
        buffer += RECORD_HEAD.pack(length, zlib.crc32(payload))
        buffer += payload
        buffer += self._chain
        return position

    def append_batch(self, payloads: list[bytes]) -> None:
        """Buffer records in order, exactly as ``append`` does one by one, without returning positions.

        The writer's hot loop: one call per batch, the per-record work on local names only.

        Raises:
            StorageError: a payload is longer than a record may be; the ones before it are buffered.
        """
        chain = self._chain
        buffer = self._buffer
        pack = RECORD_HEAD.pack
        crc32 = zlib.crc32
        sha256 = hashlib.sha256
        done = 0
        try:
            for payload in payloads:
                length = len(payload)
                if length > MAX_RECORD_BYTES:
                    raise StorageError(f"record of {length} bytes exceeds the {MAX_RECORD_BYTES} byte limit")
                digest = sha256(chain)
                digest.update(payload)
                chain = digest.digest()  # next_chain, inlined
                buffer += pack(length, crc32(payload))
                buffer += payload
                buffer += chain
                done += 1
        finally:
            self._chain = chain
            self._records += done
            self._unsynced.extend(payloads[:done] if done < len(payloads) else payloads)

    def flush(self) -> None:
        """Write everything buffered with one ``write`` (more only if the kernel writes short).

        Raises:
            LogWriteFailed: the write failed; the segment is sealed (see ``seal_tail``).
            StorageError: the log is closed or sealed.
        """
        if not self._buffer:
            return
        fd = self._require_fd()
        view = memoryview(self._buffer)
        written = 0
        try:
            while written < len(view):
                written += self._ops.write(fd, view[written:])
        except OSError as exc:
            self._size += written
            # A copy: the failed call's traceback may still hold a slice of the old buffer.
            self._buffer = bytearray(self._buffer)
            raise self._seal("write", exc) from exc
        finally:
            view.release()
        self._size += written
        self._buffer.clear()
        self._flushed = Anchor(Position(self._number, self._size), self._chain, self._records)

    def sync(self) -> None:
        """fsync what was flushed (blocking: run it off the event loop).

        Raises:
            LogWriteFailed: fsync failed; the segment is sealed and never synced again.
        """
        fd = self._require_fd()
        flushed = self._flushed
        try:
            self._ops.fsync(fd)
        except OSError as exc:
            raise self._seal("fsync", exc) from exc
        self._mark_synced(flushed)

    def rotate(self, opening: bytes | None = None) -> None:
        """Flush and fsync the current segment, close it, and start the next one carrying the chain.

        ``opening`` (the recorder's signed checkpoint of ``next_anchor``) becomes the new segment's first
        record, written together with its header before the file appears: no segment lacks it.

        Raises:
            LogWriteFailed: see ``flush``/``sync``; creating the next segment failed (sealed as well).
        """
        self.flush()
        self.sync()
        fd = self._require_fd()
        number = self._number + 1
        try:
            new_fd, size, chain = create_segment(
                self.data_dir, number, self._chain, [opening] if opening else [], self._ops
            )
        except OSError as exc:
            raise self._seal("create", exc, number=number) from exc
        close_quietly(fd)
        self._start(number, new_fd, size, chain, 1 if opening else 0)

    def seal_tail(self) -> SealedTail:
        """After a failure: re-read the sealed segment up to its last fsync'd record and cut what follows.

        Blocking (reads the segment; run it off the event loop). The cut is not fsync'd, on purpose.

        Raises:
            StorageError: the segment no longer reads back as written (retrying will not help), or the
                file cannot be read right now (OSError text included).
        """
        if self.failure is None:
            raise StorageError("seal_tail: the segment log has not failed")
        if self._sealed is not None:
            return self._sealed  # the disk may still be full: reading 64 MiB again proves nothing new
        synced = self._synced
        number, target = synced.position
        path = segment_path(self.data_dir, number)
        try:
            good, chain = read_back(path, number, target)
            if good != target or chain != synced.chain:
                raise StorageError(
                    f"segment {number:012d} reads back different from what was synced "
                    f"(good records end at offset {good}, expected {target})"
                )
            cut = path.stat().st_size - good
            if cut > 0:
                truncate_quietly(path, good)
        except OSError as exc:
            raise StorageError(f"segment {number:012d}: cannot re-read the sealed tail: {exc}") from exc
        self._sealed = SealedTail(number, good, cut, len(self._unsynced))
        return self._sealed

    def restart(self, opening: list[bytes]) -> None:
        """Start a new segment after ``seal_tail``: ``opening`` first, then every record appended after the
        last fsync again, in order (buffered: ``flush`` and ``sync`` follow). Blocking.

        Raises:
            LogWriteFailed: creating the new segment failed; the log stays sealed, call again later.
        """
        if self.failure is None:
            raise StorageError("restart: the segment log has not failed")
        synced = self._synced
        number = synced.position.segment + 1
        try:
            fd, size, chain = create_segment(self.data_dir, number, synced.chain, opening, self._ops)
        except OSError as exc:
            raise LogWriteFailed(number, "create", exc) from exc
        carried, self._unsynced = self._unsynced, []
        self._buffer = bytearray()
        self._sealed = None
        self._records = synced.records
        self.failure = None
        self._start(number, fd, size, chain, len(opening))
        for payload in carried:
            self.append(payload)

    def close(self) -> None:
        """Flush, fsync and close. Safe to call twice; a sealed log is only closed (never synced)."""
        if self._fd is None:
            return
        self.flush()
        self.sync()
        close_quietly(self._fd)
        self._fd = None

    def __enter__(self) -> SegmentLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _start(self, number: int, fd: int, size: int, chain: bytes, opening_records: int) -> None:
        self._number = number
        self._fd = fd
        self._size = size
        self._chain = chain
        self._records += opening_records
        self._flushed = Anchor(Position(number, size), chain, self._records)
        self._mark_synced(self._flushed)  # _create_segment fsync'd the file and its directory

    def _mark_synced(self, flushed: Anchor) -> None:
        done = len(self._unsynced) - (self._records - flushed.records)
        del self._unsynced[:done]
        self._synced = flushed

    def _seal(self, operation: str, exc: OSError, *, number: int | None = None) -> LogWriteFailed:
        failure = LogWriteFailed(self._number if number is None else number, operation, exc)
        self.failure = failure
        if self._fd is not None:
            close_quietly(self._fd)  # never fsync'd again
            self._fd = None
        return failure

    def _require_fd(self) -> int:
        if self.failure is not None:
            raise StorageError(f"segment log is sealed after a failure: {self.failure}")
        if self._fd is None:
            raise StorageError("segment log is closed")
        return self._fd


__all__ = [
    "OS_FILE_OPS",
    "SEALED",
    "TORN_TAIL",
    "Anchor",
    "FileOps",
    "OsFileOps",
    "Position",
    "Recovery",
    "SealedTail",
    "SegmentLog",
]
