"""Tool calls in whole JSON bodies (chat and Responses API) and the denial that replaces them."""

from __future__ import annotations

import base64
import json
import pathlib

import msgspec
import pytest

from gateway.approvals import ApprovalsConfig, compile_rules
from parsers.approvals import body_tool_calls, denied_body

CAPTURES = pathlib.Path(__file__).parents[2] / "fixtures" / "openai-captures"
EVERY_TOOL = compile_rules(msgspec.convert({"rules": [{"name": "any"}]}, ApprovalsConfig), ["approvers"])
SQL = compile_rules(
    msgspec.convert(
        {"rules": [{"name": "sql-ddl", "tool": "sql", "arguments": r"(?i)\b(drop|truncate|alter)\b"}]},
        ApprovalsConfig,
    ),
    ["dba"],
)

CHAT = json.dumps(
    {
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "sql", "arguments": '{"q": "DROP TABLE t"}'},
                        },
                        {
                            "id": "c2",
                            "type": "function",
                            "function": {"name": "sql", "arguments": '{"q": "SELECT 1"}'},
                        },
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    },
    indent=2,
).encode()


def test_chat_calls_are_found_with_their_rule() -> None:
    first, second = body_tool_calls(CHAT, SQL)
    assert (first.call_id, first.name, first.arguments) == ("c1", "sql", '{"q": "DROP TABLE t"}')
    assert first.rule is not None
    assert first.rule.name == "sql-ddl"
    assert second.rule is None


def test_denied_chat_body_is_a_plain_answer() -> None:
    body = denied_body(CHAT, "Denied by sql-ddl: not on Fridays")
    doc = json.loads(body)
    (choice,) = doc["choices"]
    assert choice["finish_reason"] == "stop"
    assert choice["message"] == {"role": "assistant", "content": "Denied by sql-ddl: not on Fridays"}
    assert doc["usage"]["total_tokens"] == 7
    assert doc["id"] == "chatcmpl-9"


def test_responses_api_function_calls() -> None:
    body = json.dumps(
        {
            "id": "resp_1",
            "object": "response",
            "output": [
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {
                    "type": "function_call",
                    "id": "fc_1",
                    "call_id": "call_9",
                    "name": "sql",
                    "arguments": '{"q":"drop x"}',
                },
            ],
        }
    ).encode()
    (call,) = body_tool_calls(body, SQL)
    assert (call.call_id, call.rule is not None) == ("call_9", True)
    doc = json.loads(denied_body(body, "no"))
    assert [item["type"] for item in doc["output"]] == ["reasoning", "message"]
    assert doc["output"][1]["content"][0] == {"type": "output_text", "text": "no", "annotations": []}


@pytest.mark.parametrize(
    "body", [b"", b"not json", b"[1,2]", b'{"choices": 5}', b'{"choices": [{"message": 1}]}']
)
def test_odd_bodies_have_no_calls(body: bytes) -> None:
    assert body_tool_calls(body, EVERY_TOOL) == []
    assert denied_body(body, "x") == body or json.loads(denied_body(body, "x")) is not None


@pytest.mark.parametrize("path", sorted(CAPTURES.glob("chat-nonstream-*.json")), ids=lambda p: p.stem)
def test_captured_bodies(path: pathlib.Path) -> None:
    doc = json.loads(path.read_text())
    body = base64.b64decode(doc["response"]["body_b64"])
    calls = body_tool_calls(body, EVERY_TOOL)
    assert bool(calls) == ("chat_nonstream_tool_calls" in doc["categories"])
    if calls:
        denied = json.loads(denied_body(body, "denied"))
        for choice in denied["choices"]:
            assert "tool_calls" not in choice["message"]
            assert choice["finish_reason"] == "stop"
