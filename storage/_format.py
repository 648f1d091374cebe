"""The on-disk segment format: header and record layout, and one scanner that checks records as it reads.

Pure byte layout plus reading a file: no writing here (``segments.py`` writes). Little-endian throughout.

    header = b"WGSEG" | u16 version | u64 segment number | u64 created ts_ns | 32-byte chain | u32 crc32
    record = u32 length | u32 crc32(payload) | payload (msgpack Frame) | 32-byte chain
    chain  = sha256(previous chain || payload); the header carries the chain of the previous segment
"""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

from storage.codec import FORMAT_VERSION
from storage.errors import CorruptLog, LogShrank, StorageError

MAGIC = b"WGSEG"
SEGMENT_SUFFIX = ".wgseg"
ZERO_CHAIN = bytes(32)
CHAIN_BYTES = 32
MAX_RECORD_BYTES = 64 << 20  # a longer length field is corruption, not a torn tail

_HEADER_BODY = struct.Struct("<5sHQQ32s")
_HEADER_CRC = struct.Struct("<I")
HEADER_BYTES = _HEADER_BODY.size + _HEADER_CRC.size
RECORD_HEAD = struct.Struct("<II")
RECORD_OVERHEAD = RECORD_HEAD.size + CHAIN_BYTES

_NAME = re.compile(r"^(\d{12})\.wgseg$")


class Position(NamedTuple):
    """Where a record starts: segment number and byte offset inside that segment file."""

    segment: int
    offset: int


class Anchor(NamedTuple):
    """A point of the log: before ``position`` lie ``records`` records, the last one ending in ``chain``."""

    position: Position
    chain: bytes
    records: int


class SegmentHeader(NamedTuple):
    version: int
    number: int
    created_ns: int
    chain: bytes


def segments_dir(data_dir: Path) -> Path:
    return data_dir / "segments"


def segment_path(data_dir: Path, number: int) -> Path:
    return segments_dir(data_dir) / f"{number:012d}{SEGMENT_SUFFIX}"


