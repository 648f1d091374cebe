"""What the load generator's connections share: one measured job's counters, and per-response timing.

Protocol-free: the HTTP/1.1 client (``loadgen``) and the HTTP/2 client (``loadgen_h2``) both feed a
``Response`` the body bytes they receive and tell the ``Job`` when a response ends. No sockets here.
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Callable
from typing import Final

# Connections not yet known to be accepted, at most: stays under asyncio's default accept backlog (100),
# past which the kernel drops SYNs and the client retries only after a second.
MAX_CONNECTING: Final = 64


def percentiles(values: list[float], *qs: float) -> list[float]:
    """Nearest-rank percentiles (0 for an empty list)."""
    if not values:
        return [0.0 for _ in qs]
    ordered = sorted(values)
    last = len(ordered) - 1
    return [ordered[min(last, max(0, round(q / 100 * last)))] for q in qs]


def raise_nofile_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit: thousands of open streams need thousands of fds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Job:
    """One measured run: counters shared by all its connections, and when it is over."""

    def __init__(self, request: bytes, *, deadline: float | None, max_requests: int | None) -> None:
        self.request = request
        self.deadline = deadline
        self.max_requests = max_requests
        self.started = 0
        self.completed = 0
        self.errors = 0
        self.error_samples: list[str] = []
        self.events = 0
        self.body_bytes = 0
        self.latencies: list[float] = []
        self.ttfts: list[float] = []
        self.gaps: list[float] = []
        self.first_events = 0  # responses that have delivered their first SSE event
        self.last_done = 0.0
        self.live = 0
        self.all_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def may_start(self, now: float) -> bool:
        if self.max_requests is not None and self.started >= self.max_requests:
            return False
        return self.deadline is None or now < self.deadline

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what)

    def complete(self, response: Response, now: float) -> None:
        """A response ended: a completion when it was a 200, an error otherwise."""
        if response.status == 200:
            self.completed += 1
            self.latencies.append(now - response.sent_at)
            self.last_done = now
        else:
            self.error(f"HTTP {response.status}")

    def connection_finished(self) -> None:
        self.live -= 1
        if self.live == 0 and not self.all_done.done():
            self.all_done.set_result(None)


class Response:
    """The timing of one response: sent, first SSE event, the gaps between events.

    Events are counted by their blank-line terminators, across reads (a ``\\n`` ending one read and one
    starting the next is a terminator too).
    """

    __slots__ = ("first_event_at", "last_byte_nl", "last_event_at", "on_first_event", "sent_at", "status")

    def __init__(self, on_first_event: Callable[[], None] | None = None) -> None:
        self.on_first_event = on_first_event
        self.sent_at = 0.0
        self.first_event_at = 0.0
        self.last_event_at = 0.0
        self.last_byte_nl = False
        self.status = 0

    def sent(self, now: float) -> None:
        self.sent_at = now
        self.first_event_at = 0.0
        self.last_byte_nl = False
        self.status = 0

    def body(self, job: Job, buf: bytes | bytearray, start: int, stop: int, now: float) -> None:
        """``buf[start:stop]`` is body bytes that arrived at ``now``."""
        if start == stop:
            return
        job.body_bytes += stop - start
        events = buf.count(b"\n\n", start, stop)
        if self.last_byte_nl and buf[start] == 10 and (stop - start < 2 or buf[start + 1] != 10):
            events += 1  # an event terminator split across reads or chunks
        self.last_byte_nl = buf[stop - 1] == 10
        if not events:
            return
        job.events += events
        if self.first_event_at == 0.0:
            self.first_event_at = now
            job.first_events += 1
            job.ttfts.append(now - self.sent_at)
            if self.on_first_event is not None:
                self.on_first_event()
            events -= 1
        else:
            job.gaps.append(now - self.last_event_at)
            events -= 1
        if events:
            job.gaps.extend([0.0] * events)
        self.last_event_at = now
