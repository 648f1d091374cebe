"""Incremental Server-Sent Events parser (WHATWG HTML "Parsing an event stream"), sans-IO.

Owns line splitting and field handling for one event stream: bytes in, ``SseMessage``/``SseComment`` out.
It must not decode text or JSON, look at HTTP headers, or do I/O; fields stay raw bytes.
"""

from __future__ import annotations

import enum
import re
from typing import ClassVar, NoReturn

from parsers.errors import ParseError
from parsers.events import SseComment, SseMessage

SseEvent = SseMessage | SseComment

DEFAULT_MAX_MESSAGE_BYTES = 16 << 20
_BOM = b"\xef\xbb\xbf"
_EOL = re.compile(rb"[\r\n]")
_CR = 0x0D
_LF = 0x0A
_COLON = 0x3A
# retry_ms must fit a signed 64-bit integer so a frame holding it can always be encoded (msgpack).
_MAX_RETRY_DIGITS = 18


class _State(enum.Enum):
    START = enum.auto()  # no byte seen yet: a leading BOM may still arrive
    LINES = enum.auto()
    CLOSED = enum.auto()  # feed_eof() was called
    FAILED = enum.auto()  # a limit was exceeded; every later call raises


class SseParser:
    """Parse one event stream fed in arbitrary pieces.

    ``SseMessage.id`` and ``retry_ms`` are the values seen in *that* message's block (``None`` when the
    block had no valid ``id``/``retry`` line), not the spec's sticky "last event ID": a reader carries
    them forward when it needs the browser's view. Comment lines are reported as they are read, so they
    come before the message whose block holds them. A block without ``data`` lines is not dispatched
    (WHATWG); its raw bytes are only in the recorded body chunks.
    """

    name: ClassVar[str] = "sse"

    def __init__(self, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self._max_message_bytes = max_message_bytes
        self._state = _State.START
        self._buf = bytearray()
        self._scan = 0  # index in _buf before which no line ending is left unseen
        self._offset = 0  # stream offset of _buf[0], for error messages
        self._skip_lf = False  # the last line ended in CR: an LF right after it belongs to that ending
        self._data: list[bytes] = []
        self._event = b""
        self._id: bytes | None = None
        self._retry_ms: int | None = None
        self._message_bytes = 0  # field-line bytes of the message being built

    def feed(self, data: bytes) -> list[SseEvent]:
        """Consume the next piece of the stream and return the events it completes.

        Raises:
            ParseError: a line or message exceeds ``max_message_bytes``, or the parser was closed
                or had failed before.
        """
        if self._state is _State.CLOSED:
            raise ParseError(f"sse: {len(data)} bytes fed after EOF (offset {self._offset})")
        if self._state is _State.FAILED:
            raise ParseError("sse: parser failed earlier and is inert")
        buf = self._buf
        if not buf and (whole := self._one_event(data)) is not None:
            return whole
        buf += data
        if self._state is _State.START:
            if len(buf) < len(_BOM) and _BOM.startswith(buf):
                return []
            if buf.startswith(_BOM):  # WHATWG: one leading U+FEFF is stripped
                del buf[: len(_BOM)]
                self._offset += len(_BOM)
            self._state = _State.LINES
        out: list[SseEvent] = []
        start = 0
        while True:
            if self._skip_lf:
                if start == len(buf):
                    break
                if buf[start] == _LF:  # CRLF, possibly split across two feeds
                    start += 1
                self._skip_lf = False
            match = _EOL.search(buf, max(start, self._scan))
            if match is None:
                self._scan = len(buf)
                break
            end = match.start()
            self._skip_lf = buf[end] == _CR
            self._line(bytes(buf[start:end]), self._offset + start, out)
            start = self._scan = end + 1
        if start:
            del buf[:start]  # CPython trims a bytearray's head without moving the tail
            self._offset += start
            self._scan -= start
        if self._message_bytes + len(buf) > self._max_message_bytes:
            self._fail(f"unterminated line of at least {len(buf)} bytes", self._offset)
        return out

    def _one_event(self, data: bytes) -> list[SseEvent] | None:
        """The usual read, one whole event of one data line with nothing pending, parsed in one step;
        None for anything else (the line scanner's job)."""
        if (
            self._state is _State.LINES
            and not self._skip_lf
            and not self._message_bytes
            and data.startswith(b"data: ")
            and data.endswith(b"\n\n")
            and data.count(b"\n") == 2
            and b"\r" not in data
            and len(data) - 1 <= self._max_message_bytes
        ):
            self._offset += len(data)
            return [SseMessage(data=data[6:-2])]
        return None

    def feed_eof(self) -> list[SseEvent]:
        """End the stream. WHATWG discards an unterminated line and an undispatched message."""
        if self._state is not _State.FAILED:
            self._state = _State.CLOSED
        self._buf.clear()
        self._scan = 0
        self._reset_message()
        return []

    def _line(self, line: bytes, offset: int, out: list[SseEvent]) -> None:
        if not line:
            self._dispatch(out)
            return
        if line[0] == _COLON:
            if len(line) > self._max_message_bytes:
                self._fail(f"comment line of {len(line)} bytes", offset)
            out.append(SseComment(text=line[1:]))
            return
        self._message_bytes += len(line) + 1
        if self._message_bytes > self._max_message_bytes:
            self._fail(f"message of at least {self._message_bytes} bytes", offset)
        field, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        match field:
            case b"data":
                self._data.append(value)
            case b"event":
                self._event = value
            case b"id":
                if b"\0" not in value:  # WHATWG: an id containing NUL is ignored
                    self._id = value
            case b"retry":
                if value.isdigit() and len(value) <= _MAX_RETRY_DIGITS:  # bytes.isdigit: ASCII only
                    self._retry_ms = int(value)
            case _:
                pass  # WHATWG: unknown fields are ignored

    def _dispatch(self, out: list[SseEvent]) -> None:
        if self._data:
            out.append(
                SseMessage(
                    data=b"\n".join(self._data), event=self._event, id=self._id, retry_ms=self._retry_ms
                )
            )
        self._reset_message()

    def _reset_message(self) -> None:
        self._data = []
        self._event = b""
        self._id = None
        self._retry_ms = None
        self._message_bytes = 0

    def _fail(self, what: str, offset: int) -> NoReturn:
        self._state = _State.FAILED
        raise ParseError(f"sse: {what} exceeds max_message_bytes={self._max_message_bytes} (offset {offset})")


__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "SseEvent", "SseParser"]
