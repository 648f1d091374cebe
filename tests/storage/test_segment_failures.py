"""The segment log when writes or fsyncs fail: sealing, re-reading the old tail, going on in a new segment.

Real files throughout; the failures come from ``FlakyDisk``, a failing implementation of ``FileOps``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from parsers.events import Recovered
from storage._format import HEADER_BYTES, segment_path
from storage.codec import decode_frame, encode_frame
from storage.errors import LogWriteFailed, StorageError
from storage.reader import iter_frames
from storage.segments import SEALED, SegmentLog
from storage.signing import create_signing_key
from storage.verify import verify
from tests.storage.flaky_disk import FlakyDisk
from tests.storage.signed_log import SignedLog, chunk, gateway_frame


def seqs(data_dir: Path) -> list[int]:
    return [s.frame.seq for s in iter_frames(data_dir) if s.frame.conn_id == "c_1"]


def test_a_failed_write_seals_and_restart_writes_the_unsynced_records_again(tmp_path: Path) -> None:
    disk = FlakyDisk()
    log = SegmentLog.open(tmp_path, ops=disk)
    for i in range(5):
        log.append(encode_frame(chunk(i)))
    log.flush()
    log.sync()
    synced = log.position
    log.append(encode_frame(chunk(5)))
    log.append(encode_frame(chunk(6)))
    log.flush()  # written, not yet fsync'd
    log.append(encode_frame(chunk(7)))
    disk.full = True
    disk.short_write = 10  # part of the record reaches the file
    with pytest.raises(LogWriteFailed, match="write failed"):
        log.flush()
    assert log.failure is not None
    assert log.failure.errno == 28
    with pytest.raises(StorageError, match="sealed"):
        log.sync()
    assert log.unsynced_records == 3

    disk.full = False
    sealed = log.seal_tail()
    assert (sealed.segment, sealed.offset, sealed.carried) == (1, synced.offset, 3)
    assert sealed.bytes_cut > 0
    assert segment_path(tmp_path, 1).stat().st_size == synced.offset
    anchor = log.next_anchor
    assert (anchor.position.segment, anchor.position.offset, anchor.records) == (2, HEADER_BYTES, 5)
    marker = Recovered(
        kind=SEALED, segment=1, offset=sealed.offset, bytes_cut=sealed.bytes_cut, reason="test"
    )
    log.restart([encode_frame(gateway_frame(marker))])
    log.flush()
    log.sync()
    log.append(encode_frame(chunk(8)))
    log.close()
    assert seqs(tmp_path) == list(range(9))
    first_of_two = next(s for s in iter_frames(tmp_path) if s.position.segment == 2)
    assert first_of_two.frame.event == marker
    assert verify(tmp_path).ok


def test_a_failed_fsync_seals_the_segment_and_it_is_never_synced_again(tmp_path: Path) -> None:
    disk = FlakyDisk()
    log = SegmentLog.open(tmp_path, ops=disk)
    log.append(encode_frame(chunk(0)))
    log.flush()
    log.sync()
    log.append(encode_frame(chunk(1)))
    log.flush()
    disk.fsync_fails = True
    with pytest.raises(LogWriteFailed, match="fsync failed"):
        log.sync()
    first = str(segment_path(tmp_path, 1))
    disk.fsync_fails = False
    disk.synced.clear()
    sealed = log.seal_tail()
    assert sealed.carried == 1  # written but never confirmed on disk: it goes again
    log.restart([])
    log.append(encode_frame(chunk(2)))
    log.close()
    assert first not in disk.synced
    assert str(segment_path(tmp_path, 2)) in disk.synced
    assert seqs(tmp_path) == [0, 1, 2]
    assert verify(tmp_path).ok


def test_restart_on_a_still_full_disk_leaves_nothing_behind(tmp_path: Path) -> None:
    disk = FlakyDisk()
    log = SegmentLog.open(tmp_path, ops=disk)
    log.append(encode_frame(chunk(0)))
    disk.full = True
    with pytest.raises(LogWriteFailed):
        log.flush()
    log.seal_tail()
    with pytest.raises(LogWriteFailed, match="create failed"):
        log.restart([])
    assert sorted(p.name for p in (tmp_path / "segments").iterdir()) == ["000000000001.wgseg"]
    disk.full = False
    log.restart([])
    log.close()
    assert seqs(tmp_path) == [0]
    assert verify(tmp_path).ok


def test_a_failed_rotation_resumes_in_the_next_segment(tmp_path: Path) -> None:
    disk = FlakyDisk()
    log = SegmentLog.open(tmp_path, ops=disk)
    log.append(encode_frame(chunk(0)))
    disk.full = True
    disk.short_write = 1 << 20  # the old segment's flush succeeds, creating the next segment does not
    with pytest.raises(LogWriteFailed, match="create failed"):
        log.rotate()
    assert log.failure is not None
    disk.full = False
    assert log.seal_tail().carried == 0
    log.restart([])
    log.append(encode_frame(chunk(1)))
    log.close()
    assert seqs(tmp_path) == [0, 1]
    assert verify(tmp_path).ok


def test_a_superseded_tail_is_accepted_only_where_the_next_segment_declares_it(tmp_path: Path) -> None:
    disk = FlakyDisk()
    log = SegmentLog.open(tmp_path, ops=disk)
    log.append(encode_frame(chunk(0)))
    log.flush()
    log.sync()
    log.append(encode_frame(chunk(1)))
    log.flush()
    path = segment_path(tmp_path, 1)
    whole = path.read_bytes()
    disk.fsync_fails = True
    with pytest.raises(LogWriteFailed):
        log.sync()
    disk.fsync_fails = False
    sealed = log.seal_tail()
    marker = Recovered(kind=SEALED, segment=1, offset=sealed.offset, bytes_cut=sealed.bytes_cut, reason="EIO")
    log.restart([encode_frame(gateway_frame(marker))])
    log.close()
    # The cut was never fsync'd: after a power loss the old bytes may be back. The log says why.
    path.write_bytes(whole)
    report = verify(tmp_path)
    assert report.ok, report
    assert any("superseded" in note.reason for note in report.notes)
    assert any("sealed after a failed write" in note.reason for note in report.notes)
    # The same extra bytes without the declaration are tampering.
    second = segment_path(tmp_path, 2)
    data = second.read_bytes()
    first_record_end = HEADER_BYTES + 8 + len(encode_frame(gateway_frame(marker))) + 32
    assert decode_frame(data[HEADER_BYTES + 8 : first_record_end - 32]).event == marker
    second.write_bytes(data[:HEADER_BYTES])
    report = verify(tmp_path)
    assert report.first_error is not None
    assert (report.first_error.segment, report.first_error.offset) == (2, 0)


def test_open_describes_the_torn_tail_it_cut(tmp_path: Path) -> None:
    with SegmentLog.open(tmp_path) as log:
        log.append(encode_frame(chunk(0)))
        log.append(encode_frame(chunk(1)))
        end = log.position.offset
    path = segment_path(tmp_path, 1)
    path.write_bytes(path.read_bytes()[:-5])
    log = SegmentLog.open(tmp_path)
    assert log.recovered is not None
    assert log.recovered.segment == 1
    assert log.recovered.bytes_cut == log.recovered.saved_as.stat().st_size == end - 5 - log.recovered.offset
    assert "incomplete" in log.recovered.reason
    assert log.records == 1
    log.close()


def test_the_record_count_resumes_from_the_segment_opening_checkpoint(tmp_path: Path) -> None:
    key = create_signing_key(tmp_path)
    book = SignedLog(tmp_path, key, max_segment_bytes=900).write(40)
    book.close()
    assert book.log.position.segment > 3
    with SegmentLog.open(tmp_path) as log:
        assert log.records == verify(tmp_path).frames == book.log.records
    for number in range(1, book.log.position.segment):
        segment_path(tmp_path, number).unlink()  # counting needs only the newest segment now
    with SegmentLog.open(tmp_path) as log:
        assert log.records == book.log.records
