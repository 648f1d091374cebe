"""Routing for the mock LLM: one parsed request in, one reply out, with no I/O of its own.

A reply is either the complete response bytes (the fast path: one write) or a script (see
`_mock_script`) that the connection plays with loop timers. Owns the counters tests assert on.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from typing import Any, Final

import msgspec

from gateway.mock_llm._chat import chat_completion, chat_events, text_completion, text_events
from gateway.mock_llm._config import MockLlmConfig
from gateway.mock_llm._embed import (
    DEFAULT_DIMENSIONS,
    embeddings_body,
    model_object,
    models_body,
    normalise_input,
)
from gateway.mock_llm._http import REASONS, Request, response_head
from gateway.mock_llm._plan import Plan, ToolPlan, tool_plan
from gateway.mock_llm._replay import CaptureError, CaptureLibrary, sse_events
from gateway.mock_llm._requests import (
    ApiError,
    ChatRequest,
    CompletionRequest,
    EmbeddingsRequest,
    ResponsesRequest,
    StreamOptions,
    all_texts,
    decode,
    last_user_text,
    require_model,
)
from gateway.mock_llm._responses import response_body, response_events
from gateway.mock_llm._script import CLOSE, NO_HOOKS, Delay, Hooks, Item, Reply, hooks_in, json_script, paced
from gateway.mock_llm._wire import ENCODER, PACE, Pace, count_words, error_body, texts_of

TOOL_TRIGGER: Final = "call a tool"
TEXT_THEN_TOOL_TRIGGER: Final = "say something, then call a tool"  # streams a few text tokens first
TEXT_THEN_TOOL_TOKENS: Final = 3
_JSON: Final = b"application/json"
_ERROR_JSON: Final = b"application/json; charset=utf-8"
_SSE: Final = b"text/event-stream; charset=utf-8"
_ID_PLACEHOLDER: Final = "\x00"
_ID_PLACEHOLDER_JSON: Final = b'"\\u0000"'
_MAX_CACHED_BODIES: Final = 1024
_HEAD: Final = (
    b"HTTP/1.1 %d %s\r\ndate: %s\r\ncontent-type: %s\r\n%sconnection: %s\r\n%s"
    b"openai-processing-ms: 0\r\nopenai-version: 2020-10-01\r\nx-request-id: req_%s%08x\r\n\r\n"
)


class MockApp:
    """Turns requests into replies and keeps the counters tests assert on."""

    def __init__(self, config: MockLlmConfig) -> None:
        self.config = config
        self.requests = 0
        self.last_request: Request | None = None
        self._delay = Delay(config.token_delay_ms / 1000) if config.token_delay_ms > 0 else None
        self._captures = CaptureLibrary(config.replay_dir) if config.replay_dir else None
        self._salt = secrets.token_hex(6)
        self._salt_b = self._salt.encode()
        self._ids = itertools.count(1)
        self._chat_requests = 0
        self._responses_requests = 0
        self._started = int(time.time())
        self._date_at = -1
        self._date = b""
        self._bodies: dict[tuple[object, ...], list[bytes]] = {}
        self._routes: dict[bytes, tuple[bytes, Callable[[Request], Reply]]] = {
            b"/v1/chat/completions": (b"POST", self._chat),
            b"/v1/completions": (b"POST", self._completions),
            b"/v1/embeddings": (b"POST", self._embeddings),
            b"/v1/responses": (b"POST", self._responses),
            b"/v1/models": (b"GET", self._models),
        }

    def handle(self, request: Request) -> Reply:
        self.requests += 1
        self.last_request = request  # its headers are split only if a test asks for them
        try:
            return self._route(request)
        except ApiError as exc:
            return self.error_reply(request, exc)

    def error_reply(
        self, request: Request, exc: ApiError, extra: tuple[tuple[bytes, bytes], ...] = ()
    ) -> bytes:
        body = error_body(exc.message, exc.type, exc.param, exc.code)
        head = self._head(exc.status, _ERROR_JSON, len(body), request.keep_alive, extra)
        # RFC 9110 §9.3.2: a response to HEAD carries no content.
        return head if request.method == b"HEAD" else head + body

    def _route(self, request: Request) -> Reply:
        if self._captures is not None:
            capture_id = request.header(b"x-mock-capture")
            if capture_id is not None:
                return self._replay(request, self._captures, capture_id)
        route = self._routes.get(request.path)
        if route is not None and route[0] == request.method:
            return route[1](request)
        if route is None and request.path.startswith(b"/v1/models/"):
            route = (b"GET", self._model)
        where = f"{request.method.decode('latin-1')} {request.path.decode('latin-1')}"
        if request.method not in (b"GET", b"POST") or (route and route[0] != request.method):
            allow = ((b"allow", route[0]),) if route else ()  # RFC 9110 §15.5.6
            return self.error_reply(request, ApiError(405, f"Invalid method for URL ({where})"), allow)
        if route is None:
            raise ApiError(404, f"Invalid URL ({where})")
        return route[1](request)

    # -- endpoints -----------------------------------------------------------------------------

    def _chat(self, request: Request) -> Reply:
        body = decode(request.body, ChatRequest)
        model = require_model(body.model)
        if body.messages is None:
            raise ApiError(
                400,
                "Missing required parameter: 'messages'.",
                param="messages",
                code="missing_required_parameter",
            )
        self._chat_requests += 1
        limit, param = (
            (body.max_completion_tokens, "max_completion_tokens")
            if body.max_completion_tokens is not None
            else (body.max_tokens, "max_tokens")
        )
        tool = self._maybe_tool(self._chat_requests, last_user_text(body.messages), body.tools)
        plan = self._plan(
            "chatcmpl-", model, limit, param, all_texts(body.messages), body.stream_options, tool
        )
        if body.stream:
            return self._stream(request, chat_events(plan))
        return self._json(request, self._render(chat_completion, plan))

    def _completions(self, request: Request) -> Reply:
        body = decode(request.body, CompletionRequest)
        model = require_model(body.model)
        texts = all_texts(body.prompt)
        plan = self._plan("cmpl-", model, body.max_tokens, "max_tokens", texts, body.stream_options, None)
        if body.stream:
            return self._stream(request, text_events(plan))
        return self._json(request, self._render(text_completion, plan))

    def _responses(self, request: Request) -> Reply:
        body = decode(request.body, ResponsesRequest)
        model = require_model(body.model)
        self._responses_requests += 1
        tool = self._maybe_tool(self._responses_requests, last_user_text(body.input), body.tools)
        texts = all_texts(body.input) + texts_of(body.instructions)
        plan = self._plan("resp_", model, body.max_output_tokens, "max_output_tokens", texts, None, tool)
        echo = msgspec.structs.asdict(body)
        if body.stream:
            return self._stream(request, response_events(plan, echo))
        return self._json(request, response_body(plan, echo))

    def _embeddings(self, request: Request) -> Reply:
        body = decode(request.body, EmbeddingsRequest)
        model = require_model(body.model)
        inputs = normalise_input(body.input)
        if inputs is None:
            raise ApiError(
                400, "'input' must be a non-empty string, array of strings or token arrays.", param="input"
            )
        dimensions = DEFAULT_DIMENSIONS if body.dimensions is None else body.dimensions
        if not 1 <= dimensions <= 8192:
            raise ApiError(
                400, f"Invalid 'dimensions': expected 1..8192, got {dimensions}.", param="dimensions"
            )
        if body.encoding_format not in (None, "float", "base64"):
            raise ApiError(
                400, f"Invalid 'encoding_format': {body.encoding_format!r}.", param="encoding_format"
            )
        payload = embeddings_body(inputs, model, dimensions, body.encoding_format == "base64")
        return self._json(request, payload, NO_HOOKS)

    def _models(self, request: Request) -> Reply:
        return self._json(request, models_body(self.config.model, self._started), NO_HOOKS)

    def _model(self, request: Request) -> Reply:
        model = request.path.removeprefix(b"/v1/models/").decode("utf-8", "replace")
        return self._json(request, ENCODER.encode(model_object(model, self._started)), NO_HOOKS)

    def _replay(self, request: Request, captures: CaptureLibrary, capture_id: bytes) -> Reply:
        try:
            rec = captures.get(capture_id)
        except CaptureError as exc:
            kind = "server_error" if exc.status >= 500 else "invalid_request_error"
            raise ApiError(exc.status, exc.message, kind) from None
        keep_alive = request.keep_alive and not rec.closes
        if not rec.streamed:
            head = response_head(
                rec.status, [*rec.headers, (b"content-length", b"%d" % len(rec.body))], rec.reason
            )
            script: list[Item] = [head + rec.body, CLOSE]
            return head + rec.body if keep_alive else iter(script)
        chunked = request.version == b"HTTP/1.1"
        framing = [(b"transfer-encoding", b"chunked")] if chunked else []
        head = response_head(rec.status, rec.headers + framing, rec.reason)
        return paced(head, _replay_events(sse_events(rec.body)), chunked, keep_alive, self._delay, NO_HOOKS)

    # -- replies -------------------------------------------------------------------------------

    def _plan(
        self,
        id_prefix: str,
        model: str,
        limit: int | None,
        param: str,
        prompt: list[str],
        stream_options: StreamOptions | None,
        tool: ToolPlan | None,
    ) -> Plan:
        n_tokens, finish = self.config.tokens, "stop"
        if limit is not None:
            if limit < 1:
                raise ApiError(
                    400,
                    f"Invalid '{param}': integer below minimum value. Expected a value >= 1, "
                    f"but got {limit} instead.",
                    param=param,
                    code="integer_below_min_value",
                )
            if limit < n_tokens:
                n_tokens, finish = limit, "length"
        include_usage = bool(stream_options and stream_options.include_usage)
        created = int(time.time())
        return Plan(
            self._new_id(id_prefix),
            created,
            model,
            n_tokens,
            finish,
            count_words(prompt),
            include_usage,
            tool,
        )

    def _maybe_tool(self, nth: int, user_text: str, tools: list[Any] | None) -> ToolPlan | None:
        every = self.config.tool_call_every
        if (every and nth % every == 0) or TOOL_TRIGGER in user_text:
            preamble = TEXT_THEN_TOOL_TOKENS if TEXT_THEN_TOOL_TRIGGER in user_text else 0
            return tool_plan(tools, self._new_id("call_"), preamble_tokens=preamble)
        return None

    def _render(self, render: Callable[[Plan], bytes], plan: Plan) -> bytes:
        """Render a body, reusing an earlier rendering that differs only in its id.

        Identical prompts within a second render to identical bytes but for the id, and building
        and pretty-printing the structs is most of a request's CPU, so splice the id in instead.
        """
        if plan.tool is not None:
            return render(plan)
        key = (render, plan.model, plan.created, plan.n_tokens, plan.finish_reason, plan.prompt_tokens)
        parts = self._bodies.get(key)
        if parts is None:
            parts = render(msgspec.structs.replace(plan, id=_ID_PLACEHOLDER)).split(_ID_PLACEHOLDER_JSON)
            if len(parts) != 2:  # the placeholder also occurs elsewhere (a NUL in the model name)
                return render(plan)
            if len(self._bodies) >= _MAX_CACHED_BODIES:
                self._bodies.clear()
            self._bodies[key] = parts
        return parts[0] + b'"' + plan.id.encode() + b'"' + parts[1]

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{self._salt}{next(self._ids):08x}"

    def _json(self, request: Request, body: bytes, hooks: Hooks | None = None) -> Reply:
        hooks = hooks_in(request.body) if hooks is None else hooks
        data = self._head(200, _JSON, len(body), request.keep_alive) + body
        return data if hooks is NO_HOOKS else json_script(data, len(body), hooks)

    def _stream(self, request: Request, events: Iterator[bytes | Pace]) -> Reply:
        chunked = request.version == b"HTTP/1.1"
        keep_alive = request.keep_alive and chunked  # HTTP/1.0 has no chunking: the close ends the body
        head = self._head(200, _SSE, None if chunked else -1, keep_alive)
        return paced(head, events, chunked, keep_alive, self._delay, hooks_in(request.body))

    def _head(
        self,
        status: int,
        content_type: bytes,
        length: int | None,
        keep_alive: bool,
        extra: tuple[tuple[bytes, bytes], ...] = (),
    ) -> bytes:
        """Headers in the order api.openai.com sends them; `length` None means chunked, -1 close-delimited."""
        now = int(time.time())
        if now != self._date_at:
            self._date_at, self._date = now, formatdate(now, usegmt=True).encode()
        if length is None:
            framing = b"transfer-encoding: chunked\r\n"
        else:
            framing = b"content-length: %d\r\n" % length if length >= 0 else b""
        # One %-format instead of a header list: this runs for every request on the fast path.
        return _HEAD % (
            status,
            REASONS.get(status, b"Unknown"),
            self._date,
            content_type,
            framing,
            b"keep-alive" if keep_alive else b"close",
            b"".join([b"%s: %s\r\n" % pair for pair in extra]) if extra else b"",
            self._salt_b,
            next(self._ids),
        )


def _replay_events(events: list[bytes]) -> Iterator[bytes | Pace]:
    for i, event in enumerate(events):
        if i:
            yield PACE
        yield event
