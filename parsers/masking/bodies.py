"""Streaming maskers for message bodies: bytes in pieces in, masked bytes out, a bounded tail held back.

``JsonMasker`` rewrites only inside JSON string values (and keys), so a JSON body stays JSON: bytes outside
strings pass unchanged, a string without a match keeps its exact bytes (escapes included), and a
replacement is written JSON-escaped. A body that turns out not to be JSON is masked as text from the
first byte JSON does not allow. ``TextMasker`` masks any other body byte for byte (latin-1, so every
byte maps to one character and back). Both give, for any split of the body, the same bytes as masking
it whole. Positions in ``Hit`` are byte offsets in the body as it arrived.
"""

from __future__ import annotations

import codecs
import enum
import re
from typing import NamedTuple, Protocol

import msgspec

from parsers.masking.engine import DEFAULT_MAX_HOLD_CHARS, Edit, Rules, TextScan, may_match


class Hit(NamedTuple):
    rule: str
    position: int  # byte offset, in the body as received, where the masked text began


class BodyMasker(Protocol):
    def feed(self, data: bytes) -> bytes: ...
    def finish(self) -> bytes: ...
    def take_hits(self) -> list[Hit]: ...


class TextMasker:
    """Masks a body that is not JSON, byte for byte."""

    def __init__(
        self, rules: Rules, *, max_hold_chars: int = DEFAULT_MAX_HOLD_CHARS, start_offset: int = 0
    ) -> None:
        self._scan = TextScan(rules, max_hold_chars=max_hold_chars)
        self._released = 0
        self._start = start_offset  # body offset of the first byte (a JSON masker may hand over mid-body)
        self._hits: list[Hit] = []

    def feed(self, data: bytes) -> bytes:
        self._scan.add(data.decode("latin-1"))
        return self._release(self._scan.scan(final=False))

    def finish(self) -> bytes:
        return self._release(self._scan.scan(final=True))

    def take_hits(self) -> list[Hit]:
        hits, self._hits = self._hits, []
        return hits

    def _release(self, edits: list[Edit]) -> bytes:
        scan = self._scan
        out: list[str] = []
        at = self._released
        for edit in edits:
            out.append(scan.text(at, edit.start))
            out.append(edit.text)
            self._hits.append(Hit(edit.rule, self._start + edit.start))
            at = edit.end
        out.append(scan.text(at, scan.decided))
        self._released = scan.decided
        scan.trim()
        return "".join(out).encode("latin-1", "replace")


class _State(enum.Enum):
    OUTSIDE = enum.auto()  # between tokens
    STRING = enum.auto()  # inside a string
    ESCAPE = enum.auto()  # after a backslash
    UNICODE = enum.auto()  # inside \\uXXXX
    TEXT = enum.auto()  # not JSON after all: the rest is masked as text


_STRING_SPECIAL = re.compile(rb'["\\]')
_PLAIN_STRING = re.compile(rb'"[^"\\]*"')
# Outside strings JSON has only structure, whitespace, numbers and the literals true/false/null.
_NOT_JSON = re.compile(rb"[^\[\]{}:,\s0-9eE.+\-truefalsn]")
_SIMPLE_ESCAPES = {
    ord('"'): '"', ord("\\"): "\\", ord("/"): "/", ord("b"): "\b", ord("f"): "\f", ord("n"): "\n",
    ord("r"): "\r", ord("t"): "\t",
}  # fmt: skip
_HEX = frozenset(b"0123456789abcdefABCDEF")


class _Piece(NamedTuple):
    text: str
    raw: bytes  # plain: text encoded as UTF-8 (splittable); escape: one character's escape sequence
    offset: int  # body offset of raw[0]
    escape: bool


class _JsonString:
    """The held, undecided tail of one string value, with the raw bytes of each character."""

    def __init__(self, rules: Rules, max_hold_chars: int) -> None:
        self.scan = TextScan(rules, max_hold_chars=max_hold_chars)
        self._pieces: list[_Piece] = []
        self._released = 0  # string offset (characters) released so far
        self.decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self.plain_offset = 0  # body offset of the next plain byte to decode

    def add(self, text: str, raw: bytes, offset: int, *, escape: bool) -> None:
        if text:
            self._pieces.append(_Piece(text, raw, offset, escape))
            self.scan.add(text)

    def release(self, *, final: bool, hits: list[Hit]) -> bytes:
        """Raw bytes of everything now decided, with each edit written JSON-escaped."""
        edits = self.scan.scan(final=final)
        out = bytearray()
        for edit in edits:
            out += self._take(edit.start)
            hits.append(Hit(edit.rule, self._position()))
            self._drop(edit.end)
            out += msgspec.json.encode(edit.text)[1:-1]
        out += self._take(self.scan.decided)
        self.scan.trim()
        return bytes(out)

    def _position(self) -> int:
        return self._pieces[0].offset if self._pieces else 0

    def _take(self, upto: int) -> bytes:
        """Raw bytes of characters ``[released, upto)``, removed from the pieces."""
        out = bytearray()
        pieces = self._pieces
        while self._released < upto and pieces:
            piece = pieces[0]
            need = upto - self._released
            if len(piece.text) <= need:
                out += piece.raw
                self._released += len(piece.text)
                pieces.pop(0)
                continue
            head = piece.text[:need].encode("utf-8", "surrogateescape")  # escapes are one character
            out += head
            pieces[0] = _Piece(piece.text[need:], piece.raw[len(head) :], piece.offset + len(head), False)
            self._released = upto
        return bytes(out)

    def _drop(self, upto: int) -> None:
        self._take(upto)


