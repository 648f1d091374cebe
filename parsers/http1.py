"""HTTP/1.1 on one connection, wrapping h11: bytes in, events out; events in, bytes out.

One ``Http1Connection`` faces one peer. As ``Role.SERVER`` it faces a client (reads requests, writes
responses); as ``Role.CLIENT`` it faces an upstream. Parsing and serializing stay separate calls, so
the gateway decides what is forwarded. No h11 type or exception leaves this module.

With ``relay_bodies`` h11 still parses every head, but a body with unambiguous framing is handed to
the caller as raw bytes (``feed_body``) while a ``BodyScanner`` finds where it ends; a body the caller
writes raw is announced with ``relay_body``. A cycle with a relayed body ends with a fresh h11 state.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from typing import ClassVar

import h11
import h11._headers

from parsers.body_framing import BodyScanner, Framing
from parsers.errors import ParseError
from parsers.events import (
    BodyChunk,
    ConnectionClosed,
    Event,
    Headers,
    MessageEnd,
    ParseFailed,
    RequestHead,
    ResponseHead,
)
from parsers.relay_framing import (
    ambiguous_framing,
    persistent,
    relayable_request_body,
    relayable_response_body,
    sent_request_framing,
    sent_response_framing,
)

# RFC 9110 §7.6.1: hop-by-hop fields, never forwarded (plus whatever `Connection` names).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
    }
)


class Role(enum.Enum):
    SERVER = "server"  # we face a client
    CLIENT = "client"  # we face an upstream


class Via(enum.Enum):
    """Who carries one direction's body in the current cycle."""

    H11 = "h11"  # h11 parses (or frames) it
    RELAY = "relay"  # the caller relays its raw bytes; a BodyScanner finds the end
    RELAYED = "relayed"  # the relayed body is complete


@dataclasses.dataclass(slots=True)
class RelayedBody:
    """What one ``feed_body`` found: the raw bytes that belong to the body, and what they decode to."""

    wire: bytes  # as received, framing included: what the relay forwards
    data: bytes  # the body bytes after transfer decoding: what gets recorded
    done: bool  # the message ended within ``wire``
    trailers: Headers


