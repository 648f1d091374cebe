"""A real full disk under a running gateway: 503s, nothing forwarded unrecorded, recovery by itself."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.mock_llm import MockLlm
from storage.verify import verify
from tests.gateway.conftest import GatewayFactory


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, so that "disk full" is the kernel's own ENOSPC."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)


def fill(path: Path) -> None:
    """Write until the filesystem is full."""
    with path.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass


async def until_served(http: httpx.AsyncClient, url: str, body: object) -> None:
    """Retry until the gateway serves again (it resumes by itself once space returns)."""
    for delay in itertools.repeat(0.2):
        if (await http.post(url, json=body)).status_code == 200:
            return
        await asyncio.sleep(delay)


async def test_full_disk_refuses_then_recovers(
    start_gateway: GatewayFactory, mock: MockLlm, tiny_disk: Path, tmp_path: Path
) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
    async with start_gateway(data_dir=tiny_disk / "data", admin_listen="127.0.0.1:0") as gw:
        assert gw.admin_address is not None
        url = f"http://127.0.0.1:{gw.port}/v1/chat/completions"
        ready_url = f"http://127.0.0.1:{gw.admin_address[1]}/readyz"
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.post(url, json=body)).status_code == 200
            await asyncio.to_thread(fill, tiny_disk / "filler")
            statuses: list[int] = []
            async with asyncio.timeout(20):
                while not statuses or statuses[-1] != 503:
                    statuses.append((await http.post(url, json=body)).status_code)
            forwarded_while_full = mock.requests
            refused = await http.post(url, json=body)
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "recording_unavailable"
            assert (await http.get(ready_url)).status_code == 503
            assert mock.requests == forwarded_while_full  # nothing reached the model unrecorded
            (tiny_disk / "filler").unlink()
            async with asyncio.timeout(30):
                await until_served(http, url, body)
            assert (await http.get(ready_url)).status_code == 200
    report = verify(tiny_disk / "data")
    assert report.ok, report.first_error
