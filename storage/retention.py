"""Retention: which whole segments may go (too old, or beyond a size budget), and removing them.

Never the segment being written, never one not fully indexed, never one holding frames of a session on
legal hold. A removed run of segments must be followed by a kept segment that opens with a checkpoint
of its header chain: there readers and ``verify`` pick the log up again. Planning reads headers and
sizes only. The gateway records the plan (a ``Retention`` record, anchored by a checkpoint) *before* it
removes anything, so a crash in between leaves a log that says more was removed than was, never less.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from itertools import pairwise
from pathlib import Path

import msgspec

from parsers.events import Retention
from storage._anchors import read_opening
from storage._format import HEADER_BYTES, list_segments, segment_path, segments_dir, unpack_header


class RetentionPolicy(msgspec.Struct, frozen=True, kw_only=True):
    max_age_s: float = 0.0  # remove segments whose last record is older; 0: no age limit
    max_total_bytes: int = 0  # remove the oldest segments while all of them take more; 0: no budget

    @property
    def enabled(self) -> bool:
        return self.max_age_s > 0 or self.max_total_bytes > 0


class RetentionPlan(msgspec.Struct, frozen=True, kw_only=True):
    remove: list[int]
    first_kept: int
    chain: bytes  # the first kept segment's header chain
    removed_bytes: int
    reason: str  # max_age | size_budget | max_age+size_budget
    held_sessions: list[str]  # sessions on hold whose segments were kept although old
    kept_segments: list[int]  # those segments

    def event(self) -> Retention:
        return Retention(
            removed=self.remove,
            first_kept=self.first_kept,
            chain=self.chain,
            removed_bytes=self.removed_bytes,
            reason=self.reason,
            held_sessions=self.held_sessions,
            kept_segments=self.kept_segments,
        )


def plan_retention(
    data_dir: Path,
    policy: RetentionPolicy,
    *,
    now_ns: int,
    before: int,
    held: Mapping[int, Collection[str]],
) -> RetentionPlan | None:
    """What to remove now, or None. Only segments numbered below ``before`` are candidates (pass the
    lower of the segment being written and the first one not fully indexed). ``held`` maps segment
    numbers to the sessions on legal hold with frames in them.

    Raises:
        OSError, StorageError: a segment cannot be read.
    """
    numbers = list_segments(data_dir)
    if not policy.enabled or not numbers:
        return None
    sizes = {n: segment_path(data_dir, n).stat().st_size for n in numbers}
    candidates = [n for n in numbers if n < before]
    expired: set[int] = set()
    if policy.max_age_s > 0:
        horizon = now_ns - int(policy.max_age_s * 1e9)
        for number, following in pairwise(numbers):
            # A segment's last record is older than the next segment's creation.
            if number in candidates and _created_ns(data_dir, following) <= horizon:
                expired.add(number)
    over_budget: set[int] = set()
    if policy.max_total_bytes > 0:
        total = sum(sizes.values())
        for number in candidates:
            if total <= policy.max_total_bytes:
                break
            over_budget.add(number)
            if number not in held:  # a held segment stays and keeps taking its room
                total -= sizes[number]
    wanted = expired | over_budget
    kept = sorted(n for n in wanted if n in held)
    remove = _anchored(data_dir, numbers, wanted - set(kept))
    if not remove:
        return None
    first_kept = min(n for n in numbers if n not in remove)
    with segment_path(data_dir, first_kept).open("rb") as f:
        chain = unpack_header(f.read(HEADER_BYTES), first_kept).chain
    reasons = [name for name, part in (("max_age", expired), ("size_budget", over_budget)) if part & remove]
    return RetentionPlan(
        remove=sorted(remove),
        first_kept=first_kept,
        chain=chain,
        removed_bytes=sum(sizes[n] for n in remove),
        reason="+".join(reasons),
        held_sessions=sorted({session for n in kept for session in held[n]}),
        kept_segments=kept,
    )


def remove_segments(data_dir: Path, numbers: Collection[int]) -> None:
    """Delete the segment files (already recorded as removed) and make the deletion durable."""
    for number in sorted(numbers):
        segment_path(data_dir, number).unlink(missing_ok=True)
    fd = os.open(segments_dir(data_dir), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _anchored(data_dir: Path, numbers: list[int], wanted: set[int]) -> set[int]:
    """``wanted`` less what must stay so that every kept segment after a removed one opens with a
    checkpoint (a log written before checkpoints existed keeps its old segments)."""
    remove = set(wanted)
    opens: dict[int, bool] = {}
    changed = True
    while changed:
        changed = False
        for previous, number in pairwise(numbers):
            if previous in remove and number not in remove:
                if number not in opens:
                    opens[number] = read_opening(data_dir, number)[1] is not None
                if not opens[number]:
                    remove.discard(previous)
                    changed = True
    return remove


def _created_ns(data_dir: Path, number: int) -> int:
    with segment_path(data_dir, number).open("rb") as f:
        return unpack_header(f.read(HEADER_BYTES), number).created_ns


__all__ = ["RetentionPlan", "RetentionPolicy", "plan_retention", "remove_segments"]
