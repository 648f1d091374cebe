"""Retention passes with the real recorder, index and segment files: old segments go with their index
rows, a legal hold keeps its session, and ``verify`` accepts the shortened log as untampered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from gateway.recorder import Recorder, RecordingFailed
from gateway.retention import run_retention
from parsers.events import (
    ANONYMOUS,
    BodyChunk,
    Direction,
    ExchangeEnded,
    ExchangeStarted,
    RecordedEvent,
    Retention,
)
from storage._format import list_segments
from storage.codec import Frame
from storage.holds import place_hold
from storage.index import SqliteIndex, index_path
from storage.query import ExchangeQuery
from storage.reader import iter_frames
from storage.retention import RetentionPolicy
from storage.segments import SegmentLog
from storage.signing import SigningKey, create_signing_key
from storage.verify import verify
from tests.storage.flaky_disk import FlakyDisk

HELD = "case-42"


def exchange_frames(n: int, session: str) -> list[Frame]:
    exchange = f"x_{n:04d}"
    events: list[RecordedEvent] = [
        ExchangeStarted(
            exchange_id=exchange,
            session_id=session,
            identity=ANONYMOUS,
            client_addr="127.0.0.1:5000",
            listener="default",
            protocol="http/1.1",
        ),
        BodyChunk(data=b"y" * 120),
        ExchangeEnded(outcome="complete", status=200),
    ]
    return [
        Frame(
            conn_id=f"c_{n}",
            seq=i,
            ts_ns=1_000_000 * n + i,
            direction=Direction.TO_CLIENT,
            event=event,
            exchange_id=exchange,
        )
        for i, event in enumerate(events)
    ]


@asynccontextmanager
async def gateway_parts(
    data_dir: Path, key: SigningKey, disk: FlakyDisk | None = None
) -> AsyncIterator[tuple[Recorder, SqliteIndex]]:
    log = SegmentLog.open(data_dir, max_segment_bytes=1_500, **({"ops": disk} if disk else {}))
    recorder = Recorder(
        log,
        group_commit_s=0.005,
        max_pending=10_000,
        redact_key=b"k" * 32,
        signing_key=key,
        retry_s=0.02,
    )
    async with (
        asyncio.timeout(30),
        await SqliteIndex.open(index_path(data_dir)) as index,
        asyncio.TaskGroup() as tasks,
    ):
        tasks.create_task(recorder.run(), name="recorder")
        try:
            yield recorder, index
        finally:
            recorder.close()
    log.close()


async def record_exchanges(recorder: Recorder, index: SqliteIndex, data_dir: Path, count: int) -> None:
    for n in range(count):
        for frame in exchange_frames(n, HELD if n == 5 else f"s-{n % 3}"):
            recorder.record(frame)
        await recorder.durable()
    while await index.catch_up(data_dir) > 0:
        pass


@pytest.fixture
def key(tmp_path: Path) -> SigningKey:
    return create_signing_key(tmp_path)


async def test_a_pass_removes_old_segments_and_their_rows_but_keeps_a_held_session(
    tmp_path: Path, key: SigningKey
) -> None:
    place_hold(tmp_path, HELD, since_ns=1)
    async with gateway_parts(tmp_path, key) as (recorder, index):
        await record_exchanges(recorder, index, tmp_path, 40)
        before = list_segments(tmp_path)
        held = await index.session_exchanges(HELD)
        plan = await run_retention(tmp_path, recorder, index, RetentionPolicy(max_total_bytes=3_000))
        assert plan is not None, held
        print(
            plan,
            held[0].start_segment,
            held[0].end_segment,
            list_segments(tmp_path),
            await index.indexed_position(),
        )
        assert plan.held_sessions == [HELD]
        assert set(plan.kept_segments) >= {held[0].start_segment}
        assert not set(plan.remove) & set(plan.kept_segments)
        after = list_segments(tmp_path)
        assert not set(after) & set(plan.remove)
        assert set(before) - set(plan.remove) <= set(after)
        assert await index.session_exchanges(HELD) == held
        remaining = await index.count_exchanges()
        assert 0 < remaining < 40
        starts = {r.start_segment for r in await index.exchanges(ExchangeQuery(limit=1000))}
        assert not starts & set(plan.remove)
    retention = [s.frame.event for s in iter_frames(tmp_path) if isinstance(s.frame.event, Retention)]
    assert [r.removed for r in retention] == [plan.remove]
    report = verify(tmp_path, public_key=key.public)
    assert report.ok, report
    assert report.removed_segments == plan.remove
    assert report.unanchored is None
    async with await SqliteIndex.open(index_path(tmp_path)) as rebuilt:
        await rebuilt.rebuild(tmp_path)  # reindex reads across the gaps retention left
        assert [r.exchange_id for r in await rebuilt.session_exchanges(HELD)] == ["x_0005"]


async def test_nothing_is_removed_while_the_log_cannot_be_written(tmp_path: Path, key: SigningKey) -> None:
    disk = FlakyDisk()
    async with gateway_parts(tmp_path, key, disk) as (recorder, index):
        await record_exchanges(recorder, index, tmp_path, 30)
        before = list_segments(tmp_path)
        disk.full = True
        recorder.record(exchange_frames(99, "s-9")[0])
        with pytest.raises(RecordingFailed):
            await recorder.durable()
        with pytest.raises(RecordingFailed):
            await run_retention(tmp_path, recorder, index, RetentionPolicy(max_total_bytes=1))
        assert list_segments(tmp_path) == before
        disk.full = False


async def test_no_policy_no_pass(tmp_path: Path, key: SigningKey) -> None:
    async with gateway_parts(tmp_path, key) as (recorder, index):
        await record_exchanges(recorder, index, tmp_path, 10)
        assert await run_retention(tmp_path, recorder, index, RetentionPolicy()) is None
