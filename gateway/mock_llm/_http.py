"""Minimal strict HTTP/1.1 request reader and response framing for the mock LLM server.

Sans-IO like h11: bytes go in through `feed()`, requests come out of `next_event()`. It owns no socket,
no clock and no tasks. It is deliberately small and fast (the mock must never be a benchmark's
bottleneck), so it reads only what a test upstream needs and rejects everything ambiguous.
"""

from __future__ import annotations

import re
from typing import Final

MAX_HEAD_BYTES: Final = 64 * 1024
MAX_BODY_BYTES: Final = 8 * 1024 * 1024
_MAX_CHUNK_LINE_BYTES: Final = 1024

_TCHARS = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TCHARS + rb") ([\x21-\x7e]+) (HTTP/1\.[01])\r\n")
# The value class excludes CR, LF and NUL, so one fullmatch rejects whitespace before a colon
# (RFC 9112 §5.1), obs-fold (§5.2) and bare CR/LF (§2.2) without building a list of fields.
_FIELD_BLOCK = re.compile(rb"(?:" + _TCHARS + rb":[^\r\n\x00]*\r\n)*")
_FIELD = re.compile(rb"(" + _TCHARS + rb"):[ \t]*([^\r\n\x00]*)\r\n")
# The few fields the reader acts on, found in the lowercased head in one scan.
_FRAMING = re.compile(rb"\n(content-length|transfer-encoding|connection|expect|host):[ \t]*([^\r]*)")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[^\r\n]*)?")

REASONS: Final = {
    100: b"Continue",
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    404: b"Not Found",
    405: b"Method Not Allowed",
    413: b"Payload Too Large",
    417: b"Expectation Failed",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    505: b"HTTP Version Not Supported",
}
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK: Final = b"0\r\n\r\n"