class JsonMasker:
    """Masks a JSON body fed in pieces, rewriting only inside strings."""

    def __init__(self, rules: Rules, *, max_hold_chars: int = DEFAULT_MAX_HOLD_CHARS) -> None:
        self._rules = tuple(rules)
        self._max_hold = max_hold_chars
        self._state = _State.OUTSIDE
        self._offset = 0  # body bytes consumed
        self._string: _JsonString | None = None
        self._escape = bytearray()
        self._escape_offset = 0
        self._text: TextMasker | None = None
        self._hits: list[Hit] = []

    def take_hits(self) -> list[Hit]:
        hits, self._hits = self._hits, []
        if self._text is not None:
            hits += self._text.take_hits()
        return hits

    def feed(self, data: bytes) -> bytes:
        if self._state is _State.OUTSIDE and self._passes(data):
            self._offset += len(data)
            return data
        out = bytearray()
        at = 0
        end = len(data)
        while at < end:
            match self._state:
                case _State.OUTSIDE:
                    at = self._outside(data, at, out)
                case _State.STRING:
                    at = self._in_string(data, at, out)
                case _State.ESCAPE | _State.UNICODE:
                    at = self._in_escape(data, at)
                case _State.TEXT:
                    assert self._text is not None  # set with the state
                    out += self._text.feed(data[at:])
                    at = end
        self._offset += end
        if self._string is not None:
            out += self._string.release(final=False, hits=self._hits)
        return bytes(out)

    def _passes(self, data: bytes) -> bool:
        """Whole JSON here (ASCII, no escapes, every string closed) in which no rule can match: the
        usual request or response body, passed as it came without a look at each string."""
        if not data.isascii() or b"\\" in data:
            return False
        outside = _PLAIN_STRING.sub(b"", data)
        if b'"' in outside or _NOT_JSON.search(outside):
            return False
        return not may_match(self._rules, data.decode("ascii"))

    def finish(self) -> bytes:
        """The body ended. An unterminated string is released as it stands (the body was not JSON)."""
        out = bytearray()
        string = self._string
        if string is not None:
            text = string.decoder.decode(b"", final=True)
            string.add(text, text.encode("utf-8", "surrogateescape"), string.plain_offset, escape=False)
            if self._escape:
                rest = self._escape.decode("utf-8", "surrogateescape")
                string.add(rest, bytes(self._escape), self._escape_offset, escape=False)
            out += string.release(final=True, hits=self._hits)
            self._string = None
        if self._text is not None:
            out += self._text.finish()
        return bytes(out)

    def _outside(self, data: bytes, at: int, out: bytearray) -> int:
        quote = data.find(b'"', at)
        stop = len(data) if quote < 0 else quote
        bad = _NOT_JSON.search(data, at, stop)
        if bad is not None:
            out += data[at : bad.start()]
            self._state = _State.TEXT
            self._text = TextMasker(
                self._rules, max_hold_chars=self._max_hold, start_offset=self._offset + bad.start()
            )
            return bad.start()
        out += data[at:stop]
        if quote < 0:
            return stop
        out += b'"'
        self._state = _State.STRING
        self._string = _JsonString(self._rules, self._max_hold)
        self._string.plain_offset = self._offset + quote + 1
        return quote + 1

    def _in_string(self, data: bytes, at: int, out: bytearray) -> int:
        string = self._string
        assert string is not None  # set with the state
        special = _STRING_SPECIAL.search(data, at)
        stop = len(data) if special is None else special.start()
        if stop > at:
            self._plain(string, data[at:stop], final=special is not None)
        elif special is not None:
            self._plain(string, b"", final=True)
        if special is None:
            return stop
        if data[stop] == 0x22:  # the closing quote
            out += string.release(final=True, hits=self._hits)
            out += b'"'
            self._string = None
            self._state = _State.OUTSIDE
        else:
            self._escape = bytearray(b"\\")
            self._escape_offset = self._offset + stop
            self._state = _State.ESCAPE
        return stop + 1

    def _plain(self, string: _JsonString, run: bytes, *, final: bool) -> None:
        text = string.decoder.decode(run, final=final)
        raw = text.encode("utf-8", "surrogateescape")
        string.add(text, raw, string.plain_offset, escape=False)
        string.plain_offset += len(raw)

    def _in_escape(self, data: bytes, at: int) -> int:
        string = self._string
        assert string is not None  # set with the state
        escape = self._escape
        if self._state is _State.ESCAPE:
            byte = data[at]
            escape.append(byte)
            at += 1
            if byte == ord("u"):
                self._state = _State.UNICODE
                return at
            self._escaped(string, _SIMPLE_ESCAPES.get(byte, chr(byte)))
            return at
        take = min(6 - len(escape), len(data) - at)
        escape += data[at : at + take]
        at += take
        if len(escape) == 6:
            digits = bytes(escape[2:])
            self._escaped(string, chr(int(digits, 16)) if set(digits) <= _HEX else "\ufffd")
        return at

    def _escaped(self, string: _JsonString, char: str) -> None:
        string.add(char, bytes(self._escape), self._escape_offset, escape=True)
        string.plain_offset = self._escape_offset + len(self._escape)
        self._escape = bytearray()
        self._state = _State.STRING


def mask_body(masker: BodyMasker, body: bytes) -> bytes:
    """A whole body through a fresh masker."""
    return masker.feed(body) + masker.finish()


__all__ = ["BodyMasker", "Hit", "JsonMasker", "TextMasker", "mask_body"]
