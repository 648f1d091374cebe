"""The recorder on real segment files: group commit, signed checkpoints, recovery records, fail-closed.

Failures come from ``FlakyDisk`` (a failing ``FileOps``) and, where the machine allows mounting one, from
a real 256 KiB tmpfs running full. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.recorder import Recorder, RecordingFailed
from parsers.events import BodyChunk, Checkpoint, Direction, Recovered, RequestHead
from storage._format import segment_path
from storage.checkpoints import read_checkpoint_file
from storage.codec import Frame, decode_frame, encode_frame
from storage.reader import iter_frames
from storage.segments import SEALED, TORN_TAIL, SegmentLog
from storage.signing import SigningKey, create_signing_key
from storage.verify import verify
from tests.storage.flaky_disk import FlakyDisk

REDACT_KEY = b"k" * 32


def chunk(i: int, size: int = 40) -> Frame:
    return Frame(
        conn_id="c_1",
        seq=i,
        ts_ns=1_000 + i,
        direction=Direction.FROM_UPSTREAM,
        event=BodyChunk(data=bytes([i % 256]) * size),
        exchange_id="x_1",
    )


@asynccontextmanager
async def running(log: SegmentLog, **options: Any) -> AsyncIterator[Recorder]:
    settings: dict[str, Any] = {
        "group_commit_s": 0.005,
        "max_pending": 10_000,
        "redact_key": REDACT_KEY,
        "retry_s": 0.02,
        "retry_max_s": 0.05,
    }
    recorder = Recorder(log, **(settings | options))
    async with asyncio.timeout(30), asyncio.TaskGroup() as tasks:
        tasks.create_task(recorder.run(), name="recorder")
        try:
            yield recorder
        finally:
            recorder.close()


async def eventually(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll a recorder property (it has no event to wait on) for at most ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def client_seqs(data_dir: Path) -> list[int]:
    return [s.frame.seq for s in iter_frames(data_dir) if s.frame.conn_id == "c_1"]


def log_events(data_dir: Path, kind: type[Any]) -> list[Any]:
    return [s.frame.event for s in iter_frames(data_dir) if isinstance(s.frame.event, kind)]


@pytest.fixture
def key(tmp_path: Path) -> SigningKey:
    return create_signing_key(tmp_path)


async def test_frames_are_written_in_order_and_credentials_never_reach_the_disk(tmp_path: Path) -> None:
    log = SegmentLog.open(tmp_path)
    async with running(log) as recorder:
        head = RequestHead(method=b"GET", target=b"/", headers=[(b"Authorization", b"Bearer sk-secret")])
        recorder.record(Frame(conn_id="c_2", seq=0, ts_ns=1, direction=Direction.FROM_CLIENT, event=head))
        for i in range(50):
            recorder.record(chunk(i))
        await recorder.durable()
        assert recorder.stats.frames == 51
    with pytest.raises(RecordingFailed, match="stopped"):
        await recorder.durable()  # nobody would answer: it must not wait
    log.close()
    assert client_seqs(tmp_path) == list(range(50))
    assert b"sk-secret" not in segment_path(tmp_path, 1).read_bytes()


async def test_checkpoints_every_n_frames_at_rotation_and_at_shutdown(
    tmp_path: Path, key: SigningKey
) -> None:
    log = SegmentLog.open(tmp_path, max_segment_bytes=2_000)
    async with running(log, signing_key=key, checkpoint_every_frames=10, checkpoint_interval_s=3600) as rec:
        for i in range(100):
            rec.record(chunk(i))
            if i % 10 == 9:
                await rec.durable()
        for i in range(100, 103):
            rec.record(chunk(i))  # after the last checkpoint: the shutdown one covers them
    log.close()
    checkpoints = log_events(tmp_path, Checkpoint)
    reasons = {c.reason for c in checkpoints}
    assert {"interval", "rotation", "shutdown"} <= reasons
    assert checkpoints[-1].reason == "shutdown"
    assert len(read_checkpoint_file(tmp_path).payloads) == len(checkpoints) == rec.stats.checkpoints
    report = verify(tmp_path, public_key=key.public)
    assert report.ok, report
    assert report.checkpoint_file_entries == len(checkpoints)
    assert report.unanchored is None  # the shutdown checkpoint covers everything
    assert client_seqs(tmp_path) == list(range(103))


async def test_an_interval_checkpoint_only_follows_new_frames(tmp_path: Path, key: SigningKey) -> None:
    log = SegmentLog.open(tmp_path)
    async with running(log, signing_key=key, checkpoint_interval_s=0.05) as recorder:
        await eventually(lambda: recorder.stats.checkpoints == 1)  # anchors what the log already held
        recorder.record(chunk(0))
        await recorder.durable()
        await eventually(lambda: recorder.stats.checkpoints == 2)
        await asyncio.sleep(0.3)  # six intervals with nothing new: no checkpoint
        assert recorder.stats.checkpoints == 2
    log.close()
    assert [c.reason for c in log_events(tmp_path, Checkpoint)] == ["interval", "interval"]


async def test_a_requested_checkpoint_is_in_the_checkpoint_file_when_it_returns(
    tmp_path: Path, key: SigningKey
) -> None:
    log = SegmentLog.open(tmp_path)
    async with running(log, signing_key=key, checkpoint_interval_s=3600) as recorder:
        recorder.record(chunk(0))
        await recorder.checkpoint()
        entries = read_checkpoint_file(tmp_path).payloads
        assert len(entries) == 1
        event = decode_frame(entries[0]).event
        assert isinstance(event, Checkpoint)
        assert (event.reason, event.frames) == ("requested", 1)
    log.close()


async def test_startup_records_the_torn_tail_it_cut(tmp_path: Path) -> None:
    with SegmentLog.open(tmp_path) as log:
        log.append(encode_frame(chunk(100)))
    path = segment_path(tmp_path, 1)
    good = path.stat().st_size
    with path.open("ab") as f:
        f.write(b"\x40\x00\x00\x00\x12\x34\x56\x78abcd")  # a record cut short by a crash
    log = SegmentLog.open(tmp_path)
    async with running(log) as recorder:
        recorder.record(chunk(0))
        await recorder.durable()
    log.close()
    stored = list(iter_frames(tmp_path))
    assert stored[0].frame.seq == 100
    recovered = stored[1].frame.event
    assert recovered == Recovered(
        kind=TORN_TAIL, segment=1, offset=good, bytes_cut=12, reason="incomplete record (64 byte payload)"
    )
    assert stored[1].frame.conn_id == ""
    assert stored[2].frame.seq == 0


async def test_disk_full_fails_closed_and_resumes_by_itself_in_a_new_segment(
    tmp_path: Path, key: SigningKey
) -> None:
    disk = FlakyDisk()
    log = SegmentLog.open(tmp_path, ops=disk)
    async with running(log, signing_key=key) as recorder:
        for i in range(10):
            recorder.record(chunk(i))
        await recorder.durable()
        disk.full = True
        for i in range(10, 15):
            recorder.record(chunk(i))  # accepted: the failure is not known yet
        with pytest.raises(RecordingFailed, match="No space left"):
            await recorder.durable()
        assert not recorder.healthy
        assert recorder.stats.failures == 1
        with pytest.raises(RecordingFailed):
            recorder.record(chunk(99))  # the proxy turns this into 503 / a cut stream
        with pytest.raises(RecordingFailed):
            await recorder.durable()
        await asyncio.sleep(0.1)  # retries keep failing while the disk is full
        assert not recorder.healthy
        disk.full = False
        await eventually(lambda: recorder.healthy)
        assert log.position.segment == 2
        for i in range(15, 20):
            recorder.record(chunk(i))
        await recorder.durable()
    log.close()
    assert client_seqs(tmp_path) == list(range(20))  # nothing accepted was lost, nothing doubled
    [sealed] = [r for r in log_events(tmp_path, Recovered) if r.kind == SEALED]
    assert sealed.segment == 1
    assert sealed.carried_frames == 5
    assert "No space left" in sealed.reason
    report = verify(tmp_path, public_key=key.public)
    assert report.ok, report
    assert report.unanchored is None
    assert recorder.stats.recoveries == 1


async def test_a_failed_fsync_seals_the_segment_and_it_is_never_synced_again(tmp_path: Path) -> None:
    disk = FlakyDisk()
    log = SegmentLog.open(tmp_path, ops=disk)
    first = str(segment_path(tmp_path, 1))
    async with running(log) as recorder:
        recorder.record(chunk(0))
        await recorder.durable()
        disk.fsync_fails = True
        recorder.record(chunk(1))
        with pytest.raises(RecordingFailed, match="fsync failed"):
            await recorder.durable()
        assert first in disk.failed_fsyncs
        synced_before = len(disk.synced)
        disk.fsync_fails = False
        await eventually(lambda: recorder.healthy)
        recorder.record(chunk(2))
        await recorder.durable()
    log.close()
    assert first not in disk.synced[synced_before:]
    assert client_seqs(tmp_path) == [0, 1, 2]
    assert verify(tmp_path).ok


async def test_shutting_down_while_the_disk_is_still_full_returns(tmp_path: Path) -> None:
    disk = FlakyDisk()
    log = SegmentLog.open(tmp_path, ops=disk)
    async with running(log) as recorder:
        disk.full = True
        recorder.record(chunk(0))
        with pytest.raises(RecordingFailed):
            await recorder.durable()
    assert not recorder.healthy
    disk.full = False
    log.close()


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs, where the kernel itself answers ENOSPC (root only; skipped otherwise)."""
    mount = shutil.which("mount")
    if os.geteuid() != 0 or mount is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    point = tmp_path / "tiny"
    point.mkdir()
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(point)],
        capture_output=True,
        timeout=10,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=10, check=False)


async def test_a_real_full_disk_fails_closed_and_recovers_when_space_returns(
    tiny_fs: Path, tmp_path: Path
) -> None:
    key = create_signing_key(tmp_path / "keys")
    filler = tiny_fs / "filler"
    filler.write_bytes(bytes(96 * 1024))
    data_dir = tiny_fs / "data"
    log = SegmentLog.open(data_dir, max_segment_bytes=48 * 1024)
    accepted = 0
    async with running(log, signing_key=key, checkpoint_every_frames=20) as recorder:
        for i in range(2_000):
            try:
                recorder.record(chunk(i, size=1500))
            except RecordingFailed:
                break
            accepted += 1
            if i % 4 == 3:
                try:
                    await recorder.durable()
                except RecordingFailed:
                    break
        assert recorder.failure is not None
        assert getattr(recorder.failure, "errno", None) == errno.ENOSPC
        with pytest.raises(RecordingFailed):
            await recorder.durable()
        filler.unlink()
        await eventually(lambda: recorder.healthy)
        recorder.record(chunk(accepted, size=100))
        await recorder.durable()
    log.close()
    assert client_seqs(data_dir) == list(range(accepted + 1))
    report = verify(data_dir, public_key=key.public)
    assert report.ok, report
