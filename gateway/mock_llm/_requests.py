"""The request bodies the mock reads, decoded leniently the way OpenAI does, and its `ApiError`.

Only the fields the mock acts on are declared; msgspec skips the rest, so any valid OpenAI request
decodes. Type errors become 400s naming the parameter, like OpenAI's validation errors.
"""

from __future__ import annotations

import re
from typing import Any, Final, TypeVar

import msgspec

from gateway.mock_llm._wire import texts_of

_BAD_JSON: Final = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
    "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"
)
_AT_PATH: Final = re.compile(r"at `\$\.(\w+)")


class ApiError(Exception):
    """A request OpenAI would refuse; rendered as their `{"error": {...}}` body."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code


class StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class ChatRequest(msgspec.Struct):
    model: str | None = None
    messages: list[Any] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    tools: list[Any] | None = None


class CompletionRequest(msgspec.Struct):
    model: str | None = None
    prompt: Any = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None


class ResponsesRequest(msgspec.Struct):
    model: str | None = None
    input: Any = None
    instructions: Any = None
    stream: bool | None = None
    max_output_tokens: int | None = None
    previous_response_id: str | None = None
    tool_choice: Any = "auto"
    tools: list[Any] | None = None
    metadata: dict[str, Any] | None = None


class EmbeddingsRequest(msgspec.Struct):
    model: str | None = None
    input: Any = None
    encoding_format: str | None = None
    dimensions: int | None = None


_R = TypeVar("_R", bound=msgspec.Struct)


def decode(body: bytes, kind: type[_R]) -> _R:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        at = _AT_PATH.search(str(exc))
        raise ApiError(400, f"Invalid request body: {exc}", param=at.group(1) if at else None) from None
    except msgspec.DecodeError:
        raise ApiError(400, _BAD_JSON) from None


def require_model(model: str | None) -> str:
    if not model:
        raise ApiError(400, "you must provide a model parameter")
    return model


def last_user_text(items: Any) -> str:
    if isinstance(items, str):
        return items
    if not isinstance(items, list):
        return ""
    for item in reversed(items):
        if isinstance(item, dict) and item.get("role") == "user":
            return " ".join(texts_of(item.get("content")))
    return ""


def all_texts(items: Any) -> list[str]:
    if isinstance(items, str):
        return [items]
    texts: list[str] = []
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict):
            texts += texts_of(item.get("content"))
            if isinstance(item.get("output"), str):  # Responses API function_call_output
                texts.append(item["output"])
        elif isinstance(item, str):
            texts.append(item)
    return texts
