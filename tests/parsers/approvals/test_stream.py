"""StreamGate: text flows, a matching call waits for a decision; approve is byte-identical, deny is clean."""

from __future__ import annotations

import base64
import json
import pathlib
import re
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.approvals import ApprovalsConfig, compile_rules
from parsers.approvals import ApprovalRule, StreamGate, ToolCallSeen

CAPTURES = pathlib.Path(__file__).parents[2] / "fixtures" / "openai-captures"
CAPTURE_FILES = sorted(CAPTURES.glob("*.json"))


def rules(*specs: dict[str, Any]) -> tuple[ApprovalRule, ...]:
    return compile_rules(msgspec.convert({"rules": list(specs)}, ApprovalsConfig), ["approvers"])


SHELL = rules({"name": "shell-destructive", "tool": "shell", "arguments": r"rm\s+-rf"})
EVERY_TOOL = rules({"name": "any", "tool": "*"})
NO_TOOL = rules({"name": "none", "tool": "no_such_tool_*"})


def event(doc: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


def chunk(delta: dict[str, Any], finish: str | None = None, choice: int = 0) -> bytes:
    return event(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": choice, "delta": delta, "finish_reason": finish}],
        }
    )


def call_head(index: int, name: str, call_id: str) -> dict[str, Any]:
    return {
        "tool_calls": [
            {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
        ]
    }


def call_args(index: int, fragment: str) -> dict[str, Any]:
    return {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}


TEXT = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Cleaning "}),
    chunk({"content": "up."}),
]
CALL = [
    chunk(call_head(0, "shell", "call_1")),
    chunk(call_args(0, '{"command": "rm')),
    chunk(call_args(0, ' -rf /tmp/x"}')),
]
END = [chunk({}, "tool_calls"), b"data: [DONE]\n\n"]
STREAM = b"".join(TEXT + CALL + END)


def run(
    gate: StreamGate, pieces: list[bytes], *, approve: bool | None
) -> tuple[bytes, bytes, list[ToolCallSeen]]:
    """Feed pieces; decide each match as it appears. Returns (out before any decision, all out, matches)."""
    out = bytearray()
    before: bytes | None = None
    seen: list[ToolCallSeen] = []

    def decide() -> None:
        nonlocal before
        for call in gate.take_matches():
            seen.append(call)
            if before is None:
                before = bytes(out)
            if approve is None:
                continue
            out.extend(gate.approve(call) if approve else gate.deny(f"denied {call.name}"))

    for piece in pieces:
        out += gate.feed(piece)
        decide()
    out += gate.finish()
    decide()
    return (bytes(out) if before is None else before), bytes(out), seen


def splits(data: bytes) -> list[list[bytes]]:
    return [[data[:i], data[i:]] for i in range(len(data) + 1)]


def test_text_flows_and_the_call_waits() -> None:
    gate = StreamGate(SHELL)
    out = gate.feed(b"".join(TEXT + CALL))
    assert out == b"".join(TEXT)
    assert gate.take_matches() == []  # arguments may still grow
    out = gate.feed(END[0])
    assert out == b""
    (call,) = gate.take_matches()
    assert (call.name, call.call_id, call.arguments) == ("shell", "call_1", '{"command": "rm -rf /tmp/x"}')
    assert call.rule is not None
    assert call.rule.name == "shell-destructive"
    assert gate.feed(END[1]) == b""  # [DONE] waits behind the call
    assert gate.finish() == b""
    assert gate.approve(call) == b"".join(CALL + END)


def test_approve_at_every_split_is_byte_identical() -> None:
    for pieces in splits(STREAM):
        before, out, seen = run(StreamGate(SHELL), pieces, approve=True)
        assert out == STREAM
        assert [call.call_id for call in seen] == ["call_1"]
        assert before == b"".join(TEXT)  # all of the text went out before the decision


def test_deny_at_every_split_is_a_well_formed_stop() -> None:
    for pieces in splits(STREAM):
        check_denied(run(StreamGate(SHELL), pieces, approve=False)[1])


def check_denied(out: bytes) -> None:
    assert out.startswith(b"".join(TEXT))
    events = [block for block in out[len(b"".join(TEXT)) :].split(b"\n\n") if block]
    assert events[-1] == b"data: [DONE]"
    docs = [json.loads(block.removeprefix(b"data: ")) for block in events[:-1]]
    assert docs[0]["choices"][0]["delta"] == {"role": "assistant", "content": "denied shell"} or docs[0][
        "choices"
    ][0]["delta"] == {"content": "denied shell"}
    assert docs[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(doc["id"] == "chatcmpl-1" and doc["object"] == "chat.completion.chunk" for doc in docs)
    assert b"tool_calls" not in out[len(b"".join(TEXT)) :]


def test_deny_adds_the_role_when_the_client_never_got_one() -> None:
    gate = StreamGate(SHELL)
    stream = b"".join(
        [
            chunk({"role": "assistant", **call_head(0, "shell", "c")}),
            chunk(call_args(0, '{"c":"rm -rf /"}')),
            *END,
        ]
    )
    assert gate.feed(stream) == b""
    (_call,) = gate.take_matches()
    out = gate.deny("no")
    first = json.loads(out.split(b"\n\n")[0].removeprefix(b"data: "))
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "no"}
    assert gate.feed(b"data: more\n\n") == b""
    assert gate.finish() == b""


