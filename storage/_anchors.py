"""Anchors at segment starts: the checkpoint a segment opens with, and record counts without hashing.

Read-only file access plus decoding through ``storage.codec``. Every segment the recorder starts opens
with a signed checkpoint of the chain its header carries, so a segment can be read (and counted, and
verified) from its start even after retention removed the segments before it.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import msgspec

from parsers.events import Checkpoint
from storage._format import (
    CHAIN_BYTES,
    HEADER_BYTES,
    MAX_RECORD_BYTES,
    RECORD_HEAD,
    SegmentHeader,
    list_segments,
    next_chain,
    segment_path,
    unpack_header,
)
from storage.codec import decode_frame
from storage.errors import StorageError


def read_opening(data_dir: Path, number: int) -> tuple[SegmentHeader, Checkpoint | None]:
    """Segment ``number``'s header, and its first record if that is a checkpoint of exactly this header.

    The signature is not checked here (``verify`` does that).

    Raises:
        OSError: the file cannot be read (FileNotFoundError when it is gone).
        CorruptLog: a bad header.
        StorageError: a format version this code does not read.
    """
    with segment_path(data_dir, number).open("rb") as f:
        header = unpack_header(f.read(HEADER_BYTES), number)
        head = f.read(RECORD_HEAD.size)
        if len(head) < RECORD_HEAD.size:
            return header, None
        length, crc = RECORD_HEAD.unpack(head)
        if length > MAX_RECORD_BYTES:
            return header, None
        rest = f.read(length + CHAIN_BYTES)
    if len(rest) < length + CHAIN_BYTES:
        return header, None
    payload = rest[:length]
    if zlib.crc32(payload) != crc or next_chain(header.chain, payload) != rest[length:]:
        return header, None
    try:
        event = decode_frame(payload).event
    except msgspec.DecodeError:
        return header, None
    if (
        isinstance(event, Checkpoint)
        and event.segment == number
        and event.offset == HEADER_BYTES
        and event.chain == header.chain
    ):
        return header, event
    return header, None


def count_records(path: Path) -> int:
    """Complete records in a segment file, found by walking the length fields (no CRC, no hashing)."""
    count = 0
    with path.open("rb") as f:
        size = f.seek(0, 2)
        offset = HEADER_BYTES
        while offset + RECORD_HEAD.size <= size:
            f.seek(offset)
            length, _ = RECORD_HEAD.unpack(f.read(RECORD_HEAD.size))
            end = offset + RECORD_HEAD.size + length + CHAIN_BYTES
            if end > size:
                break
            count += 1
            offset = end
    return count


def records_before(data_dir: Path, number: int) -> int:
    """How many records the whole log holds before segment ``number`` (removed segments included).

    Starts from the newest checkpoint a segment at or before ``number`` opens with; a log without any
    (written before checkpoints existed) is counted from its first segment.
    """
    _, opening = read_opening(data_dir, number)
    if opening is not None:
        return opening.frames
    count = 0
    for earlier in reversed([n for n in list_segments(data_dir) if n < number]):
        count += count_records(segment_path(data_dir, earlier))
        try:
            _, opening = read_opening(data_dir, earlier)
        except StorageError:
            continue  # a bad old header is for ``verify`` to report; counting goes on
        if opening is not None:
            return opening.frames + count
    return count


__all__ = ["count_records", "read_opening", "records_before"]
