"""Approvals end to end: the real openai SDK and httpx through a gateway in front of ``wardgate mock-llm``.

Holds are decided through the gateway's in-process registry (the admin API and CLI sit on top of it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec
import openai
import pytest

from gateway.approvals import ApprovalRuleConfig, ApprovalsConfig, PendingHold
from gateway.config import AdminConfig, Config
from gateway.mock_llm import MockLlm, MockLlmConfig
from gateway.server import Gateway, running
from parsers.events import ApprovalDecided, ApprovalRequested, BodyChunk, Direction, ExchangeStarted, Identity
from storage.reader import iter_frames
from tests.gateway.conftest import make_config

T = TypeVar("T")
BOB = Identity(subject="bob", method="oidc", groups=("approvers",))
COMMAND = "rm -rf /tmp/scratch"
SHELL_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "shell",
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "string", "enum": [COMMAND]}},
            "required": ["command"],
        },
    },
}
READ_TOOL: Any = {"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}
ASK: Any = [{"role": "user", "content": "say something, then call a tool"}]


@pytest.fixture
async def slow_mock() -> AsyncIterator[MockLlm]:
    async with MockLlm(MockLlmConfig(tokens=4, token_delay_ms=5)) as server:
        yield server


def approvals_config(data_dir: Path, port: int, **rule: Any) -> Config:
    fields: dict[str, Any] = {"name": "shell-destructive", "tool": "shell", "arguments": r"rm\s+-rf"} | rule
    return msgspec.structs.replace(
        make_config(data_dir, port),
        admin=AdminConfig(listen=""),
        approvals=ApprovalsConfig(keepalive_s=0.1, rules=[ApprovalRuleConfig(**fields)]),
    )


async def pending_hold(gw: Gateway) -> PendingHold:
    async with asyncio.timeout(20):
        while not gw.holds.pending():  # noqa: ASYNC110 - the registry has no event to wait on
            await asyncio.sleep(0.01)
    (hold,) = gw.holds.pending()
    return hold


def decide(gw: Gateway, hold: PendingHold, *, approve: bool, comment: str = "") -> None:
    gw.holds.decide(
        hold.hold_id, approve=approve, approver=BOB, comment=comment, arguments_sha256=hold.arguments_sha256
    )


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(20):
        while not condition():  # noqa: ASYNC110 - what the client got so far
            await asyncio.sleep(0.01)


class Streamed:
    """What the SDK client has received so far from a streamed chat completion."""

    def __init__(self) -> None:
        self.content = ""
        self.calls: dict[int, dict[str, str]] = {}
        self.finish: str | None = None
        self.exchange_id = ""


async def stream_chat(llm: openai.AsyncOpenAI, tools: list[Any], got: Streamed) -> None:
    raw = await llm.chat.completions.with_raw_response.create(
        model="mock-gpt", messages=ASK, tools=tools, stream=True
    )
    got.exchange_id = raw.headers["x-wardgate-exchange"]
    stream: openai.AsyncStream[Any] = raw.parse()
    async for chunk in stream:
        for choice in chunk.choices:
            got.content += choice.delta.content or ""
            for call in choice.delta.tool_calls or []:
                entry = got.calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] += call.id or ""
                if call.function is not None:
                    entry["name"] += call.function.name or ""
                    entry["arguments"] += call.function.arguments or ""
            got.finish = choice.finish_reason or got.finish


def client(gw: Gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="sk-test", max_retries=0)


def approval_frames(data_dir: Path, exchange_id: str) -> list[ApprovalRequested | ApprovalDecided]:
    return [
        stored.frame.event
        for stored in iter_frames(data_dir)
        if stored.frame.exchange_id == exchange_id
        and isinstance(stored.frame.event, ApprovalRequested | ApprovalDecided)
    ]


async def within(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, 20)


async def test_stream_text_flows_the_call_waits_and_approval_releases_it(
    slow_mock: MockLlm, data_dir: Path
) -> None:
    got = Streamed()
    async with running(approvals_config(data_dir, slow_mock.port)) as gw, client(gw) as llm:
        task = asyncio.ensure_future(stream_chat(llm, [SHELL_TOOL], got))
        hold = await pending_hold(gw)
        assert (hold.tool_name, hold.rule) == ("shell", "shell-destructive")
        assert json.loads(hold.arguments) == {"command": COMMAND}
        assert hold.context == ASK
        await until(lambda: got.content != "")
        text_before = got.content
        await asyncio.sleep(0.3)  # keep-alives go out meanwhile; the call must stay held
        assert got.calls == {}
        assert got.finish is None
        decide(gw, hold, approve=True, comment="fine")
        await within(task)
    assert text_before == got.content  # all of the text arrived before the decision
    assert got.finish == "tool_calls"
    assert got.calls[0]["name"] == "shell"
    assert got.calls[0]["id"] == hold.call_id
    assert json.loads(got.calls[0]["arguments"]) == {"command": COMMAND}
    requested, decided = approval_frames(data_dir, got.exchange_id)
    assert isinstance(requested, ApprovalRequested)
    assert (requested.hold_id, requested.arguments_sha256) == (hold.hold_id, hold.arguments_sha256)
    assert isinstance(decided, ApprovalDecided)
    assert (decided.verdict, decided.approver, decided.comment) == ("approved", BOB, "fine")


async def test_keepalive_comments_and_a_denial_the_agent_can_read(slow_mock: MockLlm, data_dir: Path) -> None:
    async with running(approvals_config(data_dir, slow_mock.port)) as gw:
        body = {"model": "mock-gpt", "messages": ASK, "tools": [SHELL_TOOL], "stream": True}
        received = bytearray()
        async with httpx.AsyncClient(timeout=20) as http:
            url = f"http://127.0.0.1:{gw.port}/v1/chat/completions"
            async with http.stream("POST", url, json=body) as response:
                assert "content-length" not in response.headers
                pieces = response.aiter_raw()
                hold = await pending_hold(gw)
                while received.count(b": wardgate: waiting for approval of shell\n\n") < 2:
                    received += await within(anext(pieces))
                decide(gw, hold, approve=False, comment="not on prod")
                async for piece in pieces:
                    received += piece
    events = [block for block in bytes(received).split(b"\n\n") if block.startswith(b"data: ")]
    assert events[-1] == b"data: [DONE]"
    docs = [json.loads(block[6:]) for block in events[:-1]]
    text = "".join(d["choices"][0]["delta"].get("content") or "" for d in docs if d["choices"])
    assert "bob denied it: not on prod" in text
    assert "shell-destructive" in text
    assert docs[-1]["choices"][0]["finish_reason"] == "stop"
    assert b"tool_calls" not in received.split(b"waiting for approval")[-1]


async def test_denied_stream_through_the_sdk(slow_mock: MockLlm, data_dir: Path) -> None:
    got = Streamed()
    async with running(approvals_config(data_dir, slow_mock.port)) as gw, client(gw) as llm:
        task = asyncio.ensure_future(stream_chat(llm, [SHELL_TOOL], got))
        decide(gw, await pending_hold(gw), approve=False)
        await within(task)
    assert got.finish == "stop"
    assert got.calls == {}
    assert "[wardgate] The call to the tool 'shell'" in got.content
    verdicts = [
        e.verdict for e in approval_frames(data_dir, got.exchange_id) if isinstance(e, ApprovalDecided)
    ]
    assert verdicts == ["denied"]


async def test_timeout_denies(slow_mock: MockLlm, data_dir: Path) -> None:
    got = Streamed()
    config = approvals_config(data_dir, slow_mock.port, timeout_s=0.3)
    async with running(config) as gw, client(gw) as llm:
        await within(stream_chat(llm, [SHELL_TOOL], got))
    assert got.finish == "stop"
    assert "nobody approved it in time" in got.content
    decided = [e for e in approval_frames(data_dir, got.exchange_id) if isinstance(e, ApprovalDecided)]
    assert [(e.verdict, e.approver.subject) for e in decided] == [("expired", "anonymous")]


async def test_a_call_no_rule_matches_passes(slow_mock: MockLlm, data_dir: Path) -> None:
    got = Streamed()
    async with running(approvals_config(data_dir, slow_mock.port)) as gw, client(gw) as llm:
        await within(stream_chat(llm, [READ_TOOL], got))
        assert gw.holds.pending() == []
    assert got.finish == "tool_calls"
    assert got.calls[0]["name"] == "read_file"
    assert approval_frames(data_dir, got.exchange_id) == []


async def test_requests_no_rule_applies_to_keep_the_fast_path(slow_mock: MockLlm, data_dir: Path) -> None:
    got = Streamed()
    config = approvals_config(data_dir, slow_mock.port, groups=["agents"])  # anonymous is not an agent
    async with running(config) as gw, client(gw) as llm:
        await within(stream_chat(llm, [SHELL_TOOL], got))
    assert got.finish == "tool_calls"
    assert json.loads(got.calls[0]["arguments"]) == {"command": COMMAND}
    to_client = [
        s.frame
        for s in iter_frames(data_dir)
        if s.frame.exchange_id == got.exchange_id
        and s.frame.direction == Direction.TO_CLIENT
        and isinstance(s.frame.event, BodyChunk)
    ]
    assert to_client == []  # relayed as read: the client's bytes are the upstream's


@pytest.mark.parametrize("approve", [True, False])
async def test_non_streamed_response_waits_whole(slow_mock: MockLlm, data_dir: Path, approve: bool) -> None:
    async with running(approvals_config(data_dir, slow_mock.port)) as gw, client(gw) as llm:
        call = asyncio.ensure_future(
            llm.chat.completions.with_raw_response.create(model="mock-gpt", messages=ASK, tools=[SHELL_TOOL])
        )
        hold = await pending_hold(gw)
        await asyncio.sleep(0.1)
        assert not call.done()
        decide(gw, hold, approve=approve, comment="why not")
        raw = await within(call)
    completion = raw.parse()
    assert int(raw.headers["content-length"]) == len(raw.content)
    (choice,) = completion.choices
    if approve:
        assert choice.finish_reason == "tool_calls"
        assert choice.message.tool_calls is not None
        assert json.loads(choice.message.tool_calls[0].function.arguments) == {"command": COMMAND}  # type: ignore[union-attr]
    else:
        assert choice.finish_reason == "stop"
        assert choice.message.tool_calls is None
        assert "bob denied it: why not" in (choice.message.content or "")


async def test_shutdown_fails_the_hold_with_a_readable_denial(slow_mock: MockLlm, data_dir: Path) -> None:
    got = Streamed()
    async with running(approvals_config(data_dir, slow_mock.port)) as gw, client(gw) as llm:
        task = asyncio.ensure_future(stream_chat(llm, [SHELL_TOOL], got))
        await pending_hold(gw)
        gw.stop()
        await within(task)
    assert got.finish == "stop"
    assert "the gateway is shutting down" in got.content
    decided = [e for e in approval_frames(data_dir, got.exchange_id) if isinstance(e, ApprovalDecided)]
    assert [e.verdict for e in decided] == ["failed"]


@pytest.mark.parametrize("approve", [True, False])
async def test_http2_stream_is_held_and_decided(slow_mock: MockLlm, data_dir: Path, approve: bool) -> None:
    got = Streamed()
    async with (
        running(approvals_config(data_dir, slow_mock.port)) as gw,
        openai.DefaultAsyncHttpxClient(http1=False, http2=True, timeout=20) as http,
        openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="sk-test", max_retries=0, http_client=http
        ) as llm,
    ):
        task = asyncio.ensure_future(stream_chat(llm, [SHELL_TOOL], got))
        hold = await pending_hold(gw)
        await until(lambda: got.content != "")
        assert got.calls == {}
        decide(gw, hold, approve=approve, comment="h2")
        await within(task)
    protocols = {
        s.frame.event.protocol
        for s in iter_frames(data_dir)
        if s.frame.exchange_id == got.exchange_id and isinstance(s.frame.event, ExchangeStarted)
    }
    assert protocols == {"h2"}
    if approve:
        assert got.finish == "tool_calls"
        assert json.loads(got.calls[0]["arguments"]) == {"command": COMMAND}
    else:
        assert got.finish == "stop"
        assert got.calls == {}
        assert "bob denied it: h2" in got.content
    verdicts = [
        e.verdict for e in approval_frames(data_dir, got.exchange_id) if isinstance(e, ApprovalDecided)
    ]
    assert verdicts == ["approved" if approve else "denied"]


@pytest.mark.parametrize("approve", [True, False])
async def test_responses_api_stream_is_held(slow_mock: MockLlm, data_dir: Path, approve: bool) -> None:
    tool: Any = {"type": "function", **SHELL_TOOL["function"]}
    texts: list[str] = []
    calls: list[str] = []
    async with running(approvals_config(data_dir, slow_mock.port)) as gw, client(gw) as llm:

        async def consume() -> None:
            stream = await llm.responses.create(
                model="mock-gpt", input="call a tool", tools=[tool], stream=True
            )
            async for event in stream:
                if event.type == "response.completed":
                    for item in event.response.output:
                        if item.type == "function_call":
                            calls.append(item.arguments)
                        elif item.type == "message":
                            texts.extend(part.text for part in item.content if part.type == "output_text")

        task = asyncio.ensure_future(consume())
        decide(gw, await pending_hold(gw), approve=approve, comment="resp")
        await within(task)
    if approve:
        assert [json.loads(c) for c in calls] == [{"command": COMMAND}]
    else:
        assert calls == []
        assert any("bob denied it: resp" in t for t in texts)
