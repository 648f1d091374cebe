"""Holding tool calls in an OpenAI chat-completion event stream until someone decides, sans-IO.

Text keeps flowing: an event that carries only text (content deltas) is forwarded at once. A tool call
whose function name a rule's glob matches is held from its first event: its events, and from then on
every event that is not pure text (later calls, the ``finish_reason`` event, usage, ``[DONE]``), wait in
arrival order. Its arguments are complete when the next call of its choice starts, its choice finishes,
or the stream ends; then its rule's regex decides: a call no rule matches clears, a matched call waits
for ``approve()`` or ``deny()``. With nothing left undecided the held bytes go out exactly as received.
A denial replaces everything held with an assistant text delta, a ``finish_reason: "stop"`` chunk and
``[DONE]``; the gate then drops the rest of the upstream stream.

Responses API streams are gated the same way: a ``function_call`` output item is a call (its arguments
complete at ``response.function_call_arguments.done``), and once anything is held every later event waits
too (the SDK builds its output list in event order). Their denial is a message output item with the text,
then ``response.completed``.
"""

from __future__ import annotations

import enum
import re
from typing import Any

import msgspec

from parsers.approvals.calls import ToolCallSeen
from parsers.approvals.rules import ApprovalRule, first_match

_EOL = re.compile(rb"\r\n|\r|\n")
_TEMPLATE_FIELDS = ("id", "object", "created", "model", "system_fingerprint")


class _Kind(enum.Enum):
    TEXT = enum.auto()  # a JSON event with no tool call and no finish: always forwarded at once
    OTHER = enum.auto()  # anything else: held while anything is held or undecided


class _CallState(enum.Enum):
    OPEN = enum.auto()  # arguments still arriving
    MATCHED = enum.auto()  # complete, a rule matched, waiting for a decision
    APPROVED = enum.auto()
    CLEAR = enum.auto()  # complete, no rule matched


class _Call:
    __slots__ = ("arguments", "call_id", "choice", "index", "name", "rule", "state")

    def __init__(self, choice: int, index: int) -> None:
        self.choice = choice
        self.index = index
        self.call_id = ""
        self.name = ""
        self.arguments: list[str] = []
        self.state = _CallState.OPEN
        self.rule: ApprovalRule | None = None


class _Mode(enum.Enum):
    GATING = enum.auto()
    DENIED = enum.auto()  # the replacement went out; everything after is dropped


