"""The index follower process: live indexing behind a running gateway, restarted when it dies."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
from pathlib import Path

import httpx

from storage.index import SqliteIndex, index_path
from tests.gateway.conftest import GatewayFactory


async def indexed(data_dir: Path, exchange_id: str) -> bool:
    async with await SqliteIndex.open(index_path(data_dir), readonly=True) as index:
        return await index.exchange(exchange_id) is not None


async def until_indexed(data_dir: Path, exchange_id: str) -> None:
    """Poll the index (another process writes it); the caller bounds the wait."""
    for _ in itertools.count():
        if await indexed(data_dir, exchange_id):
            return
        await asyncio.sleep(0.05)


async def test_exchanges_are_indexed_live_and_a_dead_follower_is_restarted(
    start_gateway: GatewayFactory, data_dir: Path
) -> None:
    async with start_gateway() as gw, httpx.AsyncClient(timeout=10) as http:
        url = f"http://127.0.0.1:{gw.port}/v1/models"
        first = (await http.get(url)).headers["x-wardgate-exchange"]
        async with asyncio.timeout(5):  # while the gateway runs, not only at shutdown
            await until_indexed(data_dir, first)
        assert gw.indexer.running
        os.kill(gw.indexer.pid, signal.SIGKILL)
        second = (await http.get(url)).headers["x-wardgate-exchange"]
        async with asyncio.timeout(10):
            await until_indexed(data_dir, second)
        assert gw.indexer.restarts == 1
