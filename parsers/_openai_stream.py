"""Assembles one OpenAI-style response (JSON body or event stream) into bounded text and counters.

Pure and lenient: it walks decoded JSON of any shape with type checks and never raises on peer input.
It must not buffer a stream: deltas are folded into size-bounded accumulators as they arrive.
"""

from __future__ import annotations

import msgspec

from parsers.events import SseMessage

TRUNCATED_MARKER = "…[truncated]"
MAX_TOOL_CALLS = 256
_MAX_NAME_CHARS = 256  # model names, tool names, call ids, finish reasons
_MAX_ERROR_CHARS = 4096
_INT64_MAX = (1 << 63) - 1

Json = object
UsageCounts = tuple[int | None, int | None, int | None]  # prompt, completion, total


class BadJson(ValueError):
    """A body or SSE message that is not JSON."""


def decode_json(data: bytes) -> Json:
    """Raises:
    BadJson: ``data`` is not a JSON document.
    """
    if not data.strip():
        raise BadJson("empty, expected JSON")
    try:
        return msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError) as exc:  # msgspec raises RecursionError on deep nesting
        raise BadJson(f"not JSON ({exc or type(exc).__name__})") from None


def as_dict(value: Json) -> dict[str, Json]:
    return value if isinstance(value, dict) else {}


def as_list(value: Json) -> list[Json]:
    return value if isinstance(value, list) else []


def as_str(value: Json) -> str:
    return value if isinstance(value, str) else ""