def list_segments(data_dir: Path) -> list[int]:
    """Segment numbers present in ``data_dir``, ascending. Other files are ignored."""
    directory = segments_dir(data_dir)
    if not directory.is_dir():
        return []
    numbers = [int(m.group(1)) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    numbers.sort()
    return numbers


def pack_header(number: int, created_ns: int, chain: bytes) -> bytes:
    body = _HEADER_BODY.pack(MAGIC, FORMAT_VERSION, number, created_ns, chain)
    return body + _HEADER_CRC.pack(zlib.crc32(body))


def unpack_header(data: bytes, number: int) -> SegmentHeader:
    """Raises:
    CorruptLog: short, wrong magic, bad CRC, or a number that differs from the file name.
    StorageError: a format version this code does not read.
    """
    if len(data) < HEADER_BYTES:
        raise CorruptLog(number, 0, f"header is {len(data)} bytes, expected {HEADER_BYTES}")
    body = data[: _HEADER_BODY.size]
    magic, version, stored_number, created_ns, chain = _HEADER_BODY.unpack(body)
    if magic != MAGIC:
        raise CorruptLog(number, 0, f"bad magic {magic!r}, expected {MAGIC!r}")
    (crc,) = _HEADER_CRC.unpack_from(data, _HEADER_BODY.size)
    if crc != zlib.crc32(body):
        raise CorruptLog(number, 0, "header CRC mismatch")
    if version != FORMAT_VERSION:
        raise StorageError(
            f"segment {number:012d}: format version {version}, this wardgate reads {FORMAT_VERSION}"
        )
    if stored_number != number:
        raise CorruptLog(number, 0, f"header says segment {stored_number}, file name says {number}")
    return SegmentHeader(version, stored_number, created_ns, chain)


def next_chain(chain: bytes, payload: bytes | memoryview) -> bytes:
    digest = hashlib.sha256(chain)
    digest.update(payload)
    return digest.digest()


def _trailing_bytes(f: BinaryIO) -> int | None:
    """How many bytes follow, if all of them are zero (a crash can leave a zero-filled tail); else None."""
    count = 0
    while chunk := f.read(1 << 20):
        if chunk.count(0) != len(chunk):
            return None
        count += len(chunk)
    return count


class SegmentScan:
    """Reads one segment's records from ``start`` and checks length, CRC and chain of each.

    Iterating yields ``(offset, payload)`` for every good record. It stops quietly at the tail: a record
    that is incomplete, or bad but last in the file (a torn write). Afterwards ``end`` is the offset after
    the last good record, ``chain`` that record's chain, and ``tail_bytes``/``tail_reason`` describe what
    lay beyond ``end`` at the time (0/"" for a clean end). A bad record followed by more bytes raises.
    ``check_chain=False`` (the index follower) trusts each record's stored chain hash instead of
    recomputing it; the CRC still tells a torn write from a record, and ``verify`` checks every link.

    Raises (while iterating):
        CorruptLog: a bad header, or a bad record in the middle of the segment.
    """

    def __init__(
        self, path: Path, number: int, start: int | None = None, *, check_chain: bool = True
    ) -> None:
        self.path = path
        self.number = number
        self._start = start
        self._check_chain = check_chain
        self.header: SegmentHeader | None = None
        self.end = start if start is not None else HEADER_BYTES
        self.chain = ZERO_CHAIN
        self.tail_bytes = 0
        self.tail_reason = ""

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        with self.path.open("rb") as f:
            self.header = unpack_header(f.read(HEADER_BYTES), self.number)
            offset = HEADER_BYTES if self._start is None else self._start
            if offset < HEADER_BYTES:
                raise StorageError(f"segment {self.number:012d}: offset {offset} lies inside the header")
            if offset == HEADER_BYTES:
                self.chain = self.header.chain
            else:
                f.seek(offset - CHAIN_BYTES)
                self.chain = f.read(CHAIN_BYTES)
                if len(self.chain) != CHAIN_BYTES:
                    raise LogShrank(f"segment {self.number:012d}: offset {offset} is past the end")
            self.end = offset
            yield from self._records(f, offset)

    def _records(self, f: BinaryIO, offset: int) -> Iterator[tuple[int, bytes]]:
        number = self.number
        while True:
            head = f.read(RECORD_HEAD.size)
            if len(head) < RECORD_HEAD.size:
                if head:
                    self._torn(len(head), "incomplete record header")
                return
            length, crc = RECORD_HEAD.unpack(head)
            if length > MAX_RECORD_BYTES:
                raise CorruptLog(number, offset, f"record length {length} exceeds {MAX_RECORD_BYTES}")
            rest = f.read(length + CHAIN_BYTES)
            if len(rest) < length + CHAIN_BYTES:
                self._torn(RECORD_HEAD.size + len(rest), f"incomplete record ({length} byte payload)")
                return
            payload = rest[:length]
            if zlib.crc32(payload) != crc:
                reason = "payload CRC mismatch"
            else:
                chain = next_chain(self.chain, payload) if self._check_chain else rest[length:]
                if chain == rest[length:]:
                    self.chain = chain
                    offset += RECORD_OVERHEAD + length
                    self.end = offset
                    yield self.end - RECORD_OVERHEAD - length, payload
                    continue
                reason = "chain hash mismatch"
            trailing = _trailing_bytes(f)
            if trailing is None:
                raise CorruptLog(number, offset, reason)
            self._torn(RECORD_OVERHEAD + length + trailing, f"{reason} in the last record")
            return

    def _torn(self, size: int, reason: str) -> None:
        self.tail_bytes = size
        self.tail_reason = reason


__all__ = [
    "CHAIN_BYTES",
    "HEADER_BYTES",
    "MAGIC",
    "MAX_RECORD_BYTES",
    "RECORD_HEAD",
    "RECORD_OVERHEAD",
    "ZERO_CHAIN",
    "Anchor",
    "Position",
    "SegmentHeader",
    "SegmentScan",
    "list_segments",
    "next_chain",
    "pack_header",
    "segment_path",
    "segments_dir",
    "unpack_header",
]