class Http1Connection:
    """The HTTP/1.1 state of one connection, seen from the gateway's side of it."""

    name: ClassVar[str] = "http1"

    def __init__(self, role: Role, *, max_head_bytes: int = 64 * 1024, relay_bodies: bool = False) -> None:
        self.role = role
        self._h11_role = h11.SERVER if role is Role.SERVER else h11.CLIENT
        self._h11 = h11.Connection(self._h11_role, max_head_bytes)
        self._max_head_bytes = max_head_bytes
        # Only requests are guarded: the client side is where smuggling attempts come from.
        self._guard = _HeadGuard() if role is Role.SERVER else None
        self._failed = False
        self._bytes_in = 0  # for error locations
        self._relay = relay_bodies  # off for good once a head's framing was ambiguous
        self._recv = Via.H11
        self._send = Via.H11
        self._scanner: BodyScanner | None = None
        self._stash = b""  # bytes h11 had buffered past the head of a relayed body
        self._after = b""  # bytes past the end of a relayed body: the next message's
        self._sent_framing: Framing | None = None  # of the last head sent
        self._persistent = True  # no head of this cycle asked to close
        self._request_method = b""  # of the current cycle, for response framing
        self._peer_version = b"1.1"
        self.body_framing: Framing | None = None  # set while the received body is relayed

    # --- receiving -------------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[Event]:
        """Parse bytes from the peer. A protocol error yields ``ParseFailed`` and the parser goes inert.

        Raises:
            ParseError: the body is being relayed; its bytes go to ``feed_body``.
        """
        if self._recv is not Via.H11:
            raise ParseError("http1: the body is relayed; feed it with feed_body")
        if self._failed or not data:
            return []  # h11 reads b"" as EOF; that is feed_eof's job
        self._bytes_in += len(data)
        if self._guard is not None and self._guard.active:
            problem = self._guard.feed(data)
            if problem:
                self._failed = True
                return [ParseFailed(error=f"http1: {problem} (from client, near byte {self._bytes_in})")]
        self._h11.receive_data(data)
        return self._drain()

    def feed_eof(self) -> list[Event]:
        if self._failed or self._recv is not Via.H11:
            return []
        self._h11.receive_data(b"")
        return self._drain()

    def _drain(self) -> list[Event]:
        out: list[Event] = []
        while True:
            try:
                ev = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._failed = True
                where = "client" if self.role is Role.SERVER else "upstream"
                out.append(
                    ParseFailed(
                        error=f"http1: {exc} (from {where}, near byte {self._bytes_in})",
                        status_hint=exc.error_status_hint,
                    )
                )
                return out
            if ev is h11.NEED_DATA or ev is h11.PAUSED:
                return out
            translated = self._translate(ev)
            if isinstance(translated, RequestHead | ResponseHead):
                # h11 only limits an *incomplete* head: one read can complete a head past the limit.
                size = _head_size(translated)
                if size > self._max_head_bytes:
                    limit = self._max_head_bytes
                    translated = ParseFailed(
                        error=f"http1: message head of {size} bytes exceeds {limit}", status_hint=431
                    )
            if isinstance(translated, ParseFailed):
                self._failed = True
                out.append(translated)
                return out
            out.append(translated)
            if isinstance(translated, ConnectionClosed):
                return out
            if isinstance(translated, RequestHead | ResponseHead) and self._received_head(translated):
                return out  # the body is relayed: h11 sees nothing more of this cycle

    def _translate(self, ev: object) -> Event:
        match ev:
            case h11.Data():
                return BodyChunk(data=bytes(ev.data))
            case h11.Request():
                headers = _raw_headers(ev.headers)
                problem = _framing_problem(headers)
                if problem:
                    return ParseFailed(error=f"http1: {problem} (from client)", status_hint=400)
                return RequestHead(
                    method=bytes(ev.method),
                    target=bytes(ev.target),
                    headers=headers,
                    http_version=bytes(ev.http_version),
                )
            case h11.Response() | h11.InformationalResponse():
                return ResponseHead(
                    status=ev.status_code,
                    headers=_raw_headers(ev.headers),
                    reason=bytes(ev.reason),
                    http_version=bytes(ev.http_version),
                )
            case h11.EndOfMessage():
                return MessageEnd(trailers=_raw_headers(ev.headers))
            case h11.ConnectionClosed():
                return ConnectionClosed()
        raise ParseError(f"http1: unexpected h11 event {type(ev).__name__}")  # pragma: no cover

    def _received_head(self, head: RequestHead | ResponseHead) -> bool:
        """Note a head's effect on the cycle; start relaying its body if allowed. True if relayed."""
        if isinstance(head, RequestHead):
            self._request_method = head.method
            self._peer_version = head.http_version
            framing = relayable_request_body(head) if self.role is Role.SERVER else None
        elif head.status < 200:
            return False
        else:
            framing = relayable_response_body(head, self._request_method)
        self._persistent = self._persistent and persistent(head.headers, head.http_version)
        if not self._relay:
            return False
        if framing is None:
            if ambiguous_framing(head.headers):
                self._relay = False  # RFC 9112 §6.3: odd framing is a smuggling risk; h11 decides from now on
            return False
        data, _ = self._h11.trailing_data
        self._stash = bytes(data)
        self._scanner = BodyScanner(framing)
        self._recv = Via.RELAY
        self.body_framing = framing
        return True

    def feed_body(self, data: bytes) -> RelayedBody:
        """Scan raw bytes of a relayed body (``b""`` picks up what arrived with the head).

        Raises:
            ParseError: the bytes break the body's framing; the connection cannot go on.
        """
        scanner = self._scanner
        if self._recv is not Via.RELAY or scanner is None or self._failed:
            raise ParseError("http1: no relayed body in progress")
        if self._stash:
            data = self._stash + data if data else self._stash
            self._stash = b""
        try:
            scan = scanner.feed(data)
        except ParseError as exc:
            self._failed = True
            where = "client" if self.role is Role.SERVER else "upstream"
            raise ParseError(f"http1: {exc} (from {where})", status_hint=exc.status_hint) from None
        self._bytes_in += scan.consumed
        consumed = scan.consumed
        wire = data if consumed == len(data) else data[:consumed]
        pieces = scan.pieces
        body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        if scan.done:
            self._recv = Via.RELAYED
            self._after = data[consumed:]
            self._scanner = None
        return RelayedBody(wire, body, scan.done, scan.trailers)

    def feed_body_eof(self) -> ParseError:
        """The peer closed during a relayed body: the error to report (a relayed body never ends at EOF)."""
        self._failed = True
        where = "client" if self.role is Role.SERVER else "upstream"
        return ParseError(f"http1: connection closed mid-body (from {where}, near byte {self._bytes_in})")

    # --- sending ---------------------------------------------------------------------------------

    def send(self, event: Event) -> bytes:
        """Serialize one event for the peer.

        Raises:
            ParseError: the event is not valid here (wrong state, bad header); nothing was produced.
        """
        h11_event: h11.Request | h11.Response | h11.InformationalResponse | h11.Data | h11.EndOfMessage
        match event:
            case BodyChunk():
                h11_event = h11.Data(data=event.data)
            case RequestHead():
                h11_event = h11.Request(method=event.method, target=event.target, headers=event.headers)
            case ResponseHead() if event.status < 200:
                h11_event = h11.InformationalResponse(
                    status_code=event.status, headers=event.headers, reason=event.reason
                )
            case ResponseHead():
                h11_event = h11.Response(status_code=event.status, headers=event.headers, reason=event.reason)
            case MessageEnd():
                h11_event = h11.EndOfMessage(headers=event.trailers)
            case _:
                raise ParseError(f"http1: cannot send {type(event).__name__}")
        if self._send is not Via.H11:
            raise ParseError(f"http1: cannot send {type(event).__name__}: the body is relayed")
        try:
            data = self._h11.send(h11_event) or b""
        except h11.LocalProtocolError as exc:
            self._h11.send_failed()
            raise ParseError(f"http1: cannot send {type(event).__name__}: {exc}") from None
        if isinstance(event, RequestHead):
            self._request_method = event.method
            self._sent_framing = sent_request_framing(event)
            self._persistent = self._persistent and persistent(event.headers, b"1.1")
        elif isinstance(event, ResponseHead) and event.status >= 200:
            self._sent_framing = sent_response_framing(event, self._request_method, self._peer_version)
            self._persistent = self._persistent and persistent(event.headers, b"1.1")
        return data

    def relay_body(self, framing: Framing) -> bool:
        """The caller will write the body of the head just sent as raw bytes framed as ``framing``.

        True if that is how h11 framed the head; False leaves the body to ``send`` (h11 re-frames it).
        """
        if not self._relay or self._send is not Via.H11 or self._sent_framing != framing:
            return False
        self._send = Via.RELAY
        return True

    def body_relayed(self) -> None:
        """The raw body announced with ``relay_body`` has been written in full."""
        if self._send is Via.RELAY:
            self._send = Via.RELAYED

    # --- connection state ------------------------------------------------------------------------

    @property
    def peer_waiting_for_100_continue(self) -> bool:
        """The client sent ``Expect: 100-continue`` and waits before sending its body."""
        return self._h11.they_are_waiting_for_100_continue

    @property
    def reusable(self) -> bool:
        """Both sides finished the current message cycle and neither asked to close."""
        received = self._h11.their_state is h11.DONE if self._recv is Via.H11 else self._recv is Via.RELAYED
        sent = self._h11.our_state is h11.DONE if self._send is Via.H11 else self._send is Via.RELAYED
        if self._recv is Via.H11 and self._send is Via.H11:
            return received and sent
        # An upstream that sends past the end of its response is out of step with us: no reuse.
        extra = self.role is Role.CLIENT and bool(self._after)
        return received and sent and self._persistent and not extra and not self._failed

    @property
    def request_done(self) -> bool:
        """The request side of the current cycle is complete."""
        if self.role is Role.SERVER and self._recv is not Via.H11:
            return self._recv is Via.RELAYED
        if self.role is Role.CLIENT and self._send is not Via.H11:
            return self._send is Via.RELAYED
        req = self._h11.their_state if self.role is Role.SERVER else self._h11.our_state
        return req in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED)

    def next_cycle(self) -> list[Event]:
        """Start the next request/response cycle on a kept-alive connection.

        Returns the events of bytes already buffered (a pipelined request).

        Raises:
            ParseError: the connection is not reusable.
        """
        if self._recv is Via.H11 and self._send is Via.H11:
            try:
                self._h11.start_next_cycle()
            except h11.LocalProtocolError as exc:
                raise ParseError(f"http1: cannot reuse connection: {exc}") from None
            pipelined = bytes(self._h11.trailing_data[0])
        else:
            # h11 never saw the relayed body: the next cycle starts on a fresh h11 state, fed with the
            # bytes that followed the message (a pipelined request).
            if not self.reusable:
                raise ParseError("http1: cannot reuse connection: the cycle did not end cleanly")
            closed = False
            if self._recv is Via.RELAYED:
                pipelined = self._after
            else:
                data, closed = self._h11.trailing_data
                pipelined = bytes(data)
            self._h11 = h11.Connection(self._h11_role, self._max_head_bytes)
            self._recv = self._send = Via.H11
            self._after = b""
            if pipelined:
                self._h11.receive_data(pipelined)
            if closed:
                self._h11.receive_data(b"")
        self._persistent = True
        self.body_framing = None
        self._sent_framing = None
        if self._guard is not None:
            self._guard = _HeadGuard()
            problem = self._guard.feed(pipelined)
            if problem:
                self._failed = True
                return [ParseFailed(error=f"http1: {problem} (from client, pipelined request)")]
        return self._drain()


