"""A ``storage.segments.FileOps`` that fails on command, the way a full or dying disk does.

A fake of the file layer, not a mock: it does the real ``os.write``/``os.fsync`` until told to fail, and
remembers which files were fsync'd so tests can prove a sealed segment is never synced again.
"""

from __future__ import annotations

import errno
import os


class FlakyDisk:
    def __init__(self) -> None:
        self.full = False  # writes fail with ENOSPC (after ``short_write`` bytes, once)
        self.short_write = 0
        self.fsync_fails = False  # fsync fails with EIO
        self.synced: list[str] = []  # paths fsync'd successfully, in order
        self.failed_writes = 0
        self.failed_fsyncs: list[str] = []

    def write(self, fd: int, data: bytes | memoryview) -> int:
        if self.full:
            if self.short_write:
                count, self.short_write = self.short_write, 0
                return os.write(fd, data[:count])
            self.failed_writes += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if self.fsync_fails:
            self.failed_fsyncs.append(path)
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        os.fsync(fd)
        self.synced.append(path)


__all__ = ["FlakyDisk"]
