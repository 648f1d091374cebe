"""Summaries of OpenAI-compatible API calls, built from the recorded HTTP events of one exchange.

Owns: which API an exchange used, its prompt, and the assembled answer (text, tool calls, usage,
errors). Sans-IO like every parser; it must not buffer whole event streams and must never raise on
peer input: what it cannot parse is reported in ``LlmSummary.parse_error``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator

import msgspec

from parsers._openai_stream import (
    TRUNCATED_MARKER,
    BadJson,
    Json,
    ResponseAssembly,
    as_dict,
    as_list,
    as_str,
    clip,
    clip_bytes,
    decode_json,
)
from parsers.errors import ParseError
from parsers.events import (
    BodyChunk,
    Direction,
    Event,
    Headers,
    MessageEnd,
    RequestHead,
    ResponseHead,
    SseMessage,
)
from parsers.sse import SseParser


class ToolCall(msgspec.Struct, kw_only=True):
    id: str = ""
    name: str = ""
    arguments: str = ""  # JSON text as the model produced it; may be invalid or end in TRUNCATED_MARKER


class ChatMessage(msgspec.Struct, kw_only=True):
    role: str
    content: str


class Usage(msgspec.Struct, kw_only=True):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


class LlmSummary(msgspec.Struct, kw_only=True):
    """What one exchange asked and answered, for the index and full-text search."""

    api: str = ""  # "chat.completions" | "completions" | "responses" | "embeddings" | "" (not an LLM call)
    model: str = ""  # the model the response names, else the requested one
    stream: bool = False  # the request asked to stream, or the response was an event stream
    messages: list[ChatMessage] = []  # the prompt; a Responses `instructions` string is a "system" message
    prompt_text: str = ""  # messages as "role: content\n" lines
    response_text: str = ""  # assistant text of choice 0 (content and refusals), reasoning excluded
    tool_calls: list[ToolCall] = []
    finish_reason: str = ""  # Responses API: incomplete_details.reason, else the status ("completed")
    usage: Usage = msgspec.field(default_factory=Usage)
    error: str = ""  # what the server reported: error body, mid-stream error, or "HTTP <status>"
    chunks: int = 0  # SSE messages seen, [DONE] included
    reasoning_text: str = ""  # reasoning_content / reasoning deltas, reasoning_text / summary events
    request_model: str = ""  # the model the request named
    parse_error: str = ""  # what could not be parsed, e.g. "response body: not JSON (...)"


_API_SUFFIXES: tuple[tuple[tuple[bytes, ...], str], ...] = (
    ((b"chat", b"completions"), "chat.completions"),
    ((b"completions",), "completions"),
    ((b"responses",), "responses"),
    ((b"embeddings",), "embeddings"),
)
_RESPONSE_DIRECTIONS = (Direction.FROM_UPSTREAM, Direction.TO_CLIENT)
_PIECE_BYTES = 64 << 10  # most bytes one inflate step may produce
_MAX_INFLATED_STREAM_BYTES = 1 << 30  # a compressed event stream stops being read past this
_MAX_ROLE_CHARS = 64
_MAX_MODEL_CHARS = 256
_CODINGS = (b"gzip", b"x-gzip", b"deflate")


def detect_api(method: bytes, target: bytes) -> str:
    """The API a request calls, from the path suffix; ``""`` for anything that is not a POST to one.

    ``GET /v1/chat/completions`` lists stored completions and ``/v1/responses/{id}`` reads one: neither
    is a model call, so both give ``""``.
    """
    if method.upper() != b"POST":
        return ""
    path = target.partition(b"?")[0].partition(b"#")[0]
    if b"://" in path:  # absolute-form target (RFC 9112 §3.2.2), as a forward proxy receives it
        path = path.partition(b"://")[2].partition(b"/")[2]
    segments = tuple(segment for segment in path.lower().split(b"/") if segment)
    for suffix, api in _API_SUFFIXES:
        if segments[-len(suffix) :] == suffix:
            return api
    return ""


class _BodyError(Exception):
    """A body that cannot be decoded or is too large to parse."""


def _header(headers: Headers, name: bytes) -> bytes:
    """All values of one header, comma-joined (RFC 9110 §5.3), lower-cased."""
    return b", ".join(value.strip() for key, value in headers if key.lower() == name).lower()


class _Inflater:
    """Removes a gzip or deflate Content-Encoding with bounded output (bomb-safe).

    One step yields at most ``_PIECE_BYTES`` and the whole body at most ``max_bytes``.
    """

    def __init__(self, coding: str, *, max_bytes: int) -> None:
        self._coding = coding
        self._max_bytes = max_bytes
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if coding != "deflate" else None
        self._head = b""
        self._seen = 0
        self._total = 0

    def feed(self, data: bytes) -> Iterator[bytes]:
        self._seen += len(data)
        if self._inflater is None:
            self._head += data
            if len(self._head) < 2:
                return
            # RFC 9110 §8.4.1.2: "deflate" is the zlib format, but some servers send raw deflate.
            cmf, flg = self._head[0], self._head[1]
            zlib_format = cmf & 0x0F == 8 and (cmf << 8 | flg) % 31 == 0
            self._inflater = zlib.decompressobj(zlib.MAX_WBITS if zlib_format else -zlib.MAX_WBITS)
            data, self._head = self._head, b""
        inflater = self._inflater
        while not inflater.eof:  # bytes after the end of the compressed data are ignored
            try:
                piece = inflater.decompress(data, _PIECE_BYTES)
            except zlib.error as exc:
                raise _BodyError(f"bad {self._coding} data ({exc})") from None
            self._total += len(piece)
            if self._total > self._max_bytes:
                raise _BodyError(f"{self._coding} body inflates past {self._max_bytes} bytes, not parsed")
            if piece:
                yield piece
            data = inflater.unconsumed_tail
            if not data and len(piece) < _PIECE_BYTES:
                return

    def finish(self) -> None:
        if self._seen and (self._inflater is None or not self._inflater.eof):
            raise _BodyError(f"{self._coding} data ends early")


class _JsonSink:
    """Collects a JSON body up to ``max_bytes`` and hands it over at its end."""

    def __init__(self, on_body: Callable[[bytes], None], *, max_bytes: int) -> None:
        self._on_body = on_body
        self._max_bytes = max_bytes
        self._data = bytearray()

    def write(self, piece: bytes) -> None:
        if len(self._data) + len(piece) > self._max_bytes:
            raise _BodyError(f"larger than {self._max_bytes} bytes, not parsed")
        self._data += piece

    def close(self) -> None:
        self._on_body(bytes(self._data))


class _SseSink:
    """Feeds an event stream to the response assembly as it arrives."""

    def __init__(self, assembly: ResponseAssembly) -> None:
        self._parser = SseParser()
        self._assembly = assembly

    def write(self, piece: bytes) -> None:
        for event in self._parser.feed(piece):
            if isinstance(event, SseMessage):
                self._assembly.sse_message(event)

    def close(self) -> None:
        self._parser.feed_eof()


class _BodyReader:
    """One message body: Content-Encoding removed, pieces handed to a sink."""

    def __init__(self, headers: Headers, sink: _JsonSink | _SseSink, *, max_decoded_bytes: int) -> None:
        codings = [c.strip() for c in _header(headers, b"content-encoding").split(b",")]
        codings = [c for c in codings if c and c != b"identity"]
        if len(codings) > 1 or (codings and codings[0] not in _CODINGS):
            raise _BodyError(
                f"Content-Encoding {b', '.join(codings).decode(errors='replace')!r} not supported"
            )
        coding = codings[0].decode() if codings else ""
        self._inflater = _Inflater(coding, max_bytes=max_decoded_bytes) if coding else None
        self.sink = sink

    def feed(self, data: bytes) -> None:
        for piece in (data,) if self._inflater is None else self._inflater.feed(data):
            self.sink.write(piece)

    def finish(self) -> None:
        if self._inflater is not None:
            self._inflater.finish()
        self.sink.close()


class OpenAIExchange:
    """Feed the events of one exchange in order, then read ``summary()`` (at any time)."""

    def __init__(self, *, max_text_bytes: int = 1 << 20, max_json_bytes: int = 32 << 20) -> None:
        self._max_text_bytes = max_text_bytes
        self._max_json_bytes = max_json_bytes
        self._api = ""
        self._saw_request = False
        self._request_model = ""
        self._stream = False
        self._messages: list[ChatMessage] = []
        self._prompt_text = ""
        self._parse_errors: list[str] = []
        self._request: _BodyReader | None = None  # None: no request body being read
        self._response: _BodyReader | None = None  # None: no response body being read
        self._response_direction: Direction | None = None
        self._event_stream = False
        self._status = 0
        self._assembly = ResponseAssembly("", max_text_bytes=max_text_bytes)

    def feed(self, direction: Direction, event: Event) -> None:
        """Take the next recorded event. Never raises: body problems end up in ``parse_error``."""
        try:
            self._feed(direction, event)
        except (_BodyError, BadJson, ParseError) as exc:
            side = "request" if direction is Direction.FROM_CLIENT else "response"
            self._parse_errors.append(f"{side} body: {exc}")
            if side == "request":
                self._request = None
            else:
                self._response = None

    def summary(self) -> LlmSummary:
        answer = self._assembly
        problems = list(self._parse_errors)
        if answer.parse_error:
            problems.append(f"response body: {answer.parse_error}")
        parse_error = "; ".join(problems)
        if not self._api:
            return LlmSummary(parse_error=parse_error)
        return LlmSummary(
            api=self._api,
            model=answer.model or self._request_model,
            stream=self._stream or self._event_stream,
            messages=list(self._messages),
            prompt_text=self._prompt_text,
            response_text=answer.text.value(),
            tool_calls=[
                ToolCall(id=call.id, name=call.name, arguments=call.arguments.value())
                for call in answer.tool_calls.values()
            ],
            finish_reason=answer.finish_reason,
            usage=Usage(
                prompt_tokens=answer.usage[0], completion_tokens=answer.usage[1], total_tokens=answer.usage[2]
            ),
            error=answer.error or (f"HTTP {self._status}" if self._status >= 400 else ""),
            chunks=answer.chunks,
            reasoning_text=answer.reasoning.value(),
            request_model=self._request_model,
            parse_error=parse_error,
        )

    def _feed(self, direction: Direction, event: Event) -> None:
        match event:
            case RequestHead() if direction is Direction.FROM_CLIENT and not self._saw_request:
                self._saw_request = True
                self._api = self._assembly.api = detect_api(event.method, event.target)
                if self._api:
                    sink = _JsonSink(self._on_request, max_bytes=self._max_json_bytes)
                    self._request = _BodyReader(event.headers, sink, max_decoded_bytes=self._max_json_bytes)
            case ResponseHead() if direction in _RESPONSE_DIRECTIONS and self._response_direction is None:
                if event.status >= 200:  # 1xx heads are interim
                    self._response_direction = direction
                    self._on_response_head(event)
            case BodyChunk() if direction is Direction.FROM_CLIENT and self._request is not None:
                self._request.feed(event.data)
            case BodyChunk() if direction is self._response_direction and self._response is not None:
                self._response.feed(event.data)
            case MessageEnd() if direction is Direction.FROM_CLIENT and self._request is not None:
                reader, self._request = self._request, None
                reader.finish()
            case MessageEnd() if direction is self._response_direction and self._response is not None:
                reader, self._response = self._response, None
                reader.finish()
            case _:
                pass  # forwarded copies, other directions and gateway records add nothing here

    def _on_request(self, data: bytes) -> None:
        try:
            body = decode_json(data)
            if not isinstance(body, dict):
                raise BadJson(f"expected a JSON object, got {type(body).__name__}")
        except BadJson:
            self._api = ""  # not an API call after all: the summary stays empty
            raise
        self._request_model = clip(as_str(body.get("model")), _MAX_MODEL_CHARS)
        self._stream = body.get("stream") is True
        messages = _prompt_messages(self._api, body)
        self._messages = [
            ChatMessage(
                role=clip(m.role, _MAX_ROLE_CHARS), content=clip_bytes(m.content, self._max_text_bytes)
            )
            for m in messages
        ]
        rendered = "".join(f"{m.role}: {m.content}\n" for m in self._messages)
        self._prompt_text = clip_bytes(rendered, self._max_text_bytes)

    def _on_response_head(self, head: ResponseHead) -> None:
        self._status = head.status
        if not self._api:
            return
        content_type = _header(head.headers, b"content-type").partition(b";")[0].strip()
        sink: _JsonSink | _SseSink
        self._event_stream = content_type == b"text/event-stream" or (not content_type and self._stream)
        if self._event_stream:
            sink, limit = _SseSink(self._assembly), _MAX_INFLATED_STREAM_BYTES
        else:
            sink, limit = _JsonSink(self._on_response, max_bytes=self._max_json_bytes), self._max_json_bytes
        self._response = _BodyReader(head.headers, sink, max_decoded_bytes=limit)

    def _on_response(self, data: bytes) -> None:
        self._assembly.json_body(self._status, decode_json(data))


# --- the prompt, from request JSON of any shape ------------------------------------------------------


def _prompt_messages(api: str, body: dict[str, Json]) -> list[ChatMessage]:
    match api:
        case "chat.completions":
            return [_chat_message(as_dict(message)) for message in as_list(body.get("messages"))]
        case "completions":
            return _user_text(body.get("prompt"))
        case "embeddings":
            return _user_text(body.get("input"))
        case "responses":
            instructions = as_str(body.get("instructions"))
            system = [ChatMessage(role="system", content=instructions)] if instructions else []
            items = body.get("input")
            if isinstance(items, str):
                return system + _user_text(items)
            return system + [m for item in as_list(items) if (m := _responses_input(as_dict(item)))]
        case _:
            return []


def _user_text(value: Json) -> list[ChatMessage]:
    """A completions prompt or embeddings input: a string or a list of strings (token arrays skipped)."""
    text = value if isinstance(value, str) else "\n".join(v for v in as_list(value) if isinstance(v, str))
    return [ChatMessage(role="user", content=text)] if text else []


def _parts_text(content: Json) -> str:
    """Content as text: a string, or parts where text parts give their text and others ``[type]``."""
    if isinstance(content, str):
        return content
    texts = []
    for raw in as_list(content):
        part = as_dict(raw)
        text = part.get("text")
        if isinstance(text, str):
            texts.append(text)
        elif kind := as_str(part.get("type")):
            texts.append(f"[{kind}]")  # image_url, input_image, input_file, input_audio, ...
    return "\n".join(texts)


def _call_line(function: dict[str, Json]) -> str:
    return f"[tool_call {as_str(function.get('name'))}] {as_str(function.get('arguments'))}"


def _chat_message(message: dict[str, Json]) -> ChatMessage:
    lines = [_parts_text(message.get("content"))]
    lines += [
        _call_line(as_dict(as_dict(call).get("function"))) for call in as_list(message.get("tool_calls"))
    ]
    if legacy := as_dict(message.get("function_call")):
        lines.append(_call_line(legacy))
    return ChatMessage(role=as_str(message.get("role")), content="\n".join(line for line in lines if line))


def _responses_input(item: dict[str, Json]) -> ChatMessage | None:
    match item.get("type"):
        case "function_call":
            return ChatMessage(role="assistant", content=_call_line(item))
        case "function_call_output":
            return ChatMessage(role="tool", content=_parts_text(item.get("output")))
    role = as_str(item.get("role"))
    return ChatMessage(role=role, content=_parts_text(item.get("content"))) if role else None


__all__ = [
    "TRUNCATED_MARKER",
    "ChatMessage",
    "LlmSummary",
    "OpenAIExchange",
    "ToolCall",
    "Usage",
    "detect_api",
]