def as_count(value: Json) -> int | None:
    """A token count that fits the index (SQLite INTEGER), else ``None``."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _INT64_MAX:
        return value
    return None


def clip(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[:max_chars] + TRUNCATED_MARKER


def clip_bytes(text: str, max_bytes: int) -> str:
    """At most ``max_bytes`` of UTF-8 (a split character is dropped), then ``TRUNCATED_MARKER``."""
    if len(text) <= max_bytes // 4 or len(text.encode()) <= max_bytes:
        return text
    return text.encode()[:max_bytes].decode(errors="ignore") + TRUNCATED_MARKER


def error_message(body: Json) -> str:
    """The message of an ``{"error": ...}`` object (OpenAI, Groq, OpenRouter, Ollama shapes), or ``""``."""
    error = as_dict(body).get("error")
    if isinstance(error, str):
        return clip(error, _MAX_ERROR_CHARS)
    if isinstance(error, dict):
        fields = as_dict(error)
        text = as_str(fields.get("message")) or as_str(fields.get("code"))
        return clip(text or msgspec.json.encode(error).decode(), _MAX_ERROR_CHARS)
    return ""


class Budget:
    """Bytes of UTF-8 text a group of accumulators may still keep."""

    def __init__(self, max_bytes: int) -> None:
        self.left = max_bytes


class Text:
    """Appends text up to its budget; past it, keeps the prefix and shows ``TRUNCATED_MARKER``."""

    def __init__(self, budget: Budget) -> None:
        self._budget = budget
        self._parts: list[str] = []
        self._size = 0
        self.truncated = False

    def add(self, text: str) -> None:
        if not text or self.truncated:
            return
        size = len(text) if text.isascii() else len(text.encode())
        if size > self._budget.left:
            text = text.encode()[: self._budget.left].decode(errors="ignore")  # drop a split character
            size = len(text.encode())
            self.truncated = True
        self._parts.append(text)
        self._size += size
        self._budget.left -= size

    def replace(self, text: str) -> None:
        self._budget.left += self._size
        self._parts, self._size, self.truncated = [], 0, False
        self.add(text)

    def __bool__(self) -> bool:
        return bool(self._parts) or self.truncated

    def value(self) -> str:
        joined = "".join(self._parts)
        self._parts = [joined]  # summary() may be called repeatedly while a stream is still arriving
        return joined + TRUNCATED_MARKER if self.truncated else joined


class ToolCallText:
    def __init__(self, budget: Budget) -> None:
        self.id = ""
        self.name = ""
        self.arguments = Text(budget)


class ResponseAssembly:
    """Folds the response of one exchange into the fields of an ``LlmSummary``."""

    def __init__(self, api: str, *, max_text_bytes: int) -> None:
        self.api = api
        self.model = ""
        self.text = Text(Budget(max_text_bytes))
        self.reasoning = Text(Budget(max_text_bytes))
        self.tool_calls: dict[int | str, ToolCallText] = {}
        self.finish_reason = ""
        self.usage: UsageCounts = (None, None, None)
        self.error = ""
        self.chunks = 0
        self.parse_error = ""
        self._tool_budget = Budget(max_text_bytes)
        self._last_tool_key: int | str = 0

    # --- entry points --------------------------------------------------------------------------------

    def json_body(self, status: int, body: Json) -> None:
        """A complete non-streamed response body, already decoded."""
        fields = as_dict(body)
        self._common(fields)
        if status >= 400 and not self.error:
            self.error = clip(as_str(fields.get("message")) or as_str(fields.get("detail")), _MAX_ERROR_CHARS)
        if status >= 400 or self.error:
            return
        if self.api == "responses":
            self._responses_object(fields)
            return
        choice = self._first_choice(fields)
        message = as_dict(choice.get("message"))
        self.text.add(as_str(choice.get("text")))  # completions
        self.text.add(_content_text(message.get("content")))
        self.text.add(as_str(message.get("refusal")))
        self.reasoning.add(as_str(message.get("reasoning_content")) or as_str(message.get("reasoning")))
        self._chat_tool_calls(message, streamed=False)

    def sse_message(self, message: SseMessage) -> None:
        """One dispatched SSE message of a streamed response."""
        self.chunks += 1
        if message.data == b"[DONE]":
            return
        try:
            body = decode_json(message.data)
        except BadJson as exc:
            if message.event == b"error" and not self.error:
                self.error = clip(message.data.decode(errors="replace"), _MAX_ERROR_CHARS)
            elif not self.parse_error:
                self.parse_error = f"SSE message {self.chunks}: {exc}"
            return
        fields = as_dict(body)
        self._common(fields)
        if message.event == b"error" and not self.error:
            self.error = clip(
                as_str(fields.get("message")) or message.data.decode(errors="replace"), _MAX_ERROR_CHARS
            )
        if self.api == "responses":
            self._responses_event(
                as_str(fields.get("type")) or message.event.decode(errors="replace"), fields
            )
        else:
            self._chat_chunk(fields)

    # --- Chat Completions and legacy Completions -----------------------------------------------------

    def _common(self, fields: dict[str, Json]) -> None:
        if not self.model:
            self.model = clip(as_str(fields.get("model")), _MAX_NAME_CHARS)
        if (raw := fields.get("usage")) and (usage := _usage(raw)):
            self.usage = usage
        if not self.error and "error" in fields:
            self.error = error_message(fields)

    def _first_choice(self, fields: dict[str, Json]) -> dict[str, Json]:
        # With n > 1 only choice 0 is summarized: interleaving choices would make unreadable text.
        for raw in as_list(fields.get("choices")):
            choice = as_dict(raw)
            if choice.get("index", 0) == 0:
                if reason := as_str(choice.get("finish_reason")):
                    self.finish_reason = clip(reason, _MAX_NAME_CHARS)
                return choice
        return {}

    def _chat_chunk(self, fields: dict[str, Json]) -> None:
        choice = self._first_choice(fields)
        delta = as_dict(choice.get("delta"))
        self.text.add(as_str(choice.get("text")))  # completions
        self.text.add(_content_text(delta.get("content")))
        self.text.add(as_str(delta.get("refusal")))
        # DeepSeek sends reasoning_content; Groq, OpenRouter and Ollama send reasoning.
        self.reasoning.add(as_str(delta.get("reasoning_content")) or as_str(delta.get("reasoning")))
        if "tool_calls" in delta or "function_call" in delta:
            self._chat_tool_calls(delta, streamed=True)

    def _chat_tool_calls(self, message: dict[str, Json], *, streamed: bool) -> None:
        for position, raw in enumerate(as_list(message.get("tool_calls"))):
            call = as_dict(raw)
            index, call_id = call.get("index"), as_str(call.get("id"))
            key: int | str
            if isinstance(index, int) and not isinstance(index, bool):
                key = index
            elif not streamed:
                key = position
            else:  # some servers omit the index: a new id opens a call, no id continues the last one
                key = call_id or self._last_tool_key
            function = as_dict(call.get("function"))
            self._tool_fragment(key, call_id, as_str(function.get("name")), as_str(function.get("arguments")))
        legacy = as_dict(message.get("function_call"))  # pre-tools function calling
        if legacy:
            self._tool_fragment(
                "function_call", "", as_str(legacy.get("name")), as_str(legacy.get("arguments"))
            )

    def _tool_fragment(
        self, key: int | str, call_id: str, name: str, arguments: str, *, final: bool = False
    ) -> None:
        call = self.tool_calls.get(key)
        if call is None:
            if len(self.tool_calls) >= MAX_TOOL_CALLS:
                return
            call = self.tool_calls[key] = ToolCallText(self._tool_budget)
        self._last_tool_key = key
        call.id = call.id or clip(call_id, _MAX_NAME_CHARS)
        call.name = call.name or clip(name, _MAX_NAME_CHARS)  # sent once; some servers repeat it
        if final:
            call.arguments.replace(arguments)
        else:
            call.arguments.add(arguments)

    # --- Responses API -----------------------------------------------------------------------------

    def _responses_event(self, kind: str, fields: dict[str, Json]) -> None:
        item_id = as_str(fields.get("item_id"))
        match kind:
            case "response.output_text.delta" | "response.refusal.delta":
                self.text.add(as_str(fields.get("delta")))
            case "response.reasoning_text.delta" | "response.reasoning_summary_text.delta":
                self.reasoning.add(as_str(fields.get("delta")))
            case "response.function_call_arguments.delta":
                self._tool_fragment(item_id, "", "", as_str(fields.get("delta")))
            case "response.function_call_arguments.done":
                self._tool_fragment(item_id, "", "", as_str(fields.get("arguments")), final=True)
            case "response.output_item.added" | "response.output_item.done":
                self._responses_item(as_dict(fields.get("item")), final=kind.endswith(".done"))
            case "response.created" | "response.in_progress":
                self._common(as_dict(fields.get("response")))
            case "response.completed" | "response.incomplete" | "response.failed":
                self._responses_object(as_dict(fields.get("response")))
            case "error":
                self.error = self.error or clip(as_str(fields.get("message")), _MAX_ERROR_CHARS)
            case _:
                pass  # lifecycle events (content_part.*, web_search_call.*, ...) carry no new text

    def _responses_item(self, item: dict[str, Json], *, final: bool) -> None:
        if item.get("type") == "function_call":
            arguments = as_str(item.get("arguments"))
            key = as_str(item.get("id")) or as_str(item.get("call_id"))
            call_id, name = as_str(item.get("call_id")), as_str(item.get("name"))
            self._tool_fragment(key, call_id, name, arguments, final=final and bool(arguments))

    def _responses_object(self, response: dict[str, Json]) -> None:
        """A whole Response: a non-streamed body, or the one ``response.completed`` carries.

        Text and tool calls already streamed as deltas win; the object fills in only what was missed.
        """
        self._common(response)
        self.error = self.error or clip(
            as_str(as_dict(response.get("error")).get("message")), _MAX_ERROR_CHARS
        )
        reason = as_str(as_dict(response.get("incomplete_details")).get("reason"))
        self.finish_reason = (
            clip(reason or as_str(response.get("status")), _MAX_NAME_CHARS) or self.finish_reason
        )
        fill_text, fill_reasoning, fill_tools = not self.text, not self.reasoning, not self.tool_calls
        for raw in as_list(response.get("output")):
            item = as_dict(raw)
            match item.get("type"):
                case "message" if fill_text:
                    for part in as_list(item.get("content")):
                        self.text.add(
                            as_str(as_dict(part).get("text")) or as_str(as_dict(part).get("refusal"))
                        )
                case "reasoning" if fill_reasoning:
                    for part in as_list(item.get("content")) + as_list(item.get("summary")):
                        self.reasoning.add(as_str(as_dict(part).get("text")))
                case "function_call" if fill_tools:
                    self._responses_item(item, final=True)
                case _:
                    pass


def _usage(value: Json) -> UsageCounts | None:
    """Chat/Completions/Embeddings ``prompt_tokens``..., or Responses ``input_tokens``/``output_tokens``."""
    usage = as_dict(value)
    if not usage:
        return None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    return as_count(prompt), as_count(completion), as_count(usage.get("total_tokens"))


def _content_text(content: Json) -> str:
    """Message content as text: a string, or a list of parts of which text parts are kept."""
    if isinstance(content, str):
        return content
    return "".join(as_str(as_dict(part).get("text")) for part in as_list(content))


__all__ = [
    "MAX_TOOL_CALLS",
    "TRUNCATED_MARKER",
    "BadJson",
    "Json",
    "ResponseAssembly",
    "as_dict",
    "as_list",
    "as_str",
    "clip",
    "clip_bytes",
    "decode_json",
    "error_message",
]
