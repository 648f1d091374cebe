"""A gateway with its admin listener on a real socket, three service keys, and real traffic to look at."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec
import pytest
import pytest_asyncio

from gateway.approvals.config import ApprovalRuleConfig, ApprovalsConfig
from gateway.config import AdminConfig, ApiKeyConfig, AuthConfig, PolicyConfig, PolicyRule
from gateway.identity.apikeys import hash_api_key, new_api_key
from gateway.mock_llm import MockLlm, MockLlmConfig
from gateway.server import Gateway, running
from parsers.events import ConsoleAccess
from storage.index import SqliteIndex, index_path
from storage.reader import iter_frames
from tests.gateway.conftest import make_config

AUDITOR_KEY = new_api_key()
DEVELOPER_KEY = new_api_key()
METRICS_KEY = new_api_key()
APPROVER_KEY = new_api_key()
DBA_KEY = new_api_key()
AGENT_KEY = new_api_key()
# The same [[auth.api_keys]] serve the data plane and the admin listener.
AUTH = AuthConfig(
    api_keys=[
        ApiKeyConfig(name="alice-auditor", hash=hash_api_key(AUDITOR_KEY), groups=["staff", "auditors"]),
        ApiKeyConfig(name="dave-developer", hash=hash_api_key(DEVELOPER_KEY), groups=["developers"]),
        ApiKeyConfig(name="prometheus", hash=hash_api_key(METRICS_KEY), groups=["metrics"]),
        ApiKeyConfig(name="erin-approver", hash=hash_api_key(APPROVER_KEY), groups=["approvers"]),
        ApiKeyConfig(name="dana-dba", hash=hash_api_key(DBA_KEY), groups=["dba"]),
        ApiKeyConfig(name="andy-agent", hash=hash_api_key(AGENT_KEY), groups=["developers", "agents"]),
    ]
)
# The agent's shell calls are held (only the agents group's: everyone else's traffic is not guarded), and a
# rule whose own approver group is not among admin.approver_groups: its members decide its holds only.
APPROVALS = ApprovalsConfig(
    keepalive_s=0.5,
    rules=[
        ApprovalRuleConfig(name="agent-shell", tool="shell", arguments="rm -rf", groups=["agents"]),
        ApprovalRuleConfig(name="sql-drops", tool="sql", approver_groups=["dba"], groups=["agents"]),
    ],
)
DEVELOPERS_MAY_CHAT = PolicyConfig(
    rules=[PolicyRule(name="developers", effect="allow", groups=["developers"])]
)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Console:
    gateway: Gateway
    admin: httpx.AsyncClient  # base_url: the admin listener, no credentials
    proxy: httpx.AsyncClient  # base_url: the data plane
    data_dir: Path

    @property
    def auditor(self) -> dict[str, str]:
        return bearer(AUDITOR_KEY)

    async def get(self, url: str, /, **params: str) -> httpx.Response:
        """GET as the auditor."""
        return await self.admin.get(url, params=params, headers=self.auditor)

    async def chat(self, session: str, prompt: str, *, stream: bool = False, model: str = "mock-gpt") -> str:
        """One chat completion through the gateway, as dave-developer; returns its exchange id."""
        body = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": stream}
        headers = {"X-Wardgate-Session": session, **bearer(DEVELOPER_KEY)}
        response = await self.proxy.post("/v1/chat/completions", json=body, headers=headers)
        assert response.status_code == 200
        return response.headers["X-Wardgate-Exchange"]

    async def indexed(self, *exchange_ids: str) -> None:
        """Wait (bounded) until the index follower has indexed these exchanges."""
        async with asyncio.timeout(20):
            while True:
                async with await SqliteIndex.open(index_path(self.data_dir), readonly=True) as index:
                    found = [await index.exchange(x) for x in exchange_ids]
                if all(found):
                    return
                await asyncio.sleep(0.05)

    def audit_frames(self) -> list[ConsoleAccess]:
        return [s.frame.event for s in iter_frames(self.data_dir) if isinstance(s.frame.event, ConsoleAccess)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mock_llm() -> AsyncIterator[MockLlm]:
    """Streamed tokens 20 ms apart, so that they arrive (and are recorded) as chunks of their own."""
    async with MockLlm(MockLlmConfig(tokens=12, token_delay_ms=20)) as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def console(tmp_path_factory: pytest.TempPathFactory, mock_llm: MockLlm) -> AsyncIterator[Console]:
    """One gateway per test module (starting one and its index follower takes seconds): each test uses
    sessions of its own names and words of its own, so they do not see each other's traffic."""
    data_dir = tmp_path_factory.mktemp("console") / "data"
    config = make_config(data_dir, mock_llm.port)
    config = msgspec.structs.replace(
        config,
        admin=AdminConfig(listen="127.0.0.1:0"),
        auth=AUTH,
        policy=DEVELOPERS_MAY_CHAT,
        approvals=APPROVALS,
    )
    async with asyncio.timeout(600), running(config) as gw:
        assert gw.admin_address is not None
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.admin_address[1]}", timeout=10) as admin,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}", timeout=10) as proxy,
        ):
            yield Console(gateway=gw, admin=admin, proxy=proxy, data_dir=data_dir)
