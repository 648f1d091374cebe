from __future__ import annotations

import base64
import gzip
import json
import pathlib
import zlib
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from parsers import openai as openai_module
from parsers.events import (
    ANONYMOUS,
    BodyChunk,
    Direction,
    Event,
    ExchangeEnded,
    ExchangeStarted,
    GatewayError,
    Headers,
    MessageEnd,
    RequestHead,
    ResponseHead,
    SseComment,
)
from parsers.openai import (
    TRUNCATED_MARKER,
    ChatMessage,
    LlmSummary,
    OpenAIExchange,
    ToolCall,
    Usage,
    detect_api,
)

CAPTURES = pathlib.Path(__file__).parents[1] / "fixtures" / "openai-captures"
FIXTURES: dict[str, dict[str, Any]] = {
    path.stem: json.loads(path.read_text()) for path in sorted(CAPTURES.glob("*.json"))
}
SSE = [("content-type", "text/event-stream")]
JSON = [("content-type", "application/json")]

Recorded = list[tuple[Direction, Event]]


def _headers(pairs: list[tuple[str, str]] | list[list[str]]) -> Headers:
    return [(name.encode(), value.encode()) for name, value in pairs]


def request(
    body: bytes,
    *,
    target: str = "/v1/chat/completions",
    headers: Headers | None = None,
    method: bytes = b"POST",
) -> Recorded:
    head = RequestHead(method=method, target=target.encode(), headers=list(headers or []))
    return [
        (Direction.FROM_CLIENT, head),
        (Direction.TO_UPSTREAM, head),
        *((Direction.FROM_CLIENT, BodyChunk(data=body[i : i + 5])) for i in range(0, len(body), 5)),
        (Direction.FROM_CLIENT, MessageEnd()),
    ]


def response(
    body: bytes,
    *,
    status: int = 200,
    headers: Headers | None = None,
    chunk: int = 7,
    direction: Direction = Direction.FROM_UPSTREAM,
) -> Recorded:
    return [
        (direction, ResponseHead(status=status, headers=list(headers or []))),
        *((direction, BodyChunk(data=body[i : i + chunk])) for i in range(0, len(body), chunk)),
        (direction, MessageEnd()),
    ]


def summarize(*parts: Recorded, **options: int) -> LlmSummary:
    exchange = OpenAIExchange(**options)
    for part in parts:
        for direction, event in part:
            exchange.feed(direction, event)
    return exchange.summary()


def capture_events(name: str, *, chunk: int = 7) -> tuple[Recorded, Recorded]:
    capture = FIXTURES[name]
    req, resp = capture["request"], capture["response"]
    return (
        request(req["body"].encode(), target=req["path"], headers=_headers(req["headers"])),
        response(
            base64.b64decode(resp["body_b64"]),
            status=resp["status"],
            headers=_headers(resp["headers"]),
            chunk=chunk,
        ),
    )


def summarize_capture(name: str, *, chunk: int = 7) -> LlmSummary:
    return summarize(*capture_events(name, chunk=chunk))


def categories(name: str) -> list[str]:
    return list(FIXTURES[name]["categories"])


# --- an independent reading of each capture, by a straightforward walk ---------------------------------


def sse_payloads(body: bytes) -> list[tuple[str, str]]:
    """(event, data) of each message, for the LF-framed captures."""
    out = []
    for block in body.decode().split("\n\n"):
        event, data = "", []
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
        if data:
            out.append((event, "\n".join(data)))
    return out


