"""Masking of OpenAI event streams, where a secret arrives spread over many delta events.

Each delta field (chat ``choices[i].delta.content``/``reasoning``/``refusal``, a tool call's
``function.arguments``, completions ``choices[i].text``, Responses API ``*.delta`` events) is one text
stream across events, scanned as one text. Whole events are held, in order, until the text they carry
is decided; then each goes out exactly as it came when nothing in it was masked, or with its strings
rewritten (a secret spread over five events becomes ``[MASKED:rule]`` in the first, the rest of it
removed from the others). A stream is finished in the event that carries its choice's ``finish_reason``,
or before the first event that carries no delta (the finish or usage chunk, ``[DONE]``, a ``*.done``
event), or at the end of the body. Every other string is masked on its own; blocks that are not JSON
events are masked as text.

Worst-case added delay: the incomplete event at the end of a read (events end at a blank line), plus
the events that carry a delta stream's undecided tail: at most the longest match a rule allows
(``max_hold_chars`` caps it), in prose usually the last word, so typically one event.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from typing import Any, NamedTuple

import msgspec

from parsers.masking.bodies import Hit, TextMasker, mask_body
from parsers.masking.engine import DEFAULT_MAX_HOLD_CHARS, Edit, Rules, TextScan, mask_text

Path = tuple[str | int, ...]
StreamKey = tuple[str | int | None, ...]

_BLOCK_END = re.compile(rb"(?:\r\n|\r|\n)(?:\r\n|\r|\n)")
_LINE = re.compile(rb"\r\n|\r|\n")
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[{}\[\],]')  # strings and the structure around them
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # in valid JSON, each key and string value once
_CHOICE_TEXT = {
    ("delta", "content"),
    ("delta", "reasoning_content"),
    ("delta", "reasoning"),
    ("delta", "refusal"),
}
DEFAULT_MAX_EVENT_BYTES = 1 << 20
_KNOWN_MAX_CHARS = 256
_KNOWN_MAX_ENTRIES = 256


class _Stream:
    """One delta field's text across events, and every edit decided in it (stream offsets)."""

    def __init__(self, rules: Rules, max_hold_chars: int, label: str) -> None:
        self.scan = TextScan(rules, max_hold_chars=max_hold_chars)
        self.label = label
        self.length = 0  # characters fed so far
        self.edits: list[Edit] = []

    def feed(self, text: str, *, final: bool) -> tuple[int, int]:
        """Add one event's piece; returns its span in the stream."""
        start = self.length
        self.length += len(text)
        self.scan.add(text)
        self.edits += self.scan.scan(final=final)
        self.scan.trim()
        return start, self.length

    def finish(self) -> None:
        self.edits += self.scan.scan(final=True)

    def rendered(self, value: str, start: int, end: int) -> tuple[str, list[str]]:
        """The piece ``value`` (stream span ``[start, end)``) as masked, and the rules that start in it."""
        if not self.edits or self.edits[-1].end <= start:
            return value, []  # edits are in order and do not overlap: none reaches this piece
        out: list[str] = []
        rules: list[str] = []
        at = start
        for edit in self.edits:
            if edit.end <= start or edit.start >= end:
                continue
            if edit.start >= at:
                out.append(value[at - start : edit.start - start])
            if edit.start >= start:
                out.append(edit.text)
                rules.append(edit.rule)
            at = min(max(at, edit.end), end)
        out.append(value[at - start :])
        return "".join(out), rules


class _Piece(NamedTuple):
    order: int  # which string value of the event, in document order
    value: str
    stream: _Stream | None  # None: a string masked on its own
    span: tuple[int, int]  # in the stream
    path: Path
    alone: tuple[str, list[str]] | None = None  # a string masked on its own: the result and the rules


class _Event(NamedTuple):
    block: bytes
    offset: int  # body offset of the block
    data: bytes  # the JSON data, when the block is one plain JSON event
    pieces: list[_Piece]
    strings: int  # string values in the event


class _Template(NamedTuple):
    """A chat chunk whose one stream string is its ``delta.content``: the bytes around that string."""

    before: bytes
    after: bytes
    key: StreamKey
    path: Path
    order: int
    strings: int


