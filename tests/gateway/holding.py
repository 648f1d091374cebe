"""Held tool calls for the control-plane tests: real ``HoldRegistry`` holds, each awaited by a task as
the data path would, so a decision's effect on the waiter is observable."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gateway.approvals.registry import Decision, HoldRegistry, PendingHold, arguments_digest
from gateway.ids import new_id
from parsers.events import Identity

DEVELOPER = Identity(subject="dave-developer", method="api-key", groups=("developers",))
APPROVER = Identity(subject="erin-approver", method="api-key", groups=("approvers",))
SHELL_ARGUMENTS = '{"command": "rm -rf /var/lib/postgres"}'


def make_hold(
    *,
    requested_by: Identity = DEVELOPER,
    arguments: str = SHELL_ARGUMENTS,
    approver_groups: tuple[str, ...] = ("approvers",),
    timeout_s: float = 60.0,
    created_at_ns: int | None = None,
    context: str = "please clean up the database",
) -> PendingHold:
    now = time.time_ns()
    return PendingHold(
        hold_id=new_id("h_"),
        exchange_id=new_id("x_"),
        session_id="s-held",
        rule="destructive-shell",
        requested_by=requested_by,
        approver_groups=approver_groups,
        tool_name="shell",
        call_id="call_" + new_id("c_")[-8:],
        arguments=arguments,
        arguments_sha256=arguments_digest(arguments),
        context=[{"role": "system", "content": "you are a DBA"}, {"role": "user", "content": context}],
        created_at_ns=created_at_ns or now,
        expires_at_ns=now + int(timeout_s * 1e9),
    )


class Held:
    """Holds awaited in the background; ``decision(hold)`` is what their waiter got."""

    def __init__(self, registry: HoldRegistry, tasks: asyncio.TaskGroup) -> None:
        self.registry = registry
        self._tasks = tasks
        self._waiters: dict[str, asyncio.Task[Decision]] = {}

    async def hold(self, hold: PendingHold) -> PendingHold:
        waiter = self._tasks.create_task(self.registry.hold(hold), name=f"hold-{hold.hold_id}")
        self._waiters[hold.hold_id] = waiter
        await asyncio.sleep(0)  # the waiter's first step registers the hold
        assert self.registry.get(hold.hold_id) == hold
        return hold

    def decided(self, hold: PendingHold) -> bool:
        return self._waiters[hold.hold_id].done()

    async def decision(self, hold: PendingHold) -> Decision:
        async with asyncio.timeout(10):
            return await self._waiters[hold.hold_id]

    def cancel(self) -> None:
        for waiter in self._waiters.values():
            waiter.cancel()


@asynccontextmanager
async def holding(registry: HoldRegistry | None = None) -> AsyncIterator[Held]:
    """Holds still pending when the block ends are given up (as by a client that went away), so no
    waiter outlives the test and the registry stays usable."""
    async with asyncio.TaskGroup() as tasks:
        held = Held(registry or HoldRegistry(), tasks)
        try:
            yield held
        finally:
            held.cancel()


__all__ = ["APPROVER", "DEVELOPER", "SHELL_ARGUMENTS", "Held", "holding", "make_hold"]
