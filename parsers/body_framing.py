"""HTTP/1.1 message-body framing, sans-IO: where a body ends and what its decoded bytes are.

Accepts exactly what h11 0.16 accepts, waits where h11 waits and rejects where h11 rejects (the
differential tests hold it to that), so a relay can forward bytes as read while this finds the
boundaries. It never re-frames, never guesses: anything else raises ``ParseError``.
"""

from __future__ import annotations

import dataclasses
import enum
import re

from parsers.errors import ParseError
from parsers.events import Headers

# h11's default max_incomplete_event_size: an unfinished chunk-size line or trailer section that grows
# past this (at the end of a feed) is an error, exactly as h11 raises "Receive buffer too long".
DEFAULT_MAX_INCOMPLETE_BYTES = 16 * 1024

# RFC 9112 §7.1: chunk-size = 1*HEXDIG, chunk-ext ignored. As h11: at most 20 digits, the extension is
# anything but LF after ";", trailing SP/HTAB tolerated, and the line must end in CRLF.
_CHUNK_HEADER = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;[^\n]*)?[ \t]*")
# The same line with its CRLF, matched where a read starts: the streamed-token fast path. It cannot run
# past the first LF, so it ends at the same CRLF ``_CHUNK_HEADER`` is cut at, or does not match.
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;[^\n]*)?[ \t]*\r\n")
# RFC 9110 §5.1, §5.5 as h11 reads them (h11/_abnf.py): values may hold control characters but no NUL
# and no whitespace other than inner SP/HTAB runs.
_FIELD_VCHAR = rb"[^\x00\s]"
_HEADER_FIELD = re.compile(
    rb"(?P<name>[-!#$%&'*+.^_`|~0-9a-zA-Z]+):[ \t]*"
    rb"(?P<value>(?:" + _FIELD_VCHAR + rb"+(?:[ \t]+" + _FIELD_VCHAR + rb"+)*)?)[ \t]*"
)
_OBS_FOLD = re.compile(rb"[ \t]+")
_BLANK_LINE = re.compile(rb"\n\r?\n")
_DIGITS = re.compile(rb"[0-9]+")
_CONTENT_LENGTH_MAX_DIGITS = 20


@dataclasses.dataclass(frozen=True, slots=True)
class ContentLength:
    length: int


@dataclasses.dataclass(frozen=True, slots=True)
class Chunked:
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class UntilClose:
    """RFC 9112 §6.3 rule 8: a response body without length runs until the connection closes."""


Framing = ContentLength | Chunked | UntilClose


@dataclasses.dataclass(slots=True)
class ScanResult:
    """What one ``feed`` found: decoded body pieces, and whether (and where) the message ended."""

    pieces: list[bytes]
    consumed: int  # bytes of the fed data that belong to this message; the rest is the next message's
    done: bool
    trailers: Headers  # set when a chunked body ended; as h11 reports them (``Headers.raw_items()``)


class _State(enum.Enum):
    LENGTH = "length"  # Content-Length body bytes
    UNTIL_CLOSE = "until close"
    CHUNK_HEADER = "chunk header"  # a chunk-size line up to CRLF
    CHUNK_DATA = "chunk data"
    CHUNK_CRLF = "CRLF after chunk data"
    TRAILERS = "trailer section"
    DONE = "done"
    FAILED = "failed"