class SseMasker:
    """Masks an OpenAI ``text/event-stream`` body fed in pieces."""

    def __init__(
        self,
        rules: Rules,
        *,
        max_hold_chars: int = DEFAULT_MAX_HOLD_CHARS,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self._rules = tuple(rules)
        self._max_hold = max_hold_chars
        self._max_event = max_event_bytes
        self._buf = bytearray()
        self._offset = 0  # body offset of _buf[0]
        self._streams: dict[StreamKey, _Stream] = {}
        self._events: deque[_Event] = deque()  # complete events not yet released, in order
        self._hits: list[tuple[Hit, str]] = []  # with the stream or field it was in
        self._known: dict[str, tuple[str, list[str]]] = {}
        self._template: _Template | None = None

    def take_hits(self) -> list[Hit]:
        return [hit for hit, _ in self.take_field_hits()]

    def take_field_hits(self) -> list[tuple[Hit, str]]:
        hits, self._hits = self._hits, []
        return hits

    def feed(self, data: bytes) -> bytes:
        buf = self._buf
        if not buf and data.endswith(b"\n\n") and (end := _BLOCK_END.search(data)) and end.end() == len(data):
            self._offset += len(data)  # the usual read: one whole event
            return self._block(data, self._offset - len(data))
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
            # No event is this large: finish what is open, mask what is held as text, stop holding it.
            out += self._finish_streams()
            out += self._text(bytes(buf), self._offset)
            self._offset += len(buf)
            buf.clear()
        return bytes(out)

    def finish(self) -> bytes:
        out = bytearray(self._finish_streams())
        if self._buf:
            out += self._text(bytes(self._buf), self._offset)
            self._offset += len(self._buf)
            self._buf.clear()
        return bytes(out)

    # --- one event ---------------------------------------------------------------------------------

    def _block(self, block: bytes, offset: int) -> bytes:
        template = self._template
        if template is not None and (found := self._like_template(block, offset, template)) is not None:
            return found
        data = _json_data(block)
        doc: Any = None
        if data is not None:
            try:
                doc = msgspec.json.decode(data)
            except msgspec.DecodeError:
                doc = None
        if not isinstance(doc, dict) or data is None:
            return self._finish_streams() + self._text(block, offset)
        # The decoded document says where each string is; token positions are needed only to rewrite.
        strings, keys = _strings_and_keys(doc)
        if len(_STRING.findall(data)) != _string_count(doc):
            # Duplicate keys: decoding kept only the last value, and an earlier one (a secret, perhaps)
            # would pass unseen. Such an event is masked as text; a template is never made from it.
            return self._finish_streams() + self._text(block, offset)
        before = b"" if any(keys) else self._finish_streams()
        finished = _finished_choices(doc)
        pieces: list[_Piece] = []
        for index, ((path, value), key) in enumerate(zip(strings, keys, strict=True)):
            if key is None:
                alone = self._standalone(value)
                if alone[1] or alone[0] != value:  # strings left as they are need no piece
                    pieces.append(_Piece(index, value, None, (0, len(value)), path, alone))
                continue
            stream = self._streams.get(key)
            if stream is None:
                stream = self._streams[key] = _Stream(self._rules, self._max_hold, _label(path))
            span = stream.feed(value, final=key[1] in finished)
            if key[1] in finished:
                del self._streams[key]
            pieces.append(_Piece(index, value, stream, span, path))
        self._events.append(_Event(block, offset, data, pieces, len(strings)))
        if len(pieces) == 1 and not before and not finished:
            self._remember(block, data, pieces[0], len(strings))
        return before + self._release() if before else self._release()

    def _remember(self, block: bytes, data: bytes, piece: _Piece, strings: int) -> None:
        """Keep the bytes around the delta text of a chunk whose only piece is that text: the next
        chunks usually differ from it in that text alone."""
        path = piece.path
        if piece.stream is None or len(path) != 4 or path[2:] != ("delta", "content"):
            return
        if not _one_data_line(block) or data.count(b'"content":') != 1:
            return
        match = _DELTA_CONTENT.search(block)
        if match is None or _decoded(match.group(1)) != piece.value:
            return
        start, end = match.span(1)
        key = next(key for key, stream in self._streams.items() if stream is piece.stream)
        self._template = _Template(block[:start], block[end:], key, path, piece.order, strings)

    def _like_template(self, block: bytes, offset: int, template: _Template) -> bytes | None:
        """The chunk that differs from the template only in its delta text (valid JSON): that text fed
        to its stream as the full walk would, without decoding and walking the event. Else None."""
        match = _DELTA_CONTENT.match(block, len(template.before) - _DELTA_CONTENT_PREFIX)
        if match is None:
            return None
        start, end = match.span(1)
        if len(block) - end != len(template.after):
            return None
        if not (block.startswith(template.before) and block.endswith(template.after)):
            return None
        value = _decoded(block[start:end])
        if value is None:
            return None
        stream = self._streams.get(template.key)
        if stream is None:
            stream = self._streams[template.key] = _Stream(self._rules, self._max_hold, _label(template.path))
        span = stream.feed(value, final=False)
        piece = _Piece(template.order, value, stream, span, template.path)
        self._events.append(_Event(block, offset, block[6:-2], [piece], template.strings))
        return self._release()

    def _release(self) -> bytes:
        """Every event at the head of the queue whose delta text is all decided, masked or as it came."""
        out: list[bytes] = []
        events = self._events
        while events and _decided(events[0]):
            out.append(self._render(events.popleft()))
        return out[0] if len(out) == 1 else b"".join(out)

    def _render(self, event: _Event) -> bytes:
        changed: list[tuple[int, str]] = []
        for piece in event.pieces:
            if piece.stream is None:
                masked, rules = piece.alone or self._standalone(piece.value)
            else:
                masked, rules = piece.stream.rendered(piece.value, *piece.span)
            self._hits += [(Hit(rule, event.offset), _label(piece.path)) for rule in rules]
            if masked != piece.value:
                changed.append((piece.order, masked))
        if not changed:
            return event.block
        tokens = list(_string_values(event.data))  # as many as decoded: duplicate keys went to _text
        parts: list[bytes] = []
        at = 0
        for index, masked in changed:
            _, start, end = tokens[index]
            parts += [event.data[at:start], msgspec.json.encode(masked)]
            at = end
        parts.append(event.data[at:])
        return _event_block(event.block, b"".join(parts))

    def _standalone(self, value: str) -> tuple[str, list[str]]:
        """A string masked on its own. Ids and model names repeat in every event: remember short ones."""
        known = self._known.get(value)
        if known is None:
            masked, edits = mask_text(self._rules, value)
            known = (masked, [edit.rule for edit in edits])
            if len(value) <= _KNOWN_MAX_CHARS:
                if len(self._known) >= _KNOWN_MAX_ENTRIES:
                    self._known.clear()
                self._known[value] = known
        return known

    def _finish_streams(self) -> bytes:
        """Finish every open delta stream and release every held event."""
        for stream in self._streams.values():
            stream.finish()
        self._streams.clear()
        out = self._release()
        if self._events:  # cannot happen: finished streams are decided to their end
            raise AssertionError("sse masker: events held after every stream finished")
        return out

    def _text(self, block: bytes, offset: int) -> bytes:
        masker = TextMasker(self._rules, max_hold_chars=len(block) + 1, start_offset=offset)
        out = mask_body(masker, block)
        self._hits += [(hit, "") for hit in masker.take_hits()]
        return out


# The delta text of a chat chunk: the JSON string after ``"delta":{"content":`` (no raw control bytes).
_DELTA_CONTENT = re.compile(rb'"delta":\{"content":("(?:[^"\\\x00-\x1f]|\\.)*")')
_DELTA_CONTENT_PREFIX = len(b'"delta":{"content":')


def _decoded(token: bytes) -> str | None:
    """A JSON string token's value, or None when it is not one."""
    try:
        value = msgspec.json.decode(token)
    except msgspec.DecodeError:
        return None
    return value if isinstance(value, str) else None


def _one_data_line(block: bytes) -> bool:
    """The block is ``data: ...`` and its blank line, nothing else."""
    return (
        block.startswith(b"data: ")
        and block.endswith(b"\n\n")
        and block.count(b"\n") == 2
        and b"\r" not in block
    )


def _decided(event: _Event) -> bool:
    """The text of every delta stream this event carries is decided."""
    for piece in event.pieces:
        if piece.stream is not None and piece.stream.scan.decided < piece.span[1]:
            return False
    return True


def _json_data(block: bytes) -> bytes | None:
    """The data of a block that is one plain event (data lines, optional event/id lines), else None."""
    if _one_data_line(block):
        return block[6:-2]  # the usual event
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
    for token in _TOKEN.finditer(data):
        at = token.start()
        byte = data[at]
        if byte == 0x22:
            if expect_key:
                stack[-1][1] = msgspec.json.decode(token.group())
                expect_key = False
            else:
                yield tuple(entry[1] for entry in stack), at, token.end()
        elif byte == 0x7B:  # {
            stack.append(["o", ""])
            expect_key = True
        elif byte == 0x5B:  # [
            stack.append(["a", 0])
        elif byte == 0x2C:  # ,
            top = stack[-1]
            if top[0] == "a":
                top[1] = int(top[1]) + 1
            else:
                expect_key = True
        else:  # } or ]
            stack.pop()


def _string_count(node: dict[str, Any] | list[Any]) -> int:
    """Keys and string values in a decoded document: fewer than its text holds only if keys repeat."""
    count = len(node) if isinstance(node, dict) else 0
    for value in node.values() if isinstance(node, dict) else node:
        if isinstance(value, str):
            count += 1
        elif isinstance(value, dict | list):
            count += _string_count(value)
    return count


def _strings(
    node: dict[str, Any] | list[Any], path: Path, out: list[tuple[Path, str]]
) -> list[tuple[Path, str]]:
    """Every string value inside a decoded object or array with its path, in document order."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        if isinstance(value, str):
            out.append(((*path, key), value))
        elif isinstance(value, dict | list):
            _strings(value, (*path, key), out)
    return out


def _strings_and_keys(doc: dict[str, Any]) -> tuple[list[tuple[Path, str]], list[StreamKey | None]]:
    """``_strings`` of the document and the ``_stream_key`` of each, in document order. Only strings
    under ``choices`` and a top-level ``delta`` can be in a stream; the top level is walked here."""
    strings: list[tuple[Path, str]] = []
    keys: list[StreamKey | None] = []
    for key, value in doc.items():
        if isinstance(value, str):
            strings.append(((key,), value))
            keys.append(_stream_key(doc, (key,)) if key == "delta" else None)
        elif key == "choices" and isinstance(value, list):
            for i, choice in enumerate(value):
                if isinstance(choice, dict):
                    _choice_strings(doc, choice, i, strings, keys)
                elif isinstance(choice, str):
                    strings.append((("choices", i), choice))
                    keys.append(None)
                elif isinstance(choice, list):
                    _plain_strings(choice, ("choices", i), strings, keys)
        elif isinstance(value, dict | list):
            _plain_strings(value, (key,), strings, keys)
    return strings, keys


def _choice_strings(
    doc: dict[str, Any], choice: dict[str, Any], i: int, strings: list[tuple[Path, str]], keys: list[Any]
) -> None:
    """``_strings_and_keys`` of ``choices[i]``: its ``text``, and under ``delta`` the ``_CHOICE_TEXT``
    fields and tool call arguments, are streams."""
    index = choice.get("index", i)
    for key, value in choice.items():
        path = ("choices", i, key)
        if isinstance(value, str):
            strings.append((path, value))
            keys.append(("choice", index, "text") if key == "text" else None)
        elif key == "delta" and isinstance(value, dict):
            for field, item in value.items():
                below = (*path, field)
                if isinstance(item, str):
                    strings.append((below, item))
                    keys.append(
                        ("choice", index, "delta", field) if ("delta", field) in _CHOICE_TEXT else None
                    )
                elif field == "tool_calls" and isinstance(item, list):
                    found = _strings(item, below, [])
                    strings += found
                    keys += [_stream_key(doc, where) for where, _ in found]
                elif isinstance(item, dict | list):
                    _plain_strings(item, below, strings, keys)
        elif isinstance(value, dict | list):
            _plain_strings(value, path, strings, keys)


def _plain_strings(
    node: dict[str, Any] | list[Any], path: Path, strings: list[tuple[Path, str]], keys: list[Any]
) -> None:
    """Strings in no stream."""
    found = _strings(node, path, [])
    strings += found
    keys += [None] * len(found)


def _stream_key(doc: dict[str, Any], path: Path) -> StreamKey | None:
    """Which delta stream a string belongs to, or None for a string masked on its own."""
    if len(path) >= 3 and path[0] == "choices" and isinstance(path[1], int) and isinstance(path[2], str):
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


def _label(path: Path) -> str:
    """``choices[0].delta.content``: where in the event a string was."""
    return "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in path).lstrip(".")


__all__ = ["DEFAULT_MAX_EVENT_BYTES", "SseMasker"]