class HttpError(Exception):
    """The peer sent something we refuse to read; answer `status` and close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Request:
    """One complete request. Header names and values stay raw (wire order, original case)."""

    __slots__ = (
        "_fields_at",
        "_head",
        "_headers",
        "body",
        "keep_alive",
        "method",
        "path",
        "target",
        "version",
    )

    def __init__(
        self, head: bytes, fields_at: int, method: bytes, target: bytes, version: bytes, keep_alive: bool
    ) -> None:
        self._head = head
        self._fields_at = fields_at
        self._headers: list[tuple[bytes, bytes]] | None = None
        self.method = method
        self.target = target
        self.version = version
        self.keep_alive = keep_alive
        self.body = b""
        # RFC 9112 §3.2.2: a server must accept absolute-form; route on the path alone.
        path = target
        if not path.startswith(b"/") and b"://" in path:
            path = b"/" + path.split(b"://", 1)[1].partition(b"/")[2]
        self.path = path.partition(b"?")[0]

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """All header fields, split from the validated head only when someone asks (most never do)."""
        if self._headers is None:
            fields: list[tuple[bytes, bytes]] = _FIELD.findall(self._head, self._fields_at)
            self._headers = [(name, value.rstrip(b" \t")) for name, value in fields]
        return self._headers

    def header(self, lower_name: bytes) -> bytes | None:
        """The first value of a header, looked up case-insensitively."""
        if b"\n" + lower_name + b":" not in self._head.lower():
            return None
        for name, value in self.headers:
            if name.lower() == lower_name:
                return value
        return None


class ContinueExpected:
    """The client sent `Expect: 100-continue` and waits for an interim response before the body."""


CONTINUE_EXPECTED: Final = ContinueExpected()


class RequestReader:
    """Incremental request parser; each state is one method swapped into `_step` (cf. mitmproxy)."""

    def __init__(self, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self._buf = bytearray()
        self._max_body_bytes = max_body_bytes
        self._scan_from = 0
        self._request: Request | None = None
        self._remaining = 0
        self._body = bytearray()
        self._step = self._read_head

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_event(self) -> Request | ContinueExpected | None:
        """The next complete request, an interim-response cue, or None when more bytes are needed.

        Raises:
            HttpError: the bytes are not a request we accept; the connection must close.
        """
        return self._step()

    def _read_head(self) -> Request | ContinueExpected | None:
        buf = self._buf
        if not buf:
            return None
        # RFC 9112 §2.2: ignore empty lines before a request-line (some clients send CRLF after a body).
        while buf.startswith(b"\r\n"):
            del buf[:2]
        end = buf.find(b"\r\n\r\n", self._scan_from)
        if end < 0:
            if len(buf) > MAX_HEAD_BYTES:
                raise HttpError(431, f"request head exceeds {MAX_HEAD_BYTES} bytes")
            self._scan_from = max(0, len(buf) - 3)
            return None
        head = bytes(buf[: end + 2])
        del buf[: end + 4]
        self._scan_from = 0
        if len(head) > MAX_HEAD_BYTES:
            raise HttpError(431, f"request head exceeds {MAX_HEAD_BYTES} bytes")
        request, length, chunked, expect = _parse_head(head)
        if length > self._max_body_bytes:
            raise HttpError(413, f"request body of {length} bytes exceeds {self._max_body_bytes}")
        if chunked:
            self._request, self._body = request, bytearray()
            self._step = self._read_chunk_size
        elif length and len(buf) >= length:
            # The usual case: the whole body came with the head; no interim response needed.
            request.body = bytes(buf[:length])
            del buf[:length]
            return request
        elif length:
            self._request, self._remaining = request, length
            self._step = self._read_fixed_body
        else:
            return request
        if expect:
            return CONTINUE_EXPECTED
        return self._step()

    def _read_fixed_body(self) -> Request | None:
        if len(self._buf) < self._remaining:
            return None
        request = self._finish()
        request.body = bytes(self._buf[: self._remaining])
        del self._buf[: self._remaining]
        return request

    def _read_chunk_size(self) -> Request | None:
        end = self._buf.find(b"\r\n")
        if end < 0:
            if len(self._buf) > _MAX_CHUNK_LINE_BYTES:
                raise HttpError(400, "chunk-size line too long")
            return None
        match = _CHUNK_SIZE.fullmatch(self._buf, 0, end)
        if match is None:
            raise HttpError(400, f"bad chunk-size line {bytes(self._buf[:end])[:40]!r}")
        size = int(match.group(1), 16)
        del self._buf[: end + 2]
        if len(self._body) + size > self._max_body_bytes:
            raise HttpError(413, f"chunked request body exceeds {self._max_body_bytes} bytes")
        if size == 0:
            self._step = self._read_trailers
        else:
            self._remaining = size
            self._step = self._read_chunk_data
        return self._step()

    def _read_chunk_data(self) -> Request | None:
        if len(self._buf) < self._remaining + 2:
            return None
        if self._buf[self._remaining : self._remaining + 2] != b"\r\n":
            raise HttpError(400, "chunk data not followed by CRLF")
        self._body += self._buf[: self._remaining]
        del self._buf[: self._remaining + 2]
        self._step = self._read_chunk_size
        return self._step()

    def _read_trailers(self) -> Request | None:
        # Trailer fields are read and dropped: nothing in the mock depends on them.
        while True:
            end = self._buf.find(b"\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEAD_BYTES:
                    raise HttpError(431, "trailer section too long")
                return None
            del self._buf[: end + 2]
            if end == 0:
                request = self._finish()
                request.body = bytes(self._body)
                self._body = bytearray()
                return request

    def _finish(self) -> Request:
        request = self._request
        if request is None:  # pragma: no cover - the state machine only gets here with a request
            raise HttpError(500, "reader lost its request")
        self._request = None
        self._step = self._read_head
        return request


def _parse_head(head: bytes) -> tuple[Request, int, bool, bool]:
    """Parse a head (each line ending in CRLF, blank line excluded).

    Returns (request, content_length, chunked, expect_continue).
    """
    line = _REQUEST_LINE.match(head)
    if line is None:
        first = head.partition(b"\r\n")[0]
        if re.fullmatch(rb"\S+ \S+ HTTP/[0-9.]+", first):
            raise HttpError(505, f"unsupported HTTP version in {first[:80]!r}")
        raise HttpError(400, f"malformed request-line {first[:80]!r}")
    method, target, version = line.groups()
    if not _FIELD_BLOCK.fullmatch(head, line.end()):
        raise HttpError(400, f"malformed header line {_first_bad_line(head)!r}")

    lengths: list[bytes] = []
    transfer_encoding: bytes | None = None
    connection = b""
    expect: bytes | None = None
    has_host = False
    for name, value in _FRAMING.findall(head.lower(), line.end() - 1):
        if name == b"host":
            has_host = True
        elif name == b"content-length":
            lengths += (
                [v.strip(b" \t") for v in value.split(b",")] if b"," in value else [value.rstrip(b" \t")]
            )
        elif name == b"connection":
            connection += b"," + value
        elif name == b"transfer-encoding":
            if transfer_encoding is not None:
                raise HttpError(400, "repeated transfer-encoding header")
            transfer_encoding = value.rstrip(b" \t")
        else:
            expect = value.rstrip(b" \t")

    if version == b"HTTP/1.1":
        if not has_host:
            raise HttpError(400, "HTTP/1.1 request without a host header")  # RFC 9112 §3.2
        keep_alive = b"close" not in connection or b"close" not in _tokens(connection)
    else:
        keep_alive = b"keep-alive" in connection and b"keep-alive" in _tokens(connection)

    chunked = False
    length = 0
    if transfer_encoding is not None:
        # RFC 9112 §6.3: T-E with C-L smells of request smuggling; refusing is the strict choice.
        if lengths:
            raise HttpError(400, "both transfer-encoding and content-length")
        if version != b"HTTP/1.1":
            raise HttpError(400, "transfer-encoding in an HTTP/1.0 request")
        if transfer_encoding != b"chunked":
            codings = [c.strip(b" \t") for c in transfer_encoding.split(b",")]
            if codings[-1] != b"chunked":
                raise HttpError(400, "chunked is not the final transfer coding")  # RFC 9112 §6.3
            raise HttpError(501, f"unsupported transfer coding {transfer_encoding[:40]!r}")
        chunked = True
    elif lengths:
        raw = lengths[0]
        if lengths.count(raw) != len(lengths):
            raise HttpError(400, "conflicting content-length values")
        if not raw.isdigit() or len(raw) > 18:
            raise HttpError(400, f"bad content-length {raw[:20]!r}")
        length = int(raw)

    expect_continue = False
    if expect is not None:
        if expect != b"100-continue":
            raise HttpError(417, f"unsupported expectation {expect[:40]!r}")
        # RFC 9110 §10.1.1: only worth an interim response when a body is still to come.
        expect_continue = version == b"HTTP/1.1" and (chunked or length > 0)
    request = Request(head, line.end(), method, target, version, keep_alive)
    return request, length, chunked, expect_continue


def _tokens(connection: bytes) -> set[bytes]:
    return {token.strip(b" \t") for token in connection.split(b",")}


def _first_bad_line(head: bytes) -> bytes:
    for line in head.split(b"\r\n")[1:]:
        if not _FIELD_BLOCK.fullmatch(line + b"\r\n"):
            return line[:80]
    return head[:80]


def response_head(status: int, headers: list[tuple[bytes, bytes]], reason: bytes | None = None) -> bytes:
    """Serialize a status line and header block, ending with the blank line."""
    lines = [b"HTTP/1.1 %d %s" % (status, REASONS.get(status, b"Unknown") if reason is None else reason)]
    lines.extend(name + b": " + value for name, value in headers)
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


def chunk(data: bytes) -> bytes:
    """Frame one piece of a chunked body (RFC 9112 §7.1)."""
    return b"%x\r\n%b\r\n" % (len(data), data)