class BodyScanner:
    """Finds the end of one message body and decodes its transfer coding.

    Feed it the bytes after the message head, in the pieces they arrive in. ``consumed`` says where the
    message ended; the scanner then stays done and consumes nothing more.
    """

    def __init__(self, framing: Framing, *, max_incomplete_bytes: int = DEFAULT_MAX_INCOMPLETE_BYTES) -> None:
        self._max_incomplete = max_incomplete_bytes
        self._pending = bytearray()  # an unfinished chunk-size line or trailer section
        self._remaining = 0  # body bytes left in the message (LENGTH) or in the chunk (CHUNK_DATA)
        self._crlf_seen = 0  # CHUNK_CRLF: 0 or 1 bytes of the CRLF matched so far
        self._offset = 0  # body bytes consumed before the current feed, for error locations
        self._trailers: Headers = []
        match framing:
            case ContentLength(length=length):
                self._remaining = length
                self._state = _State.LENGTH if length else _State.DONE
            case Chunked():
                self._state = _State.CHUNK_HEADER
            case UntilClose():
                self._state = _State.UNTIL_CLOSE

    @property
    def done(self) -> bool:
        return self._state is _State.DONE

    def feed(self, data: bytes) -> ScanResult:
        """Scan the next bytes of the body.

        Raises:
            ParseError: the bytes break the framing (or an earlier feed did); the message says where.
        """
        end = len(data)
        state = self._state
        if state is _State.CHUNK_HEADER and not self._pending:
            # Fast path: the read is exactly one whole chunk, as a model's streamed token usually is.
            line = _CHUNK_LINE.match(data)
            if line is not None:
                start = line.end()
                stop = start + int(line[1], 16)
                if start < stop and stop + 2 == end and data.endswith(b"\r\n"):
                    self._offset += end
                    return ScanResult([data[start:stop]], end, False, [])
        pieces: list[bytes] = []
        pos = 0
        while pos < end:
            if state is _State.CHUNK_DATA:
                take = min(self._remaining, end - pos)
                pieces.append(data[pos : pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    state = _State.CHUNK_CRLF
            elif state is _State.CHUNK_HEADER:
                if not self._pending:
                    # Fast path for one whole chunk in this read, size line to CRLF (a streamed token).
                    line_end = data.find(b"\r\n", pos)
                    match = _CHUNK_HEADER.fullmatch(data, pos, line_end) if line_end >= 0 else None
                    if match is not None:
                        start = line_end + 2
                        stop = start + int(match[1], 16)
                        if start < stop and data.startswith(b"\r\n", stop):
                            pieces.append(data[start:stop])
                            pos = stop + 2
                            continue
                pos, state = self._chunk_header(data, pos)
            elif state is _State.CHUNK_CRLF:
                if not self._crlf_seen and data.startswith(b"\r\n", pos):
                    pos += 2
                    state = _State.CHUNK_HEADER
                else:
                    pos, state = self._chunk_crlf(data, pos)
            elif state is _State.LENGTH:
                take = min(self._remaining, end - pos)
                pieces.append(data[pos : pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    state = _State.DONE
            elif state is _State.UNTIL_CLOSE:
                pieces.append(data[pos:])
                pos = end
            elif state is _State.TRAILERS:
                pos, state = self._trailer_section(data, pos)
            elif state is _State.DONE:
                break
            else:
                raise ParseError(f"body framing: fed after an error (body byte {self._offset})")
            self._state = state
        if len(self._pending) > self._max_incomplete:
            self._state = _State.FAILED
            raise ParseError(
                f"body framing: {state.value} longer than {self._max_incomplete} bytes "
                f"without its line end (from body byte {self._offset + pos - len(self._pending)})",
                status_hint=431,
            )
        self._offset += pos
        done = state is _State.DONE
        return ScanResult(pieces, pos, done, self._trailers if done else [])

    def feed_eof(self) -> ScanResult:
        """The peer closed. Ends an ``UntilClose`` body; any other unfinished body is an error.

        Raises:
            ParseError: the body was not complete.
        """
        if self._state is _State.UNTIL_CLOSE:
            self._state = _State.DONE
        if self._state is not _State.DONE:
            state = self._state
            self._state = _State.FAILED
            raise ParseError(
                f"body framing: connection closed in the {state.value} (body byte {self._offset})"
            )
        return ScanResult([], 0, True, self._trailers)

    # --- chunked states: each takes (data, pos) and returns (new pos, next state) ------------------

    def _fail(self, what: str, where: int) -> ParseError:
        self._state = _State.FAILED
        return ParseError(f"body framing: {what} (body byte {self._offset + where})")

    def _chunk_header(self, data: bytes, pos: int) -> tuple[int, _State]:
        pending = self._pending
        line_start = pos - len(pending)  # the line may have begun in an earlier feed
        if pending and pending[-1] == 13 and data[pos] == 10:  # a CRLF split across two feeds
            line_end, after = pos - 1, pos + 1
        else:
            line_end = data.find(b"\r\n", pos)
            if line_end < 0:
                pending += data[pos:]
                return len(data), _State.CHUNK_HEADER
            after = line_end + 2
        if pending:
            pending += data[pos : max(line_end, pos)]
            if line_end < pos:
                del pending[-1]  # the CR of the split CRLF
            line = bytes(pending)
            pending.clear()
            match = _CHUNK_HEADER.fullmatch(line)
        else:
            match = _CHUNK_HEADER.fullmatch(data, pos, line_end)
            line = data[pos:line_end]
        if match is None:
            raise self._fail(f"illegal chunk header {line[:40]!r}", line_start)
        self._remaining = int(match[1], 16)
        return after, _State.CHUNK_DATA if self._remaining else _State.TRAILERS

    def _chunk_crlf(self, data: bytes, pos: int) -> tuple[int, _State]:
        # RFC 9112 §7.1: chunk-data is followed by exactly CRLF; like h11, nothing else (not a bare LF).
        expected = b"\r\n"
        while pos < len(data):
            if data[pos] != expected[self._crlf_seen]:
                raise self._fail(f"expected CRLF after chunk data, got {data[pos : pos + 2]!r}", pos)
            pos += 1
            self._crlf_seen += 1
            if self._crlf_seen == 2:
                self._crlf_seen = 0
                return pos, _State.CHUNK_HEADER
        return pos, _State.CHUNK_CRLF

    def _trailer_section(self, data: bytes, pos: int) -> tuple[int, _State]:
        # h11 ends the section at a leading LF or CRLF, else at the first LF [CR] LF (bare LF allowed).
        pending = self._pending
        searched = max(0, len(pending) - 2)
        pending += data[pos:]
        if pending[:1] == b"\n":
            section_end = 1
        elif pending[:2] == b"\r\n":
            section_end = 2
        else:
            match = _BLANK_LINE.search(pending, searched)
            if match is None:
                return len(data), _State.TRAILERS
            section_end = match.end()
        leftover = len(pending) - section_end
        section = bytes(pending[:section_end])
        pending.clear()
        self._trailers = self._parse_trailers(section, pos)
        return len(data) - leftover, _State.DONE

    def _parse_trailers(self, section: bytes, pos: int) -> Headers:
        if len(section) <= 2:
            return []
        lines = [line[:-1] if line.endswith(b"\r") else line for line in section.split(b"\n")[:-2]]
        unfolded: list[bytes] = []
        for line in lines:
            fold = _OBS_FOLD.match(line)
            if fold is None:
                unfolded.append(line)
            elif not unfolded:
                raise self._fail("continuation line at start of trailers", pos)
            else:  # RFC 9112 §5.2 obs-fold: h11 joins it with one space
                unfolded[-1] += b" " + line[fold.end() :]
        return self._normalize([self._field(line, pos) for line in unfolded], pos)

    def _field(self, line: bytes, pos: int) -> tuple[bytes, bytes]:
        match = _HEADER_FIELD.fullmatch(line)
        if match is None:
            raise self._fail(f"illegal trailer line {line[:40]!r}", pos)
        return match["name"], match["value"]

    def _normalize(self, fields: Headers, pos: int) -> Headers:
        """h11's ``normalize_and_validate`` for parsed fields: it checks and rewrites two of them."""
        out: Headers = []
        seen_length: bytes | None = None
        seen_te = False
        for name, value in fields:
            lower = name.lower()
            if lower == b"content-length":
                lengths = {length.strip() for length in value.split(b",")}
                single = lengths.pop()
                if lengths or not _DIGITS.fullmatch(single) or len(single) > _CONTENT_LENGTH_MAX_DIGITS:
                    raise self._fail(f"bad Content-Length trailer {value[:40]!r}", pos)
                if seen_length is None:
                    seen_length = single
                    out.append((name, single))
                elif seen_length != single:
                    raise self._fail("conflicting Content-Length trailers", pos)
            elif lower == b"transfer-encoding":
                if seen_te or value.lower() != b"chunked":
                    raise self._fail(f"unsupported Transfer-Encoding trailer {value[:40]!r}", pos)
                seen_te = True
                out.append((name, value.lower()))
            else:
                out.append((name, value))
        return out


__all__ = [
    "DEFAULT_MAX_INCOMPLETE_BYTES",
    "BodyScanner",
    "Chunked",
    "ContentLength",
    "Framing",
    "ScanResult",
    "UntilClose",
]