def expected_from_stream(name: str) -> dict[str, Any]:
    body = base64.b64decode(FIXTURES[name]["response"]["body_b64"])
    text, reasoning, calls, usage = "", "", {}, None
    payloads = sse_payloads(body)
    for event, data in payloads:
        if data == "[DONE]" or event == "error":
            continue
        chunk = json.loads(data)
        if chunk.get("type", "").startswith("response."):
            if chunk["type"] == "response.output_text.delta":
                text += chunk["delta"]
            if chunk["type"] in ("response.reasoning_text.delta", "response.reasoning_summary_text.delta"):
                reasoning += chunk["delta"]
            if chunk["type"] == "response.completed":
                usage = chunk["response"]["usage"]
                usage = (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"])
                for item in chunk["response"]["output"]:
                    if item["type"] == "function_call":
                        calls[item["id"]] = [item["call_id"], item["name"], item["arguments"]]
            continue
        if chunk.get("usage"):
            usage = (
                chunk["usage"]["prompt_tokens"],
                chunk["usage"]["completion_tokens"],
                chunk["usage"]["total_tokens"],
            )
        for choice in chunk["choices"]:
            delta = choice["delta"]
            text += delta.get("content") or ""
            reasoning += delta.get("reasoning_content") or delta.get("reasoning") or ""
            for call in delta.get("tool_calls") or []:
                slot = calls.setdefault(call["index"], ["", "", ""])
                slot[0] = slot[0] or call.get("id") or ""
                slot[1] = slot[1] or call.get("function", {}).get("name") or ""
                slot[2] += call.get("function", {}).get("arguments") or ""
    return {
        "text": text,
        "reasoning": reasoning,
        "tool_calls": [ToolCall(id=i, name=n, arguments=a) for i, n, a in calls.values()],
        "usage": Usage(
            **dict(zip(["prompt_tokens", "completion_tokens", "total_tokens"], usage or (), strict=False))
        ),
        "chunks": len(payloads),
    }


# --- every capture ---------------------------------------------------------------------------------------

# name: (api, model, finish_reason, (prompt, completion, total) tokens, tool names, error prefix)
EXPECTED: dict[str, tuple[str, str, str, tuple[int | None, ...], list[str], str]] = {
    "chat-nonstream-ollama-local-pydantic": (
        "chat.completions",
        "qwen3:0.6b",
        "stop",
        (136, 15, 151),
        [],
        "",
    ),
    "chat-nonstream-text-openai-crewai": (
        "chat.completions",
        "o1-mini-2024-09-12",
        "stop",
        (14, 84, 98),
        [],
        "",
    ),
    "chat-nonstream-toolcall-openai-crewai": (
        "chat.completions",
        "gpt-4o-mini-2024-07-18",
        "tool_calls",
        (172, 76, 248),
        ["counting_tool"] * 4,
        "",
    ),
    "chat-nonstream-toolcall-openai-pydantic": (
        "chat.completions",
        "gpt-4o-mini-2024-07-18",
        "tool_calls",
        (104, 16, 120),
        ["get_capital"],
        "",
    ),
    "chat-stream-midstream-error-event-groq-pydantic": (
        "chat.completions",
        "openai/gpt-oss-120b",
        "",
        (None, None, None),
        [],
        "Tool call validation failed: tool call validation failed: parameters for tool get_something_by_name",
    ),
    "chat-stream-openrouter-pydantic": (
        "chat.completions",
        "anthropic/claude-sonnet-4.5",
        "stop",
        (43, 36, 79),
        [],
        "",
    ),
    "chat-stream-reasoning-deepseek-pydantic": (
        "chat.completions",
        "deepseek-reasoner",
        "stop",
        (6, 212, 218),
        [],
        "",
    ),
    "chat-stream-text-nousage-openai-crewai": (
        "chat.completions",
        "gpt-3.5-turbo-0125",
        "stop",
        (None,) * 3,
        [],
        "",
    ),
    "chat-stream-text-usage-openai-crewai-long": (
        "chat.completions",
        "gpt-4o-mini-2024-07-18",
        "stop",
        (168, 137, 305),
        [],
        "",
    ),
    "chat-stream-text-usage-openai-crewai": (
        "chat.completions",
        "gpt-4.1-2025-04-14",
        "stop",
        (1144, 3, 1147),
        [],
        "",
    ),
    "chat-stream-text-usage-openai-pydantic-moderation": (
        "chat.completions",
        "gpt-5-2025-08-07",
        "stop",
        (13, 11, 24),
        [],
        "",
    ),
    "chat-stream-text-usage-openai-pydantic": (
        "chat.completions",
        "gpt-4o-mini-2024-07-18",
        "stop",
        (78, 9, 87),
        [],
        "",
    ),
    "chat-stream-toolcall-usage-openai-crewai": (
        "chat.completions",
        "gpt-4o-mini-2024-07-18",
        "tool_calls",
        (66, 16, 82),
        ["get_current_temperature"],
        "",
    ),
    "chat-stream-toolcall-usage-openai-pydantic-temporal-1": (
        "chat.completions",
        "gpt-4o-2024-08-06",
        "tool_calls",
        (423, 15, 438),
        ["get_weather"],
        "",
    ),
    "chat-stream-toolcall-usage-openai-pydantic": (
        "chat.completions",
        "gpt-4o-mini-2024-07-18",
        "tool_calls",
        (53, 15, 68),
        ["get_capital"],
        "",
    ),
    "embeddings-openai-crewai": ("embeddings", "text-embedding-3-small", "", (3, None, 3), [], ""),
    "error-400-responses-openai-pydantic": (
        "responses",
        "gpt-4o",
        "",
        (None,) * 3,
        [],
        "Invalid 'temperature': decimal below minimum value.",
    ),
    "error-401-openrouter-crewai": (
        "chat.completions",
        "openai/gpt-4o-mini",
        "",
        (None,) * 3,
        [],
        "No cookie auth credentials found",
    ),
    "error-404-embeddings-openai-pydantic": (
        "embeddings",
        "nonexistent",
        "",
        (None,) * 3,
        [],
        "The model `nonexistent` does not exist or you do not have access to it.",
    ),
    "error-404-model-not-found-openai-crewai": (
        "chat.completions",
        "non-existent-model",
        "",
        (None,) * 3,
        [],
        "The model `non-existent-model` does not exist",
    ),
    "responses-stream-fncall-deepseek-pydantic": (
        "responses",
        "deepseek-v4-flash",
        "completed",
        (366, 59, 425),
        ["get_temperature"],
        "",
    ),
    "responses-stream-fncall-openai-pydantic": (
        "responses",
        "gpt-4o-2024-08-06",
        "completed",
        (255, 16, 271),
        ["get_capital"],
        "",
    ),
    "responses-stream-fncall-usage-openai-pydantic": (
        "responses",
        "gpt-5-2025-08-07",
        "completed",
        (53, 469, 522),
        ["final_result"],
        "",
    ),
    "responses-stream-text-openai-crewai": (
        "responses",
        "gpt-4o-mini-2024-07-18",
        "completed",
        (27, 8, 35),
        [],
        "",
    ),
    "responses-stream-websearch-openai-pydantic": (
        "responses",
        "gpt-5-2025-08-07",
        "completed",
        (9463, 582, 10045),
        [],
        "",
    ),
}


def test_every_capture_has_expectations() -> None:
    assert sorted(EXPECTED) == sorted(FIXTURES)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_capture_summary(name: str) -> None:
    api, model, finish_reason, tokens, tool_names, error = EXPECTED[name]
    request_body = json.loads(FIXTURES[name]["request"]["body"])
    summary = summarize_capture(name)
    assert summary.api == api
    assert summary.model == model
    assert summary.request_model == request_body["model"]
    assert summary.stream is (request_body.get("stream") is True)
    assert summary.finish_reason == finish_reason
    assert summary.usage == Usage(
        prompt_tokens=tokens[0], completion_tokens=tokens[1], total_tokens=tokens[2]
    )
    assert [call.name for call in summary.tool_calls] == tool_names
    for call in summary.tool_calls:
        assert isinstance(json.loads(call.arguments), dict)
        assert call.id.startswith("call_")
    assert summary.error.startswith(error) if error else summary.error == ""
    assert summary.parse_error == ""
    assert summary.messages
    assert summary.prompt_text == "".join(f"{m.role}: {m.content}\n" for m in summary.messages)
    msgspec.msgpack.decode(msgspec.msgpack.encode(summary), type=LlmSummary)


@pytest.mark.parametrize(
    "name",
    [n for n in sorted(FIXTURES) if "chat_stream" in categories(n) or "responses_stream" in categories(n)],
)
def test_streamed_capture_matches_an_independent_walk(name: str) -> None:
    expected = expected_from_stream(name)
    summary = summarize_capture(name)
    assert summary.response_text == expected["text"]
    assert summary.reasoning_text == expected["reasoning"]
    assert summary.tool_calls == expected["tool_calls"]
    assert summary.chunks == expected["chunks"]
    if "midstream_error" not in categories(name):
        assert summary.usage == expected["usage"]


@pytest.mark.parametrize("name", [n for n in sorted(FIXTURES) if "chat_nonstream" in categories(n)])
def test_nonstreamed_capture_text_and_tool_calls(name: str) -> None:
    if FIXTURES[name]["response"]["status"] >= 400:
        return
    body = json.loads(base64.b64decode(FIXTURES[name]["response"]["body_b64"]))
    message = body["choices"][0]["message"]
    summary = summarize_capture(name)
    assert summary.response_text == (message["content"] or "")
    assert summary.tool_calls == [
        ToolCall(id=c["id"], name=c["function"]["name"], arguments=c["function"]["arguments"])
        for c in message.get("tool_calls") or []
    ]
    assert summary.chunks == 0


def test_concrete_answers() -> None:
    assert summarize_capture("chat-stream-text-nousage-openai-crewai").response_text == (
        "Why couldn't the bicycle stand up by itself? Because it was two-tired!"
    )
    assert summarize_capture("responses-stream-text-openai-crewai").response_text == "1, 2, 3"
    assert summarize_capture("chat-stream-openrouter-pydantic").reasoning_text == (
        "This is a simple arithmetic question. 2+2 equals 4."
    )
    deepseek = summarize_capture("responses-stream-fncall-deepseek-pydantic")
    assert deepseek.tool_calls == [
        ToolCall(id="call_00_xjY8Z2BvSlzgEmmw0DtH0464", name="get_temperature", arguments='{"city": "Tokyo"}')
    ]
    assert deepseek.reasoning_text == "The user asks about temperature in Tokyo. I'll call the tool."
    assert (
        summarize_capture("chat-nonstream-toolcall-openai-crewai").tool_calls[3].arguments
        == '{"value": "four"}'
    )


def test_midstream_error_event_is_captured() -> None:
    summary = summarize_capture("chat-stream-midstream-error-event-groq-pydantic")
    assert "additionalProperties 'invalid_param' not allowed" in summary.error
    assert summary.reasoning_text.startswith("We need to call the tool")
    assert summary.response_text == ""
    assert summary.chunks == 95


def test_prompts_of_captures() -> None:
    assert summarize_capture("responses-stream-text-openai-crewai").messages == [
        ChatMessage(role="system", content="Be very concise."),
        ChatMessage(role="user", content="Count from 1 to 3, separated by commas."),
    ]
    assert summarize_capture("embeddings-openai-crewai").prompt_text == "user: Brandon favorite color\n"
    assert summarize_capture("chat-nonstream-toolcall-openai-pydantic").messages[1:3] == [
        ChatMessage(role="assistant", content='[tool_call get_capital] {"country":"France"}'),
        ChatMessage(role="tool", content="Paris"),
    ]


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_chunking_does_not_change_the_summary(name: str) -> None:
    assert summarize_capture(name, chunk=1 << 20) == summarize_capture(name, chunk=7)


@given(st.sampled_from(sorted(FIXTURES)), st.integers(min_value=1, max_value=5000))
def test_any_chunk_size_gives_the_same_summary(name: str, chunk: int) -> None:
    assert summarize_capture(name, chunk=chunk) == summarize_capture(name, chunk=1 << 20)


# --- which events count ------------------------------------------------------------------------------


def test_both_response_copies_recorded_are_counted_once() -> None:
    req, resp = capture_events("chat-stream-toolcall-usage-openai-crewai")
    to_client = [(Direction.TO_CLIENT, event) for _, event in resp]
    interleaved = [pair for both in zip(resp, to_client, strict=True) for pair in both]
    assert summarize(req, interleaved) == summarize(req, resp)
    assert summarize(req, to_client) == summarize(req, resp)


def test_forwarded_request_and_gateway_records_are_ignored() -> None:
    req, resp = capture_events("chat-stream-text-usage-openai-crewai")
    noise: Recorded = [
        (Direction.TO_UPSTREAM, RequestHead(method=b"POST", target=b"/v1/embeddings", headers=[])),
        (Direction.TO_UPSTREAM, BodyChunk(data=b"garbage")),
        (
            Direction.FROM_CLIENT,
            ExchangeStarted(
                exchange_id="x",
                session_id="s",
                identity=ANONYMOUS,
                client_addr="",
                listener="",
                protocol="http/1.1",
            ),
        ),
        (Direction.FROM_UPSTREAM, SseComment(text=b"not a body")),
        (Direction.TO_CLIENT, GatewayError(kind="upstream_refused", status=502, message="no")),
        (Direction.TO_CLIENT, ExchangeEnded(outcome="complete")),
    ]
    assert summarize(noise[:3], req, noise[3:4], resp, noise[4:]) == summarize(req, resp)


def test_interim_response_head_is_skipped() -> None:
    req, resp = capture_events("responses-stream-text-openai-crewai")
    interim: Recorded = [(Direction.FROM_UPSTREAM, ResponseHead(status=100, headers=[]))]
    assert summarize(req, interim, resp) == summarize(req, resp)


def test_summary_mid_stream_shows_what_arrived() -> None:
    req, resp = capture_events("chat-stream-text-nousage-openai-crewai", chunk=100)
    exchange = OpenAIExchange()
    for direction, event in req + resp[: len(resp) // 2]:
        exchange.feed(direction, event)
    partial = exchange.summary()
    for direction, event in resp[len(resp) // 2 :]:
        exchange.feed(direction, event)
    final = exchange.summary()
    assert partial.response_text
    assert final.response_text.startswith(partial.response_text)
    assert partial.finish_reason == ""
    assert final.finish_reason == "stop"
    assert exchange.summary() == final


# --- API detection and request shapes -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "target", "api"),
    [
        (b"POST", b"/v1/chat/completions", "chat.completions"),
        (b"POST", b"/chat/completions", "chat.completions"),
        (b"POST", b"/openai/v1/chat/completions", "chat.completions"),
        (b"POST", b"/api/v1/chat/completions?x=1#f", "chat.completions"),
        (b"POST", b"/openai/deployments/gpt4/chat/completions?api-version=2024-10-21", "chat.completions"),
        (b"POST", b"https://api.openai.com/v1/chat/completions", "chat.completions"),
        (b"POST", b"/v1/chat/completions/", "chat.completions"),
        (b"post", b"/v1/completions", "completions"),
        (b"POST", b"/v1/responses", "responses"),
        (b"POST", b"/responses", "responses"),
        (b"POST", b"/v1/embeddings", "embeddings"),
        (b"GET", b"/v1/chat/completions", ""),
        (b"POST", b"/v1/responses/resp_123/cancel", ""),
        (b"GET", b"/v1/responses/resp_123", ""),
        (b"POST", b"/v1/models", ""),
        (b"POST", b"/v1/chat/completions/chatcmpl-1", ""),
        (b"POST", b"/", ""),
        (b"POST", b"", ""),
        (b"POST", b"*", ""),
    ],
)
def test_detect_api(method: bytes, target: bytes, api: str) -> None:
    assert detect_api(method, target) == api


def _prompt(body: Any, target: str = "/v1/chat/completions") -> list[ChatMessage]:
    return summarize(request(json.dumps(body).encode(), target=target)).messages


def test_chat_content_parts_tool_calls_and_tool_results() -> None:
    messages = [
        {
            "role": "developer",
            "content": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Really."}],
        },
        {
            "role": "user",
            "content": [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {}}],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {"role": "assistant", "function_call": {"name": "g", "arguments": '{"a":1}'}},
        {"role": "user", "content": 7},
        "not a message",
    ]
    assert _prompt({"model": "m", "messages": messages}) == [
        ChatMessage(role="developer", content="Be brief.\nReally."),
        ChatMessage(role="user", content="What is this?\n[image_url]"),
        ChatMessage(role="assistant", content="[tool_call f] {}"),
        ChatMessage(role="tool", content="42"),
        ChatMessage(role="assistant", content='[tool_call g] {"a":1}'),
        ChatMessage(role="user", content=""),
        ChatMessage(role="", content=""),
    ]


def test_responses_input_items() -> None:
    body = {
        "model": "gpt-5",
        "instructions": "Be kind.",
        "input": [
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Hi"}, {"type": "input_image"}],
            },
            {"role": "assistant", "content": [{"type": "output_text", "text": "Hello"}]},
            {"type": "function_call", "call_id": "c", "name": "lookup", "arguments": '{"q":1}'},
            {"type": "function_call_output", "call_id": "c", "output": "found"},
            {"type": "reasoning", "summary": []},
        ],
    }
    assert _prompt(body, "/v1/responses") == [
        ChatMessage(role="system", content="Be kind."),
        ChatMessage(role="user", content="Hi\n[input_image]"),
        ChatMessage(role="assistant", content="Hello"),
        ChatMessage(role="assistant", content='[tool_call lookup] {"q":1}'),
        ChatMessage(role="tool", content="found"),
    ]
    assert _prompt({"input": "plain"}, "/v1/responses") == [ChatMessage(role="user", content="plain")]


@pytest.mark.parametrize(
    ("target", "body", "content"),
    [
        ("/v1/completions", {"prompt": "Say hi"}, "Say hi"),
        ("/v1/completions", {"prompt": ["a", "b"]}, "a\nb"),
        ("/v1/completions", {"prompt": [1, 2, 3]}, None),
        ("/v1/embeddings", {"input": ["x", "y"]}, "x\ny"),
        ("/v1/embeddings", {"input": [[1, 2]]}, None),
    ],
)
def test_prompt_and_input_become_one_user_message(target: str, body: Any, content: str | None) -> None:
    expected = [] if content is None else [ChatMessage(role="user", content=content)]
    assert _prompt(body, target) == expected


# --- response shapes not in the captures --------------------------------------------------------------


def _sse(*chunks: Any, done: bool = True) -> bytes:
    lines = [b"data: " + json.dumps(chunk).encode() + b"\n\n" for chunk in chunks]
    return b"".join(lines) + (b"data: [DONE]\n\n" if done else b"")


def test_completions_stream_and_body() -> None:
    req = request(b'{"model":"davinci","prompt":"x","stream":true}', target="/v1/completions")
    body = _sse(
        {"choices": [{"index": 0, "text": "Hel"}]},
        {"choices": [{"index": 0, "text": "lo", "finish_reason": "length"}]},
    )
    summary = summarize(req, response(body, headers=_headers(SSE)))
    assert (summary.response_text, summary.finish_reason, summary.chunks) == ("Hello", "length", 3)
    body = json.dumps({"model": "davinci-002", "choices": [{"text": "Hi", "finish_reason": "stop"}]}).encode()
    summary = summarize(
        request(b'{"prompt":"x"}', target="/v1/completions"), response(body, headers=_headers(JSON))
    )
    assert (summary.response_text, summary.model, summary.stream) == ("Hi", "davinci-002", False)


def test_only_choice_zero_is_summarized() -> None:
    body = _sse(
        {"choices": [{"index": 1, "delta": {"content": "B"}}, {"index": 0, "delta": {"content": "A"}}]},
        {"choices": [{"index": 1, "delta": {"content": "B"}, "finish_reason": "length"}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    )
    summary = summarize(request(b'{"n":2}'), response(body, headers=_headers(SSE)))
    assert (summary.response_text, summary.finish_reason) == ("A", "stop")


def test_tool_call_fragments_without_index() -> None:
    body = _sse(
        {
            "choices": [
                {"delta": {"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": '{"x"'}}]}}
            ]
        },
        {"choices": [{"delta": {"tool_calls": [{"function": {"arguments": ": 1}"}}]}}]},
        {"choices": [{"delta": {"tool_calls": [{"id": "b", "function": {"name": "g", "arguments": "{}"}}]}}]},
    )
    assert summarize(request(b"{}"), response(body, headers=_headers(SSE))).tool_calls == [
        ToolCall(id="a", name="f", arguments='{"x": 1}'),
        ToolCall(id="b", name="g", arguments="{}"),
    ]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'data: {"error": {"message": "overloaded", "code": 529}}\n\n', "overloaded"),
        (b'event: error\ndata: {"message": "boom"}\n\n', "boom"),
        (b"event: error\ndata: upstream went away\n\n", "upstream went away"),
        (b'data: {"error": "plain string"}\n\n', "plain string"),
        (b'data: {"error": {"code": "rate_limited"}}\n\n', "rate_limited"),
        (
            b'data: {"type": "error", "code": "server_error", "message": "The server had an error"}\n\n',
            "The server had an error",
        ),
        (b'data: {"type": "response.failed", "response": {"error": {"message": "bad"}}}\n\n', "bad"),
    ],
)
def test_midstream_errors(body: bytes, error: str) -> None:
    target = "/v1/responses" if b'"type"' in body else "/v1/chat/completions"
    summary = summarize(request(b"{}", target=target), response(body, headers=_headers(SSE)))
    assert summary.error == error
    assert summary.parse_error == ""


