"""Reading frames back from the segment log, also while a gateway is still appending to it.

Readers see every complete record and stop quietly at a torn or half-written tail. They step over
segments retention removed (where the next kept segment opens with a checkpoint); ``verify`` judges
whether a removal was legitimate. They never write, never take the data directory lock, and never
start threads: a follower polls ``SegmentCursor.read_new``. A data dir written by several worker
processes holds one series per worker (``storage.series``); ``LogCursor`` and ``iter_log`` read them all
as one log, merged by frame timestamp (each series keeps its own record order).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping
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
from storage.series import list_series, series_root

_BATCH_FRAMES = 4096


class StoredFrame(NamedTuple):
    """A frame and where its record starts in the log (in series ``series``)."""

    position: Position
    frame: Frame
    series: int = 0


class SegmentCursor:
    """Remembers where reading stopped; each ``read_new`` returns the complete frames written since.

    Moves on to the next segment once the writer has started it. No threads: the caller polls.
    """

    def __init__(
        self, data_dir: Path, start: Position | None = None, *, series: int = 0, check_chain: bool = True
    ) -> None:
        self.data_dir = data_dir
        self.series = series
        self._check_chain = check_chain  # False: trust the stored chain hashes (see ``SegmentScan``)
        self._root = series_root(data_dir, series)
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
        root, series = self._root, self.series
        numbers = list_segments(root)
        while numbers and len(out) != limit:
            position = self._start_position(numbers)
            if position is None:
                break
            segment = position.segment
            scan = SegmentScan(
                segment_path(root, segment), segment, position.offset, check_chain=self._check_chain
            )
            append = out.append
            for offset, payload in scan:
                append(StoredFrame(Position(segment, offset), _decode(segment, offset, payload), series))
                if len(out) == limit:
                    self._position = Position(segment, scan.end)
                    return out
            self._position = Position(segment, scan.end)
            if not any(n > segment for n in numbers):
                numbers = list_segments(root)
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
            if position.offset != HEADER_BYTES or not _opens_with_checkpoint(self._root, following):
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


def chain_before(data_dir: Path, position: Position, *, series: int = 0) -> bytes | None:
    """The chain hash in force at ``position`` (the previous record's, or the header's), or None when
    the log no longer reaches there. Lets a reader check the log still holds what it saw before.
    """
    try:
        with segment_path(series_root(data_dir, series), position.segment).open("rb") as f:
            if position.offset <= HEADER_BYTES:
                return unpack_header(f.read(HEADER_BYTES), position.segment).chain
            f.seek(position.offset - CHAIN_BYTES)
            chain = f.read(CHAIN_BYTES)
    except (FileNotFoundError, StorageError):
        return None
    return chain if len(chain) == CHAIN_BYTES else None


def recent_start(data_dir: Path, *, segments: int = 2, series: int = 0) -> Position | None:
    """Where the ``segments`` newest segments begin (None: the log is that short, read it all)."""
    numbers = list_segments(series_root(data_dir, series))
    if len(numbers) <= segments:
        return None
    return Position(numbers[-segments], HEADER_BYTES)


def iter_frames(data_dir: Path, start: Position | None = None, *, series: int = 0) -> Iterator[StoredFrame]:
    """Every complete frame of one series from ``start`` (default: its first segment) to its current end.

    Raises:
        CorruptLog: see ``SegmentCursor.read_new``. A torn tail is not an error: iteration just ends.
    """
    cursor = SegmentCursor(data_dir, start, series=series)
    while batch := cursor.read_new(_BATCH_FRAMES):
        yield from batch


def _timestamp(stored: StoredFrame) -> int:
    return stored.frame.ts_ns


def iter_log(data_dir: Path) -> Iterator[StoredFrame]:
    """Every complete frame of every series, merged by timestamp (each series in its own order).

    Raises:
        CorruptLog: see ``SegmentCursor.read_new``.
    """
    series = [iter_frames(data_dir, series=number) for number in list_series(data_dir)]
    if len(series) == 1:
        yield from series[0]
        return
    yield from heapq.merge(*series, key=_timestamp)


class LogCursor:
    """``SegmentCursor`` over every series at once; picks up series that appear later (a new worker)."""

    def __init__(self, data_dir: Path, starts: Mapping[int, Position | None] | None = None) -> None:
        self.data_dir = data_dir
        self._starts = dict(starts or {})
        self._cursors: dict[int, SegmentCursor] = {}

    def read_new(self, max_frames_per_series: int | None = None) -> list[StoredFrame]:
        """New complete frames of all series, merged by timestamp.

        Raises:
            CorruptLog: see ``SegmentCursor.read_new``.
        """
        for number in list_series(self.data_dir):
            if number not in self._cursors:
                self._cursors[number] = SegmentCursor(self.data_dir, self._starts.get(number), series=number)
        batches = [cursor.read_new(max_frames_per_series) for cursor in self._cursors.values()]
        batches = [batch for batch in batches if batch]
        if len(batches) == 1:
            return batches[0]
        return list(heapq.merge(*batches, key=_timestamp))


def _decode(segment: int, offset: int, payload: bytes) -> Frame:
    try:
        return decode_frame(payload)
    except msgspec.DecodeError as exc:
        raise CorruptLog(segment, offset, f"record does not decode as a frame: {exc}") from exc


__all__ = [
    "LogCursor",
    "SegmentCursor",
    "StoredFrame",
    "chain_before",
    "iter_frames",
    "iter_log",
    "recent_start",
]
