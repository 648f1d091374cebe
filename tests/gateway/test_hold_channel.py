"""Held calls across processes' boundaries: workers' registries on unix sockets, asked as one source.

Real sockets and real registries in this process (the --workers end-to-end test runs them in workers).
"""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest

from gateway.approvals.registry import APPROVED, DENIED, DecisionRefused, HoldRegistry
from gateway.config import ConfigError
from gateway.hold_channel import HoldChannel, WorkerHolds, socket_path
from parsers.events import Identity
from tests.gateway.holding import APPROVER, DEVELOPER, Held, holding, make_hold

pytestmark = pytest.mark.asyncio


@asynccontextmanager
async def workers(data_dir: Path, n: int) -> AsyncIterator[list[Held]]:
    """``n`` registries, each served on its series' socket, as the workers of a supervisor would."""
    async with AsyncExitStack() as stack:
        held = []
        for series in range(n):
            registry = HoldRegistry()
            channel = await HoldChannel.open(socket_path(data_dir, series), registry)
            stack.push_async_callback(channel.close)
            held.append(await stack.enter_async_context(holding(registry)))
        yield held


QUICK_S = 0.3


def source(data_dir: Path, series: list[int]) -> WorkerHolds:
    return WorkerHolds(lambda: [socket_path(data_dir, s) for s in series], timeout_s=QUICK_S)


async def test_one_source_over_every_worker(tmp_path: Path) -> None:
    async with workers(tmp_path, 2) as (w0, w1):
        first = await w1.hold(make_hold(created_at_ns=1_000, timeout_s=1e9))
        second = await w0.hold(make_hold(created_at_ns=2_000, timeout_s=1e9, context="drop it"))
        holds = source(tmp_path, [0, 1])
        assert await holds.pending() == [first, second]  # oldest first, whichever worker holds it
        assert await holds.get(second.hold_id) == second
        assert await holds.get("h_unknown") is None

        decided = await holds.decide(
            first.hold_id,
            approve=True,
            approver=APPROVER,
            comment="ok",
            arguments_sha256=first.arguments_sha256,
        )
        assert decided == first
        decision = await w1.decision(first)  # the waiter in that worker woke
        assert (decision.verdict, decision.approver, decision.comment) == (APPROVED, APPROVER, "ok")
        assert not w0.decided(second)
        assert await holds.pending() == [second]

        denied = await holds.decide(
            second.hold_id,
            approve=False,
            approver=APPROVER,
            comment="",
            arguments_sha256=second.arguments_sha256,
        )
        assert denied.hold_id == second.hold_id
        assert (await w0.decision(second)).verdict == DENIED
        assert await holds.pending() == []
        assert stat.S_IMODE(socket_path(tmp_path, 1).stat().st_mode) == 0o600  # only the gateway's user
    assert not socket_path(tmp_path, 0).exists()  # removed on close


async def test_the_worker_checks_who_decides(tmp_path: Path) -> None:
    """The registry behind the socket refuses, whatever the asking side believed."""
    async with workers(tmp_path, 2) as (w0, _):
        hold = await w0.hold(make_hold())
        holds = source(tmp_path, [0, 1])
        digest = hold.arguments_sha256
        refusals = [
            (DEVELOPER, True, digest, 403, "own request"),
            (
                Identity(subject="mallory", method="api-key", groups=("developers",)),
                True,
                digest,
                403,
                "approver",
            ),
            (APPROVER, True, "0" * 64, 409, "digest"),
        ]
        for approver, approve, sha, status, words in refusals:
            with pytest.raises(DecisionRefused) as refused:
                await holds.decide(
                    hold.hold_id, approve=approve, approver=approver, comment="", arguments_sha256=sha
                )
            assert refused.value.status == status
            assert words in str(refused.value)
        assert not w0.decided(hold)
        with pytest.raises(DecisionRefused) as unknown:
            await holds.decide("h_nope", approve=True, approver=APPROVER, comment="", arguments_sha256=digest)
        assert unknown.value.status == 404
        # The requester may always refuse their own call.
        await holds.decide(
            hold.hold_id, approve=False, approver=DEVELOPER, comment="", arguments_sha256=digest
        )
        assert (await w0.decision(hold)).verdict == DENIED


async def test_a_dead_or_silent_worker_is_skipped(tmp_path: Path) -> None:
    silent = socket_path(tmp_path, 2)
    silent.parent.mkdir(parents=True)

    done = asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await done.wait()
        writer.close()

    stalled = await asyncio.start_unix_server(never_answer, path=str(silent))
    try:
        async with workers(tmp_path, 1) as (w0,):
            hold = await w0.hold(make_hold())
            holds = source(tmp_path, [0, 1, 2])  # 1: no socket at all (dead); 2: never answers
            async with asyncio.timeout(QUICK_S * 2 + 1):  # each question waits for the silent one once
                assert await holds.pending() == [hold]
                await holds.decide(
                    hold.hold_id,
                    approve=True,
                    approver=APPROVER,
                    comment="",
                    arguments_sha256=hold.arguments_sha256,
                )
            assert (await w0.decision(hold)).verdict == APPROVED
    finally:
        done.set()
        stalled.close()
        await stalled.wait_closed()
    # With none answering, there is nothing pending and nothing to decide.
    assert await source(tmp_path, [0, 1]).pending() == []


async def test_a_socket_path_too_long_fails_clearly(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100)
    with pytest.raises(
        ConfigError, match=r"storage.data_dir: the approvals socket .* use a shorter data directory"
    ):
        await HoldChannel.open(socket_path(deep, 1), HoldRegistry())