def test_nonstreamed_responses_body() -> None:
    body = {
        "object": "response",
        "model": "gpt-5",
        "status": "incomplete",
        "incomplete_details": {"reason": "max_output_tokens"},
        "output": [
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Thinking."}]},
            {"type": "message", "content": [{"type": "output_text", "text": "Part"}]},
            {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": "{}"},
        ],
        "usage": {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12},
    }
    summary = summarize(
        request(b'{"input":"x"}', target="/v1/responses"), response(json.dumps(body).encode())
    )
    assert summary.response_text == "Part"
    assert summary.reasoning_text == "Thinking."
    assert summary.tool_calls == [ToolCall(id="call_1", name="f", arguments="{}")]
    assert summary.finish_reason == "max_output_tokens"
    assert summary.usage == Usage(prompt_tokens=5, completion_tokens=7, total_tokens=12)


@pytest.mark.parametrize(
    ("status", "body", "error", "parse_error"),
    [
        (500, b'{"detail": "Internal"}', "Internal", ""),
        (429, b'{"message": "slow down"}', "slow down", ""),
        (502, b"<html>Bad gateway</html>", "HTTP 502", "response body: not JSON (JSON is malformed"),
        (503, b"", "HTTP 503", "response body: empty, expected JSON"),
        (200, b'{"error": "model not loaded"}', "model not loaded", ""),
    ],
)
def test_error_statuses(status: int, body: bytes, error: str, parse_error: str) -> None:
    summary = summarize(request(b'{"model":"m"}'), response(body, status=status, headers=_headers(JSON)))
    assert summary.error == error
    assert summary.model == "m"
    assert summary.parse_error.startswith(parse_error)
    assert bool(summary.parse_error) is bool(parse_error)


# --- encodings, garbage, limits -----------------------------------------------------------------------


def _deflate_raw(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("coding", "compress"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", _deflate_raw),
    ],
)
@pytest.mark.parametrize(
    "name", ["chat-stream-toolcall-usage-openai-crewai", "chat-nonstream-toolcall-openai-crewai"]
)
def test_compressed_bodies(name: str, coding: str, compress: Any) -> None:
    capture = FIXTURES[name]
    plain = summarize_capture(name)
    headers = [*_headers(capture["response"]["headers"]), (b"Content-Encoding", coding.encode())]
    body = compress(base64.b64decode(capture["response"]["body_b64"]))
    req_headers = [*_headers(capture["request"]["headers"]), (b"content-encoding", coding.upper().encode())]
    req = request(compress(capture["request"]["body"].encode()), headers=req_headers)
    assert summarize(req, response(body, headers=headers, chunk=3)) == plain


@pytest.mark.parametrize(
    ("coding", "body", "problem"),
    [
        ("gzip", b"not gzip at all", "response body: bad gzip data"),
        ("gzip", gzip.compress(b'{"a": 1}')[:-6], "response body: gzip data ends early"),
        ("deflate", b"\x78", "response body: deflate data ends early"),
        ("br", b"\x0b\x02\x80{}\x03", "response body: Content-Encoding 'br' not supported"),
        ("gzip, br", b"", "response body: Content-Encoding 'gzip, br' not supported"),
    ],
)
def test_bad_compressed_bodies_are_parse_errors(coding: str, body: bytes, problem: str) -> None:
    headers = _headers([("content-type", "application/json"), ("content-encoding", coding)])
    summary = summarize(request(b'{"model":"m"}'), response(body, headers=headers))
    assert summary.parse_error.startswith(problem)
    assert (summary.api, summary.model, summary.error) == ("chat.completions", "m", "")


def test_gzip_bomb_is_bounded() -> None:
    bomb = gzip.compress(b" " * (8 << 20), compresslevel=9)
    assert len(bomb) < 64 << 10
    headers = _headers([("content-type", "application/json"), ("content-encoding", "gzip")])
    summary = summarize(
        request(b"{}"), response(bomb, headers=headers, chunk=len(bomb)), max_json_bytes=1 << 20
    )
    assert summary.parse_error == "response body: gzip body inflates past 1048576 bytes, not parsed"


def test_compressed_event_stream_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_module, "_MAX_INFLATED_STREAM_BYTES", 1 << 20)
    bomb = gzip.compress(b": keepalive\n" * (1 << 18))
    headers = _headers([("content-type", "text/event-stream"), ("content-encoding", "gzip")])
    summary = summarize(request(b"{}"), response(bomb, headers=headers, chunk=1000))
    assert summary.parse_error == "response body: gzip body inflates past 1048576 bytes, not parsed"


