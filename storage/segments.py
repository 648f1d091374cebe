"""The append-only segment log writer: one owner (the gateway's recorder) appends, flushes, syncs, rotates.

Appends only buffer in memory; ``flush`` is one ``os.write``; ``sync`` is the only fsync on the hot path.
Opening repairs a torn tail of the newest segment (the cut bytes are kept under ``<data>/recovered/``)
and refuses a log that is bad anywhere else. The caller must hold ``DataDirLock`` while a log is open.
Format and reading live in ``_format.py`` and ``reader.py``; this module starts no threads.
"""

from __future__ import annotations

import os
import time
import zlib
from pathlib import Path

from storage._format import (
    HEADER_BYTES,
    MAX_RECORD_BYTES,
    RECORD_HEAD,
    ZERO_CHAIN,
    Position,
    SegmentScan,
    list_segments,
    next_chain,
    pack_header,
    segment_path,
    segments_dir,
)
from storage.errors import StorageError

_FIRST_SEGMENT = 1


class SegmentLog:
    """Appends records to ``<data>/segments/<number>.wgseg``, chaining each to the one before it."""

    def __init__(self, data_dir: Path, number: int, fd: int, size: int, chain: bytes, max_segment_bytes: int):
        self.data_dir = data_dir
        self.max_segment_bytes = max_segment_bytes
        self.recovered_bytes = 0
        self._number = number
        self._fd: int | None = fd
        self._size = size  # bytes already written to the file
        self._buffer = bytearray()
        self._chain = chain

    @classmethod
    def open(cls, data_dir: Path, *, max_segment_bytes: int = 64 << 20) -> SegmentLog:
        """Open the newest segment for appending (creating the first one if there is none).

        Raises:
            CorruptLog: a bad header, or a bad record before the tail of the newest segment.
            StorageError: an unreadable format version.
        """
        segments_dir(data_dir).mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(data_dir)
        numbers = list_segments(data_dir)
        if not numbers:
            fd = _create_segment(data_dir, _FIRST_SEGMENT, ZERO_CHAIN)
            return cls(data_dir, _FIRST_SEGMENT, fd, HEADER_BYTES, ZERO_CHAIN, max_segment_bytes)
        number = numbers[-1]
        path = segment_path(data_dir, number)
        scan = SegmentScan(path, number)
        for _ in scan:
            pass
        recovered = 0
        if scan.tail_bytes:
            recovered = _cut_tail(data_dir, path, number, scan.end)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        log = cls(data_dir, number, fd, scan.end, scan.chain, max_segment_bytes)
        log.recovered_bytes = recovered
        return log

    @property
    def position(self) -> Position:
        """Where the next appended record will start."""
        return Position(self._number, self._size + len(self._buffer))

    @property
    def chain(self) -> bytes:
        """Chain hash after the last appended record (buffered ones included)."""
        return self._chain

    @property
    def needs_rotation(self) -> bool:
        return self._size + len(self._buffer) >= self.max_segment_bytes

    def append(self, payload: bytes | memoryview) -> Position:
        """Buffer one record; returns where it will land. No system call.

        Raises:
            StorageError: the payload is longer than a record may be.
        """
        length = len(payload)
        if length > MAX_RECORD_BYTES:
            raise StorageError(f"record of {length} bytes exceeds the {MAX_RECORD_BYTES} byte limit")
        position = self.position
        self._chain = next_chain(self._chain, payload)
        buffer = self._buffer
        buffer += RECORD_HEAD.pack(length, zlib.crc32(payload))
        buffer += payload
        buffer += self._chain
        return position

    def flush(self) -> None:
        """Write everything buffered with one ``os.write`` (more only if the kernel writes short).

        Raises:
            StorageError: the write failed; the file is cut back and the records stay buffered.
        """
        if not self._buffer:
            return
        fd = self._require_fd()
        view = memoryview(self._buffer)
        written = 0
        try:
            while written < len(view):
                written += os.write(fd, view[written:])
        except OSError as exc:
            view.release()
            _truncate_quietly(fd, self._size)
            raise StorageError(f"segment {self._number:012d}: write failed: {exc}") from exc
        view.release()
        self._size += written
        self._buffer.clear()

    def sync(self) -> None:
        """fsync the current segment (blocking: run it off the event loop, never during ``rotate``)."""
        os.fsync(self._require_fd())

    def rotate(self) -> None:
        """Flush, fsync and close the current segment; start the next one carrying the chain."""
        self.flush()
        fd = self._require_fd()
        os.fsync(fd)
        os.close(fd)
        self._fd = None
        self._number += 1
        self._fd = _create_segment(self.data_dir, self._number, self._chain)
        self._size = HEADER_BYTES

    def close(self) -> None:
        """Flush, fsync and close. Safe to call twice."""
        if self._fd is None:
            return
        self.flush()
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> SegmentLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _require_fd(self) -> int:
        if self._fd is None:
            raise StorageError("segment log is closed")
        return self._fd


def _create_segment(data_dir: Path, number: int, chain: bytes) -> int:
    """Write the header to a temporary file, fsync, rename: a segment file never lacks its header."""
    path = segment_path(data_dir, number)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
    try:
        os.write(fd, pack_header(number, time.time_ns(), chain))
        os.fsync(fd)
    finally:
        os.close(fd)
    if path.exists():
        temporary.unlink()
        raise StorageError(f"segment {number:012d} already exists")
    os.rename(temporary, path)
    _fsync_dir(path.parent)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)


def _cut_tail(data_dir: Path, path: Path, number: int, end: int) -> int:
    """Move the bytes after ``end`` to ``<data>/recovered/`` and truncate; returns how many were cut."""
    recovered_dir = data_dir / "recovered"
    recovered_dir.mkdir(exist_ok=True)
    with path.open("r+b") as f:
        f.seek(end)
        tail = f.read()
        keep = recovered_dir / f"{number:012d}-{end}.torn"
        keep.write_bytes(tail)
        f.truncate(end)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(recovered_dir)
    return len(tail)


def _remove_stale_temporaries(data_dir: Path) -> None:
    # A crash between writing a new segment's header and renaming it leaves only a temporary file.
    for stale in segments_dir(data_dir).glob("*.wgseg.tmp"):
        stale.unlink()


def _truncate_quietly(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
    except OSError:
        # The write error is the one worth reporting; the next open repairs any torn tail anyway.
        return


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["Position", "SegmentLog"]
