"""Signed checkpoints: what they sign, how they are built, and the separate append-only checkpoint file.

The signed message is domain-separated and fixed-width, so no two meanings share bytes. Every checkpoint
the recorder writes into the log also goes, once it is fsync'd there, to ``<data>/checkpoints/``:

    file   = b"WGCKP" | u16 version | record*
    record = u32 length | u32 crc32(payload) | payload (the msgpack Frame exactly as in the log)

The file is the auditor's second copy: a log cut short behind a checkpoint the file still knows is
caught by ``verify``. Keep a copy off the host for the strongest guarantee.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

from parsers.events import Checkpoint
from storage._format import Anchor
from storage.errors import StorageError
from storage.segments import OS_FILE_OPS, FileOps
from storage.signing import PublicKey, SigningKey

CHECKPOINT_DOMAIN = b"wardgate/checkpoint/v1\x00"
_MESSAGE = struct.Struct("<QQ32sQq")
_FILE_MAGIC = b"WGCKP"
_FILE_VERSION = 1
_FILE_HEADER = struct.Struct("<5sH")
_ENTRY_HEAD = struct.Struct("<II")
_MAX_ENTRY_BYTES = 1 << 16


def checkpoint_path(data_dir: Path) -> Path:
    return data_dir / "checkpoints" / "checkpoints.wgcp"


def checkpoint_message(segment: int, offset: int, chain: bytes, frames: int, ts_ns: int) -> bytes:
    """The exact bytes a checkpoint signature covers."""
    return CHECKPOINT_DOMAIN + _MESSAGE.pack(segment, offset, chain, frames, ts_ns)


def sign_checkpoint(key: SigningKey, anchor: Anchor, ts_ns: int, reason: str) -> Checkpoint:
    segment, offset = anchor.position
    message = checkpoint_message(segment, offset, anchor.chain, anchor.records, ts_ns)
    return Checkpoint(
        segment=segment,
        offset=offset,
        chain=anchor.chain,
        frames=anchor.records,
        ts_ns=ts_ns,
        key_id=key.public.key_id,
        signature=key.sign(message),
        reason=reason,
    )


def signature_valid(checkpoint: Checkpoint, key: PublicKey) -> bool:
    message = checkpoint_message(
        checkpoint.segment, checkpoint.offset, checkpoint.chain, checkpoint.frames, checkpoint.ts_ns
    )
    return checkpoint.key_id == key.key_id and key.verify(checkpoint.signature, message)


class CheckpointFile:
    """The writer of the checkpoint file (one owner: the recorder). ``append`` is blocking (fsync)."""

    def __init__(self, path: Path, ops: FileOps) -> None:
        self.path = path
        self._ops = ops
        self._fd: int | None = None

    @classmethod
    def open(cls, data_dir: Path, *, ops: FileOps = OS_FILE_OPS) -> CheckpointFile:
        """Open for appending, creating the file or cutting a torn last entry (a crash mid-append).

        Raises:
            OSError: the file cannot be opened or repaired.
            StorageError: the file is not a checkpoint file, or is bad before its last entry.
        """
        file = cls(checkpoint_path(data_dir), ops)
        file._reopen()
        return file

    def append(self, payload: bytes) -> None:
        """Append one encoded checkpoint frame and fsync it. After a failure the next call reopens the
        file (cutting what the failed call left) instead of syncing the same descriptor again.

        Raises:
            OSError: the write or fsync failed.
        """
        fd = self._fd if self._fd is not None else self._reopen()
        data = _ENTRY_HEAD.pack(len(payload), zlib.crc32(payload)) + payload
        try:
            written = 0
            while written < len(data):
                written += self._ops.write(fd, data[written:])
            self._ops.fsync(fd)
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def _reopen(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            size = os.fstat(fd).st_size
            end = _read(self.path).end if size else 0
            if end < size:
                os.ftruncate(fd, end)
            if end == 0:
                self._ops.write(fd, _FILE_HEADER.pack(_FILE_MAGIC, _FILE_VERSION))
                self._ops.fsync(fd)
                _fsync_dir(self.path.parent, self._ops)
            os.lseek(fd, 0, os.SEEK_END)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return fd


class CheckpointFileContents(NamedTuple):
    payloads: list[bytes]  # every complete entry, in order
    end: int  # file offset after the last complete entry
    torn_bytes: int  # bytes after ``end`` (a crash mid-append, or an append in progress)


def read_checkpoint_file(data_dir: Path) -> CheckpointFileContents:
    """Every entry of the checkpoint file (empty when there is none). Safe beside a running writer.

    Raises:
        StorageError: not a checkpoint file, or a bad entry followed by more entries.
    """
    return _read(checkpoint_path(data_dir))


def _read(path: Path) -> CheckpointFileContents:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return CheckpointFileContents([], 0, 0)
    if len(data) < _FILE_HEADER.size:
        return CheckpointFileContents([], 0, len(data))
    magic, version = _FILE_HEADER.unpack_from(data)
    if magic != _FILE_MAGIC or version != _FILE_VERSION:
        raise StorageError(f"{path}: not a version {_FILE_VERSION} checkpoint file")
    payloads: list[bytes] = []
    offset = _FILE_HEADER.size
    while offset + _ENTRY_HEAD.size <= len(data):
        length, crc = _ENTRY_HEAD.unpack_from(data, offset)
        end = offset + _ENTRY_HEAD.size + length
        if length > _MAX_ENTRY_BYTES:
            after = offset + _ENTRY_HEAD.size
        elif end > len(data):
            break  # incomplete: an append in progress, or one cut short by a crash
        elif zlib.crc32(payload := data[offset + _ENTRY_HEAD.size : end]) == crc:
            payloads.append(payload)
            offset = end
            continue
        else:
            after = end
        if data.count(0, after) != len(data) - after:
            raise StorageError(f"{path}: the entry at byte {offset} is damaged")
        break
    return CheckpointFileContents(payloads, offset, len(data) - offset)


def _fsync_dir(path: Path, ops: FileOps) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ops.fsync(fd)
    finally:
        os.close(fd)


__all__ = [
    "CHECKPOINT_DOMAIN",
    "CheckpointFile",
    "CheckpointFileContents",
    "checkpoint_message",
    "checkpoint_path",
    "read_checkpoint_file",
    "sign_checkpoint",
    "signature_valid",
]