@pytest.mark.parametrize(
    "body", [b"", b"garbage", b"[1, 2]", b'"text"', b"{", b"\xff\xfe{}", b"[" * 100_000 + b"]" * 100_000]
)
def test_non_json_request_is_not_an_api_call(body: bytes) -> None:
    _req, resp = capture_events("chat-stream-text-usage-openai-crewai")
    summary = summarize(request(body), resp)
    assert summary == LlmSummary(parse_error=summary.parse_error)
    assert summary.parse_error.startswith("request body: ")


def test_unknown_path_gives_an_empty_summary() -> None:
    _, resp = capture_events("chat-stream-text-usage-openai-crewai")
    assert summarize(request(b'{"model": "m"}', target="/v1/models"), resp) == LlmSummary()
    assert summarize(resp) == LlmSummary()


def test_garbage_sse_messages_are_parse_errors() -> None:
    body = b'data: {"choices": [{"delta": {"content": "ok"}}]}\n\ndata: {not json\n\ndata: [1, 2]\n\n'
    summary = summarize(request(b"{}"), response(body, headers=_headers(SSE)))
    assert summary.response_text == "ok"
    assert summary.parse_error.startswith("response body: SSE message 2: not JSON")
    assert summary.chunks == 3


def test_oversized_sse_message_stops_the_stream_parse() -> None:
    body = b'data: {"choices": [{"delta": {"content": "ok"}}]}\n\ndata: ' + b"x" * (16 << 20) + b"\n\n"
    summary = summarize(request(b"{}"), response(body, headers=_headers(SSE), chunk=1 << 20))
    assert summary.response_text == "ok"
    assert summary.parse_error.startswith("response body: sse: message of at least 16777223 bytes exceeds")


