"""HTTP/2 on one connection, wrapping h2: bytes in, events out; events in, bytes out (``data_to_send``).

One ``Http2Connection`` faces one peer: as ``Role.SERVER`` a client's streams, as ``Role.CLIENT`` an
upstream. Every event carries its stream id. h2 answers SETTINGS and PING itself; flow control stays
with the caller: received DATA is handed back with ``ack`` once it was passed on, and DATA to send waits
here, per stream, for the peer's window (``buffered`` says how much). No h2 type or exception leaves
this module.
"""

from __future__ import annotations

from typing import ClassVar

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from h2.connection import ConnectionState

from parsers.errors import ParseError
from parsers.events import (
    BodyChunk,
    ConnectionClosed,
    Event,
    GoAway,
    Headers,
    MessageEnd,
    ParseFailed,
    RequestHead,
    ResponseHead,
    StreamReset,
)
from parsers.http1 import Role

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # RFC 9113 §3.4: what a client sends first
DEFAULT_WINDOW = 65_535  # RFC 9113 §6.9.2: every window's size before SETTINGS change it

NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
REFUSED_STREAM = 0x7
CANCEL = 0x8
ENHANCE_YOUR_CALM = 0xB


class _Outbound:
    """DATA (and the end of the stream) waiting for the peer's flow-control window."""

    __slots__ = ("data", "end", "trailers")

    def __init__(self) -> None:
        self.data = bytearray()
        self.end = False
        self.trailers: Headers = []


