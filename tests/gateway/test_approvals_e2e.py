"""Human approval of tool calls end to end: the real ``openai`` SDK streams through the gateway in front of
the mock LLM, a rule holds the tool call, and a different identity decides it with the real CLI
(``python -m gateway.cli approve|deny`` as a subprocess) over the admin listener."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import openai
import pytest
import pytest_asyncio

from gateway.approvals.config import ApprovalRuleConfig, ApprovalsConfig
from gateway.config import AdminConfig, ApiKeyConfig, AuthConfig, PolicyConfig, PolicyRule
from gateway.identity.apikeys import hash_api_key, new_api_key
from gateway.mock_llm import MockLlm, MockLlmConfig
from gateway.server import Gateway, running
from parsers.events import ApprovalDecided, ApprovalRequested
from storage.reader import iter_frames
from tests.gateway.conftest import make_config
from tests.gateway.processes import ROOT

pytestmark = pytest.mark.asyncio(loop_scope="module")

DEVELOPER_KEY = new_api_key()  # the agent's identity
APPROVER_KEY = new_api_key()  # someone else, who may decide
CAROL_KEY = new_api_key()  # an approver who also runs an agent: never approves her own calls
AUTH = AuthConfig(
    api_keys=[
        ApiKeyConfig(name="dave-developer", hash=hash_api_key(DEVELOPER_KEY), groups=["developers"]),
        ApiKeyConfig(name="erin-approver", hash=hash_api_key(APPROVER_KEY), groups=["approvers"]),
        ApiKeyConfig(name="carol-sre", hash=hash_api_key(CAROL_KEY), groups=["developers", "approvers"]),
    ]
)
RULES = ApprovalsConfig(
    keepalive_s=0.5,
    rules=[
        ApprovalRuleConfig(name="destructive-shell", tool="shell", arguments=r"rm -rf|mkfs|dd of="),
        ApprovalRuleConfig(name="sql-changes", tool="sql", arguments=r"DROP|TRUNCATE", timeout_s=1.0),
    ],
)
SHELL = {
    "type": "function",
    "function": {
        "name": "shell",
        "description": "Run a shell command",
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "string", "enum": ["rm -rf build/"]}},
        },
    },
}
SQL = {
    "type": "function",
    "function": {
        "name": "sql",
        "parameters": {
            "type": "object",
            "properties": {"statement": {"type": "string", "enum": ["DROP TABLE t"]}},
        },
    },
}


@dataclass
class Streamed:
    """What the agent put together from the stream."""

    content: str = ""
    tool_name: str = ""
    arguments: str = ""
    call_id: str = ""
    finish_reason: str | None = None
    chunks: int = 0


@dataclass
class Setup:
    gateway: Gateway
    admin_url: str
    admin: httpx.AsyncClient
    data_dir: Path
    agents: dict[str, openai.AsyncOpenAI] = field(default_factory=dict)

    async def agent_call(self, key: str, tool: dict[str, Any], session: str) -> Streamed:
        llm = openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{self.gateway.port}/v1",
            api_key=key,
            max_retries=0,
            timeout=30,
            default_headers={"X-Wardgate-Session": session},
        )
        out = Streamed()
        async with llm:
            stream = await llm.chat.completions.create(
                model="mock-gpt",
                messages=[
                    {"role": "system", "content": "You are a careful build assistant."},
                    {"role": "user", "content": "please call a tool to clean the build"},
                ],
                tools=[tool],  # type: ignore[list-item]
                stream=True,
            )
            assert isinstance(stream, openai.AsyncStream)
            async for chunk in stream:
                out.chunks += 1
                for choice in chunk.choices:
                    out.content += choice.delta.content or ""
                    for call in choice.delta.tool_calls or []:
                        out.call_id += call.id or ""
                        if call.function is not None:
                            out.tool_name += call.function.name or ""
                            out.arguments += call.function.arguments or ""
                    out.finish_reason = choice.finish_reason or out.finish_reason
        return out

    async def pending(self) -> list[dict[str, Any]]:
        answer = await self.admin.get("/api/approvals", headers={"Authorization": f"Bearer {APPROVER_KEY}"})
        assert answer.status_code == 200, answer.text
        items: list[dict[str, Any]] = answer.json()["items"]
        return items

    async def held(self, session: str) -> dict[str, Any]:
        """The hold of ``session``'s request, once the gateway holds it."""
        async with asyncio.timeout(20):
            while True:
                for hold in await self.pending():
                    if hold["session_id"] == session:
                        return hold
                await asyncio.sleep(0.05)

    async def cli(self, verb: str, hold_id: str, token: str, *args: str) -> tuple[int, str, str]:
        env = {**{k: v for k, v in os.environ.items() if k != "WARDGATE_TOKEN"}, "WARDGATE_TOKEN": token}
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "gateway.cli", verb, hold_id, "--admin", self.admin_url, *args),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    def approval_frames(self, hold_id: str) -> list[ApprovalRequested | ApprovalDecided]:
        return [
            event
            for stored in iter_frames(self.data_dir)
            if isinstance(event := stored.frame.event, ApprovalRequested | ApprovalDecided)
            and event.hold_id == hold_id
        ]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    data_dir = tmp_path_factory.mktemp("approvals") / "data"
    async with MockLlm(MockLlmConfig(tokens=6, token_delay_ms=5)) as mock:
        config = msgspec.structs.replace(
            make_config(data_dir, mock.port),
            admin=AdminConfig(listen="127.0.0.1:0"),
            auth=AUTH,
            policy=PolicyConfig(rules=[PolicyRule(name="developers", effect="allow", groups=["developers"])]),
            approvals=RULES,
        )
        async with asyncio.timeout(300), running(config) as gw:
            assert gw.admin_address is not None
            url = f"http://127.0.0.1:{gw.admin_address[1]}"
            async with httpx.AsyncClient(base_url=url, timeout=10) as admin:
                yield Setup(gateway=gw, admin_url=url, admin=admin, data_dir=data_dir)


