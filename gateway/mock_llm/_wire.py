"""Wire pieces every mock endpoint shares: generated text, usage, error bodies, SSE framing.

Pure functions and msgspec structs only: no sockets, no clock. Field order in every struct follows the
recorded OpenAI captures (tests/fixtures/openai-captures/), because clients and recorders see key order.
"""

from __future__ import annotations

import functools
from typing import Any, Final

import msgspec

ENCODER: Final = msgspec.json.Encoder()
SYSTEM_FINGERPRINT: Final = "fp_mock"
SERVICE_TIER: Final = "default"


class Pace:
    """Marks where one generated token's worth of time passes in an event stream."""


PACE: Final = Pace()


def mock_token(i: int) -> str:
    """The i-th generated token: "tok0", " tok1", " tok2", ... (a leading space, as BPE tokens have)."""
    return f" tok{i}" if i else "tok0"


@functools.lru_cache(maxsize=64)
def mock_text(n_tokens: int) -> str:
    """The full text of `n_tokens` generated tokens, e.g. "tok0 tok1 tok2"."""
    return " ".join(f"tok{i}" for i in range(n_tokens))


def count_words(texts: list[str]) -> int:
    """Prompt size in "tokens": whitespace-separated words, at least 1, so usage is predictable."""
    return max(1, len(" ".join(texts).split()))


def texts_of(content: Any) -> list[str]:
    """Text of a message's `content`: a string, or a list of parts with a "text" field."""
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return []


def sse(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"


def sse_event(name: str, data: bytes) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


SSE_DONE: Final = b"data: [DONE]\n\n"


def pretty(obj: object, indent: int = 2) -> bytes:
    """OpenAI pretty-prints non-streamed JSON bodies and ends them with a newline."""
    return msgspec.json.format(ENCODER.encode(obj), indent=indent) + b"\n"


class PromptTokensDetails(msgspec.Struct):
    cached_tokens: int = 0
    audio_tokens: int = 0


class CompletionTokensDetails(msgspec.Struct):
    reasoning_tokens: int = 0
    audio_tokens: int = 0
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0


class Usage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = msgspec.field(default_factory=PromptTokensDetails)
    completion_tokens_details: CompletionTokensDetails = msgspec.field(
        default_factory=CompletionTokensDetails
    )


def usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(prompt_tokens, completion_tokens, prompt_tokens + completion_tokens)


class ErrorDetail(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(msgspec.Struct):
    error: ErrorDetail


def error_body(
    message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> bytes:
    """An error in OpenAI's shape; their error bodies are indented by four spaces."""
    return pretty(ErrorBody(ErrorDetail(message, type_, param, code)), indent=4)