def _raw_headers(headers: h11._headers.Headers) -> Headers:
    # h11 keeps the raw (original case) names beside the lowercased ones; a recorder wants the raw.
    return headers.raw_items()


_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_CONTROL_BUT_LINE_ENDS = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class _HeadGuard:
    """Checks raw request-head bytes for what h11 tolerates but a proxy must refuse.

    RFC 9112 §2.2 (bare LF), §5.2 (obs-fold) and §5.5 (control characters in field values): each lets
    two parsers disagree about where a header or message ends. Scans each line once, keeps only the
    incomplete last line.
    """

    def __init__(self) -> None:
        self._line = bytearray()
        self._lines = 0
        self.active = True  # until the blank line that ends the head

    def feed(self, data: bytes) -> str:
        """Returns a description of a problem found, or "" if none (yet)."""
        if not self._line and not self._lines and data[:1] not in (b"\r", b"\n"):
            end = data.find(b"\r\n\r\n")
            if end > 0:
                return self._whole_head(data[: end + 4])
        self._line += data
        start = 0
        while self.active:
            end = self._line.find(b"\n", start)
            if end < 0:
                break
            line = bytes(self._line[start:end])
            start = end + 1
            if not line.endswith(b"\r"):
                return "bare LF line ending in the request head"
            line = line[:-1]
            if not line:
                if self._lines:
                    self.active = False
                continue  # RFC 9112 §2.2: empty lines before the request line are ignored
            self._lines += 1
            if self._lines > 1 and line[:1] in (b" ", b"\t"):
                return "obsolete line folding (obs-fold) in the request head"
            if _CONTROL.search(line):
                return "control character in the request head"
        del self._line[:start]
        return ""

    def _whole_head(self, head: bytes) -> str:
        """The usual case, a whole head in one read: the same checks over all of it at once."""
        self.active = False
        line_ends = head.count(b"\r\n")
        if head.count(b"\n") != line_ends:
            return "bare LF line ending in the request head"
        if b"\n " in head or b"\n\t" in head:
            return "obsolete line folding (obs-fold) in the request head"
        if head.count(b"\r") != line_ends or _CONTROL_BUT_LINE_ENDS.search(head):
            return "control character in the request head"
        return ""