def test_oversized_json_body() -> None:
    summary = summarize(request(b"{" + b" " * 2000 + b"}"), max_json_bytes=1000)
    assert summary.api == "chat.completions"
    assert summary.parse_error == "request body: larger than 1000 bytes, not parsed"


def test_huge_stream_is_truncated_not_buffered() -> None:
    delta = {"choices": [{"index": 0, "delta": {"content": "é" * 50}}]}
    call = {
        "choices": [
            {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "a" * 100}}]}}
        ]
    }
    body = _sse(*[delta] * 2000, *[call] * 200)
    summary = summarize(
        request(b"{}"), response(body, headers=_headers(SSE), chunk=4096), max_text_bytes=1001
    )
    assert summary.response_text.endswith(TRUNCATED_MARKER)
    assert summary.response_text == "é" * 500 + TRUNCATED_MARKER  # 1001 bytes would split a character
    assert summary.tool_calls[0].arguments == "a" * 1001 + TRUNCATED_MARKER
    assert summary.chunks == 2201


def test_long_prompt_is_truncated() -> None:
    body = {"messages": [{"role": "user", "content": "x" * 3000}, {"role": "user", "content": "y"}]}
    summary = summarize(request(json.dumps(body).encode()), max_text_bytes=1000)
    assert summary.messages[0].content == "x" * 1000 + TRUNCATED_MARKER
    assert summary.messages[1].content == "y"
    assert summary.prompt_text == "user: " + "x" * 994 + TRUNCATED_MARKER


