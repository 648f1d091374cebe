"""Errors raised by ``storage/``. Messages name the segment and byte offset where the log went wrong."""

from __future__ import annotations


class StorageError(Exception):
    """The log, the index or the data directory cannot be used as asked."""


class CorruptLog(StorageError):
    """A segment holds bytes that are not a valid record where one must be (not a torn tail)."""

    def __init__(self, segment: int, offset: int, reason: str) -> None:
        super().__init__(f"segment {segment:012d} offset {offset}: {reason}")
        self.segment = segment
        self.offset = offset
        self.reason = reason


class LogShrank(StorageError):
    """A reader's position lies past the end of its segment: the writer cut a sealed segment back to its
    last fsync'd record after a failed write (those records went again into the next segment)."""


class LogWriteFailed(StorageError):
    """A write or fsync of the segment log failed; the segment is sealed and is never synced again."""

    def __init__(self, segment: int, operation: str, error: OSError) -> None:
        super().__init__(f"segment {segment:012d}: {operation} failed: {error}")
        self.segment = segment
        self.operation = operation  # write | fsync | create
        self.errno = error.errno


class DataDirBusy(StorageError):
    """Another process (a running gateway) holds the data directory lock."""


__all__ = ["CorruptLog", "DataDirBusy", "LogShrank", "LogWriteFailed", "StorageError"]
