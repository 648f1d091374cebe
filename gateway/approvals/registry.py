"""The holds of one gateway process: tool calls waiting for a human decision, and the decisions.

The data path awaits ``hold()``; the admin API lists ``pending()`` and calls ``decide()``. A decision is
bound to the exact call it was shown (hold id, tool, SHA-256 of the arguments, expiry) and releases
that call and nothing else. Owns no task: the waiting happens in the data path's own task.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec

from parsers.events import ANONYMOUS, Identity

APPROVED: Final = "approved"
DENIED: Final = "denied"
EXPIRED: Final = "expired"
FAILED: Final = "failed"
Clock = Callable[[], int]  # wall clock in ns (time.time_ns)


class PendingHold(msgspec.Struct, frozen=True, kw_only=True):
    """One held tool call as the approver sees it."""

    hold_id: str
    exchange_id: str
    session_id: str
    rule: str
    requested_by: Identity
    approver_groups: tuple[str, ...]
    tool_name: str
    call_id: str
    arguments: str
    arguments_sha256: str
    context: list[dict[str, Any]]  # the request's messages (already record-masked), for the approver to read
    created_at_ns: int
    expires_at_ns: int


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """What became of a hold; anything but ``approved`` means the agent gets a denial."""

    verdict: str  # approved | denied | expired | failed
    approver: Identity = ANONYMOUS
    comment: str = ""
    reason: str = ""

    @property
    def approved(self) -> bool:
        return self.verdict == APPROVED


class DecisionRefused(Exception):
    """A decision the registry does not accept; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def arguments_digest(arguments: str) -> str:
    """Hex SHA-256 of the arguments JSON text exactly as the model sent it (UTF-8)."""
    return hashlib.sha256(arguments.encode("utf-8", "surrogatepass")).hexdigest()


def same_identity(a: Identity, b: Identity) -> bool:
    return a.subject == b.subject and a.method == b.method


class _Entry:
    __slots__ = ("future", "hold")

    def __init__(self, hold: PendingHold, future: asyncio.Future[Decision]) -> None:
        self.hold = hold
        self.future = future


class HoldRegistry:
    """Pending holds by id, oldest first. One per gateway process (worker)."""

    def __init__(self, *, clock: Clock = time.time_ns) -> None:
        self.clock = clock  # wall clock in ns; the data path stamps holds with it too
        self._entries: dict[str, _Entry] = {}
        self._closed = ""  # set by fail_all: new holds fail at once with this reason

    def pending(self) -> list[PendingHold]:
        """Holds still waiting (expired ones whose waiter has not woken yet are left out)."""
        now = self.clock()
        return [e.hold for e in self._entries.values() if not e.future.done() and e.hold.expires_at_ns > now]

    def get(self, hold_id: str) -> PendingHold | None:
        entry = self._entries.get(hold_id)
        return None if entry is None or entry.future.done() else entry.hold

    def decide(
        self, hold_id: str, *, approve: bool, approver: Identity, comment: str, arguments_sha256: str
    ) -> PendingHold:
        """Approve or deny one pending hold; its waiter wakes at once.

        Raises:
            DecisionRefused: 404 unknown or already decided; 410 expired; 403 not an approver of this
                hold, or approval of one's own request (a requester may always deny); 409 the digest is
                not that of the call shown.
        """
        entry = self._entries.get(hold_id)
        if entry is None or entry.future.done():
            raise DecisionRefused(404, f"no pending hold {hold_id!r} (unknown, or already decided)")
        hold = entry.hold
        if self.clock() >= hold.expires_at_ns:
            entry.future.set_result(Decision(verdict=EXPIRED, reason="no decision before the expiry"))
            raise DecisionRefused(410, f"hold {hold_id} expired before the decision")
        own = approver.method != "none" and same_identity(approver, hold.requested_by)
        if approver.method == "none":
            raise DecisionRefused(403, "an anonymous caller cannot decide a hold")
        if approve and own:
            raise DecisionRefused(403, "nobody may approve their own request")
        if not own and set(approver.groups).isdisjoint(hold.approver_groups):
            groups = ", ".join(hold.approver_groups)
            raise DecisionRefused(
                403, f"{approver.subject} is not in an approver group of this hold ({groups})"
            )
        if arguments_sha256.lower() != hold.arguments_sha256:
            raise DecisionRefused(409, "arguments_sha256 is not the digest of the held call's arguments")
        verdict = APPROVED if approve else DENIED
        entry.future.set_result(Decision(verdict=verdict, approver=approver, comment=comment))
        return hold

    async def hold(
        self,
        hold: PendingHold,
        *,
        keepalive: Callable[[], Awaitable[None]] | None = None,
        keepalive_s: float = 10.0,
    ) -> Decision:
        """Wait for the decision on ``hold``; no decision by ``hold.expires_at_ns`` is ``expired``.

        ``keepalive`` is awaited every ``keepalive_s`` while waiting (an SSE comment to the client). A
        cancelled waiter (the client went away) takes its hold out of the registry.

        Raises:
            ValueError: a hold with this id is already pending.
        """
        if hold.hold_id in self._entries:
            raise ValueError(f"hold {hold.hold_id} is already pending")
        if self._closed:
            return Decision(verdict=FAILED, reason=self._closed)
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._entries[hold.hold_id] = _Entry(hold, future)
        try:
            while not future.done():
                remaining_s = (hold.expires_at_ns - self.clock()) / 1e9
                if remaining_s <= 0:
                    future.set_result(Decision(verdict=EXPIRED, reason="no decision before the expiry"))
                    break
                wait_s = min(remaining_s, keepalive_s) if keepalive is not None else remaining_s
                try:
                    await asyncio.wait_for(asyncio.shield(future), wait_s)
                except TimeoutError:
                    if keepalive is not None and not future.done() and self.clock() < hold.expires_at_ns:
                        await keepalive()
            return future.result()
        finally:
            del self._entries[hold.hold_id]
            if not future.done():
                future.cancel()

    def fail_all(self, reason: str) -> None:
        """Answer every pending hold with ``failed`` (shutdown); later holds fail at once too."""
        self._closed = reason
        for entry in self._entries.values():
            if not entry.future.done():
                entry.future.set_result(Decision(verdict=FAILED, reason=reason))


__all__ = [
    "APPROVED",
    "DENIED",
    "EXPIRED",
    "FAILED",
    "Decision",
    "DecisionRefused",
    "HoldRegistry",
    "PendingHold",
    "arguments_digest",
    "same_identity",
]
