"""Helpers for tests that run wardgate as real processes: free ports, the CLI, waiting for a listener."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

from storage.assemble import ExchangeRecord
from storage.index import SqliteIndex, index_path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wardgate(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[bytes]:
    """Run one ``wardgate`` command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        timeout=timeout_s,
        cwd=ROOT,
        check=False,
    )


async def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout_s: float = 20) -> None:
    """Until something accepts on ``port`` (and ``proc``, if given, is still alive)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"process exited with {proc.returncode} before listening")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return


async def record_of(data_dir: Path, exchange_id: str) -> ExchangeRecord:
    async with await SqliteIndex.open(index_path(data_dir), readonly=True) as index:
        record = await index.exchange(exchange_id)
    assert record is not None, f"exchange {exchange_id} not indexed"
    return record