class Http2Connection:
    """The HTTP/2 state of one connection, seen from the gateway's side of it."""

    name: ClassVar[str] = "h2"

    def __init__(
        self,
        role: Role,
        *,
        max_concurrent_streams: int = 100,
        max_header_list_bytes: int = 64 * 1024,
        stream_window_bytes: int = DEFAULT_WINDOW,
    ) -> None:
        client = role is Role.CLIENT
        self.role = role
        config = h2.config.H2Configuration(
            client_side=client,
            header_encoding=None,  # raw bytes, as the recorder wants them
            normalize_inbound_headers=False,  # keep split cookie fields as they came
        )
        self._h2 = h2.connection.H2Connection(config=config)
        self._h2.local_settings = h2.settings.Settings(
            client=client,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_concurrent_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: max_header_list_bytes,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: stream_window_bytes,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        # hpack enforces the list size only once told; h2 tells it when the peer acks our SETTINGS.
        self._h2.decoder.max_header_list_size = max_header_list_bytes
        self._h2.initiate_connection()
        # The connection window covers every stream at its full window, so one stream whose data is
        # not yet passed on (not acked) never holds up the others.
        connection_window = min(max_concurrent_streams * stream_window_bytes, 2**31 - 1)
        if connection_window > DEFAULT_WINDOW:
            self._h2.increment_flow_control_window(connection_window - DEFAULT_WINDOW)
        self._outbound: dict[int, _Outbound] = {}
        self._trailers: dict[int, Headers] = {}
        self._failed = False
        self._bytes_in = 0
        self.sent_goaway: GoAway | None = None  # the GOAWAY this side sent, once it did

    # --- receiving -------------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[Event]:
        """Parse bytes from the peer. A protocol error yields ``ParseFailed``, queues a GOAWAY with the
        error's code (``sent_goaway``) and makes the parser inert."""
        if self._failed or not data:
            return []
        self._bytes_in += len(data)
        try:
            received = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            return [self._fail(str(exc) or type(exc).__name__, int(exc.error_code))]
        out: list[Event] = []
        for ev in received:
            self._translate(ev, out)
        return out

    def feed_eof(self) -> list[Event]:
        if self._failed:
            return []
        self._failed = True
        return [ConnectionClosed()]

    def _fail(self, message: str, error_code: int) -> ParseFailed:
        self._failed = True
        self._outbound.clear()
        where = "client" if self.role is Role.SERVER else "upstream"
        # h2 queued GOAWAY(error_code) before raising, except for a bad preface (RFC 9113 §3.4 wants one).
        if self._h2.state_machine.state is not ConnectionState.CLOSED:
            self._h2.close_connection(error_code)
        self.sent_goaway = GoAway(error_code=error_code, last_stream_id=self._h2.highest_inbound_stream_id)
        status = 431 if error_code == ENHANCE_YOUR_CALM else 400
        return ParseFailed(
            error=f"h2: {message} (from {where}, near byte {self._bytes_in}; GOAWAY 0x{error_code:x})",
            status_hint=status,
        )

    def _translate(self, ev: h2.events.Event, out: list[Event]) -> None:
        match ev:
            case h2.events.RequestReceived():
                out.append(_request_head(ev.stream_id, _pairs(ev.headers)))
                if ev.stream_ended is not None:
                    out.append(MessageEnd(stream_id=ev.stream_id))
            case h2.events.ResponseReceived() | h2.events.InformationalResponseReceived():
                headers = _pairs(ev.headers)
                status = pseudo_header(headers, b":status")
                if not status.isdigit():
                    out.append(self._fail(f"response :status {status!r} is not a number", PROTOCOL_ERROR))
                    self._h2.close_connection(PROTOCOL_ERROR)
                    return
                out.append(
                    ResponseHead(
                        stream_id=ev.stream_id, status=int(status), headers=headers, http_version=b"2"
                    )
                )
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_ended is not None:
                    out.append(MessageEnd(stream_id=ev.stream_id))
            case h2.events.DataReceived():
                if ev.data:
                    out.append(BodyChunk(stream_id=ev.stream_id, data=ev.data))
                padding = ev.flow_controlled_length - len(ev.data)
                if padding > 0:  # padding is never passed on: its window comes back at once
                    self._h2.acknowledge_received_data(padding, ev.stream_id)
            case h2.events.TrailersReceived():
                self._trailers[ev.stream_id] = _pairs(ev.headers)
            case h2.events.StreamEnded():
                out.append(MessageEnd(stream_id=ev.stream_id, trailers=self._trailers.pop(ev.stream_id, [])))
            case h2.events.StreamReset():
                self._outbound.pop(ev.stream_id, None)
                self._trailers.pop(ev.stream_id, None)
                out.append(StreamReset(stream_id=ev.stream_id, error_code=int(ev.error_code)))
            case h2.events.ConnectionTerminated():
                out.append(
                    GoAway(
                        error_code=int(ev.error_code or 0),
                        last_stream_id=ev.last_stream_id or 0,
                        debug=ev.additional_data or b"",
                    )
                )
            case h2.events.WindowUpdated() | h2.events.RemoteSettingsChanged():
                self._flush_all()
            case _:
                pass  # settings/ping acks (h2 sends them), priority, unknown frames: nothing to record

    # --- sending ---------------------------------------------------------------------------------

    def send(self, event: Event) -> None:
        """Queue one event for the peer; its bytes come from ``data_to_send``.

        Raises:
            ParseError: the event is not valid here (closed stream, bad header); nothing was queued.
        """
        sid = event.stream_id
        try:
            match event:
                case RequestHead():
                    self._h2.send_headers(sid, _request_block(event))
                case ResponseHead():
                    block = [(b":status", b"%d" % event.status), *_regular(event.headers)]
                    self._h2.send_headers(sid, block)
                case BodyChunk():
                    self._outbound.setdefault(sid, _Outbound()).data += event.data
                    self._flush(sid)
                case MessageEnd():
                    pending = self._outbound.setdefault(sid, _Outbound())
                    pending.end, pending.trailers = True, _regular(event.trailers)
                    self._flush(sid)
                case StreamReset():
                    self._outbound.pop(sid, None)
                    self._h2.reset_stream(sid, event.error_code)
                case GoAway():
                    self._goaway(event)
                case _:
                    raise ParseError(f"h2: cannot send {type(event).__name__}")
        except h2.exceptions.H2Error as exc:
            self._outbound.pop(sid, None)
            raise ParseError(f"h2: cannot send {type(event).__name__} on stream {sid}: {exc}") from None

    def _goaway(self, event: GoAway) -> None:
        # h2 (and every client built on it, httpx included) takes nothing on a stream after a GOAWAY, so
        # the gateway sends a graceful one only once its streams are done (gateway/h2_connection.py).
        self._h2.close_connection(event.error_code, event.debug or None, event.last_stream_id)
        self.sent_goaway = event

    def data_to_send(self) -> bytes:
        """Everything queued for the peer (frames in order), emptied by this call."""
        return bytes(self._h2.data_to_send())

    def ack(self, stream_id: int, size: int) -> None:
        """The caller passed ``size`` body bytes of ``stream_id`` on: the peer may send that much more."""
        if size > 0:
            self._h2.acknowledge_received_data(size, stream_id)

    def buffered(self, stream_id: int) -> int:
        """Body bytes of ``stream_id`` waiting for the peer's window."""
        pending = self._outbound.get(stream_id)
        return len(pending.data) if pending else 0

    def stream_done(self, stream_id: int) -> bool:
        """Everything queued for ``stream_id``, its end included, went to h2."""
        return stream_id not in self._outbound

    @property
    def peer_max_concurrent_streams(self) -> int:
        """The peer's SETTINGS_MAX_CONCURRENT_STREAMS (unlimited until its SETTINGS arrive)."""
        return int(self._h2.remote_settings.max_concurrent_streams)

    @property
    def highest_stream_id(self) -> int:
        """The highest stream id the peer opened."""
        return int(self._h2.highest_inbound_stream_id)

    def _flush_all(self) -> None:
        for sid in list(self._outbound):
            self._flush(sid)

    def _flush(self, sid: int) -> None:
        pending = self._outbound[sid]
        data = pending.data
        while data:
            size = min(len(data), self._h2.local_flow_control_window(sid), self._h2.max_outbound_frame_size)
            if size <= 0:
                return
            self._h2.send_data(sid, bytes(data[:size]))
            del data[:size]
        if pending.end:
            del self._outbound[sid]
            if pending.trailers:
                self._h2.send_headers(sid, pending.trailers, end_stream=True)
            else:
                self._h2.end_stream(sid)


def _pairs(headers: object) -> Headers:
    # header_encoding=None: h2 hands over (bytes, bytes) pairs.
    return [(bytes(name), bytes(value)) for name, value in headers]  # type: ignore[attr-defined]


def pseudo_header(headers: Headers, name: bytes) -> bytes:
    """The value of a pseudo-header (``b":authority"``), ``b""`` when absent."""
    for key, value in headers:
        if key == name:
            return value
    return b""


def _regular(headers: Headers) -> Headers:
    """Fields without pseudo-headers, names lowercased (RFC 9113 §8.2.1)."""
    return [(name.lower(), value) for name, value in headers if not name.startswith(b":")]


def _request_head(stream_id: int, headers: Headers) -> RequestHead:
    method = pseudo_header(headers, b":method")
    # RFC 9113 §8.5: CONNECT names its target in :authority and has no :path.
    target = pseudo_header(headers, b":path") or pseudo_header(headers, b":authority")
    return RequestHead(stream_id=stream_id, method=method, target=target, headers=headers, http_version=b"2")


def _request_block(head: RequestHead) -> Headers:
    """The header block of a request: pseudo-headers first (RFC 9113 §8.3.1), ``Host`` as :authority."""
    authority = pseudo_header(head.headers, b":authority")
    scheme = pseudo_header(head.headers, b":scheme") or b"https"
    regular = []
    for name, value in _regular(head.headers):
        if name == b"host":
            authority = authority or value
        else:
            regular.append((name, value))
    return [
        (b":method", head.method),
        (b":scheme", scheme),
        (b":authority", authority),
        (b":path", head.target),
        *regular,
    ]


__all__ = [
    "CANCEL",
    "ENHANCE_YOUR_CALM",
    "INTERNAL_ERROR",
    "NO_ERROR",
    "PREFACE",
    "PROTOCOL_ERROR",
    "REFUSED_STREAM",
    "Http2Connection",
    "pseudo_header",
]
