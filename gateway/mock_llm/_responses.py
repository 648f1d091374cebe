"""Render a `Plan` as a Responses API (/v1/responses) object or its `event:`/`data:` SSE stream.

Pure, like `_mock_chat`. Events are dicts: OpenAI currently writes `type` first and the other event
keys in alphabetical order, and msgspec keeps a dict's insertion order, so sorting reproduces it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from gateway.mock_llm._plan import Plan, ToolPlan
from gateway.mock_llm._wire import ENCODER, PACE, SERVICE_TIER, Pace, mock_text, mock_token, pretty, sse_event


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _message_item(item_id: str, status: str, text: str | None) -> dict[str, Any]:
    content = [] if text is None else [_output_text(text)]
    return {"id": item_id, "type": "message", "status": status, "content": content, "role": "assistant"}


def _function_item(tool: ToolPlan, item_id: str, status: str, arguments: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": tool.call_id,
        "name": tool.name,
    }


def response_object(
    plan: Plan, request: dict[str, Any], status: str, output: list[dict[str, Any]], done: bool
) -> dict[str, Any]:
    """The `response` object, echoing the request's settings as OpenAI does."""
    usage = None
    if done:
        out = plan.completion_tokens
        usage = {
            "input_tokens": plan.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": plan.prompt_tokens + out,
        }
    incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
    return {
        "id": plan.id,
        "object": "response",
        "created_at": plan.created,
        "status": status,
        "background": False,
        "completed_at": plan.created if status == "completed" else None,
        "error": None,
        "incomplete_details": incomplete,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": plan.model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": SERVICE_TIER,
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools") or [],
        "top_logprobs": 0,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": request.get("metadata") or {},
    }


def _final_status(plan: Plan) -> str:
    return "incomplete" if plan.tool is None and plan.finish_reason == "length" else "completed"


def _item_ids(plan: Plan) -> str:
    prefix = "fc_" if plan.tool else "msg_"
    return prefix + plan.id.removeprefix("resp_")


def response_body(plan: Plan, request: dict[str, Any]) -> bytes:
    """A non-streamed Responses API body."""
    status = _final_status(plan)
    item_id = _item_ids(plan)
    if plan.tool is None:
        output = [_message_item(item_id, status, mock_text(plan.n_tokens))]
    else:
        output = [_function_item(plan.tool, item_id, "completed", plan.tool.arguments)]
    return pretty(response_object(plan, request, status, output, done=True))


def response_events(plan: Plan, request: dict[str, Any]) -> Iterator[bytes | Pace]:
    """The Responses API event stream: created ... deltas ... completed (or incomplete)."""
    seq = 0

    def event(kind: str, fields: dict[str, Any]) -> bytes:
        nonlocal seq
        fields["sequence_number"] = seq
        seq += 1
        payload = {"type": kind} | {key: fields[key] for key in sorted(fields)}
        return sse_event(kind, ENCODER.encode(payload))

    yield event("response.created", {"response": response_object(plan, request, "in_progress", [], False)})
    yield event(
        "response.in_progress", {"response": response_object(plan, request, "in_progress", [], False)}
    )
    item_id = _item_ids(plan)
    status = _final_status(plan)
    if plan.tool is None:
        yield from _text_events(plan, event, item_id)
        item = _message_item(item_id, status, mock_text(plan.n_tokens))
    else:
        yield from _function_events(plan.tool, event, item_id)
        item = _function_item(plan.tool, item_id, "completed", plan.tool.arguments)
    yield event("response.output_item.done", {"item": item, "output_index": 0})
    final = response_object(plan, request, status, [item], done=True)
    yield event(f"response.{status}", {"response": final})


_Emit = Callable[[str, dict[str, Any]], bytes]


def _text_events(plan: Plan, event: _Emit, item_id: str) -> Iterator[bytes | Pace]:
    yield event(
        "response.output_item.added", {"item": _message_item(item_id, "in_progress", None), "output_index": 0}
    )
    part = {"content_index": 0, "item_id": item_id, "output_index": 0}
    yield event("response.content_part.added", {**part, "part": _output_text("")})
    for i in range(plan.n_tokens):
        yield PACE
        yield event("response.output_text.delta", {**part, "delta": mock_token(i), "logprobs": []})
    text = mock_text(plan.n_tokens)
    yield event("response.output_text.done", {**part, "logprobs": [], "text": text})
    yield event("response.content_part.done", {**part, "part": _output_text(text)})


def _function_events(tool: ToolPlan, event: _Emit, item_id: str) -> Iterator[bytes | Pace]:
    yield event(
        "response.output_item.added",
        {"item": _function_item(tool, item_id, "in_progress", ""), "output_index": 0},
    )
    where = {"item_id": item_id, "output_index": 0}
    for fragment in tool.fragments:
        yield PACE
        yield event("response.function_call_arguments.delta", {**where, "delta": fragment})
    yield event("response.function_call_arguments.done", {**where, "arguments": tool.arguments})
