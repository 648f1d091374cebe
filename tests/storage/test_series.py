"""Segment series (one per gateway worker): layout, reading them as one log, verify and index per series."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage._format import RECORD_HEAD, segment_path
from storage.errors import CorruptLog
from storage.index import SqliteIndex, index_path
from storage.query import ExchangeQuery
from storage.reader import LogCursor, SegmentCursor, iter_frames, iter_log
from storage.series import SUPERVISOR_SERIES, list_series, series_root
from storage.verify import verify_all
from tests.storage.logbook import ALICE, BOB, MS, T0, Logbook
from tests.storage.test_index import PLAIN, STREAM
from tests.storage.test_segments import write


def test_series_zero_is_the_data_dir_and_workers_live_below_it(tmp_path: Path) -> None:
    assert series_root(tmp_path, 0) == tmp_path
    assert series_root(tmp_path, 3) == tmp_path / "workers" / "3"
    assert list_series(tmp_path) == [0]  # always, even before anything was written
    for name in ("2", "10", "01", "x", "0"):
        (tmp_path / "workers" / name / "segments").mkdir(parents=True)
    (tmp_path / "workers" / "4").mkdir()  # no segments yet: not a series
    assert list_series(tmp_path) == [0, 2, 10]
    assert series_root(tmp_path, SUPERVISOR_SERIES) == tmp_path / "supervisor"
    (tmp_path / "supervisor" / "segments").mkdir(parents=True)
    assert list_series(tmp_path) == [0, 2, 10, SUPERVISOR_SERIES]


def two_series(data_dir: Path) -> tuple[Logbook, Logbook]:
    """Two workers' logs written side by side, their clocks interleaved."""
    first = Logbook(series_root(data_dir, 0))
    second = Logbook(series_root(data_dir, 1))
    second.now = T0 + MS // 2
    first.capture_exchange(STREAM, "c_1", "x_1", "s_alice", identity=ALICE, new_session=True)
    second.capture_exchange(PLAIN, "c_2", "x_2", "s_bob", identity=BOB, new_session=True)
    second.capture_exchange(STREAM, "c_2", "x_3", "s_bob", identity=BOB)
    first.log.flush()
    second.log.flush()
    return first, second


def test_series_read_as_one_log_merged_by_time(tmp_path: Path) -> None:
    first, second = two_series(tmp_path)
    merged = list(iter_log(tmp_path))
    assert len(merged) == len(first.frames) + len(second.frames)
    assert [s.frame for s in merged if s.series == 0] == first.frames  # each series in its own order
    assert [s.frame for s in merged if s.series == 1] == second.frames
    times = [s.frame.ts_ns for s in merged]
    assert times == sorted(times)
    assert [s.position for s in iter_frames(tmp_path, series=1)] == second.positions

    cursor = LogCursor(tmp_path)
    assert len(cursor.read_new()) == len(merged)
    assert cursor.read_new() == []
    third = Logbook(series_root(tmp_path, 2))  # a worker that joined later
    third.capture_exchange(PLAIN, "c_3", "x_4", "s_carol", new_session=True)
    second.capture_exchange(PLAIN, "c_2", "x_5", "s_bob")
    for book in (first, second, third):
        book.close()
    fresh = cursor.read_new()
    assert {s.frame.exchange_id for s in fresh} == {"x_4", "x_5"}
    assert {s.series for s in fresh} == {1, 2}


def test_verify_checks_each_series_on_its_own(tmp_path: Path) -> None:
    first, second = two_series(tmp_path)
    first.close()
    second.close()
    reports = verify_all(tmp_path)
    assert [(r.series, r.ok, r.frames) for r in reports] == [
        (0, True, len(first.frames)),
        (1, True, len(second.frames)),
    ]
    path = segment_path(series_root(tmp_path, 1), 1)
    data = bytearray(path.read_bytes())
    data[second.positions[1].offset + RECORD_HEAD.size + 2] ^= 0xFF
    path.write_bytes(data)
    bad = verify_all(tmp_path)
    assert [(r.series, r.ok) for r in bad] == [(0, True), (1, False)]
    assert bad[1].first_error is not None
    assert bad[1].first_error.offset == second.positions[1].offset


async def test_index_follows_each_series_with_its_own_resume_position(tmp_path: Path) -> None:
    first, second = two_series(tmp_path)
    second.close()
    async with await SqliteIndex.open(index_path(tmp_path)) as index:
        assert await index.catch_up(tmp_path, series=1) == len(second.frames)
        assert {r.exchange_id: r.series for r in await index.exchanges(ExchangeQuery())} == {
            "x_2": 1,
            "x_3": 1,
        }
        assert await index.indexed_position() is None  # series 0 not read yet
        first.close()
        assert await index.catch_up(tmp_path, series=0) == len(first.frames)
        indexed = {r.exchange_id: r for r in await index.exchanges(ExchangeQuery())}
    assert {x: r.series for x, r in indexed.items()} == {"x_1": 0, "x_2": 1, "x_3": 1}
    assert indexed["x_3"].start in second.positions  # a position within its own series
    async with await SqliteIndex.open(index_path(tmp_path)) as index:
        assert await index.catch_up(tmp_path, series=0) == 0  # both resume where they stopped
        assert await index.catch_up(tmp_path, series=1) == 0
        assert await index.rebuild(tmp_path) == len(first.frames) + len(second.frames)
        assert {r.exchange_id: r for r in await index.exchanges(ExchangeQuery())} == indexed


def test_a_reader_may_trust_the_stored_chain_but_not_a_bad_crc(tmp_path: Path) -> None:
    positions = write(tmp_path, 3)
    path = segment_path(tmp_path, 1)
    data = bytearray(path.read_bytes())
    data[positions[2].offset - 1] ^= 0xFF  # the second record's stored chain hash
    path.write_bytes(data)
    with pytest.raises(CorruptLog, match="chain hash mismatch"):
        SegmentCursor(tmp_path).read_new()
    assert len(SegmentCursor(tmp_path, check_chain=False).read_new()) == 3
    data[positions[2].offset + RECORD_HEAD.size] ^= 0xFF  # the last record's payload: a torn write
    path.write_bytes(data)
    assert len(SegmentCursor(tmp_path, check_chain=False).read_new()) == 2
