"""Masking of OpenAI event streams, where a secret arrives spread over many delta events.

Each delta field (chat ``choices[i].delta.content``/``reasoning``/``refusal``, a tool call's
``function.arguments``, completions ``choices[i].text``, Responses API ``*.delta`` events) is one text
stream across events, masked by its own ``StreamMasker``: an event carries only the decided part of its
delta, the undecided tail moves on to the next event of that stream. A stream is finished (its tail
released) in the event that carries its choice's ``finish_reason``, or else in an event of its own,
made from the stream's last event, placed before the first event that carries no delta (the finish or
usage chunk, ``[DONE]``, a ``*.done`` event) or at the end of the body. Every other string is masked on
its own; blocks that are not JSON events are masked as text. A block is rewritten only when something
in it changed; otherwise its bytes pass as they came.

Worst-case added delay: the incomplete event at the end of a read (events end at a blank line), plus
per delta stream the held tail, which is at most the longest match a rule allows and in prose usually
the last word.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec

from parsers.masking.bodies import Hit, TextMasker, mask_body
from parsers.masking.detectors import Rule
from parsers.masking.engine import DEFAULT_MAX_HOLD_CHARS, StreamMasker, mask_text

Path = tuple[str | int, ...]
StreamKey = tuple[str | int | None, ...]

_BLOCK_END = re.compile(rb"(?:\r\n|\r|\n)(?:\r\n|\r|\n)")
_LINE = re.compile(rb"\r\n|\r|\n")
_CHOICE_TEXT = {
    ("delta", "content"),
    ("delta", "reasoning_content"),
    ("delta", "reasoning"),
    ("delta", "refusal"),
}
_KEPT_NESTED = ("index", "type")  # what a made-up flush event keeps of each object on the path
DEFAULT_MAX_EVENT_BYTES = 1 << 20


class _Stream:
    def __init__(self, rules: Sequence[Rule], max_hold_chars: int, label: str) -> None:
        self.masker = StreamMasker(rules, max_hold_chars=max_hold_chars)
        self.label = label
        self.template: tuple[dict[str, Any], Path] = ({}, ())
        self.seen_edits = 0


class SseMasker:
    """Masks an OpenAI ``text/event-stream`` body fed in pieces."""

    def __init__(
        self,
        rules: Sequence[Rule],
        *,
        max_hold_chars: int = DEFAULT_MAX_HOLD_CHARS,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self._rules = rules
        self._max_hold = max_hold_chars
        self._max_event = max_event_bytes
        self._buf = bytearray()
        self._offset = 0  # body offset of _buf[0]
        self._streams: dict[StreamKey, _Stream] = {}
        self._hits: list[tuple[Hit, str]] = []  # with the stream or field it was in

    def take_hits(self) -> list[Hit]:
        return [hit for hit, _ in self.take_field_hits()]

    def take_field_hits(self) -> list[tuple[Hit, str]]:
        hits, self._hits = self._hits, []
        return hits

    def feed(self, data: bytes) -> bytes:
        buf = self._buf
        buf += data
        out = bytearray()
        start = 0
        while (end := _BLOCK_END.search(buf, start)) is not None:
            if end.end() == len(buf) and buf[-1] == 0x0D:
                break  # a CR at the very end may be the first half of a CRLF
            out += self._block(bytes(buf[start : end.end()]), self._offset + start)
            start = end.end()
        if start:
            del buf[:start]
            self._offset += start
        if len(buf) > self._max_event:
            # No event is this large: mask what is held as text on its own and stop holding it.
            out += self._text(bytes(buf), self._offset)
            self._offset += len(buf)
            buf.clear()
        return bytes(out)

    def finish(self) -> bytes:
        out = bytearray(self._flush_streams())
        if self._buf:
            out += self._text(bytes(self._buf), self._offset)
            self._offset += len(self._buf)
            self._buf.clear()
        return bytes(out)

    # --- one event ---------------------------------------------------------------------------------

    def _block(self, block: bytes, offset: int) -> bytes:
        data = _json_data(block)
        doc: Any = None
        if data is not None:
            try:
                doc = msgspec.json.decode(data)
            except msgspec.DecodeError:
                doc = None
        if not isinstance(doc, dict) or data is None:
            return self._flush_streams() + self._text(block, offset)
        strings = list(_string_values(data))
        keys = [_stream_key(doc, path) for path, _, _ in strings]
        out = bytearray()
        if all(key is None for key in keys):
            out += self._flush_streams()
        finished = _finished_choices(doc)
        pieces: list[bytes] = []
        at = 0
        changed = False
        for (path, start, end), key in zip(strings, keys, strict=True):
            value = msgspec.json.decode(data[start:end])
            if not isinstance(value, str):
                continue
            if key is None:
                masked, edits = mask_text(self._rules, value)
                self._hits += [(Hit(e.rule, offset), _label(path)) for e in edits]
            else:
                masked = self._delta(key, path, doc, value, offset, final=key[1] in finished)
            if masked != value:
                changed = True
                pieces += [data[at:start], msgspec.json.encode(masked)]
                at = end
        if not changed:
            return bytes(out) + block
        pieces.append(data[at:])
        out += _event_block(block, b"".join(pieces))
        return bytes(out)

    def _delta(
        self, key: StreamKey, path: Path, doc: dict[str, Any], value: str, offset: int, *, final: bool
    ) -> str:
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = _Stream(self._rules, self._max_hold, _label(path))
        stream.template = (doc, path)
        masked = stream.masker.feed(value)
        if final:
            masked += stream.masker.finish()
            del self._streams[key]
        self._note_edits(stream, offset)
        return masked

    def _note_edits(self, stream: _Stream, offset: int) -> None:
        edits = stream.masker.edits
        self._hits += [(Hit(e.rule, offset), stream.label) for e in edits[stream.seen_edits :]]
        stream.seen_edits = len(edits)

    def _flush_streams(self) -> bytes:
        """Finish every open delta stream; each held tail goes out in an event of its own."""
        out = bytearray()
        for stream in self._streams.values():
            tail = stream.masker.finish()
            self._note_edits(stream, self._offset)
            if tail:
                doc, path = stream.template
                out += b"data: " + msgspec.json.encode(_flush_event(doc, path, tail)) + b"\n\n"
        self._streams.clear()
        return bytes(out)

    def _text(self, block: bytes, offset: int) -> bytes:
        masker = TextMasker(self._rules, max_hold_chars=len(block) + 1, start_offset=offset)
        out = mask_body(masker, block)
        self._hits += [(hit, "") for hit in masker.take_hits()]
        return out


def _json_data(block: bytes) -> bytes | None:
    """The data of a block that is one plain event (data lines, optional event/id lines), else None."""
    lines = _LINE.split(block)
    if lines[-2:] != [b"", b""] or any(not line for line in lines[:-2]):
        return None
    data: list[bytes] = []
    for line in lines[:-2]:
        field, _, value = line.partition(b":")
        if field == b"data":
            data.append(value[1:] if value[:1] == b" " else value)
        elif field not in (b"event", b"id"):
            return None
    return b"\n".join(data) if data else None


def _event_block(block: bytes, data: bytes) -> bytes:
    """``block`` with its data lines replaced by ``data`` (other lines and the line ends kept)."""
    ending = _LINE.search(block)
    eol = ending.group() if ending is not None else b"\n"
    kept = [line for line in _LINE.split(block)[:-2] if not line.startswith(b"data")]
    lines = kept + [b"data: " + line for line in data.split(b"\n")]
    return eol.join(lines) + eol + eol


def _string_values(data: bytes) -> Iterator[tuple[Path, int, int]]:
    """Each string value of a valid JSON text: its path and the span of its token (quotes included)."""
    stack: list[list[str | int]] = []  # [kind, key or index]
    expect_key = False
    at = 0
    end = len(data)
    while at < end:
        byte = data[at]
        if byte == 0x22:
            close = at + 1
            while data[close] != 0x22:
                close += 2 if data[close] == 0x5C else 1
            if expect_key:
                stack[-1][1] = msgspec.json.decode(data[at : close + 1])
                expect_key = False
            else:
                yield tuple(entry[1] for entry in stack), at, close + 1
            at = close + 1
            continue
        if byte == 0x7B:  # {
            stack.append(["o", ""])
            expect_key = True
        elif byte == 0x5B:  # [
            stack.append(["a", 0])
        elif byte in (0x7D, 0x5D):
            stack.pop()
        elif byte == 0x2C:  # ,
            top = stack[-1]
            if top[0] == "a":
                top[1] = int(top[1]) + 1
            else:
                expect_key = True
        at += 1


def _stream_key(doc: dict[str, Any], path: Path) -> StreamKey | None:
    """Which delta stream a string belongs to, or None for a string masked on its own."""
    if len(path) >= 3 and path[0] == "choices" and isinstance(path[1], int):
        choice = doc["choices"][path[1]]
        index = choice.get("index", path[1])
        rest = path[2:]
        if rest in _CHOICE_TEXT or rest == ("text",):
            return ("choice", index, *rest)
        if len(rest) == 5 and rest[:2] == ("delta", "tool_calls") and rest[3:] == ("function", "arguments"):
            call = choice["delta"]["tool_calls"][rest[2]]
            return ("choice", index, "tool_calls", call.get("index", rest[2]), "arguments")
    kind = doc.get("type")
    if path == ("delta",) and isinstance(kind, str) and kind.endswith(".delta"):
        return ("event", None, kind, doc.get("item_id"), doc.get("output_index"), doc.get("content_index"))
    return None


def _finished_choices(doc: dict[str, Any]) -> set[Any]:
    choices = doc.get("choices")
    if not isinstance(choices, list):
        return set()
    return {
        c.get("index", i) for i, c in enumerate(choices) if isinstance(c, dict) and c.get("finish_reason")
    }


def _flush_event(doc: dict[str, Any], path: Path, text: str) -> dict[str, Any]:
    """An event like ``doc`` carrying only ``text`` at ``path``: its top-level scalars, and on the way
    down each object's index/id/type (a chat choice gets ``finish_reason: null``)."""
    out: dict[str, Any] = {k: v for k, v in doc.items() if not isinstance(v, dict | list) and k != path[0]}
    node: Any = out
    source: Any = doc
    for step, following in zip(path, (*path[1:], None), strict=True):
        source = source[step]
        if following is None:
            child: Any = text
        elif isinstance(following, int):
            child = []
        else:
            child = {k: source[k] for k in _KEPT_NESTED if k in source} if isinstance(source, dict) else {}
            if isinstance(source, dict) and "finish_reason" in source:
                child["finish_reason"] = None
        if isinstance(node, list):
            node.append(child)
        else:
            node[step] = child
        node = child
    return out


def _label(path: Path) -> str:
    """``choices[0].delta.content``: where in the event a string was."""
    return "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in path).lstrip(".")


__all__ = ["DEFAULT_MAX_EVENT_BYTES", "SseMasker"]
