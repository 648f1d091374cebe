"""Retention plans and legal holds on real segment files, and ``verify`` over a log retention shortened."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage._format import list_segments, segment_path
from storage.codec import encode_frame
from storage.errors import StorageError
from storage.holds import load_holds, place_hold, release_hold
from storage.reader import iter_frames
from storage.retention import RetentionPlan, RetentionPolicy, plan_retention, remove_segments
from storage.signing import create_signing_key
from storage.verify import verify
from tests.storage.signed_log import SignedLog, gateway_frame
from tests.storage.test_segments import write as write_unsigned

HOUR_NS = 3600 * 10**9


@pytest.fixture
def book(tmp_path: Path) -> SignedLog:
    book = SignedLog(tmp_path, create_signing_key(tmp_path), max_segment_bytes=900).write(60)
    book.checkpoint("shutdown")
    assert book.log.position.segment >= 6
    return book


def total_bytes(data_dir: Path) -> int:
    return sum(segment_path(data_dir, n).stat().st_size for n in list_segments(data_dir))


def apply(book: SignedLog, plan: RetentionPlan) -> None:
    """What the gateway does: record the plan, anchor it with a checkpoint, then remove the files."""
    book.log.append(encode_frame(gateway_frame(plan.event())))
    book.checkpoint("requested")
    remove_segments(book.data_dir, plan.remove)


def test_nothing_is_planned_without_a_policy(book: SignedLog) -> None:
    plan = plan_retention(book.data_dir, RetentionPolicy(), now_ns=0, before=100, held={})
    assert plan is None


def test_a_size_budget_removes_the_oldest_segments_and_verify_accepts_it(book: SignedLog) -> None:
    data_dir = book.data_dir
    current = book.log.position.segment
    budget = total_bytes(data_dir) // 2
    plan = plan_retention(
        data_dir, RetentionPolicy(max_total_bytes=budget), now_ns=0, before=current, held={}
    )
    assert plan is not None
    assert plan.remove == list(range(1, plan.first_kept))
    assert plan.reason == "size_budget"
    assert total_bytes(data_dir) - plan.removed_bytes <= budget
    apply(book, plan)
    book.close()
    report = verify(data_dir, public_key=book.key.public)
    assert report.ok, report
    assert report.removed_segments == plan.remove
    assert report.unanchored is None
    assert next(iter_frames(data_dir)).position.segment == plan.first_kept


def test_age_spares_the_segment_being_written_and_those_not_yet_indexed(book: SignedLog) -> None:
    current = book.log.position.segment
    policy = RetentionPolicy(max_age_s=60)
    plan = plan_retention(book.data_dir, policy, now_ns=HOUR_NS**2, before=3, held={})
    assert plan is not None
    assert plan.remove == [1, 2]
    assert plan.reason == "max_age"
    everything = plan_retention(book.data_dir, policy, now_ns=HOUR_NS**2, before=current + 5, held={})
    assert everything is not None
    assert everything.remove == list(range(1, current))
    assert plan_retention(book.data_dir, policy, now_ns=0, before=current, held={}) is None  # all young


def test_a_legal_hold_keeps_its_segments_and_leaves_an_anchored_gap(book: SignedLog) -> None:
    data_dir = book.data_dir
    current = book.log.position.segment
    held = {3: {"case-42"}}
    plan = plan_retention(
        data_dir, RetentionPolicy(max_age_s=1), now_ns=HOUR_NS**2, before=current, held=held
    )
    assert plan is not None
    assert 3 not in plan.remove
    assert plan.remove == [n for n in range(1, current) if n != 3]
    assert (plan.kept_segments, plan.held_sessions, plan.first_kept) == ([3], ["case-42"], 3)
    apply(book, plan)
    book.close()
    assert list_segments(data_dir) == [3, current]
    report = verify(data_dir, public_key=book.key.public)
    assert report.ok, report
    assert report.removed_segments == plan.remove
    assert next(iter_frames(data_dir)).position.segment == 3
    assert {s.position.segment for s in iter_frames(data_dir)} == {3, current}


def test_a_removal_no_anchored_retention_record_explains_is_tampering(book: SignedLog) -> None:
    data_dir = book.data_dir
    current = book.log.position.segment
    plan = plan_retention(data_dir, RetentionPolicy(max_age_s=1), now_ns=HOUR_NS**2, before=current, held={})
    assert plan is not None
    book.log.append(encode_frame(gateway_frame(plan.event())))  # no checkpoint after it: unanchored
    book.close()
    remove_segments(data_dir, plan.remove)
    report = verify(data_dir, public_key=book.key.public)
    assert report.first_error is not None
    assert (report.first_error.segment, report.first_error.offset) == (1, 0)
    assert report.first_error.reason == "segment file is missing"


def test_a_log_without_checkpoints_keeps_its_old_segments(tmp_path: Path) -> None:
    write_unsigned(tmp_path, 80, max_segment_bytes=900)
    numbers = list_segments(tmp_path)
    policy = RetentionPolicy(max_total_bytes=1)
    assert len(numbers) > 3
    assert plan_retention(tmp_path, policy, now_ns=0, before=numbers[-1], held={}) is None


def test_holds_are_placed_listed_and_released(tmp_path: Path) -> None:
    assert load_holds(tmp_path) == {}
    assert place_hold(tmp_path, "case-42", since_ns=5, note="ticket 7")
    assert not place_hold(tmp_path, "case-42", since_ns=6)
    assert place_hold(tmp_path, "s_01kdz5m8s0bbbbbbbbbbbbbbbb", since_ns=7)
    holds = load_holds(tmp_path)
    assert sorted(holds) == ["case-42", "s_01kdz5m8s0bbbbbbbbbbbbbbbb"]
    assert (holds["case-42"].since_ns, holds["case-42"].note) == (5, "ticket 7")
    assert release_hold(tmp_path, "case-42")
    assert not release_hold(tmp_path, "case-42")
    assert list(load_holds(tmp_path)) == ["s_01kdz5m8s0bbbbbbbbbbbbbbbb"]
    with pytest.raises(StorageError, match="not a session id"):
        place_hold(tmp_path, "bad id with spaces", since_ns=1)