async def test_approved_from_the_cli_the_agent_receives_the_original_call(setup: Setup) -> None:
    async with asyncio.TaskGroup() as tasks:
        agent = tasks.create_task(setup.agent_call(DEVELOPER_KEY, SHELL, "s-approve"))
        hold = await setup.held("s-approve")
        assert not agent.done()  # the agent's request is still open, waiting
        assert (hold["tool_name"], hold["arguments"]) == ("shell", '{"command":"rm -rf build/"}')
        assert hold["requested_by"]["subject"] == "dave-developer"
        assert hold["context"][-1]["content"] == "please call a tool to clean the build"
        code, out, err = await setup.cli(
            "approve", hold["hold_id"], APPROVER_KEY, "--comment", "build dir only"
        )
        assert code == 0, err
        assert "approved" in out
        streamed = await asyncio.wait_for(agent, timeout=20)
    assert (streamed.tool_name, streamed.arguments) == ("shell", hold["arguments"])
    assert streamed.call_id == hold["call_id"]
    assert streamed.finish_reason == "tool_calls"
    requested, decided = setup.approval_frames(hold["hold_id"])
    assert isinstance(requested, ApprovalRequested)
    assert isinstance(decided, ApprovalDecided)
    assert (decided.verdict, decided.approver.subject, decided.comment) == (
        "approved",
        "erin-approver",
        "build dir only",
    )
    assert await setup.pending() == []


async def test_denied_the_agent_receives_the_denial(setup: Setup) -> None:
    async with asyncio.TaskGroup() as tasks:
        agent = tasks.create_task(setup.agent_call(DEVELOPER_KEY, SHELL, "s-deny"))
        hold = await setup.held("s-deny")
        code, _, err = await setup.cli("deny", hold["hold_id"], APPROVER_KEY, "--comment", "not today")
        assert code == 0, err
        streamed = await asyncio.wait_for(agent, timeout=20)
    assert streamed.tool_name == ""  # the call never reached the agent
    assert streamed.arguments == ""
    assert streamed.finish_reason == "stop"
    assert "denied" in streamed.content.lower()
    decided = setup.approval_frames(hold["hold_id"])[-1]
    assert isinstance(decided, ApprovalDecided)
    assert (decided.verdict, decided.comment) == ("denied", "not today")


async def test_self_approval_is_refused_and_the_call_stays_held(setup: Setup) -> None:
    async with asyncio.TaskGroup() as tasks:
        agent = tasks.create_task(setup.agent_call(CAROL_KEY, SHELL, "s-self"))
        hold = await setup.held("s-self")
        code, _, err = await setup.cli("approve", hold["hold_id"], CAROL_KEY)
        assert code == 3
        assert "403: nobody may approve their own request" in err
        await asyncio.sleep(0.3)
        assert not agent.done()
        assert [h["hold_id"] for h in await setup.pending()] == [hold["hold_id"]]  # still pending
        code, _, err = await setup.cli("approve", hold["hold_id"], APPROVER_KEY)  # someone else may
        assert code == 0, err
        streamed = await asyncio.wait_for(agent, timeout=20)
    assert streamed.tool_name == "shell"


async def test_no_decision_before_the_timeout_denies(setup: Setup) -> None:
    streamed = await asyncio.wait_for(setup.agent_call(DEVELOPER_KEY, SQL, "s-timeout"), timeout=20)
    assert streamed.tool_name == ""
    assert streamed.finish_reason == "stop"
    assert streamed.content
    expired = [
        e
        for stored in iter_frames(setup.data_dir)
        if isinstance(e := stored.frame.event, ApprovalDecided) and e.verdict == "expired"
    ]
    assert len(expired) == 1
    assert await setup.pending() == []


async def test_no_decision_without_an_approver_token(setup: Setup) -> None:
    async with asyncio.TaskGroup() as tasks:
        agent = tasks.create_task(setup.agent_call(DEVELOPER_KEY, SHELL, "s-no-token"))
        hold = await setup.held("s-no-token")
        body = {"arguments_sha256": hold["arguments_sha256"], "comment": ""}
        path = f"/api/approvals/{hold['hold_id']}/approve"
        assert (await setup.admin.post(path, json=body)).status_code == 401
        developer = {"Authorization": f"Bearer {DEVELOPER_KEY}"}
        assert (await setup.admin.post(path, json=body, headers=developer)).status_code == 403
        code, _, _ = await setup.cli("approve", hold["hold_id"], DEVELOPER_KEY)
        assert code == 3
        assert not agent.done()
        code, _, err = await setup.cli("deny", hold["hold_id"], APPROVER_KEY)
        assert code == 0, err
        streamed = await asyncio.wait_for(agent, timeout=20)
    assert streamed.finish_reason == "stop"
