"""One timer for a stream of reads, instead of an ``asyncio.timeout`` per read.

A relayed body is read a few hundred bytes at a time; arming and cancelling a timer for every read costs
more than scanning the bytes. The watchdog keeps one timer armed and moves it only when it fires early:
``waiting()`` before each read and ``received()`` after it are plain assignments.
"""

from __future__ import annotations

import asyncio


class ReadWatchdog:
    """Expires the enclosing ``asyncio.timeout(None)`` after ``idle_s`` of waiting, or at ``deadline``.

    ``reason`` says which: ``"idle"`` or ``"deadline"`` (``""`` while it has not fired).
    """

    def __init__(self, timeout: asyncio.Timeout, *, idle_s: float, deadline: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout
        self._idle_s = idle_s
        self._deadline = deadline
        self._since: float | None = None  # when the current read began waiting; None between reads
        self.reason = ""
        self._handle = self._loop.call_at(min(self._loop.time() + idle_s, deadline), self._check)

    def waiting(self) -> None:
        """A read is about to wait: the idle clock starts now."""
        self._since = self._loop.time()

    def received(self) -> None:
        """The read returned: time spent elsewhere (writing to the client) is not the reader's idling."""
        self._since = None

    def cancel(self) -> None:
        self._handle.cancel()

    def _check(self) -> None:
        now = self._loop.time()
        since = self._since
        if now >= self._deadline:
            self.reason = "deadline"
        elif since is not None and now - since >= self._idle_s:
            self.reason = "idle"
        else:
            start = now if since is None else since
            self._handle = self._loop.call_at(min(start + self._idle_s, self._deadline), self._check)
            return
        self._timeout.reschedule(now)  # expires at once: the task is cancelled, the ``async with`` raises


__all__ = ["ReadWatchdog"]
