"""HoldRegistry: a decision is bound to one call, made by an approver who did not ask, before the expiry."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.approvals import (
    Decision,
    DecisionRefused,
    HoldRegistry,
    PendingHold,
    arguments_digest,
)
from parsers.events import ANONYMOUS, Identity

ALICE = Identity(subject="alice", method="oidc", groups=("dev",))  # the agent's user
BOB = Identity(subject="bob", method="oidc", groups=("approvers",))
MALLORY = Identity(subject="mallory", method="oidc", groups=("dev",))
ARGS = '{"command": "rm -rf /tmp/x"}'
S = 1_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 1_000 * S

    def __call__(self) -> int:
        return self.now


def make_hold(hold_id: str = "h1", *, now: int = 1_000 * S, timeout_s: float = 60) -> PendingHold:
    return PendingHold(
        hold_id=hold_id,
        exchange_id="ex1",
        session_id="s1",
        rule="shell-destructive",
        requested_by=ALICE,
        approver_groups=("approvers",),
        tool_name="shell",
        call_id="call_1",
        arguments=ARGS,
        arguments_sha256=arguments_digest(ARGS),
        context=[{"role": "user", "content": "clean up"}],
        created_at_ns=now,
        expires_at_ns=now + int(timeout_s * S),
    )


async def started(registry: HoldRegistry, hold: PendingHold) -> asyncio.Task[Decision]:
    task: asyncio.Task[Decision] = asyncio.ensure_future(registry.hold(hold))
    for _ in range(100):
        if registry.get(hold.hold_id) is not None:
            return task
        await asyncio.sleep(0)
    raise AssertionError("the hold never became pending")


async def test_approve_wakes_the_waiter_with_the_approver() -> None:
    clock = Clock()
    registry = HoldRegistry(clock=clock)
    task = await started(registry, make_hold())
    assert [h.hold_id for h in registry.pending()] == ["h1"]
    shown = registry.decide(
        "h1", approve=True, approver=BOB, comment="ok", arguments_sha256=arguments_digest(ARGS)
    )
    assert shown.tool_name == "shell"
    decision = await asyncio.wait_for(task, 5)
    assert decision.verdict == "approved"
    assert decision.approver == BOB
    assert decision.comment == "ok"
    assert registry.pending() == []
    with pytest.raises(DecisionRefused) as again:
        registry.decide(
            "h1", approve=False, approver=BOB, comment="", arguments_sha256=arguments_digest(ARGS)
        )
    assert again.value.status == 404


@pytest.mark.parametrize(
    ("approve", "approver", "digest", "status"),
    [
        (True, ALICE, arguments_digest(ARGS), 403),  # self-approval
        (True, MALLORY, arguments_digest(ARGS), 403),  # not an approver
        (False, MALLORY, arguments_digest(ARGS), 403),
        (True, ANONYMOUS, arguments_digest(ARGS), 403),
        (True, BOB, arguments_digest(ARGS + " "), 409),  # another call's digest
        (True, BOB, "", 409),
    ],
)
async def test_refused_decisions_leave_the_hold_pending(
    approve: bool, approver: Identity, digest: str, status: int
) -> None:
    registry = HoldRegistry(clock=Clock())
    task = await started(registry, make_hold())
    with pytest.raises(DecisionRefused) as refused:
        registry.decide("h1", approve=approve, approver=approver, comment="", arguments_sha256=digest)
    assert refused.value.status == status
    assert ARGS not in str(refused.value)
    assert registry.get("h1") is not None
    registry.decide("h1", approve=False, approver=BOB, comment="", arguments_sha256=arguments_digest(ARGS))
    assert (await asyncio.wait_for(task, 5)).verdict == "denied"


async def test_the_requester_may_deny_their_own_call() -> None:
    registry = HoldRegistry(clock=Clock())
    task = await started(registry, make_hold())
    registry.decide(
        "h1", approve=False, approver=ALICE, comment="no", arguments_sha256=arguments_digest(ARGS)
    )
    decision = await asyncio.wait_for(task, 5)
    assert (decision.verdict, decision.approver) == ("denied", ALICE)


async def test_unknown_hold_is_404() -> None:
    registry = HoldRegistry(clock=Clock())
    with pytest.raises(DecisionRefused) as refused:
        registry.decide("nope", approve=True, approver=BOB, comment="", arguments_sha256="")
    assert refused.value.status == 404


async def test_a_decision_after_the_expiry_is_410_and_the_hold_expires() -> None:
    clock = Clock()
    registry = HoldRegistry(clock=clock)
    task = await started(registry, make_hold(timeout_s=3600))
    clock.now += 3601 * S
    assert registry.pending() == []
    with pytest.raises(DecisionRefused) as refused:
        registry.decide("h1", approve=True, approver=BOB, comment="", arguments_sha256=arguments_digest(ARGS))
    assert refused.value.status == 410
    assert (await asyncio.wait_for(task, 5)).verdict == "expired"


async def test_timeout_expires_and_keepalives_run_meanwhile() -> None:
    registry = HoldRegistry()  # the real clock: a 0.3 s timeout, keep-alives every 0.05 s
    beats: list[int] = []

    async def keepalive() -> None:
        beats.append(1)

    hold = make_hold(now=time.time_ns(), timeout_s=0.3)
    decision = await asyncio.wait_for(registry.hold(hold, keepalive=keepalive, keepalive_s=0.05), 5)
    assert decision.verdict == "expired"
    assert decision.approver == ANONYMOUS
    assert len(beats) >= 2
    assert registry.get("h1") is None


async def test_fail_all_answers_every_waiter_and_later_holds() -> None:
    registry = HoldRegistry(clock=Clock())
    first = await started(registry, make_hold("h1"))
    second = await started(registry, make_hold("h2"))
    registry.fail_all("the gateway is shutting down")
    for task in (first, second):
        decision = await asyncio.wait_for(task, 5)
        assert decision.verdict == "failed"
        assert decision.reason == "the gateway is shutting down"
    late = await asyncio.wait_for(registry.hold(make_hold("h3")), 5)
    assert late.verdict == "failed"
    assert registry.pending() == []


async def test_a_cancelled_waiter_takes_its_hold_away() -> None:
    registry = HoldRegistry(clock=Clock())
    task = await started(registry, make_hold())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert registry.get("h1") is None
    with pytest.raises(DecisionRefused) as refused:
        registry.decide("h1", approve=True, approver=BOB, comment="", arguments_sha256=arguments_digest(ARGS))
    assert refused.value.status == 404


async def test_duplicate_hold_id_is_refused() -> None:
    registry = HoldRegistry(clock=Clock())
    task = await started(registry, make_hold())
    with pytest.raises(ValueError, match="already pending"):
        await registry.hold(make_hold())
    task.cancel()