def test_a_call_that_does_not_match_is_released_when_complete() -> None:
    safe = [chunk(call_head(0, "shell", "c")), chunk(call_args(0, '{"command": "ls"}'))]
    stream = b"".join(TEXT + safe + END)
    gate = StreamGate(SHELL)
    assert gate.feed(b"".join(TEXT + safe)) == b"".join(TEXT)  # held: "shell" could match
    assert gate.feed(b"".join(END)) == b"".join(safe + END)  # the finish completes it: no match
    assert gate.take_matches() == []
    assert gate.finish() == b""
    assert b"".join(TEXT + safe + END) == stream


def test_calls_of_other_tools_are_never_held() -> None:
    other = [chunk(call_head(0, "read_file", "c")), chunk(call_args(0, '{"path": "rm -rf"}'))]
    gate = StreamGate(SHELL)
    assert gate.feed(b"".join(TEXT + other + END)) == b"".join(TEXT + other + END)


def test_parallel_calls_the_second_matching() -> None:
    first = [chunk(call_head(0, "read_file", "a")), chunk(call_args(0, '{"p": 1}'))]
    second = [chunk(call_head(1, "shell", "b")), chunk(call_args(1, '{"c": "rm -rf /"}'))]
    stream = b"".join(first + second + END)
    for pieces in splits(stream):
        before, out, seen = run(StreamGate(SHELL), pieces, approve=True)
        assert out == stream
        assert [c.call_id for c in seen] == ["b"]
        assert before == b"".join(first)


def test_first_call_matching_is_decided_when_the_second_starts() -> None:
    first = [chunk(call_head(0, "shell", "a")), chunk(call_args(0, '{"c": "rm -rf /"}'))]
    second = [chunk(call_head(1, "read_file", "b"))]
    gate = StreamGate(SHELL)
    assert gate.feed(b"".join(first + second)) == b""
    (call,) = gate.take_matches()
    assert call.call_id == "a"
    assert gate.approve(call) == b"".join(first + second)  # nothing else undecided
    assert gate.feed(b"".join(END)) == b"".join(END)


def test_crlf_events_are_split_correctly() -> None:
    crlf = STREAM.replace(b"\n", b"\r\n")
    for pieces in splits(crlf):
        before, out, seen = run(StreamGate(SHELL), pieces, approve=True)
        assert out == crlf
        assert len(seen) == 1
        assert before == b"".join(TEXT).replace(b"\n", b"\r\n")


@given(st.lists(st.integers(0, len(STREAM)), max_size=12), st.booleans())
def test_any_chunking_gives_the_same_output(cuts: list[int], approve: bool) -> None:
    points = sorted(set(cuts))
    pieces = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    _, whole, _ = run(StreamGate(SHELL), [STREAM], approve=approve)
    _, out, _ = run(StreamGate(SHELL), pieces, approve=approve)
    assert out == whole


# --- the recorded captures ---------------------------------------------------------------------------------


def capture(path: pathlib.Path) -> tuple[dict[str, Any], bytes]:
    doc = json.loads(path.read_text())
    return doc, base64.b64decode(doc["response"]["body_b64"])


def is_stream(doc: dict[str, Any]) -> bool:
    return any(k.lower() == "content-type" and "event-stream" in v for k, v in doc["response"]["headers"])


STREAMS = [path for path in CAPTURE_FILES if is_stream(capture(path)[0])]


@pytest.mark.parametrize("path", STREAMS, ids=lambda p: p.stem)
def test_captures_without_a_matching_rule_pass_byte_identical(path: pathlib.Path) -> None:
    _, body = capture(path)
    for size in (1, 7, 64, len(body)):
        pieces = [body[i : i + size] for i in range(0, len(body), size)]
        _before, out, seen = run(StreamGate(NO_TOOL), pieces, approve=None)
        assert seen == []
        assert out == body


@pytest.mark.parametrize("path", STREAMS, ids=lambda p: p.stem)
def test_captured_tool_calls_are_held_and_released_exactly(path: pathlib.Path) -> None:
    doc, body = capture(path)
    chat_calls = bool({"chat_stream_tool_calls", "responses_stream_tool_calls"} & set(doc["categories"]))
    responses = "responses_stream" in doc["categories"]
    pieces = [body[i : i + 13] for i in range(0, len(body), 13)]
    _, out, seen = run(StreamGate(EVERY_TOOL), pieces, approve=True)
    assert out == body
    if chat_calls:
        assert seen, "a streamed chat tool call was not detected"
        names = set(re.findall(rb'"name":\s*"([^"]+)"', body))
        assert {call.name.encode() for call in seen} <= names
        assert all(call.arguments and json.loads(call.arguments) is not None for call in seen)
    _, denied, _ = run(StreamGate(EVERY_TOOL), pieces, approve=False)
    if chat_calls and responses:
        check_responses_denial(denied)
    elif chat_calls:
        assert denied.endswith(b"data: [DONE]\n\n")
        assert b'"finish_reason":"stop"' in denied
        assert b'"tool_calls"' not in denied


def check_responses_denial(out: bytes) -> None:
    """Events in order with consecutive sequence numbers, ending in response.completed with the message."""
    docs = [
        json.loads(line[6:])
        for block in out.split(b"\n\n")
        for line in block.splitlines()
        if line.startswith(b"data: ")
    ]
    assert docs[-1]["type"] == "response.completed"
    assert not any(d["type"].startswith("response.function_call") for d in docs)
    output = docs[-1]["response"]["output"]
    assert output[-1]["type"] == "message"
    assert output[-1]["content"][0]["text"].startswith("denied ")
    added = [d for d in docs if d["type"] == "response.output_item.added"]
    assert [d["output_index"] for d in added] == list(range(len(added)))
    assert all(item["type"] != "function_call" for item in output)
    numbers = [d["sequence_number"] for d in docs if "sequence_number" in d]
    assert numbers == sorted(numbers)
    assert len(set(numbers)) == len(numbers)