class StreamGate:
    """One response's event stream: bytes in, bytes to forward out, matched calls to decide."""

    def __init__(self, rules: tuple[ApprovalRule, ...]) -> None:
        self._rules = rules
        self._mode = _Mode.GATING
        self._buf = bytearray()
        self._line_start = 0  # where the line being scanned starts in _buf
        self._held = bytearray()
        self._calls: dict[tuple[int, int], _Call] = {}
        self._ready: list[ToolCallSeen] = []  # matched calls not yet handed out by take_matches
        self._template: dict[str, Any] = {}  # id, model... of the first chunk, for the replacement
        self._choices: dict[int, bool] = {}  # choice index -> a role delta went out for it
        self._finished_out: set[int] = set()  # choices whose finish_reason went out
        self._response: dict[str, Any] | None = None  # Responses API: the response object as last announced
        self._items_added = 0  # Responses API: output items the client has seen start
        self._items_done: list[Any] = []  # ...and finish
        self._sequence = -1  # the last sequence_number the client got

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def feed(self, data: bytes) -> bytes:
        """The bytes to forward now (possibly none)."""
        if self._mode is _Mode.DENIED:
            return b""
        self._buf += data
        return self._blocks(final=False)

    def finish(self) -> bytes:
        """The upstream body ended: every open call is complete. Returns what may go out now."""
        if self._mode is _Mode.DENIED:
            return b""
        out = self._blocks(final=True)
        if self._buf:  # an unterminated last event: held or passed like any other
            block = bytes(self._buf)
            self._buf.clear()
            self._line_start = 0
            out += self._event(block, _Kind.OTHER)
        for call in self._calls.values():
            if call.state is _CallState.OPEN:
                self._complete(call)
        return out + self._settle()

    def take_matches(self) -> list[ToolCallSeen]:
        """Calls that became complete and matched a rule since the last call, in stream order."""
        ready, self._ready = self._ready, []
        return ready

    def approve(self, call: ToolCallSeen) -> bytes:
        """Release ``call``; returns the held bytes once nothing else is undecided."""
        if self._mode is _Mode.DENIED:
            return b""
        held = self._calls.get((call.choice, call.index))
        if held is not None and held.state is _CallState.MATCHED:
            held.state = _CallState.APPROVED
        return self._settle()

    def deny(self, text: str) -> bytes:
        """Drop everything held (and everything still to come); the replacement events to forward."""
        if self._mode is _Mode.DENIED:
            return b""
        self._mode = _Mode.DENIED
        self._held.clear()
        self._buf.clear()
        if self._response is not None:
            return self._responses_denial(text)
        denied = {call.choice for call in self._calls.values() if call.state is not _CallState.CLEAR}
        choices = sorted(set(self._choices) | denied) or [0]
        out = bytearray()
        for choice in choices:
            if choice in self._finished_out:
                continue
            delta: dict[str, Any] = {"content": text if choice in denied or len(choices) == 1 else ""}
            if not self._choices.get(choice):
                delta = {"role": "assistant", **delta}
            out += self._chunk({"index": choice, "delta": delta, "finish_reason": None})
            out += self._chunk({"index": choice, "delta": {}, "finish_reason": "stop"})
        return bytes(out + b"data: [DONE]\n\n")

    # --- events ------------------------------------------------------------------------------------

    def _blocks(self, *, final: bool) -> bytes:
        """Split complete events (a block ends at an empty line) off the buffer and gate each."""
        buf = self._buf
        out = bytearray()
        start = 0  # where the current block starts
        pos = self._line_start
        while (match := _EOL.search(buf, pos)) is not None:
            if match.group() == b"\r" and match.end() == len(buf) and not final:
                break  # may be the first half of a CRLF
            empty = match.start() == pos
            pos = match.end()
            if empty:
                out += self._event(bytes(buf[start:pos]), None)
                if self._mode is _Mode.DENIED:
                    return bytes(out)
                start = pos
        if start:
            del buf[:start]
        self._line_start = pos - start
        return bytes(out)

    def _event(self, block: bytes, kind: _Kind | None) -> bytes:
        if kind is None:
            kind = self._observe(block)
        if kind is _Kind.TEXT or not (self._held or self._undecided()):
            self._sent(block)
            return block
        self._held += block
        return self._settle()  # this event may have cleared the last undecided call

    def _observe(self, block: bytes) -> _Kind:
        """Update the calls from one event; whether it is pure text."""
        doc = _event_json(block)
        if not isinstance(doc, dict):
            return _Kind.OTHER
        if isinstance(doc.get("type"), str) and "choices" not in doc:
            self._responses_event(doc)
            return _Kind.OTHER
        if not self._template:
            self._template = {key: doc[key] for key in _TEMPLATE_FIELDS if key in doc}
        choices = doc.get("choices")
        if not isinstance(choices, list) or not choices:
            return _Kind.OTHER
        kind = _Kind.TEXT
        for position, choice in enumerate(choices):
            if not isinstance(choice, dict):
                return _Kind.OTHER
            index = choice.get("index", position)
            choice_index = index if isinstance(index, int) else position
            self._choices.setdefault(choice_index, False)
            delta = choice.get("delta")
            calls = delta.get("tool_calls") if isinstance(delta, dict) else None
            if isinstance(delta, dict) and delta.get("function_call") is not None:
                kind = _Kind.OTHER  # the legacy single function call: held with the rest
            if isinstance(calls, list) and calls:
                kind = _Kind.OTHER
                for n, call in enumerate(calls):
                    self._call_delta(choice_index, call, n)
            if choice.get("finish_reason") is not None:
                kind = _Kind.OTHER
                for call in self._calls.values():
                    if call.choice == choice_index and call.state is _CallState.OPEN:
                        self._complete(call)
        return kind

    def _call_delta(self, choice: int, delta: Any, position: int) -> None:
        if not isinstance(delta, dict):
            return
        index = delta.get("index", position)
        if not isinstance(index, int):
            index = position
        for earlier in self._calls.values():  # OpenAI streams a choice's calls one after another
            if earlier.choice == choice and earlier.index < index and earlier.state is _CallState.OPEN:
                self._complete(earlier)
        call = self._calls.get((choice, index))
        if call is None:
            call = self._calls[(choice, index)] = _Call(choice, index)
        if isinstance(delta.get("id"), str):
            call.call_id = delta["id"]
        function = delta.get("function")
        if isinstance(function, dict):
            if isinstance(function.get("name"), str):
                call.name += function["name"]
            if isinstance(function.get("arguments"), str):
                call.arguments.append(function["arguments"])

    def _responses_event(self, doc: dict[str, Any]) -> None:
        """A Responses API event: function_call items are the calls."""
        kind = doc["type"]
        response = doc.get("response")
        if isinstance(response, dict):
            self._response = response
        index = doc.get("output_index")
        item = doc.get("item")
        call = self._calls.get((index, 0)) if isinstance(index, int) else None
        if (
            kind == "response.output_item.added"
            and isinstance(item, dict)
            and item.get("type") == "function_call"
        ):
            if isinstance(index, int):
                call = self._calls[(index, 0)] = _Call(index, 0)
                call.call_id = item["call_id"] if isinstance(item.get("call_id"), str) else ""
                call.name = item["name"] if isinstance(item.get("name"), str) else ""
                call.arguments = [item["arguments"]] if isinstance(item.get("arguments"), str) else []
        elif call is None or call.state is not _CallState.OPEN:
            if kind in ("response.completed", "response.incomplete", "response.failed"):
                for each in self._calls.values():
                    if each.state is _CallState.OPEN:
                        self._complete(each)
        elif kind == "response.function_call_arguments.delta" and isinstance(doc.get("delta"), str):
            call.arguments.append(doc["delta"])
        elif kind == "response.function_call_arguments.done" and isinstance(doc.get("arguments"), str):
            call.arguments = [doc["arguments"]]
            self._complete(call)
        elif kind == "response.output_item.done" and isinstance(item, dict):
            if isinstance(item.get("arguments"), str):
                call.arguments = [item["arguments"]]
            self._complete(call)

    def _responses_denial(self, text: str) -> bytes:
        """A message output item saying ``text``, then ``response.completed`` with what the client saw."""
        index = self._items_added
        response = self._response or {}
        message_id = "msg_wardgate_" + str(response.get("id", "")).removeprefix("resp_")
        part = {"type": "output_text", "text": text, "annotations": []}
        item = {
            "type": "message",
            "id": message_id,
            "status": "completed",
            "role": "assistant",
            "content": [part],
        }
        at = {"item_id": message_id, "output_index": index, "content_index": 0}
        started = {**item, "status": "in_progress", "content": []}
        events: list[tuple[str, dict[str, Any]]] = [
            ("response.output_item.added", {"output_index": index, "item": started}),
            ("response.content_part.added", {**at, "part": {**part, "text": ""}}),
            ("response.output_text.delta", {**at, "delta": text}),
            ("response.output_text.done", {**at, "text": text}),
            ("response.content_part.done", {**at, "part": part}),
            ("response.output_item.done", {"output_index": index, "item": item}),
            (
                "response.completed",
                {"response": {**response, "status": "completed", "output": [*self._items_done, item]}},
            ),
        ]
        out = bytearray()
        for kind, fields in events:
            doc: dict[str, Any] = {"type": kind, **fields}
            if self._sequence >= 0:
                self._sequence += 1
                doc["sequence_number"] = self._sequence
            out += b"event: " + kind.encode() + b"\ndata: " + msgspec.json.encode(doc) + b"\n\n"
        return bytes(out)

    def _complete(self, call: _Call) -> None:
        arguments = "".join(call.arguments)
        call.arguments = [arguments]
        call.rule = first_match(self._rules, call.name, arguments)
        if call.rule is None:
            call.state = _CallState.CLEAR
            return
        call.state = _CallState.MATCHED
        self._ready.append(
            ToolCallSeen(
                choice=call.choice,
                index=call.index,
                call_id=call.call_id,
                name=call.name,
                arguments=arguments,
                rule=call.rule,
            )
        )

    def _undecided(self) -> bool:
        """A call that may still need a decision: open with a name a rule could match, or matched."""
        for call in self._calls.values():
            if call.state is _CallState.MATCHED:
                return True
            if call.state is _CallState.OPEN and any(rule.could_match(call.name) for rule in self._rules):
                return True
        return False

    def _settle(self) -> bytes:
        """Everything held, once nothing is undecided."""
        if not self._held or self._undecided():
            return b""
        out = bytes(self._held)
        self._held.clear()
        for block in _split_blocks(out):
            self._sent(block)
        return out

    def _sent(self, block: bytes) -> None:
        """Note what the client has now seen: role deltas and finish reasons, per choice."""
        doc = _event_json(block)
        if isinstance(doc, dict) and isinstance(doc.get("type"), str) and "choices" not in doc:
            if isinstance(doc.get("sequence_number"), int):
                self._sequence = max(self._sequence, doc["sequence_number"])
            if doc["type"] == "response.output_item.added":
                self._items_added += 1
            elif doc["type"] == "response.output_item.done":
                self._items_done.append(doc.get("item"))
            return
        choices = doc.get("choices") if isinstance(doc, dict) else None
        for position, choice in enumerate(choices if isinstance(choices, list) else []):
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", position)
            index = index if isinstance(index, int) else position
            delta = choice.get("delta")
            if isinstance(delta, dict) and delta.get("role"):
                self._choices[index] = True
            if choice.get("finish_reason") is not None:
                self._finished_out.add(index)

    def _chunk(self, choice: dict[str, Any]) -> bytes:
        doc = {**self._template, "object": "chat.completion.chunk", "choices": [choice]}
        return b"data: " + msgspec.json.encode(doc) + b"\n\n"


def _event_json(block: bytes) -> Any:
    """The decoded JSON of an event's data lines, or None (a comment, ``[DONE]``, not JSON)."""
    data: list[bytes] = []
    for line in _EOL.split(block):
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value[:1] == b" " else value)
    if not data or data == [b"[DONE]"]:
        return None
    try:
        return msgspec.json.decode(b"\n".join(data))
    except (msgspec.DecodeError, RecursionError):
        return None


def _split_blocks(data: bytes) -> list[bytes]:
    """Whole events in ``data`` (each ends at an empty line; a trailing partial block is one more)."""
    out: list[bytes] = []
    start = pos = 0
    while (match := _EOL.search(data, pos)) is not None:
        empty = match.start() == pos
        pos = match.end()
        if empty:
            out.append(data[start:pos])
            start = pos
    if start < len(data):
        out.append(data[start:])
    return out


__all__ = ["StreamGate"]