def test_usage_values_outside_int64_are_dropped() -> None:
    body = json.dumps(
        {"usage": {"prompt_tokens": 1 << 70, "completion_tokens": -1, "total_tokens": True}}
    ).encode()
    summary = summarize(request(b"{}"), response(body))
    assert summary.usage == Usage()
    msgspec.msgpack.encode(summary)


# --- never raises ----------------------------------------------------------------------------------------

_keys = st.sampled_from(
    [
        "model", "messages", "content", "role", "choices", "delta", "index", "tool_calls", "function", "name",
        "arguments", "id", "usage", "prompt_tokens", "error", "message", "type", "output", "item", "response",
        "text", "delta", "item_id", "finish_reason", "input", "instructions", "prompt", "stream", "status",
    ]
)  # fmt: skip
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.text(max_size=8),
    st.sampled_from(
        ["response.output_text.delta", "response.completed", "function_call", "message", "error"]
    ),
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=5),
    max_leaves=20,
)
_targets = st.sampled_from(
    ["/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings", "/x"]
)
_response_headers = st.lists(
    st.sampled_from(
        [
            ("content-type", "text/event-stream"),
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
            ("content-encoding", "deflate"),
            ("content-encoding", "zstd"),
        ]
    ),
    max_size=3,
)


@given(
    _targets,
    _json,
    st.lists(_json, max_size=6),
    _response_headers,
    st.integers(min_value=100, max_value=599),
    st.booleans(),
)
def test_json_of_any_shape_never_raises(
    target: str, request_body: Any, chunks: list[Any], headers: list[tuple[str, str]], status: int, sse: bool
) -> None:
    body = _sse(*chunks, done=False) if sse else json.dumps(chunks[0] if chunks else None).encode()
    for coding in ("gzip", "deflate"):
        if ("content-encoding", coding) in headers:
            body = gzip.compress(body) if coding == "gzip" else zlib.compress(body)
    req = request(json.dumps(request_body).encode(), target=target)
    summary = summarize(req, response(body, status=status, headers=_headers(headers)), max_text_bytes=64)
    msgspec.msgpack.encode(summary)


@given(_targets, st.binary(max_size=200), st.binary(max_size=400), _response_headers, st.integers(1, 64))
def test_arbitrary_bytes_never_raise(
    target: str, request_body: bytes, response_body: bytes, headers: list[tuple[str, str]], chunk: int
) -> None:
    summary = summarize(
        request(request_body, target=target, headers=_headers(headers)),
        response(response_body, headers=_headers(headers), chunk=chunk),
    )
    assert isinstance(summary, LlmSummary)


@given(
    st.lists(
        st.tuples(st.sampled_from(list(Direction)), st.sampled_from(["head", "rhead", "body", "end"])),
        max_size=12,
    )
)
def test_events_in_any_order_never_raise(steps: list[tuple[Direction, str]]) -> None:
    exchange = OpenAIExchange()
    events: dict[str, Event] = {
        "head": RequestHead(method=b"POST", target=b"/v1/chat/completions", headers=[]),
        "rhead": ResponseHead(status=200, headers=_headers(SSE)),
        "body": BodyChunk(data=b'data: {"choices": [{"delta": {"content": "x"}}]}\n\n'),
        "end": MessageEnd(),
    }
    for direction, name in steps:
        exchange.feed(direction, events[name])
    assert isinstance(exchange.summary(), LlmSummary)
