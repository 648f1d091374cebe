"""Retention runs and legal holds: ``run_retention`` (the gateway calls it at startup and hourly) and
the ``wardgate hold|release|holds`` commands.

A pass plans with ``storage.retention``, records the plan through the recorder (a ``Retention`` record
anchored by a signed checkpoint) and only then deletes index rows and segment files. Holds live in
``<data>/legal-holds``; the CLI edits that file, a running gateway reads it at each pass.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import sys
import time
from pathlib import Path

import msgspec

from gateway.recorder import Recorder, RecordingFailed
from storage.errors import StorageError
from storage.holds import load_holds, place_hold, release_hold
from storage.index import SqliteIndex
from storage.retention import RetentionPlan, RetentionPolicy, plan_retention, remove_segments
from storage.series import series_root

logger = logging.getLogger("wardgate.retention")

DEFAULT_DATA_DIR = Path("./wardgate-data")
RETENTION_INTERVAL_S = 3600.0


async def run_retention(
    data_dir: Path,
    recorder: Recorder,
    index: SqliteIndex,
    policy: RetentionPolicy,
    *,
    now_ns: int | None = None,
    series: int = 0,
) -> RetentionPlan | None:
    """One pass over the segment series ``series`` (the recorder's): remove what the policy allows (None:
    nothing to do). Holds live in ``data_dir`` for every series.

    Only segments below both the one being written and the first one not fully indexed are candidates.

    Raises:
        RecordingFailed: the log is not writable; nothing was removed.
        StorageError, OSError: a segment, the index or the holds file cannot be read.
    """
    if not policy.enabled:
        return None
    indexed = await index.indexed_position(series=series)
    if indexed is None:
        return None
    holds = await asyncio.to_thread(load_holds, data_dir)
    held = await index.segments_of_sessions(holds, series=series) if holds else {}
    root = series_root(data_dir, series)
    before = min(recorder.log.position.segment, indexed.segment)
    plan = await asyncio.to_thread(
        plan_retention,
        root,
        policy,
        now_ns=time.time_ns() if now_ns is None else now_ns,
        before=before,
        held=held,
    )
    if plan is None:
        return None
    await recorder.record_retention(plan.event())  # on disk and anchored before anything goes
    forgotten = await index.forget_segments(plan.remove, series=series)
    await asyncio.to_thread(remove_segments, root, plan.remove)
    logger.info(
        "retention (%s): removed %d segments (%d bytes, %d indexed exchanges); log starts at segment %012d%s",
        plan.reason,
        len(plan.remove),
        plan.removed_bytes,
        forgotten,
        plan.first_kept,
        f"; kept {len(plan.kept_segments)} for legal holds" if plan.kept_segments else "",
    )
    return plan


async def retention_loop(
    data_dir: Path,
    recorder: Recorder,
    index: SqliteIndex,
    policy: RetentionPolicy,
    *,
    stop: asyncio.Event,
    interval_s: float = RETENTION_INTERVAL_S,
    series: int = 0,
) -> None:
    """Run a pass now and every ``interval_s`` until ``stop`` is set. A failed pass is logged and retried
    at the next interval; it never stops the gateway."""
    while not stop.is_set():
        try:
            await run_retention(data_dir, recorder, index, policy, series=series)
        except RecordingFailed as exc:
            logger.warning("retention skipped, the session log is not writable: %s", exc)
        except (StorageError, OSError) as exc:
            logger.error("retention pass failed: %s", exc)
        try:
            async with asyncio.timeout(interval_s):
                await stop.wait()
        except TimeoutError:
            pass


# --- the CLI ---------------------------------------------------------------------------------------


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``hold``, ``release`` and ``holds``; each sets ``func`` -> exit code."""
    p = sub.add_parser("hold", help="put a session on legal hold: retention keeps its recordings")
    p.add_argument("session_id", help="the session id (X-Wardgate-Session or the assigned s_... id)")
    p.add_argument("--note", default="", help="why (a case number, a ticket)")
    p.set_defaults(func=cmd_hold)
    p_release = sub.add_parser("release", help="take a session off legal hold")
    p_release.add_argument("session_id")
    p_release.set_defaults(func=cmd_release)
    p_list = sub.add_parser("holds", help="list the sessions on legal hold")
    p_list.add_argument("--json", action="store_true", help="JSON Lines: one object per hold")
    p_list.set_defaults(func=cmd_holds)
    for each in (p, p_release, p_list):
        each.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="default ./wardgate-data")


def cmd_hold(args: argparse.Namespace) -> int:
    try:
        placed = place_hold(args.data_dir, args.session_id, since_ns=time.time_ns(), note=args.note)
    except StorageError as exc:
        print(f"wardgate: {exc}", file=sys.stderr)
        return 2
    print(f"{args.session_id}: {'on legal hold' if placed else 'already on legal hold'}")
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    try:
        released = release_hold(args.data_dir, args.session_id)
    except StorageError as exc:
        print(f"wardgate: {exc}", file=sys.stderr)
        return 2
    if not released:
        print(f"wardgate: {args.session_id} is not on legal hold", file=sys.stderr)
        return 1
    print(f"{args.session_id}: released; retention may remove it")
    return 0


def cmd_holds(args: argparse.Namespace) -> int:
    try:
        holds = load_holds(args.data_dir)
    except StorageError as exc:
        print(f"wardgate: {exc}", file=sys.stderr)
        return 1
    for hold in sorted(holds.values(), key=lambda h: h.since_ns):
        if args.json:
            print(msgspec.json.encode(hold).decode())
        else:
            since = dt.datetime.fromtimestamp(hold.since_ns / 1e9, dt.UTC).isoformat(timespec="seconds")
            print(f"{hold.session_id}  since {since}  {hold.note}".rstrip())
    return 0


__all__ = [
    "RETENTION_INTERVAL_S",
    "add_commands",
    "cmd_hold",
    "cmd_holds",
    "cmd_release",
    "retention_loop",
    "run_retention",
]
