"""Render a `Plan` as /v1/chat/completions and legacy /v1/completions bodies or SSE event streams.

Pure: these functions return bytes or yield SSE events and `PACE` marks; timing, HTTP framing and
the test hooks belong to the caller (`_mock_app`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from gateway.mock_llm._plan import Plan
from gateway.mock_llm._wire import (
    ENCODER,
    PACE,
    SERVICE_TIER,
    SSE_DONE,
    SYSTEM_FINGERPRINT,
    Pace,
    Usage,
    mock_text,
    mock_token,
    pretty,
    sse,
    usage,
)


class FunctionCall(msgspec.Struct):
    name: str
    arguments: str


class ToolCall(msgspec.Struct):
    id: str
    type: str
    function: FunctionCall


class Message(msgspec.Struct):
    role: str
    content: str | None
    tool_calls: list[ToolCall] | UnsetType = UNSET
    refusal: None = None
    annotations: list[Any] = msgspec.field(default_factory=list)


class Choice(msgspec.Struct):
    index: int
    message: Message
    logprobs: None
    finish_reason: str


class ChatCompletion(msgspec.Struct):
    id: str
    object: str
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    service_tier: str
    system_fingerprint: str


class FunctionDelta(msgspec.Struct):
    name: str | UnsetType = UNSET
    arguments: str = ""


class ToolCallDelta(msgspec.Struct):
    index: int
    id: str | UnsetType = UNSET
    type: str | UnsetType = UNSET
    function: FunctionDelta | UnsetType = UNSET


class Delta(msgspec.Struct):
    role: str | UnsetType = UNSET
    content: str | UnsetType | None = UNSET
    tool_calls: list[ToolCallDelta] | UnsetType = UNSET
    refusal: UnsetType | None = UNSET


class ChunkChoice(msgspec.Struct):
    index: int
    delta: Delta
    logprobs: None
    finish_reason: str | None


class ChatChunk(msgspec.Struct):
    id: str
    object: str
    created: int
    model: str
    service_tier: str
    system_fingerprint: str
    choices: list[ChunkChoice]
    # With stream_options.include_usage every chunk carries "usage": null until the last one.
    usage: Usage | UnsetType | None = UNSET


def chat_completion(plan: Plan) -> bytes:
    """A non-streamed `chat.completion` body."""
    if plan.tool is None:
        message = Message("assistant", mock_text(plan.n_tokens))
        finish = plan.finish_reason
    else:
        call = ToolCall(plan.tool.call_id, "function", FunctionCall(plan.tool.name, plan.tool.arguments))
        message = Message("assistant", None, [call])
        finish = "tool_calls"
    body = ChatCompletion(
        plan.id,
        "chat.completion",
        plan.created,
        plan.model,
        [Choice(0, message, None, finish)],
        usage(plan.prompt_tokens, plan.completion_tokens),
        SERVICE_TIER,
        SYSTEM_FINGERPRINT,
    )
    return pretty(body)


def chat_events(plan: Plan) -> Iterator[bytes | Pace]:
    """The SSE events of a streamed chat completion, one delta per token, ending in `[DONE]`."""
    usage_field: UnsetType | None = None if plan.include_usage else UNSET

    def event(delta: Delta, finish: str | None = None) -> bytes:
        choice = ChunkChoice(0, delta, None, finish)
        return sse(ENCODER.encode(_chunk(plan, [choice], usage_field)))

    if plan.tool is None:
        yield event(Delta(role="assistant", content="", refusal=None))
        for i in range(plan.n_tokens):
            yield PACE
            yield event(Delta(content=mock_token(i)))
        yield event(Delta(), plan.finish_reason)
    else:
        tool = plan.tool
        head = ToolCallDelta(0, tool.call_id, "function", FunctionDelta(tool.name, ""))
        if tool.preamble_tokens:
            yield event(Delta(role="assistant", content="", refusal=None))
            for i in range(tool.preamble_tokens):
                yield PACE
                yield event(Delta(content=mock_token(i)))
            yield event(Delta(tool_calls=[head]))
        else:
            yield event(Delta(role="assistant", content=None, tool_calls=[head], refusal=None))
        for fragment in tool.fragments:
            yield PACE
            yield event(Delta(tool_calls=[ToolCallDelta(0, function=FunctionDelta(arguments=fragment))]))
        yield event(Delta(), "tool_calls")
    if plan.include_usage:
        yield sse(ENCODER.encode(_chunk(plan, [], usage(plan.prompt_tokens, plan.completion_tokens))))
    yield SSE_DONE


def _chunk(plan: Plan, choices: list[ChunkChoice], usage_field: Usage | UnsetType | None) -> ChatChunk:
    return ChatChunk(
        plan.id,
        "chat.completion.chunk",
        plan.created,
        plan.model,
        SERVICE_TIER,
        SYSTEM_FINGERPRINT,
        choices,
        usage_field,
    )


class LegacyUsage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TextChoice(msgspec.Struct):
    text: str
    index: int
    logprobs: None
    finish_reason: str | None


class TextCompletion(msgspec.Struct):
    id: str
    object: str
    created: int
    model: str
    system_fingerprint: str
    choices: list[TextChoice]
    usage: LegacyUsage


class TextChunk(msgspec.Struct):
    # Streamed legacy completions put `choices` before `model` (OpenAI API reference example).
    id: str
    object: str
    created: int
    choices: list[TextChoice]
    model: str
    system_fingerprint: str
    usage: LegacyUsage | UnsetType | None = UNSET


def _legacy_usage(plan: Plan) -> LegacyUsage:
    return LegacyUsage(plan.prompt_tokens, plan.n_tokens, plan.prompt_tokens + plan.n_tokens)


def text_completion(plan: Plan) -> bytes:
    """A non-streamed legacy `text_completion` body."""
    choice = TextChoice(mock_text(plan.n_tokens), 0, None, plan.finish_reason)
    body = TextCompletion(
        plan.id,
        "text_completion",
        plan.created,
        plan.model,
        SYSTEM_FINGERPRINT,
        [choice],
        _legacy_usage(plan),
    )
    return pretty(body)


def text_events(plan: Plan) -> Iterator[bytes | Pace]:
    """The SSE events of a streamed legacy completion: one chunk per token, then `[DONE]`."""
    usage_field: UnsetType | None = None if plan.include_usage else UNSET

    def event(choices: list[TextChoice], usage: LegacyUsage | UnsetType | None = usage_field) -> bytes:
        chunk = TextChunk(
            plan.id, "text_completion", plan.created, choices, plan.model, SYSTEM_FINGERPRINT, usage
        )
        return sse(ENCODER.encode(chunk))

    for i in range(plan.n_tokens):
        yield PACE
        yield event([TextChoice(mock_token(i), 0, None, None)])
    yield event([TextChoice("", 0, None, plan.finish_reason)])
    if plan.include_usage:
        yield event([], _legacy_usage(plan))
    yield SSE_DONE
