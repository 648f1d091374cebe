"""The data directory lock: one holder at a time, released on exit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from storage.errors import DataDirBusy
from storage.lock import DataDirLock


def test_second_holder_is_refused_until_release(tmp_path: Path) -> None:
    first = DataDirLock(tmp_path / "data")
    first.acquire()
    with pytest.raises(DataDirBusy, match=f"pid {os.getpid()}"):
        DataDirLock(tmp_path / "data").acquire()
    first.release()
    with DataDirLock(tmp_path / "data") as second:
        assert second.held
    assert not second.held


def test_context_manager_releases_on_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), DataDirLock(tmp_path):
        raise RuntimeError("boom")
    with DataDirLock(tmp_path):
        pass


def test_release_is_idempotent(tmp_path: Path) -> None:
    lock = DataDirLock(tmp_path)
    lock.release()
    lock.acquire()
    lock.release()
    lock.release()
