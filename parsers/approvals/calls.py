"""Tool calls in whole OpenAI JSON bodies, and the denial that replaces them.

Chat completions carry them in ``choices[].message.tool_calls``; the Responses API as ``output[]`` items
of type ``function_call``. Lenient: a body that is not JSON of that shape has no tool calls.
"""

from __future__ import annotations

from typing import Any

import msgspec

from parsers.approvals.rules import ApprovalRule, first_match


class ToolCallSeen(msgspec.Struct, frozen=True, kw_only=True):
    """One complete tool call the model asked for, and the rule that holds it (None: it passes)."""

    choice: int  # the choice index; the output item index for the Responses API
    index: int  # the call's index within its choice
    call_id: str
    name: str
    arguments: str  # the arguments JSON text exactly as the model sent it
    rule: ApprovalRule | None = None


def _decode(body: bytes) -> Any:
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return None


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def body_tool_calls(body: bytes, rules: tuple[ApprovalRule, ...]) -> list[ToolCallSeen]:
    """Every tool call in a non-streamed chat completion or Responses API body, each with its rule."""
    doc = _decode(body)
    if not isinstance(doc, dict):
        return []
    out: list[ToolCallSeen] = []
    choices = doc.get("choices")
    for position, choice in enumerate(choices if isinstance(choices, list) else []):
        message = choice.get("message") if isinstance(choice, dict) else None
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        for index, call in enumerate(calls if isinstance(calls, list) else []):
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict):
                continue
            name, arguments = _str(function.get("name")), _str(function.get("arguments"))
            choice_index = choice.get("index", position)
            out.append(
                ToolCallSeen(
                    choice=choice_index if isinstance(choice_index, int) else position,
                    index=index,
                    call_id=_str(call.get("id")),
                    name=name,
                    arguments=arguments,
                    rule=first_match(rules, name, arguments),
                )
            )
    output = doc.get("output")
    for position, item in enumerate(output if isinstance(output, list) else []):
        if isinstance(item, dict) and item.get("type") == "function_call":
            name, arguments = _str(item.get("name")), _str(item.get("arguments"))
            out.append(
                ToolCallSeen(
                    choice=position,
                    index=0,
                    call_id=_str(item.get("call_id")),
                    name=name,
                    arguments=arguments,
                    rule=first_match(rules, name, arguments),
                )
            )
    return out


def denied_body(body: bytes, text: str) -> bytes:
    """``body`` with every tool call replaced by an assistant message saying ``text``.

    Chat: each choice's message gets ``content`` = ``text``, loses ``tool_calls`` (and the legacy
    ``function_call``), and finishes with ``stop``. Responses API: ``function_call`` items become one
    assistant message item. Everything else (ids, usage, model) stays as the model sent it.
    """
    doc = _decode(body)
    if not isinstance(doc, dict):
        return body
    choices = doc.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            message = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(message, dict) and (message.get("tool_calls") or message.get("function_call")):
                message.pop("tool_calls", None)
                message.pop("function_call", None)
                message["content"] = text
                choice["finish_reason"] = "stop"
    output = doc.get("output")
    if isinstance(output, list) and any(_is_function_call(item) for item in output):
        first = next(i for i, item in enumerate(output) if _is_function_call(item))
        kept = [item for item in output if not _is_function_call(item)]
        item_id = "msg_" + _str(output[first].get("id")).removeprefix("fc_")
        kept.insert(
            first,
            {
                "type": "message",
                "id": item_id,
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            },
        )
        doc["output"] = kept
    return msgspec.json.encode(doc)


def _is_function_call(item: Any) -> bool:
    return isinstance(item, dict) and item.get("type") == "function_call"


__all__ = ["ToolCallSeen", "body_tool_calls", "denied_body"]
