"""Approvals under ``wardgate serve --workers 2``: the held calls live in the workers, the console in the
supervisor; a decision through the supervisor reaches the held request in whichever worker holds it, and
that worker's registry checks who decides."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import openai

from gateway.hold_channel import socket_path
from gateway.identity.apikeys import hash_api_key, new_api_key
from gateway.mock_llm import MockLlm, MockLlmConfig
from parsers.events import ApprovalDecided, ConsoleAccess
from storage.reader import iter_frames
from storage.series import SUPERVISOR_SERIES
from tests.gateway.test_workers import indexed, supervised

DEVELOPER_KEY, APPROVER_KEY, CAROL_KEY = new_api_key(), new_api_key(), new_api_key()
CONFIG = """
[[auth.api_keys]]
name = "dave-developer"
hash = "{developer}"
groups = ["developers"]
[[auth.api_keys]]
name = "erin-approver"
hash = "{approver}"
groups = ["approvers"]
[[auth.api_keys]]
name = "carol-sre"
hash = "{carol}"
groups = ["developers", "approvers"]

[[policy.rules]]
name = "developers"
effect = "allow"
groups = ["developers"]

[approvals]
keepalive_s = 0.5
[[approvals.rules]]
name = "destructive-shell"
tool = "shell"
arguments = "rm -rf"
"""
SHELL: Any = {
    "type": "function",
    "function": {
        "name": "shell",
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "string", "enum": ["rm -rf out/"]}},
        },
    },
}
AGENTS = 6  # each on a connection of its own: all on one worker has odds 2**-5


async def agent(port: int, key: str, session: str) -> tuple[str, str]:
    """One streamed chat that gets a tool call (or a denial); returns (tool call text, finish reason)."""
    llm = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key=key,
        max_retries=0,
        timeout=60,
        default_headers={"X-Wardgate-Session": session},
    )
    called, finish = "", ""
    async with llm:
        stream = await llm.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "call a tool to clean out/"}],
            tools=[SHELL],
            stream=True,
        )
        async for chunk in stream:
            for choice in chunk.choices:
                for call in choice.delta.tool_calls or []:
                    if call.function is not None:
                        called += (call.function.name or "") + (call.function.arguments or "")
                finish = choice.finish_reason or finish
    return called, finish


async def test_decisions_reach_the_worker_that_holds_the_call(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    config = CONFIG.format(
        developer=hash_api_key(DEVELOPER_KEY),
        approver=hash_api_key(APPROVER_KEY),
        carol=hash_api_key(CAROL_KEY),
    )
    approver = {"Authorization": f"Bearer {APPROVER_KEY}"}
    async with (
        MockLlm(MockLlmConfig(tokens=4, token_delay_ms=1)) as mock,
        supervised(mock.port, data_dir, config=config) as gw,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.admin}", timeout=20) as admin,
        asyncio.TaskGroup() as tasks,
    ):
        assert socket_path(data_dir, 0).exists()
        assert socket_path(data_dir, 1).exists()
        agents = {
            f"s-{n}": tasks.create_task(agent(gw.port, CAROL_KEY if n == 0 else DEVELOPER_KEY, f"s-{n}"))
            for n in range(AGENTS)
        }
        async with asyncio.timeout(30):
            while True:
                holds = (await admin.get("/api/approvals", headers=approver)).json()["items"]
                if len(holds) == AGENTS:
                    break
                await asyncio.sleep(0.05)
        by_session: dict[str, dict[str, Any]] = {h["session_id"]: h for h in holds}
        assert set(by_session) == set(agents)

        # The supervisor does not check self-approval: carol's own worker refuses it.
        own = by_session["s-0"]
        body = {"arguments_sha256": own["arguments_sha256"], "comment": ""}
        refused = await admin.post(
            f"/api/approvals/{own['hold_id']}/approve",
            json=body,
            headers={"Authorization": f"Bearer {CAROL_KEY}"},
        )
        assert refused.status_code == 403
        assert refused.json()["detail"] == "nobody may approve their own request"
        wrong = await admin.post(
            f"/api/approvals/{own['hold_id']}/approve",
            json={"arguments_sha256": "0" * 64, "comment": ""},
            headers=approver,
        )
        assert wrong.status_code == 409
        assert not agents["s-0"].done()

        for n, (session, hold) in enumerate(sorted(by_session.items())):
            verb = "approve" if n % 2 == 0 else "deny"
            body = {"arguments_sha256": hold["arguments_sha256"], "comment": f"{verb} {session}"}
            answer = await admin.post(f"/api/approvals/{hold['hold_id']}/{verb}", json=body, headers=approver)
            assert answer.status_code == 200, answer.text
        results = {session: await asyncio.wait_for(task, timeout=20) for session, task in agents.items()}
        assert (await admin.get("/api/approvals", headers=approver)).json() == {"items": []}
        assert await gw.stop() == 0

    for n, session in enumerate(sorted(results)):
        called, finish = results[session]
        if n % 2 == 0:
            assert (called, finish) == ('shell{"command":"rm -rf out/"}', "tool_calls"), session
        else:
            assert (called, finish) == ("", "stop"), session
    # Each decision is recorded in the series of the worker that held the call, both workers held some.
    records = await indexed(data_dir)
    series_of = {r.session_id: r.series for r in records.values()}
    assert set(series_of.values()) == {0, 1}
    for series in (0, 1):
        decided = [
            s.frame.event
            for s in iter_frames(data_dir, series=series)
            if isinstance(s.frame.event, ApprovalDecided)
        ]
        held_here = {by_session[s]["hold_id"] for s, n in series_of.items() if n == series}
        assert {d.hold_id for d in decided} == held_here
    looks = [
        s.frame.event
        for s in iter_frames(data_dir, series=SUPERVISOR_SERIES)
        if isinstance(s.frame.event, ConsoleAccess)
    ]
    assert [e.action for e in looks].count("approve") == AGENTS // 2 + 2  # the two refused ones too
    assert [e.action for e in looks].count("deny") == AGENTS // 2
    assert not socket_path(data_dir, 1).exists()  # removed as the worker stopped
