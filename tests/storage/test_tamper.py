"""Tamper evidence: ``verify`` with the public key finds every kind of tampering, at the right place.

Each test writes a real signed log (checkpoints in the log and in the checkpoint file), tampers with the
files as an attacker with write access would, and checks the first error's segment, offset and reason.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from parsers.events import Checkpoint
from storage._format import HEADER_BYTES, segment_path
from storage.checkpoints import CheckpointFile, checkpoint_path, sign_checkpoint
from storage.codec import decode_frame, encode_frame
from storage.segments import Anchor, Position
from storage.signing import SigningKey, create_signing_key
from storage.verify import VerifyReport, verify
from tests.storage.signed_log import TS, SignedLog, gateway_frame, records, rewrite

SEGMENT_BYTES = 1500


@pytest.fixture
def key(tmp_path: Path) -> SigningKey:
    return create_signing_key(tmp_path)


@pytest.fixture
def book(tmp_path: Path, key: SigningKey) -> SignedLog:
    """60 frames over several segments, a checkpoint every 5 frames and one at the end (like shutdown)."""
    book = SignedLog(tmp_path, key, max_segment_bytes=SEGMENT_BYTES).write(60)
    book.checkpoint("shutdown")
    book.close()
    assert book.log.position.segment >= 4
    return book


def check(book: SignedLog) -> VerifyReport:
    return verify(book.data_dir, public_key=book.key.public)


def error_at(report: VerifyReport) -> tuple[int, int, str]:
    assert not report.ok
    assert report.first_error is not None
    return report.first_error.segment, report.first_error.offset, report.first_error.reason


def test_an_untouched_log_is_anchored_to_its_end(book: SignedLog) -> None:
    report = check(book)
    assert report.ok, report
    assert report.frames == 60 + len(book.checkpoints)
    assert report.checkpoints == report.checkpoint_file_entries == len(book.checkpoints)
    assert report.key_fingerprint == book.key.public.fingerprint
    assert report.anchored is not None
    assert Position(report.anchored.segment, report.anchored.offset) == book.checkpoints[-1]
    assert report.unanchored is None


def test_frames_after_the_last_checkpoint_are_reported_unanchored(tmp_path: Path, key: SigningKey) -> None:
    book = SignedLog(tmp_path, key, max_segment_bytes=SEGMENT_BYTES).write(23)
    book.close()
    last = book.checkpoints[-1]
    report = check(book)
    assert report.ok
    assert report.unanchored is not None
    assert report.unanchored.frames == 3  # frames 20, 21, 22
    assert Position(report.unanchored.segment, report.unanchored.offset) == book.positions[20]
    as_json = msgspec.to_builtins(report)
    assert as_json["unanchored"]["frames"] == 3
    assert as_json["anchored"]["offset"] == last.offset


def test_without_a_public_key_nothing_counts_as_anchored(book: SignedLog) -> None:
    report = verify(book.data_dir)
    assert report.ok
    assert report.anchored is None
    assert report.key_fingerprint == ""
    assert report.unanchored is not None
    assert report.unanchored.frames == report.frames
    assert any("not checked" in note.reason for note in report.notes)


def test_a_changed_byte_is_found_at_its_record(book: SignedLog) -> None:
    for victim in (book.positions[7], book.checkpoints[2], book.positions[41]):
        path = segment_path(book.data_dir, victim.segment)
        pristine = path.read_bytes()
        data = bytearray(pristine)
        data[victim.offset + 20] ^= 0x01
        path.write_bytes(data)
        segment, offset, _ = error_at(check(book))
        assert (segment, offset) == victim
        path.write_bytes(pristine)
    assert check(book).ok


def test_a_changed_byte_in_the_last_record_is_caught_by_the_checkpoint_file(book: SignedLog) -> None:
    # A bad last record looks like a torn write; the checkpoint file still knows it was a checkpoint.
    last = book.checkpoints[-1]
    path = segment_path(book.data_dir, last.segment)
    data = bytearray(path.read_bytes())
    data[-40] ^= 0x01
    path.write_bytes(data)
    segment, offset, reason = error_at(check(book))
    assert (segment, offset) == last
    assert "cut short" in reason


def test_a_deleted_frame_is_found_where_it_was(book: SignedLog) -> None:
    victim = book.positions[12]
    segment = [offset for offset, _ in records(book.data_dir, victim.segment)]
    following = segment[segment.index(victim.offset) + 1]
    path = segment_path(book.data_dir, victim.segment)
    data = path.read_bytes()
    path.write_bytes(data[: victim.offset] + data[following:])
    segment_number, offset, reason = error_at(check(book))
    assert (segment_number, offset) == victim
    assert "chain" in reason


def test_reordered_frames_are_found_at_the_first_one_moved(book: SignedLog) -> None:
    first, second = book.positions[31], book.positions[32]
    assert first.segment == second.segment
    path = segment_path(book.data_dir, first.segment)
    data = path.read_bytes()
    size = second.offset - first.offset
    swapped = (
        data[: first.offset] + data[second.offset : second.offset + size] + data[first.offset : second.offset]
    )
    path.write_bytes(swapped + data[second.offset + size :])
    segment, offset, _ = error_at(check(book))
    assert (segment, offset) == first


def test_a_removed_segment_is_named(book: SignedLog) -> None:
    segment_path(book.data_dir, 2).unlink()
    assert error_at(check(book)) == (2, 0, "segment file is missing")


def test_removed_oldest_segments_are_named_without_a_retention_record(book: SignedLog) -> None:
    segment_path(book.data_dir, 1).unlink()
    segment_path(book.data_dir, 2).unlink()
    assert error_at(check(book)) == (1, 0, "segment file is missing")


def test_a_removed_newest_segment_is_caught_by_the_checkpoint_file(book: SignedLog) -> None:
    newest = book.log.position.segment
    segment_path(book.data_dir, newest).unlink()
    segment, offset, reason = error_at(check(book))
    assert (segment, offset) == (newest, HEADER_BYTES)  # its opening checkpoint
    assert "cut short" in reason


def test_a_truncated_sealed_segment_is_found(book: SignedLog) -> None:
    path = segment_path(book.data_dir, 2)
    cut = records(book.data_dir, 2)[-2][0]  # drop the last two records
    path.write_bytes(path.read_bytes()[:cut])
    segment, offset, reason = error_at(check(book))
    assert (segment, offset) == (3, 0)
    assert "previous segment" in reason


def test_a_tail_cut_beyond_the_last_checkpoint_is_caught_by_the_checkpoint_file(book: SignedLog) -> None:
    # Cutting at a record boundary leaves a perfectly valid shorter log: only the checkpoint file knows.
    newest = book.log.position.segment
    victim = max(p for p in book.checkpoints if p.segment == newest and p.offset > HEADER_BYTES)
    path = segment_path(book.data_dir, newest)
    path.write_bytes(path.read_bytes()[: victim.offset])
    assert verify(book.data_dir).torn_tail is None
    segment, offset, reason = error_at(check(book))
    assert (segment, offset) == victim
    assert "cut short" in reason


def _edit_frame_and_rewrite_chain(book: SignedLog, victim: Position, forger: SigningKey | None) -> None:
    """Change one frame, then rebuild the segment with a valid chain (re-signing checkpoints if forging)."""
    payloads = []
    for offset, payload in records(book.data_dir, victim.segment):
        if offset == victim.offset:
            frame = decode_frame(payload)
            payload = encode_frame(msgspec.structs.replace(frame, conn_id="c_9"))
        payloads.append(payload)
    rewrite(book.data_dir, victim.segment, payloads)
    if forger is None:
        return
    # Re-sign every checkpoint after the change, as the forger must for the chain to match them.
    while True:
        stored = records(book.data_dir, victim.segment)
        for index, (offset, payload) in enumerate(stored):
            event = decode_frame(payload).event
            if offset <= victim.offset or not isinstance(event, Checkpoint):
                continue
            chain = _chain_before(book.data_dir, victim.segment, index, stored)
            anchor = Anchor(Position(victim.segment, offset), chain, event.frames)
            forged = sign_checkpoint(forger, anchor, TS, "interval")
            if forged.chain == event.chain:
                continue
            payloads = [p for _, p in stored]
            payloads[index] = encode_frame(gateway_frame(forged))
            rewrite(book.data_dir, victim.segment, payloads)
            break
        else:
            return


def _chain_before(data_dir: Path, number: int, index: int, stored: list[tuple[int, bytes]]) -> bytes:
    data = segment_path(data_dir, number).read_bytes()
    if index == 0:
        return data[HEADER_BYTES - 36 : HEADER_BYTES - 4]
    return data[stored[index][0] - 32 : stored[index][0]]


def test_a_rewritten_chain_is_caught_by_the_next_checkpoint(book: SignedLog) -> None:
    victim = book.positions[16]
    _edit_frame_and_rewrite_chain(book, victim, forger=None)
    after = min(p for p in book.checkpoints if p > victim)
    segment, offset, reason = error_at(check(book))
    assert (segment, offset) == after
    assert "chain differs" in reason


def test_a_rewritten_chain_with_forged_checkpoints_fails_the_signature(
    book: SignedLog, tmp_path: Path
) -> None:
    victim = book.positions[16]
    forger = create_signing_key(tmp_path / "forger")
    _edit_frame_and_rewrite_chain(book, victim, forger=forger)
    after = min(p for p in book.checkpoints if p > victim)
    segment, offset, reason = error_at(check(book))
    assert (segment, offset) == after
    assert "another key" in reason
    # The forger's own key does not help: the checkpoints before the change carry the real signature.
    segment, offset, reason = error_at(verify(book.data_dir, public_key=forger.public))
    assert (segment, offset) == book.checkpoints[0]
    assert "another key" in reason


def test_a_forged_checkpoint_claiming_the_real_key_id_fails_the_signature(book: SignedLog) -> None:
    victim = book.checkpoints[3]
    stored = records(book.data_dir, victim.segment)
    payloads = []
    for offset, payload in stored:
        frame = decode_frame(payload)
        if offset == victim.offset and isinstance(frame.event, Checkpoint):
            bad = msgspec.structs.replace(frame.event, signature=bytes(64))
            payload = encode_frame(msgspec.structs.replace(frame, event=bad))
        payloads.append(payload)
    rewrite(book.data_dir, victim.segment, payloads)
    segment, offset, reason = error_at(check(book))
    assert (segment, offset) == victim
    assert "signature is invalid" in reason


def test_a_forged_checkpoint_file_is_found(book: SignedLog, tmp_path: Path) -> None:
    forger = create_signing_key(tmp_path / "forger")
    first = book.checkpoints[0]
    [(_, payload)] = [(o, p) for o, p in records(book.data_dir, first.segment) if o == first.offset]
    event = decode_frame(payload).event
    assert isinstance(event, Checkpoint)
    anchor = Anchor(first, event.chain, event.frames)
    checkpoint_path(book.data_dir).unlink()
    file = CheckpointFile.open(book.data_dir)
    file.append(encode_frame(gateway_frame(sign_checkpoint(forger, anchor, TS, "interval"))))
    file.close()
    segment, offset, reason = error_at(check(book))
    assert (segment, offset) == first
    assert "invalid signature" in reason