def _head_size(head: RequestHead | ResponseHead) -> int:
    """The size of a head on the wire, give or take optional whitespace."""
    first = len(head.method) + len(head.target) if isinstance(head, RequestHead) else len(head.reason) + 4
    return first + 12 + sum(len(name) + len(value) + 4 for name, value in head.headers) + 2


def _framing_problem(headers: Headers) -> str:
    """Request framing h11 tolerates but a proxy must refuse (RFC 9112 §6.1, §6.3: smuggling risks)."""
    has_te = False
    lengths = 0
    for name, value in headers:
        lower = name.lower()
        if lower == b"transfer-encoding":
            has_te = True
        elif lower == b"content-length":
            lengths += 1
            if not value.isdigit():
                return f"Content-Length must be one decimal number, got {value[:40]!r}"
    if has_te and lengths:
        return "both Content-Length and Transfer-Encoding in one request"
    if lengths > 1:
        return "more than one Content-Length header"
    return ""


def connection_tokens(headers: Headers) -> frozenset[bytes]:
    """The lowercased field names a ``Connection`` header lists (they are hop-by-hop too)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return frozenset(tokens)


def end_to_end(headers: Headers) -> Headers:
    """Drop hop-by-hop fields, keeping order and case of the rest."""
    drop = HOP_BY_HOP | connection_tokens(headers)
    return [(n, v) for n, v in headers if n.lower() not in drop]


def render_response(status: int, reason: bytes, headers: Headers, body: bytes) -> bytes:
    """A complete response the gateway makes itself (errors), for a connection it then closes.

    Written without h11 on purpose: it must work whatever state the peer's bytes left the parser in.
    """
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    lines.extend(b"%s: %s\r\n" % (name, value) for name, value in headers)
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)


__all__ = [
    "HOP_BY_HOP",
    "Http1Connection",
    "RelayedBody",
    "Role",
    "Via",
    "connection_tokens",
    "end_to_end",
    "render_response",
]
