"""`wardgate mock-llm` over real sockets: the openai SDK, httpx and raw bytes against the fake upstream."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import signal
import struct
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam
from openai.types.responses import (
    FunctionToolParam,
    ResponseCompletedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionToolCall,
    ResponseTextDeltaEvent,
)

from gateway.mock_llm import (
    FAIL_AFTER_TOKENS,
    SLOW_FIRST_TOKEN_S,
    MockLlm,
    MockLlmConfig,
    mock_embedding,
    mock_text,
    mock_token,
)
from gateway.mock_llm._http import MAX_BODY_BYTES, ContinueExpected, HttpError, Request, RequestReader

CAPTURES = Path(__file__).parents[1] / "fixtures" / "openai-captures"
WEATHER_TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["c", "f"]},
            },
            "required": ["city", "days", "unit"],
        },
    },
}


@pytest.fixture
async def llm() -> AsyncIterator[MockLlm]:
    async with MockLlm(MockLlmConfig(tokens=8)) as server:
        yield server


@contextlib.asynccontextmanager
async def sdk(mock: MockLlm) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=mock.base_url, api_key="sk-test", max_retries=0, timeout=10)
    try:
        yield client
    finally:
        await client.close()


class RawResponse(NamedTuple):
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    chunks: list[bytes] | None  # the HTTP chunks, when the body was chunked

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n.lower() == name), None)


async def read_response(reader: asyncio.StreamReader, head_only: bool = False) -> RawResponse:
    """Read one response off the wire without any client library smoothing it over."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers = [(n, v) for n, _, v in (line.partition(b": ") for line in lines[1:])]
    response = RawResponse(status, headers, b"", None)
    if head_only or status == 100:
        return response
    if response.header(b"transfer-encoding") == b"chunked":
        chunks = []
        while size := int((await reader.readuntil(b"\r\n"))[:-2], 16):
            chunks.append((await reader.readexactly(size + 2))[:-2])
        assert await reader.readexactly(2) == b"\r\n"
        return response._replace(body=b"".join(chunks), chunks=chunks)
    length = response.header(b"content-length")
    body = await reader.readexactly(int(length)) if length is not None else await reader.read()
    return response._replace(body=body)


