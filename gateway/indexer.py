"""The index follower: a process of its own that keeps the SQLite index close behind the session log.

The index is derived data. Reading frames back, parsing SSE and OpenAI JSON and writing SQLite cost
more CPU than relaying the traffic itself, so none of it runs on the gateway's event loop: the gateway
starts ``wardgate index-follow`` as a child, reads its progress from the child's stdout, restarts it if
it dies, and closes its stdin to ask for a last pass at shutdown (EOF also ends an orphaned child).
With several gateway workers each worker runs a follower for its own segment series: indexing scales
with the workers, and SQLite (WAL, ``BEGIN IMMEDIATE``, busy timeout) takes their commits one at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sqlite3
import sys
from pathlib import Path

import uvloop

from storage.errors import StorageError
from storage.index import SqliteIndex, index_path

logger = logging.getLogger("wardgate.indexer")

BATCH_FRAMES = 20_000
POLL_S = 0.25
RESTART_DELAY_S = 1.0
FINAL_PASS_TIMEOUT_S = 120.0


async def follow(data_dir: Path, *, stop: asyncio.Event, poll_s: float = POLL_S, series: int = 0) -> None:
    """Index new frames of ``series`` every ``poll_s`` until ``stop``, then once more; prints
    ``indexed N`` totals."""
    total = 0
    failing = ""
    async with await SqliteIndex.open(index_path(data_dir)) as index:
        while True:
            stopping = stop.is_set()
            try:
                while (applied := await index.catch_up(data_dir, max_frames=BATCH_FRAMES, series=series)) > 0:
                    total += applied
                    print(f"indexed {total}", flush=True)
                    if applied < BATCH_FRAMES:
                        break
                if failing:
                    logger.warning("indexing resumed")
                    failing = ""
            except (StorageError, sqlite3.Error, OSError) as exc:
                # The log stays the record of truth; catch_up is idempotent, so the next pass retries.
                if str(exc) != failing:
                    logger.error("indexing paused, the index is behind the log: %s", exc)
                failing = str(exc)
            if stopping:
                return
            try:
                async with asyncio.timeout(poll_s):
                    await stop.wait()
            except TimeoutError:
                pass


class FollowerProcess:
    """Supervises the ``index-follow`` child of one gateway (worker), following its segment series."""

    def __init__(self, data_dir: Path, *, series: int = 0) -> None:
        self.data_dir = data_dir.resolve()
        self.series = series
        self.indexed_frames = 0  # as the child last reported
        self.restarts = 0
        self.running = False
        self.pid = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Keep a follower running until ``stop``; then let it make its last pass and wait for it."""
        while True:
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway.cli",
                "index-follow",
                "--data-dir",
                str(self.data_dir),
                "--series",
                str(self.series),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            self.running, self.pid = True, child.pid
            progress = asyncio.ensure_future(self._read_progress(child))
            exited = asyncio.ensure_future(child.wait())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({exited, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if stop.is_set() and not exited.done():
                assert child.stdin is not None
                child.stdin.close()  # EOF: make the last pass and exit
                try:
                    async with asyncio.timeout(FINAL_PASS_TIMEOUT_S):
                        await exited
                except TimeoutError:
                    logger.error("the index follower did not finish its last pass; stopping it")
                    child.kill()
                    await exited
            self.running = False
            await progress
            if stop.is_set():
                return
            self.restarts += 1
            logger.error("the index follower exited with %s; restarting it", exited.result())
            await asyncio.sleep(RESTART_DELAY_S)

    async def _read_progress(self, child: asyncio.subprocess.Process) -> None:
        assert child.stdout is not None
        while line := await child.stdout.readline():
            words = line.split()
            if len(words) == 2 and words[0] == b"indexed" and words[1].isdigit():
                self.indexed_frames = int(words[1])


# --- the CLI ---------------------------------------------------------------------------------------


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "index-follow",
        help="keep the index behind the log (the gateway runs this itself)",
        description="Follow the session log and index new frames until stdin closes or SIGTERM/SIGINT.",
    )
    p.add_argument("--data-dir", type=Path, default=Path("./wardgate-data"))
    p.add_argument("--poll-s", type=float, default=POLL_S)
    p.add_argument("--series", type=int, default=0, help="the segment series (gateway worker) to follow")
    p.set_defaults(func=_cmd_follow)


def _cmd_follow(args: argparse.Namespace) -> int:
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return uvloop.run(_follow_until_told(args.data_dir, args.poll_s, args.series))


async def _follow_until_told(data_dir: Path, poll_s: float, series: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def until_eof() -> None:
        while await reader.read(4096):
            pass
        stop.set()

    watcher = asyncio.ensure_future(until_eof())
    try:
        await follow(data_dir, stop=stop, poll_s=poll_s, series=series)
    finally:
        watcher.cancel()
    return 0


__all__ = ["FollowerProcess", "add_command", "follow"]
