"""Reading frames back from the segment log, also while a gateway is still appending to it.

Readers see every complete record and stop quietly at a torn or half-written tail. They step over
segments retention removed (where the next kept segment opens with a checkpoint); ``verify`` judges
whether a removal was legitimate. They never write, never take the data directory lock, and never
start threads: a follower polls ``SegmentCursor.read_new``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import msgspec

from storage._anchors import read_opening
from storage._format import (
    CHAIN_BYTES,
    HEADER_BYTES,
    Position,
    SegmentScan,
    list_segments,
    segment_path,
    unpack_header,
)
from storage.codec import Frame, decode_frame
from storage.errors import CorruptLog, StorageError

_BATCH_FRAMES = 4096


class StoredFrame(NamedTuple):
    """A frame and where its record starts in the log."""

    position: Position
    frame: Frame


class SegmentCursor:
    """Remembers where reading stopped; each ``read_new`` returns the complete frames written since.

    Moves on to the next segment once the writer has started it. No threads: the caller polls.
    """

    def __init__(self, data_dir: Path, start: Position | None = None) -> None:
        self.data_dir = data_dir
        self._position = start

    @property
    def position(self) -> Position | None:
        """Where the next record will be read from; None until the first segment exists."""
        return self._position

    def read_new(self, max_frames: int | None = None) -> list[StoredFrame]:
        """Raises:
        CorruptLog: a bad record before the tail, a frame that does not decode, or a missing segment.
        """
        out: list[StoredFrame] = []
        limit = max_frames if max_frames is not None else -1
        numbers = list_segments(self.data_dir)
        while numbers and len(out) != limit:
            position = self._start_position(numbers)
            if position is None:
                break
            segment = position.segment
            scan = SegmentScan(segment_path(self.data_dir, segment), segment, position.offset)
            for offset, payload in scan:
                out.append(StoredFrame(Position(segment, offset), _decode(segment, offset, payload)))
                self._position = Position(segment, scan.end)
                if len(out) == limit:
                    return out
            self._position = Position(segment, scan.end)
            if not any(n > segment for n in numbers):
                numbers = list_segments(self.data_dir)
                if not any(n > segment for n in numbers):
                    break
                continue  # the writer rotated while we read: finish this segment first
            if scan.tail_bytes:
                raise CorruptLog(segment, scan.end, f"{scan.tail_reason} in a sealed segment")
            self._position = Position(segment + 1, HEADER_BYTES)
        return out

    def _start_position(self, numbers: list[int]) -> Position | None:
        position = self._position
        if position is None or position.segment < numbers[0]:
            position = Position(numbers[0], HEADER_BYTES)
        elif position.segment not in numbers:
            if position.segment > numbers[-1]:
                return None
            following = min(n for n in numbers if n > position.segment)
            if position.offset != HEADER_BYTES or not _opens_with_checkpoint(self.data_dir, following):
                raise CorruptLog(position.segment, 0, "segment file is missing")
            # Retention removed segments here; the next kept one opens with a checkpoint of its chain.
            position = Position(following, HEADER_BYTES)
        self._position = position
        return position


def _opens_with_checkpoint(data_dir: Path, number: int) -> bool:
    try:
        _, opening = read_opening(data_dir, number)
    except (OSError, StorageError):
        return False
    return opening is not None


def chain_before(data_dir: Path, position: Position) -> bytes | None:
    """The chain hash in force at ``position`` (the previous record's, or the header's), or None when
    the log no longer reaches there. Lets a reader check the log still holds what it saw before.
    """
    try:
        with segment_path(data_dir, position.segment).open("rb") as f:
            if position.offset <= HEADER_BYTES:
                return unpack_header(f.read(HEADER_BYTES), position.segment).chain
            f.seek(position.offset - CHAIN_BYTES)
            chain = f.read(CHAIN_BYTES)
    except (FileNotFoundError, StorageError):
        return None
    return chain if len(chain) == CHAIN_BYTES else None


def recent_start(data_dir: Path, *, segments: int = 2) -> Position | None:
    """Where the ``segments`` newest segments begin (None: the log is that short, read it all)."""
    numbers = list_segments(data_dir)
    if len(numbers) <= segments:
        return None
    return Position(numbers[-segments], HEADER_BYTES)


def iter_frames(data_dir: Path, start: Position | None = None) -> Iterator[StoredFrame]:
    """Every complete frame from ``start`` (default: the first segment) to the current end of the log.

    Raises:
        CorruptLog: see ``SegmentCursor.read_new``. A torn tail is not an error: iteration just ends.
    """
    cursor = SegmentCursor(data_dir, start)
    while batch := cursor.read_new(_BATCH_FRAMES):
        yield from batch


def _decode(segment: int, offset: int, payload: bytes) -> Frame:
    try:
        return decode_frame(payload)
    except msgspec.DecodeError as exc:
        raise CorruptLog(segment, offset, f"record does not decode as a frame: {exc}") from exc


__all__ = ["SegmentCursor", "StoredFrame", "chain_before", "iter_frames", "recent_start"]