@contextlib.asynccontextmanager
async def connect(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def post(path: str, payload: object, *headers: bytes) -> bytes:
    body = json.dumps(payload).encode()
    lines = [f"POST {path} HTTP/1.1".encode(), b"Host: mock", *headers, b"Content-Length: %d" % len(body)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def user(content: str = "hello there") -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": content}]


def chat(content: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-test", "messages": [{"role": "user", "content": content}], **extra}


def sse_data(body: bytes) -> list[Any]:
    """The JSON payloads of `data:` events, with `[DONE]` kept as a string."""
    out: list[Any] = []
    for event in body.split(b"\n\n"):
        for line in event.split(b"\n"):
            if line.startswith(b"data: "):
                data = line[6:]
                out.append("[DONE]" if data == b"[DONE]" else json.loads(data))
    return out


def capture(capture_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CAPTURES / f"{capture_id}.json").read_text())
    return data


def recorded_body(capture_id: str) -> bytes:
    return base64.b64decode(capture(capture_id)["response"]["body_b64"])


# -- chat completions --------------------------------------------------------------------------


async def test_chat_non_streamed_via_sdk(llm: MockLlm) -> None:
    async with asyncio.timeout(10), sdk(llm) as client:
        reply = await client.chat.completions.create(model="gpt-test", messages=user("one two three"))
    assert reply.object == "chat.completion"
    assert reply.id.startswith("chatcmpl-")
    assert reply.model == "gpt-test"  # the request's model is echoed
    assert reply.choices[0].message.content == mock_text(8) == "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (3, 8, 11)
    assert llm.requests == 1
    assert (b"authorization", b"Bearer sk-test") in llm.last_request_headers


async def test_chat_non_streamed_matches_openai_wire_format(llm: MockLlm) -> None:
    async with asyncio.timeout(10), connect(llm.port) as (reader, writer):
        writer.write(post("/v1/chat/completions", chat()))
        response = await read_response(reader)
    assert response.status == 200
    assert response.header(b"content-type") == b"application/json"
    assert response.header(b"connection") == b"keep-alive"
    assert response.body.startswith(b'{\n  "id": "chatcmpl-')
    assert response.body.endswith(b"}\n")
    ours = json.loads(response.body)
    real = json.loads(recorded_body("chat-nonstream-toolcall-openai-crewai"))
    assert list(ours) == list(real)
    assert list(ours["choices"][0]) == list(real["choices"][0])
    assert list(ours["usage"]) == list(real["usage"])
    assert list(ours["usage"]["completion_tokens_details"]) == list(
        real["usage"]["completion_tokens_details"]
    )
    assert ours["choices"][0]["message"] == {
        "role": "assistant",
        "content": mock_text(8),
        "refusal": None,
        "annotations": [],
    }


async def test_chat_stream_via_sdk_one_token_per_chunk(llm: MockLlm) -> None:
    async with asyncio.timeout(10), sdk(llm) as client:
        stream = await client.chat.completions.create(model="gpt-test", messages=user(), stream=True)
        chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    deltas = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert deltas == [mock_token(i) for i in range(8)]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None and c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1


async def test_chat_stream_wire_format_and_framing(llm: MockLlm) -> None:
    async with asyncio.timeout(10), connect(llm.port) as (reader, writer):
        writer.write(post("/v1/chat/completions", chat(stream=True, stream_options={"include_usage": True})))
        response = await read_response(reader)
    assert response.header(b"content-type") == b"text/event-stream; charset=utf-8"
    assert response.header(b"transfer-encoding") == b"chunked"
    assert response.header(b"content-length") is None
    assert response.chunks is not None
    # Each HTTP chunk carries exactly one SSE event: role, 8 tokens, finish, usage, [DONE].
    assert len(response.chunks) == 12
    assert all(
        c.startswith(b"data: ") and c.endswith(b"\n\n") and c.count(b"\n\n") == 1 for c in response.chunks
    )
    assert response.chunks[-1] == b"data: [DONE]\n\n"
    events = sse_data(response.body)
    real = sse_data(recorded_body("chat-stream-text-usage-openai-pydantic"))
    for ours, theirs in [
        (events[0], real[0]),
        (events[1], real[1]),
        (events[-3], real[-3]),
        (events[-2], real[-2]),
    ]:
        assert list(ours) == [k for k in theirs if k != "obfuscation"]
        assert ours["choices"] == [] or list(ours["choices"][0]) == list(theirs["choices"][0])
        assert (
            ours["choices"] == []
            or ours["choices"][0]["delta"].keys() == theirs["choices"][0]["delta"].keys()
        )


async def test_include_usage_adds_a_final_usage_chunk(llm: MockLlm) -> None:
    async with asyncio.timeout(10), sdk(llm) as client:
        stream = await client.chat.completions.create(
            model="gpt-test", messages=user("a b c d"), stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (4, 8)
    assert chunks[-2].choices[0].finish_reason == "stop"


async def test_max_tokens_caps_the_completion(llm: MockLlm) -> None:
    async with asyncio.timeout(10), sdk(llm) as client:
        short = await client.chat.completions.create(model="gpt-test", messages=user(), max_tokens=3)
        stream = await client.chat.completions.create(
            model="gpt-test", messages=user(), max_completion_tokens=2, stream=True
        )
        chunks = [chunk async for chunk in stream]
        longer = await client.chat.completions.create(model="gpt-test", messages=user(), max_tokens=100)
    assert short.choices[0].message.content == mock_text(3)
    assert short.choices[0].finish_reason == "length"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == mock_text(2)
    assert chunks[-1].choices[0].finish_reason == "length"
    assert longer.choices[0].message.content == mock_text(8)
    assert longer.choices[0].finish_reason == "stop"


async def test_tool_call_stream_reassembles_into_valid_arguments() -> None:
    async with asyncio.timeout(10), MockLlm(MockLlmConfig(tool_call_every=1)) as mock, sdk(mock) as client:
        stream = await client.chat.completions.create(
            model="gpt-test", messages=user(), tools=[WEATHER_TOOL], stream=True
        )
        chunks = [chunk async for chunk in stream]
    first = chunks[0].choices[0].delta
    assert first.role == "assistant"
    assert first.content is None
    assert first.tool_calls is not None
    call = first.tool_calls[0]
    assert (call.index, call.type) == (0, "function")
    assert call.id is not None
    assert call.id.startswith("call_")
    assert call.function is not None
    assert call.function.name == "get_weather"
    assert call.function.arguments == ""
    fragments = []
    for chunk in chunks[1:-1]:
        (delta,) = chunk.choices[0].delta.tool_calls or []
        assert delta.index == 0
        assert delta.id is None
        assert delta.function is not None
        fragments.append(delta.function.arguments or "")
    assert len(fragments) > 3  # streamed in pieces, like OpenAI's `{"`, `city`, `":"` ...
    assert json.loads("".join(fragments)) == {"city": "mock", "days": 1, "unit": "c"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_tool_call_on_trigger_text_and_every_nth_request() -> None:
    async with asyncio.timeout(10), MockLlm(MockLlmConfig(tool_call_every=2)) as mock, sdk(mock) as client:
        first = await client.chat.completions.create(model="gpt-test", messages=user(), tools=[WEATHER_TOOL])
        second = await client.chat.completions.create(model="gpt-test", messages=user(), tools=[WEATHER_TOOL])
        triggered = await client.chat.completions.create(
            model="gpt-test", messages=user("please call a tool now")
        )
    assert first.choices[0].message.tool_calls is None
    assert second.choices[0].finish_reason == "tool_calls"
    assert second.choices[0].message.content is None
    calls = triggered.choices[0].message.tool_calls
    assert calls is not None
    assert calls[0].type == "function"
    assert calls[0].function.name == "mock_tool"  # no tools offered: a generic one
    assert json.loads(calls[0].function.arguments) == {"query": "mock"}


# -- other endpoints ---------------------------------------------------------------------------


async def test_legacy_completions(llm: MockLlm) -> None:
    async with asyncio.timeout(10), sdk(llm) as client:
        reply = await client.completions.create(model="instruct", prompt="say something", max_tokens=4)
        stream = await client.completions.create(model="instruct", prompt="go", stream=True)
        chunks = [chunk async for chunk in stream]
    assert reply.object == "text_completion"
    assert reply.id.startswith("cmpl-")
    assert reply.choices[0].text == mock_text(4)
    assert reply.choices[0].finish_reason == "length"
    assert "".join(c.choices[0].text for c in chunks) == mock_text(8)
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_embeddings_sdk_default_base64_decodes_to_the_mock_vectors(llm: MockLlm) -> None:
    async with asyncio.timeout(10), sdk(llm) as client:
        reply = await client.embeddings.create(model="text-embedding-3-small", input=["hello", "world"])
        small = await client.embeddings.create(model="emb", input="hello", dimensions=8)
    assert [d.embedding for d in reply.data] == [mock_embedding("hello"), mock_embedding("world")]
    assert len(reply.data[0].embedding) == 1536
    assert abs(sum(v * v for v in reply.data[0].embedding) - 1.0) < 1e-4  # unit length, like OpenAI's
    assert small.data[0].embedding == mock_embedding("hello", 8)
    assert reply.model == "text-embedding-3-small"


async def test_embeddings_wire_encodings(llm: MockLlm) -> None:
    async with asyncio.timeout(10), httpx.AsyncClient(base_url=llm.base_url) as http:
        as_b64 = await http.post(
            "/embeddings", json={"model": "e", "input": "x", "encoding_format": "base64"}
        )
        as_floats = await http.post("/embeddings", json={"model": "e", "input": "x", "dimensions": 4})
    encoded = as_b64.json()["data"][0]["embedding"]
    assert isinstance(encoded, str)
    raw = base64.b64decode(encoded)
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == mock_embedding("x")
    assert as_floats.json()["data"][0]["embedding"] == mock_embedding("x", 4)
    assert list(as_floats.json()) == list(json.loads(recorded_body("embeddings-openai-crewai")))


async def test_responses_api_stream_and_non_streamed(llm: MockLlm) -> None:
    async with asyncio.timeout(10), sdk(llm) as client:
        stream = await client.responses.create(
            model="gpt-r", input="hi there", instructions="Be brief.", stream=True
        )
        events = [event async for event in stream]
        whole = await client.responses.create(model="gpt-r", input="hi there")
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[4:12] == ["response.output_text.delta"] * 8
    assert kinds[12:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if isinstance(e, ResponseTextDeltaEvent)) == mock_text(8)
    done = events[-1]
    assert isinstance(done, ResponseCompletedEvent)
    assert done.response.instructions == "Be brief."
    assert done.response.usage is not None
    assert done.response.usage.output_tokens == 8
    assert whole.output_text == mock_text(8)
    assert whole.status == "completed"


async def test_responses_api_tool_call_stream(llm: MockLlm) -> None:
    parameters = dict(WEATHER_TOOL["function"].get("parameters") or {})
    tool: FunctionToolParam = {"type": "function", "name": "lookup", "parameters": parameters, "strict": True}
    async with asyncio.timeout(10), sdk(llm) as client:
        stream = await client.responses.create(model="m", input="call a tool", tools=[tool], stream=True)
        events = [event async for event in stream]
    deltas = [e.delta for e in events if isinstance(e, ResponseFunctionCallArgumentsDeltaEvent)]
    assert len(deltas) > 3
    assert json.loads("".join(deltas)) == {"city": "mock", "days": 1, "unit": "c"}
    done = events[-1]
    assert isinstance(done, ResponseCompletedEvent)
    item = done.response.output[0]
    assert isinstance(item, ResponseFunctionToolCall)
    assert item.name == "lookup"


async def test_models_list_and_retrieve(llm: MockLlm) -> None:
    async with asyncio.timeout(10), sdk(llm) as client:
        models = await client.models.list()
        one = await client.models.retrieve("gpt-x")
    assert [m.id for m in models.data] == ["mock-gpt"]
    assert one.id == "gpt-x"
    assert one.object == "model"


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("POST", "/v1/nope", b"{}", 404, "Invalid URL (POST /v1/nope)"),
        ("GET", "/v1/chat/completions", b"", 405, "Invalid method for URL (GET /v1/chat/completions)"),
        ("DELETE", "/v1/models", b"", 405, "Invalid method for URL (DELETE /v1/models)"),
        ("POST", "/v1/chat/completions", b"{not json", 400, "We could not parse the JSON body"),
        ("POST", "/v1/chat/completions", b'{"messages": []}', 400, "you must provide a model parameter"),
        ("POST", "/v1/chat/completions", b'{"model": "m"}', 400, "Missing required parameter: 'messages'."),
        ("POST", "/v1/chat/completions", b'{"model": "m", "messages": [], "stream": "yes"}', 400, "stream"),
        ("POST", "/v1/chat/completions", b'{"model": "m", "messages": [], "max_tokens": 0}', 400, ">= 1"),
        ("POST", "/v1/embeddings", b'{"model": "m", "input": []}', 400, "'input'"),
    ],
)
async def test_errors_have_openai_shape(
    llm: MockLlm, method: str, path: str, body: bytes, status: int, message: str
) -> None:
    async with asyncio.timeout(10), httpx.AsyncClient() as http:
        response = await http.request(method, f"http://127.0.0.1:{llm.port}{path}", content=body)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    error = response.json()["error"]
    assert list(error) == ["message", "type", "param", "code"]
    assert message in error["message"]
    assert error["type"] == "invalid_request_error"
    if status == 405:
        assert "allow" in response.headers


async def test_sdk_raises_typed_errors(llm: MockLlm) -> None:
    async with asyncio.timeout(10), sdk(llm) as client:
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(model="m", messages=[], max_tokens=-1)
        with pytest.raises(openai.NotFoundError):
            await client.post("/nowhere", cast_to=httpx.Response, body={})
    assert bad.value.code == "integer_below_min_value"
    assert bad.value.param == "max_tokens"


async def test_head_is_405_without_a_body(llm: MockLlm) -> None:
    async with asyncio.timeout(10), connect(llm.port) as (reader, writer):
        writer.write(
            b"HEAD /v1/models HTTP/1.1\r\nHost: mock\r\n\r\nGET /v1/models HTTP/1.1\r\nHost: mock\r\n\r\n"
        )
        head = await read_response(reader, head_only=True)
        after = await read_response(reader)  # the connection stays in sync: no stray body bytes
    assert head.status == 405
    assert int(head.header(b"content-length") or 0) > 0
    assert after.status == 200
    assert json.loads(after.body)["object"] == "list"


async def test_body_over_8_mib_is_413_and_closes(llm: MockLlm) -> None:
    async with asyncio.timeout(10), connect(llm.port) as (reader, writer):
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: m\r\nContent-Length: %d\r\n\r\n" % (9 << 20)
        )
        response = await read_response(reader)
        assert await reader.read() == b""  # closed without waiting for the 9 MiB
    assert response.status == 413
    assert response.header(b"connection") == b"close"
    assert list(json.loads(response.body)["error"]) == ["message", "type", "param", "code"]


# -- HTTP/1.1 behaviour ------------------------------------------------------------------------


async def test_keep_alive_reuses_one_connection(llm: MockLlm) -> None:
    async with asyncio.timeout(10), httpx.AsyncClient(base_url=llm.base_url) as http:
        first = await http.post("/chat/completions", json=chat())
        second = await http.post("/chat/completions", json=chat(stream=True))
        addresses = [r.extensions["network_stream"].get_extra_info("client_addr") for r in (first, second)]
    assert first.status_code == second.status_code == 200
    assert addresses[0] == addresses[1]
    assert llm.requests == 2


async def test_pipelined_requests_are_answered_in_order(llm: MockLlm) -> None:
    requests = [
        post("/v1/chat/completions", chat(stream=True)),
        post("/v1/chat/completions", chat()),
        b"GET /v1/models HTTP/1.1\r\nHost: m\r\n\r\n",
    ]
    async with asyncio.timeout(10), connect(llm.port) as (reader, writer):
        writer.write(b"".join(requests))
        responses = [await read_response(reader) for _ in requests]
    assert responses[0].header(b"content-type") == b"text/event-stream; charset=utf-8"
    assert json.loads(responses[1].body)["object"] == "chat.completion"
    assert json.loads(responses[2].body)["object"] == "list"


async def test_chunked_request_body_with_expect_100_continue(llm: MockLlm) -> None:
    body = json.dumps(chat("chunked body")).encode()
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    async with asyncio.timeout(10), connect(llm.port) as (reader, writer):
        writer.write(head)
        interim = await read_response(reader)
        writer.write(b"%x\r\n%s\r\n%x;ext=1\r\n%s\r\n0\r\n\r\n" % (10, body[:10], len(body) - 10, body[10:]))
        response = await read_response(reader)
    assert interim.status == 100
    assert response.status == 200
    assert json.loads(response.body)["usage"]["prompt_tokens"] == 2


async def test_http10_stream_is_close_delimited(llm: MockLlm) -> None:
    body = json.dumps(chat(stream=True)).encode()
    request = b"POST /v1/chat/completions HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    async with asyncio.timeout(10), connect(llm.port) as (reader, writer):
        writer.write(request)
        response = await read_response(reader)
    assert response.header(b"transfer-encoding") is None
    assert response.header(b"connection") == b"close"
    assert sse_data(response.body)[-1] == "[DONE]"


# -- test hooks --------------------------------------------------------------------------------


async def test_fail_midstream_breaks_the_stream(llm: MockLlm) -> None:
    received: list[str] = []
    async with asyncio.timeout(10), sdk(llm) as client:
        stream = await client.chat.completions.create(
            model="gpt-test", messages=user("mock:fail-midstream"), stream=True
        )

        async def drain() -> None:
            async for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")

        with pytest.raises(openai.APIConnectionError):
            await drain()
    assert received == ["", *(mock_token(i) for i in range(FAIL_AFTER_TOKENS))]
    async with asyncio.timeout(10), connect(llm.port) as (reader, writer):
        writer.write(post("/v1/chat/completions", chat("mock:fail-midstream", stream=True)))
        await reader.readuntil(b"\r\n\r\n")
        rest = await reader.read()  # until the abrupt close
    assert b"[DONE]" not in rest
    assert not rest.endswith(b"0\r\n\r\n")
    assert b'"finish_reason":"stop"' not in rest


async def test_slow_first_token_delays_the_first_byte(llm: MockLlm) -> None:
    async with asyncio.timeout(10), connect(llm.port) as (reader, writer):
        started = time.monotonic()
        writer.write(post("/v1/chat/completions", chat("mock:slow-first-token", stream=True)))
        first = await reader.readexactly(1)
        waited = time.monotonic() - started
        rest = await read_response(_Prefixed(first, reader))  # type: ignore[arg-type]
    assert SLOW_FIRST_TOKEN_S - 0.05 <= waited < SLOW_FIRST_TOKEN_S + 1.5
    assert rest.status == 200
    assert sse_data(rest.body)[-1] == "[DONE]"


class _Prefixed:
    """A StreamReader with bytes already taken off its front put back."""

    def __init__(self, prefix: bytes, reader: asyncio.StreamReader) -> None:
        self._prefix, self._reader = prefix, reader

    async def readuntil(self, separator: bytes) -> bytes:
        prefix, self._prefix = self._prefix, b""
        return prefix + await self._reader.readuntil(separator)

    async def readexactly(self, n: int) -> bytes:
        return await self._reader.readexactly(n)


async def test_client_disconnect_mid_stream_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    config = MockLlmConfig(tokens=200, token_delay_ms=5)
    async with asyncio.timeout(10), MockLlm(config) as mock:
        for _ in range(3):
            async with connect(mock.port) as (reader, writer):
                writer.write(post("/v1/chat/completions", chat(stream=True)))
                await reader.readuntil(b"tok2")
        async with sdk(mock) as client:
            reply = await client.chat.completions.create(model="gpt-test", messages=user(), max_tokens=2)
        assert reply.choices[0].message.content == mock_text(2)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_256_concurrent_paced_streams() -> None:
    tokens, delay_ms = 10, 20

    async def one_stream(port: int) -> int:
        async with connect(port) as (reader, writer):
            writer.write(post("/v1/chat/completions", chat(stream=True)))
            response = await read_response(reader)
        return sum(
            1
            for e in sse_data(response.body)
            if isinstance(e, dict) and e["choices"][0:1] and "content" in e["choices"][0]["delta"]
        )

    async with asyncio.timeout(20), MockLlm(MockLlmConfig(tokens=tokens, token_delay_ms=delay_ms)) as mock:
        started = time.monotonic()
        counts = await asyncio.gather(*(one_stream(mock.port) for _ in range(256)))
        elapsed = time.monotonic() - started
    assert counts == [tokens + 1] * 256  # the role chunk's empty content, then one per token
    assert elapsed >= tokens * delay_ms / 1000  # paced, not bursted
    assert mock.requests == 256


# -- replay ------------------------------------------------------------------------------------


@pytest.mark.parametrize("capture_id", sorted(p.stem for p in CAPTURES.glob("*.json")))
async def test_replay_serves_a_capture_byte_for_byte(capture_id: str) -> None:
    recorded = capture(capture_id)["response"]
    async with (
        asyncio.timeout(10),
        MockLlm(MockLlmConfig(replay_dir=CAPTURES)) as mock,
        connect(mock.port) as (reader, writer),
    ):
        writer.write(post("/v1/whatever", {"model": "m"}, b"X-Mock-Capture: " + capture_id.encode()))
        response = await read_response(reader)
    assert response.status == recorded["status"]
    assert response.body == base64.b64decode(recorded["body_b64"])
    framing = {b"content-length", b"transfer-encoding"}
    kept = [(n.encode(), v.encode()) for n, v in recorded["headers"] if n.lower().encode() not in framing]
    assert [h for h in response.headers if h[0].lower() not in framing] == kept
    if any(n.lower() == "content-type" and v.startswith("text/event-stream") for n, v in recorded["headers"]):
        assert response.chunks is not None
        assert len(response.chunks) > 1
        assert all(chunk.endswith(b"\n\n") for chunk in response.chunks[:-1])  # one SSE event per write
    else:
        assert response.header(b"content-length") == b"%d" % len(response.body)


async def test_replay_unknown_capture_is_a_404() -> None:
    async with (
        asyncio.timeout(10),
        MockLlm(MockLlmConfig(replay_dir=CAPTURES)) as mock,
        httpx.AsyncClient(base_url=mock.base_url) as http,
    ):
        missing = await http.get("/models", headers={"X-Mock-Capture": "no-such-capture"})
        escape = await http.get("/models", headers={"X-Mock-Capture": "../README"})
        plain = await http.get("/models")
    assert missing.status_code == 404
    assert "no-such-capture" in missing.json()["error"]["message"]
    assert escape.status_code == 404
    assert plain.status_code == 200  # no header: generated as usual


# -- CLI ---------------------------------------------------------------------------------------


async def test_cli_subcommand_serves_until_sigterm() -> None:
    command = [
        sys.executable,
        "-m",
        "gateway.mock_llm",
        "mock-llm",
        "--listen",
        "127.0.0.1:0",
        "--tokens",
        "3",
    ]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(15):
            assert process.stdout is not None
            line = (await process.stdout.readline()).decode()
            assert line.startswith("mock-llm listening on http://127.0.0.1:"), line
            base_url = line.split()[-1]
            client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-test", max_retries=0, timeout=10)
            async with client:
                reply = await client.chat.completions.create(model="gpt-test", messages=user())
            assert reply.choices[0].message.content == mock_text(3)
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_cli_rejects_bad_flags_with_exit_2() -> None:
    for flags in (["--tokens", "-1"], ["--listen", "nowhere"]):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.mock_llm",
            "mock-llm",
            *flags,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(15):
            _, stderr = await process.communicate()
        assert process.returncode == 2
        assert b"Traceback" not in stderr


# -- the request reader, without sockets --------------------------------------------------------


def read_all(data: bytes, *, split_at: int | None = None) -> list[Request | ContinueExpected]:
    reader = RequestReader()
    events: list[Request | ContinueExpected] = []
    pieces = [data] if split_at is None else [data[:split_at], data[split_at:]]
    for piece in pieces:
        reader.feed(piece)
        while (event := reader.next_event()) is not None:
            events.append(event)
    return events


def test_reader_same_requests_at_every_split_point() -> None:
    data = (
        b"\r\nPOST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: m\r\nX-Trail:  v  \r\n"
        b"Content-Length: 5\r\n\r\nhello"
        b"POST http://m/v1/embeddings HTTP/1.1\r\nhost: m\r\ntransfer-encoding: chunked\r\n\r\n"
        b"3;a=b\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: 1\r\n\r\n"
        b"GET /v1/models HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    )
    expected = [
        (
            b"POST",
            b"/v1/chat/completions",
            b"hello",
            True,
            [(b"Host", b"m"), (b"X-Trail", b"v"), (b"Content-Length", b"5")],
        ),
        (b"POST", b"/v1/embeddings", b"abcde", True, [(b"host", b"m"), (b"transfer-encoding", b"chunked")]),
        (b"GET", b"/v1/models", b"", True, [(b"Connection", b"keep-alive")]),
    ]
    for cut in range(len(data) + 1):
        events = read_all(data, split_at=cut)
        assert [
            (e.method, e.path, e.body, e.keep_alive, e.headers) for e in events if isinstance(e, Request)
        ] == expected


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost : m\r\n\r\n", 400),  # RFC 9112 §5.1: no space before the colon
        (b"GET / HTTP/1.1\r\nHost: m\r\n folded\r\n\r\n", 400),  # obs-fold
        (b"GET / HTTP/1.1\r\nHost: m\nX: y\r\n\r\n", 400),  # bare LF
        (b"GET / HTTP/1.1\r\nX: y\r\n\r\n", 400),  # no Host
        (b"GET / HTTP/2.0\r\nHost: m\r\n\r\n", 505),
        (b"GET /\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: m\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: m\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: m\r\nContent-Length: +3\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY", 400),
        (b"POST / HTTP/1.1\r\nHost: m\r\nExpect: teapot\r\nContent-Length: 1\r\n\r\n", 417),
        (b"POST / HTTP/1.1\r\nHost: m\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1), 413),
        (b"GET / HTTP/1.1\r\nHost: m\r\nX: " + b"a" * 70_000, 431),
    ],
)
def test_reader_rejects_ambiguous_requests(data: bytes, status: int) -> None:
    with pytest.raises(HttpError) as error:
        read_all(data)
    assert error.value.status == status


def test_reader_asks_for_100_continue_only_while_the_body_is_missing() -> None:
    head = b"POST / HTTP/1.1\r\nHost: m\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    waiting = read_all(head)
    assert len(waiting) == 1
    assert isinstance(waiting[0], ContinueExpected)
    complete = read_all(head + b"ok")
    assert len(complete) == 1
    assert isinstance(complete[0], Request)
    assert complete[0].body == b"ok"
