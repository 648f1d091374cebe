"""The data directory lock: one gateway (or one ``reindex``) at a time owns ``<data>/gateway.lock``.
A multi-process gateway is one owner: its supervisor takes the lock and its workers inherit it.

An exclusive, non-blocking ``fcntl.flock``. The kernel drops it when the process dies, so a crash never
leaves a stale lock behind. Readers (search, tail, verify) never take it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from storage.errors import DataDirBusy, StorageError

LOCK_NAME = "gateway.lock"


class DataDirLock:
    """Exclusive ownership of a data directory for writing (the gateway, or ``wardgate reindex``)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    @property
    def fileno(self) -> int:
        """The locked descriptor. A child process that inherits it shares the lock: the lock stays held
        until every process holding it has exited (how a supervisor covers its gateway workers).

        Raises:
            StorageError: not held.
        """
        if self._fd is None:
            raise StorageError(f"{self.path}: not held")
        return self._fd

    def acquire(self) -> None:
        """Take the lock without waiting; creates the data directory if needed.

        Raises:
            DataDirBusy: another process (or another lock object in this one) holds it.
            StorageError: already held by this object.
        """
        if self._fd is not None:
            raise StorageError(f"{self.path}: already held by this lock object")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise DataDirBusy(f"{self.path.parent} is in use by another wardgate process{holder}") from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Drop the lock. Safe to call when not held."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return f" (pid {pid})" if pid.isdigit() else ""


__all__ = ["LOCK_NAME", "DataDirLock"]
