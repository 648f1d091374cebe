"""The segment log on real files: write, read back, rotate, torn tails, corruption, the chain."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parsers.events import BodyChunk, Direction, ExchangeEnded
from storage._format import HEADER_BYTES, RECORD_OVERHEAD, ZERO_CHAIN, next_chain, segment_path
from storage.codec import Frame, decode_frame, encode_frame
from storage.errors import CorruptLog, StorageError
from storage.reader import SegmentCursor, iter_frames
from storage.segments import Position, SegmentLog
from storage.verify import verify


def frame(i: int, size: int = 10) -> Frame:
    return Frame(
        conn_id="c_1",
        seq=i,
        ts_ns=1_000 + i,
        direction=Direction.FROM_UPSTREAM,
        event=BodyChunk(data=bytes([i % 256]) * size),
        exchange_id="x_1",
    )


def write(data_dir: Path, count: int, *, max_segment_bytes: int = 64 << 20, size: int = 10) -> list[Position]:
    positions = []
    with SegmentLog.open(data_dir, max_segment_bytes=max_segment_bytes) as log:
        for i in range(count):
            positions.append(log.append(encode_frame(frame(i, size))))
            if log.needs_rotation:
                log.rotate()
    return positions


def test_append_is_buffered_until_flush(tmp_path: Path) -> None:
    log = SegmentLog.open(tmp_path)
    path = segment_path(tmp_path, 1)
    assert path.stat().st_size == HEADER_BYTES
    first = log.append(encode_frame(frame(0)))
    second = log.append(encode_frame(frame(1)))
    assert first == Position(1, HEADER_BYTES)
    assert second.offset == HEADER_BYTES + RECORD_OVERHEAD + len(encode_frame(frame(0)))
    assert path.stat().st_size == HEADER_BYTES
    log.flush()
    assert path.stat().st_size == log.position.offset
    log.sync()
    log.close()
    log.close()
    assert [s.position for s in iter_frames(tmp_path)] == [first, second]


def test_read_back_in_order_with_positions(tmp_path: Path) -> None:
    positions = write(tmp_path, 50)
    stored = list(iter_frames(tmp_path))
    assert [s.frame for s in stored] == [frame(i) for i in range(50)]
    assert [s.position for s in stored] == positions
    assert [s.frame.seq for s in iter_frames(tmp_path, positions[30])] == list(range(30, 50))


def test_chain_hash_links_every_record(tmp_path: Path) -> None:
    with SegmentLog.open(tmp_path) as log:
        chain = ZERO_CHAIN
        for i in range(3):
            payload = encode_frame(frame(i))
            log.append(payload)
            chain = next_chain(chain, payload)
            assert log.chain == chain


def test_rotation_carries_the_chain_and_readers_cross_segments(tmp_path: Path) -> None:
    positions = write(tmp_path, 200, max_segment_bytes=1000)
    segments = sorted({p.segment for p in positions})
    assert len(segments) > 5
    assert segments == list(range(1, len(segments) + 1))
    assert [s.frame.seq for s in iter_frames(tmp_path)] == list(range(200))
    middle = positions[123]
    assert next(iter_frames(tmp_path, middle)).frame.seq == 123
    report = verify(tmp_path)
    assert report.ok, report
    assert (report.segments, report.frames) == (len(segments), 200)


def test_reopen_appends_to_the_newest_segment_and_continues_the_chain(tmp_path: Path) -> None:
    write(tmp_path, 10, max_segment_bytes=400)
    with SegmentLog.open(tmp_path, max_segment_bytes=400) as log:
        assert log.recovered_bytes == 0
        for i in range(10, 20):
            log.append(encode_frame(frame(i)))
            if log.needs_rotation:
                log.rotate()
    assert [s.frame.seq for s in iter_frames(tmp_path)] == list(range(20))
    assert verify(tmp_path).ok


def test_cursor_follows_a_live_writer_across_rotation(tmp_path: Path) -> None:
    log = SegmentLog.open(tmp_path, max_segment_bytes=600)
    cursor = SegmentCursor(tmp_path)
    seen: list[int] = []
    for i in range(40):
        log.append(encode_frame(frame(i)))
        if i % 3 == 0:
            log.flush()
            seen += [s.frame.seq for s in cursor.read_new()]
        if log.needs_rotation:
            log.rotate()
    log.close()
    seen += [s.frame.seq for s in cursor.read_new()]
    assert seen == list(range(40))
    assert cursor.read_new() == []


def test_cursor_on_an_empty_data_dir(tmp_path: Path) -> None:
    cursor = SegmentCursor(tmp_path)
    assert cursor.read_new() == []
    assert cursor.position is None
    assert list(iter_frames(tmp_path)) == []


def test_cursor_respects_max_frames_and_resumes(tmp_path: Path) -> None:
    write(tmp_path, 10)
    cursor = SegmentCursor(tmp_path)
    assert [s.frame.seq for s in cursor.read_new(4)] == [0, 1, 2, 3]
    assert [s.frame.seq for s in cursor.read_new(4)] == [4, 5, 6, 7]
    again = SegmentCursor(tmp_path, cursor.position)
    assert [s.frame.seq for s in again.read_new()] == [8, 9]


def test_truncating_the_last_record_at_every_byte(tmp_path: Path) -> None:
    positions = write(tmp_path, 3, size=40)
    path = segment_path(tmp_path, 1)
    whole = path.read_bytes()
    last = positions[-1].offset
    for cut in range(last, len(whole)):
        path.write_bytes(whole[:cut])
        assert [s.frame.seq for s in iter_frames(tmp_path)] == [0, 1]
        report = verify(tmp_path)
        assert report.ok
        assert (report.torn_tail is not None) == (cut > last)
        log = SegmentLog.open(tmp_path)
        assert log.recovered_bytes == cut - last
        assert log.position == Position(1, last)
        log.append(encode_frame(frame(99)))
        log.close()
        assert [s.frame.seq for s in iter_frames(tmp_path)] == [0, 1, 99]
        assert verify(tmp_path) == verify(tmp_path)
        assert verify(tmp_path).torn_tail is None
    kept = sorted((tmp_path / "recovered").iterdir())
    assert kept
    assert kept[-1].read_bytes() == whole[last:-1]


def test_zero_filled_tail_after_a_crash_is_a_torn_tail(tmp_path: Path) -> None:
    write(tmp_path, 3)
    path = segment_path(tmp_path, 1)
    size = path.stat().st_size
    with path.open("ab") as f:
        f.write(bytes(4096))
    assert len(list(iter_frames(tmp_path))) == 3
    assert verify(tmp_path).ok
    with SegmentLog.open(tmp_path) as log:
        assert log.recovered_bytes == 4096
    assert path.stat().st_size == size


def test_crc_bad_last_record_is_torn_not_corrupt(tmp_path: Path) -> None:
    positions = write(tmp_path, 3)
    path = segment_path(tmp_path, 1)
    data = bytearray(path.read_bytes())
    data[positions[-1].offset + 12] ^= 0xFF
    path.write_bytes(data)
    assert len(list(iter_frames(tmp_path))) == 2
    report = verify(tmp_path)
    assert report.ok
    assert report.torn_tail is not None
    assert report.torn_tail.offset == positions[-1].offset


def test_flipped_byte_in_the_middle_is_found_at_its_record(tmp_path: Path) -> None:
    positions = write(tmp_path, 30, max_segment_bytes=700)
    victim = positions[len(positions) // 2]
    record_bytes = RECORD_OVERHEAD + len(encode_frame(frame(0)))
    path = segment_path(tmp_path, victim.segment)
    pristine = path.read_bytes()
    # Every byte of the record but the length's two high bytes (those point past the end of the file,
    # which is indistinguishable from a torn write there: open() keeps such cut bytes in recovered/).
    for delta in (d for d in range(record_bytes) if d not in (2, 3)):
        data = bytearray(pristine)
        data[victim.offset + delta] ^= 0x01
        path.write_bytes(data)
        report = verify(tmp_path)
        assert not report.ok, delta
        assert report.first_error is not None
        assert (report.first_error.segment, report.first_error.offset) == victim, (delta, report)
        with pytest.raises(CorruptLog) as raised:
            list(iter_frames(tmp_path))
        assert (raised.value.segment, raised.value.offset) == victim


def test_corrupt_middle_of_newest_segment_refuses_to_open(tmp_path: Path) -> None:
    positions = write(tmp_path, 5)
    path = segment_path(tmp_path, 1)
    data = bytearray(path.read_bytes())
    data[positions[2].offset + 10] ^= 0x40
    path.write_bytes(data)
    with pytest.raises(CorruptLog, match=f"segment 000000000001 offset {positions[2].offset}"):
        SegmentLog.open(tmp_path)


def test_bad_header_is_reported(tmp_path: Path) -> None:
    write(tmp_path, 2)
    path = segment_path(tmp_path, 1)
    data = bytearray(path.read_bytes())
    data[10] ^= 0x01
    path.write_bytes(data)
    report = verify(tmp_path)
    assert report.first_error is not None
    assert (report.first_error.segment, report.first_error.offset) == (1, 0)
    assert "header" in report.first_error.reason


def test_chain_broken_across_segments_is_detected(tmp_path: Path) -> None:
    write(tmp_path, 40, max_segment_bytes=700)
    # Rebuild segment 2 as a self-consistent segment whose header does not carry segment 1's last hash.
    stored = [s for s in iter_frames(tmp_path) if s.position.segment == 2]
    assert stored
    path = segment_path(tmp_path, 2)
    path.unlink()
    forged_dir = tmp_path / "forged"
    with SegmentLog.open(forged_dir) as forged:
        forged.rotate()
        for s in stored:
            forged.append(encode_frame(s.frame))
    os.rename(segment_path(forged_dir, 2), path)
    report = verify(tmp_path)
    assert not report.ok
    assert report.first_error is not None
    assert (report.first_error.segment, report.first_error.offset) == (2, 0)
    assert "previous segment" in report.first_error.reason


def test_missing_segment_is_detected(tmp_path: Path) -> None:
    write(tmp_path, 40, max_segment_bytes=700)
    segment_path(tmp_path, 2).unlink()
    report = verify(tmp_path)
    assert report.first_error is not None
    assert (report.first_error.segment, report.first_error.reason) == (2, "segment file is missing")
    with pytest.raises(CorruptLog):
        list(iter_frames(tmp_path))


def test_torn_tail_in_a_sealed_segment_is_corruption(tmp_path: Path) -> None:
    write(tmp_path, 40, max_segment_bytes=700)
    path = segment_path(tmp_path, 1)
    path.write_bytes(path.read_bytes()[:-3])
    report = verify(tmp_path)
    assert not report.ok
    assert report.first_error is not None
    assert report.first_error.segment == 1
    with pytest.raises(CorruptLog, match="sealed segment"):
        list(iter_frames(tmp_path))


def test_oversized_record_is_refused(tmp_path: Path) -> None:
    with SegmentLog.open(tmp_path) as log, pytest.raises(StorageError, match="exceeds"):
        log.append(bytes((64 << 20) + 1))


def test_closed_log_refuses_writes(tmp_path: Path) -> None:
    log = SegmentLog.open(tmp_path)
    log.close()
    log.append(encode_frame(frame(0)))
    with pytest.raises(StorageError, match="closed"):
        log.flush()


def test_stale_rotation_temporary_is_removed(tmp_path: Path) -> None:
    write(tmp_path, 2)
    stale = segment_path(tmp_path, 2).with_suffix(".wgseg.tmp")
    stale.write_bytes(b"WGSEG")
    with SegmentLog.open(tmp_path) as log:
        assert log.position.segment == 1
    assert not stale.exists()


@given(st.lists(st.binary(max_size=300), max_size=30), st.integers(min_value=300, max_value=3000))
def test_any_payloads_round_trip_through_segments(
    tmp_path_factory: pytest.TempPathFactory, payloads: list[bytes], max_bytes: int
) -> None:
    data_dir = tmp_path_factory.mktemp("log")
    with SegmentLog.open(data_dir, max_segment_bytes=max_bytes) as log:
        for i, blob in enumerate(payloads):
            log.append(
                encode_frame(
                    Frame(
                        conn_id="c", seq=i, ts_ns=i, direction=Direction.TO_CLIENT, event=BodyChunk(data=blob)
                    )
                )
            )
            if log.needs_rotation:
                log.rotate()
    assert [s.frame.event for s in iter_frames(data_dir)] == [BodyChunk(data=blob) for blob in payloads]
    assert verify(data_dir).ok


def test_decoded_payload_is_a_frame(tmp_path: Path) -> None:
    ended = Frame(
        conn_id="c", seq=0, ts_ns=1, direction=Direction.TO_CLIENT, event=ExchangeEnded(outcome="complete")
    )
    assert decode_frame(encode_frame(ended)) == ended


def test_append_batch_writes_what_append_writes(tmp_path: Path) -> None:
    payloads = [encode_frame(frame(i, size=i * 7)) for i in range(20)]
    with SegmentLog.open(tmp_path / "one") as one, SegmentLog.open(tmp_path / "batch") as batch:
        for payload in payloads:
            one.append(payload)
        batch.append_batch(payloads[:5])
        batch.append_batch(payloads[5:])
        assert (batch.chain, batch.records, batch.unsynced_records) == (one.chain, one.records, 20)
        one.flush()
        batch.flush()
        body = slice(HEADER_BYTES, None)
        assert (
            segment_path(tmp_path / "batch", 1).read_bytes()[body]
            == segment_path(tmp_path / "one", 1).read_bytes()[body]
        )
        with pytest.raises(StorageError):
            batch.append_batch([payloads[0], b"x" * (65 << 20)])
        assert batch.records == 21  # the one before the oversized payload was kept
