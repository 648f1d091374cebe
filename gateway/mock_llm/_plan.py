"""What one mock generation will contain, decided once from the request and the config.

A `Plan` is plain data: the endpoint modules render it to JSON bodies or SSE events. Deciding here
(token count, finish reason, tool call) keeps the chat, completions and responses renderers dumb.
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec

from gateway.mock_llm._wire import ENCODER

_FRAGMENT: Final = re.compile(r"\s*\w+|\s*[^\w\s]+")
_DEFAULT_TOOL: Final = "mock_tool"


class ToolPlan(msgspec.Struct, frozen=True):
    call_id: str
    name: str
    arguments: str
    fragments: list[str]
    preamble_tokens: int = 0  # text tokens streamed before the call (an agent that explains itself)


class Plan(msgspec.Struct, frozen=True):
    id: str
    created: int
    model: str
    n_tokens: int
    finish_reason: str  # "stop" or "length"; a tool call renders as "tool_calls"
    prompt_tokens: int
    include_usage: bool
    tool: ToolPlan | None

    @property
    def completion_tokens(self) -> int:
        return len(self.tool.fragments) if self.tool else self.n_tokens


def fragments(arguments: str) -> list[str]:
    """Split JSON arguments the way OpenAI streams them: `{"`, `city`, `":"`, `Paris`, `"}`."""
    return _FRAGMENT.findall(arguments)


def tool_plan(tools: list[Any] | None, call_id: str, *, preamble_tokens: int = 0) -> ToolPlan:
    """Call the request's first function tool with arguments that satisfy its JSON schema."""
    name, schema = _DEFAULT_TOOL, {"properties": {"query": {"type": "string"}}}
    for tool in tools or ():
        if isinstance(tool, dict) and tool.get("type", "function") == "function":
            # Chat nests the function ({"function": {...}}); the Responses API flattens it.
            fn = tool.get("function", tool)
            if isinstance(fn, dict) and isinstance(fn.get("name"), str):
                name, schema = fn["name"], fn.get("parameters") or {}
                break
    arguments = ENCODER.encode(_sample_object(schema)).decode()
    return ToolPlan(call_id, name, arguments, fragments(arguments), preamble_tokens)


def _sample_object(schema: Any) -> dict[str, Any]:
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict):
        return {}
    required = schema.get("required")
    names = required if isinstance(required, list) and required else list(properties)
    return {n: _sample_value(properties.get(n)) for n in names if isinstance(n, str)}


def _sample_value(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return "mock"
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    samples: dict[str, Any] = {"integer": 1, "number": 1, "boolean": True, "array": [], "null": None}
    if kind == "object":
        return _sample_object(schema)
    return samples.get(kind, "mock") if isinstance(kind, str) else "mock"
