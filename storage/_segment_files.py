"""The segment writer's file operations: creating a segment atomically, cutting a torn tail, reading a
sealed segment back. Private to ``segments.py``; the two calls a failing disk breaks go through
``FileOps`` so tests can make them fail.
"""

from __future__ import annotations

import errno
import os
import time
import zlib
from pathlib import Path
from typing import Protocol

from storage._format import (
    HEADER_BYTES,
    RECORD_HEAD,
    SegmentScan,
    next_chain,
    pack_header,
    segment_path,
    segments_dir,
)
from storage.errors import CorruptLog, StorageError


class FileOps(Protocol):
    """The two system calls whose failures the log must survive; tests pass a failing implementation."""

    def write(self, fd: int, data: bytes | memoryview) -> int: ...

    def fsync(self, fd: int) -> None: ...


class OsFileOps:
    def write(self, fd: int, data: bytes | memoryview) -> int:
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)


OS_FILE_OPS = OsFileOps()


def read_back(path: Path, number: int, target: int) -> tuple[int, bytes]:
    """Where the good records of a segment end, scanning no further than ``target``, and the chain there."""
    scan = SegmentScan(path, number)
    good = HEADER_BYTES
    chain: bytes | None = None
    try:
        for offset, _ in scan:
            if offset >= target:
                break
            good, chain = scan.end, scan.chain
    except CorruptLog as exc:
        if exc.offset < target:
            raise
    if chain is None:
        chain = scan.header.chain if scan.header is not None else b""
    return good, chain


def create_segment(
    data_dir: Path, number: int, chain: bytes, opening: list[bytes], ops: FileOps
) -> tuple[int, int, bytes]:
    """Write header and ``opening`` records to a temporary file, fsync, rename: a segment file never lacks
    them. Returns the append descriptor, the file size and the chain after the last record.

    Raises:
        OSError: any step failed (the temporary file is gone again).
        StorageError: the segment already exists.
    """
    path = segment_path(data_dir, number)
    temporary = path.with_name(path.name + ".tmp")
    data = bytearray(pack_header(number, time.time_ns(), chain))
    for payload in opening:
        chain = next_chain(chain, payload)
        data += RECORD_HEAD.pack(len(payload), zlib.crc32(payload)) + payload + chain
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
    try:
        try:
            view = memoryview(data)
            written = 0
            while written < len(view):
                written += ops.write(fd, view[written:])
            ops.fsync(fd)
        finally:
            os.close(fd)
        if path.exists():
            raise StorageError(f"segment {number:012d} already exists")
        os.rename(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    try:
        fsync_dir(path.parent, ops)
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC), len(data), chain
    except OSError:
        path.unlink(missing_ok=True)  # not durable as a new segment: the next attempt creates it again
        raise


def cut_tail(data_dir: Path, path: Path, number: int, end: int) -> Path:
    """Move the bytes after ``end`` to ``<data>/recovered/`` and truncate; returns where they were kept."""
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
    fsync_dir(recovered_dir, OS_FILE_OPS)
    return keep


def remove_stale_temporaries(data_dir: Path) -> None:
    # A crash between writing a new segment's header and renaming it leaves only a temporary file.
    for stale in segments_dir(data_dir).glob("*.wgseg.tmp"):
        stale.unlink()


def truncate_quietly(path: Path, size: int) -> None:
    try:
        os.truncate(path, size)
    except OSError as exc:
        # The cut bytes stay as a superseded tail: the next segment's Recovered record names the end.
        if exc.errno not in (errno.ENOSPC, errno.EIO, errno.EACCES, errno.EROFS, errno.EPERM):
            raise


def close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        # close() can report a deferred write error; the write or fsync that matters already did.
        return


def fsync_dir(path: Path, ops: FileOps) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ops.fsync(fd)
    finally:
        os.close(fd)


__all__ = [
    "OS_FILE_OPS",
    "FileOps",
    "OsFileOps",
    "close_quietly",
    "create_segment",
    "cut_tail",
    "fsync_dir",
    "read_back",
    "remove_stale_temporaries",
    "truncate_quietly",
]
