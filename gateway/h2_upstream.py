"""HTTP/2 towards an upstream (``upstream_protocol = "h2"``): a few connections, each carrying many
exchanges as streams.

``H2UpstreamPool`` hands out ``H2UpstreamStream``s that stand in for an HTTP/1.1 ``UpstreamConnection``
(send, drain, receive, abort), so the client-side handlers need not know which protocol the upstream
speaks; their ``http`` is an HTTP/1.1 state that never relays a body, which keeps the handlers on the
event path. No background task: a stream that needs bytes reads the socket under its connection's lock
and routes every event to its stream (httpcore's approach). DATA is acked when its stream asks for more,
so flow control runs end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import Callable

from gateway.upstream import (
    UpstreamConnection,
    UpstreamPool,
    UpstreamTlsError,
    open_upstream,
)
from parsers.errors import ParseError
from parsers.events import (
    BodyChunk,
    ConnectionClosed,
    Event,
    GoAway,
    MessageEnd,
    ParseFailed,
    RequestHead,
    ResponseHead,
    StreamReset,
)
from parsers.http1 import Http1Connection, Role, end_to_end
from parsers.http2 import CANCEL, Http2Connection

READ_SIZE = 64 * 1024
MAX_STREAMS_PER_CONNECTION = 100  # below most servers' SETTINGS_MAX_CONCURRENT_STREAMS anyway
LAST_STREAM_ID = 2**31 - 1


class _Connection:
    """One HTTP/2 connection to the upstream and the streams open on it."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        scheme: bytes,
        max_head_bytes: int,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.scheme = scheme
        self.max_head_bytes = max_head_bytes
        self.http = Http2Connection(Role.CLIENT, max_header_list_bytes=max_head_bytes)
        self.lock = asyncio.Lock()  # one reader at a time
        self.streams: dict[int, H2UpstreamStream] = {}
        self.next_id = 1
        self.dead = False  # GOAWAY, a protocol error or EOF: no new stream
        self.idle_since = time.monotonic()
        self.flush()

    def flush(self) -> None:
        data = self.http.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def usable(self, now: float, idle_ttl_s: float) -> bool:
        if self.dead or self.writer.is_closing() or self.reader.at_eof() or self.next_id >= LAST_STREAM_ID:
            return False
        if not self.streams and now - self.idle_since >= idle_ttl_s:
            return False  # idle too long: the upstream may be closing it
        return len(self.streams) < min(self.http.peer_max_concurrent_streams, MAX_STREAMS_PER_CONNECTION)

    def open_stream(self) -> H2UpstreamStream:
        stream = H2UpstreamStream(self, self.next_id)
        self.streams[self.next_id] = stream
        self.next_id += 2
        return stream

    async def pump(self, done: Callable[[], bool]) -> None:
        """Read once, unless ``done()`` holds once the lock is ours, and route what came to the streams."""
        async with self.lock:
            if done():
                return
            try:
                data = await self.reader.read(READ_SIZE)
            except ConnectionError:
                data = b""
            events = self.http.feed(data) if data else self.http.feed_eof()
            for event in events:
                self._route(event)
            self.flush()

    def _route(self, event: Event) -> None:
        stream = self.streams.get(event.stream_id) if event.stream_id else None
        if stream is not None:
            stream.inbox.append(event)
            return
        match event:
            case GoAway():
                # RFC 9113 §6.8: streams above last_stream_id were never processed.
                self.dead = True
                for sid, open_stream in self.streams.items():
                    if sid > event.last_stream_id:
                        open_stream.inbox.append(ConnectionClosed(stream_id=sid))
            case ParseFailed() | ConnectionClosed():
                self.dead = True
                for sid, open_stream in self.streams.items():
                    open_stream.inbox.append(
                        ParseFailed(stream_id=sid, error=event.error)
                        if isinstance(event, ParseFailed)
                        else ConnectionClosed(stream_id=sid)
                    )
            case _:
                pass  # a late frame of a stream already given up

    def forget(self, stream: H2UpstreamStream) -> None:
        self.streams.pop(stream.stream_id, None)
        if not self.streams:
            self.idle_since = time.monotonic()


class H2UpstreamStream(UpstreamConnection):
    """One exchange's stream on an upstream HTTP/2 connection, used like an HTTP/1.1 connection."""

    def __init__(self, conn: _Connection, stream_id: int) -> None:
        # No UpstreamConnection.__init__: the socket belongs to the connection, shared by its streams.
        self.conn = conn
        self.stream_id = stream_id
        self.reader = conn.reader
        self.writer = conn.writer
        # Never fed: it relays no body, so the handlers stay on the event path for this upstream.
        self.http = Http1Connection(Role.CLIENT, max_head_bytes=conn.max_head_bytes)
        self.idle_since = 0.0
        self.eof = False
        self.inbox: deque[Event] = deque()
        self.ended = False  # the response ended (MessageEnd): the stream is done on both sides
        self._unacked = 0

    def send(self, event: Event) -> None:
        """Raises: ConnectionResetError when the connection or stream can take nothing more."""
        conn = self.conn
        sid = self.stream_id
        out: Event
        match event:
            case RequestHead():
                # RFC 9113 §8.2.2: no connection-specific fields; names lowercase (§8.2.1).
                fields = [(name.lower(), value) for name, value in end_to_end(event.headers)]
                out = RequestHead(
                    stream_id=sid,
                    method=event.method,
                    target=event.target,
                    headers=[(b":scheme", conn.scheme), *fields],
                    http_version=b"2",
                )
            case BodyChunk():
                out = BodyChunk(stream_id=sid, data=event.data)
            case MessageEnd():
                trailers = [(name.lower(), value) for name, value in end_to_end(event.trailers)]
                out = MessageEnd(stream_id=sid, trailers=trailers)
            case _:
                raise ConnectionResetError(f"h2 upstream: cannot send {type(event).__name__}")
        try:
            conn.http.send(out)
        except ParseError as exc:
            raise ConnectionResetError(str(exc)) from None
        conn.flush()

    async def drain(self) -> None:
        """Wait while this stream's request body waits for the upstream's window, or the socket is full."""
        conn = self.conn
        sid = self.stream_id
        while conn.http.buffered(sid) > READ_SIZE and not conn.dead:
            await conn.pump(lambda: conn.http.buffered(sid) <= READ_SIZE)
        if conn.dead:
            raise ConnectionResetError("the upstream HTTP/2 connection closed")
        if self.writer.transport.get_write_buffer_size() > READ_SIZE:
            await self.writer.drain()

    async def receive(self, timeout_s: float) -> list[Event]:
        """The next events of this stream (upstream's response). Raises TimeoutError after ``timeout_s``."""
        conn = self.conn
        if self._unacked:
            # The caller passed the previous body on: the upstream may send that much more.
            conn.http.ack(self.stream_id, self._unacked)
            self._unacked = 0
            conn.flush()
        async with asyncio.timeout(timeout_s):
            while not self.inbox:
                await conn.pump(lambda: bool(self.inbox))
        events: list[Event] = []
        while self.inbox:
            event = self.inbox.popleft()
            match event:
                case ResponseHead():
                    # The status is the field; pseudo-headers do not cross into HTTP/1.1 heads.
                    headers = [(n, v) for n, v in event.headers if not n.startswith(b":")]
                    event = ResponseHead(
                        stream_id=event.stream_id, status=event.status, headers=headers, http_version=b"2"
                    )
                case BodyChunk():
                    self._unacked += len(event.data)
                case MessageEnd():
                    self.ended = True
                case StreamReset():
                    self.eof = True
                    event = ParseFailed(
                        stream_id=self.stream_id,
                        error=f"h2: the upstream reset stream {self.stream_id} (0x{event.error_code:x})",
                    )
                case ParseFailed() | ConnectionClosed():
                    self.eof = True
                case _:
                    pass
            events.append(event)
        return events

    @property
    def usable(self) -> bool:
        return not self.conn.dead and not self.writer.is_closing()

    def abort(self) -> None:
        """Cancel this stream only (RST_STREAM); the connection goes on for the others."""
        if not self.ended:
            with contextlib.suppress(ParseError):
                self.conn.http.send(StreamReset(stream_id=self.stream_id, error_code=CANCEL))
            self.conn.flush()
        self.ended = True
        self.conn.forget(self)


class H2UpstreamPool(UpstreamPool):
    """A few HTTP/2 connections to one upstream; every exchange is a stream on one of them."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout_s: float,
        max_head_bytes: int,
        idle_ttl_s: float = 4.0,
        tls: ssl.SSLContext | None = None,  # offers ALPN h2 only
    ) -> None:
        super().__init__(
            host,
            port,
            connect_timeout_s=connect_timeout_s,
            max_idle=0,
            max_head_bytes=max_head_bytes,
            idle_ttl_s=idle_ttl_s,
            tls=tls,
        )
        self._connections: list[_Connection] = []
        self._connecting = asyncio.Lock()  # concurrent first requests share one new connection

    async def acquire(self) -> H2UpstreamStream:
        """A new stream on a connection with room, opening a connection if none has.

        Raises:
            UpstreamTlsError: the TLS handshake failed, or the upstream did not agree to h2 by ALPN.
            UpstreamUnavailable: connection refused or unreachable.
            TimeoutError: no connection within ``connect_timeout_s``.
        """
        async with self._connecting:
            now = time.monotonic()
            for conn in list(self._connections):
                if conn.usable(now, self._idle_ttl_s):
                    self.reuses += 1
                    return conn.open_stream()
                if not conn.streams:
                    conn.writer.transport.abort()
                    self._connections.remove(conn)
            conn = await self._connect()
            self._connections.append(conn)
            self.connects += 1
            return conn.open_stream()

    async def _connect(self) -> _Connection:
        reader, writer = await open_upstream(self.host, self.port, self.tls, self._connect_timeout_s)
        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() != "h2":
            writer.transport.abort()
            raise UpstreamTlsError(f"upstream {self.host}:{self.port} did not agree to HTTP/2 (ALPN h2)")
        scheme = b"https" if self.tls else b"http"
        return _Connection(reader, writer, scheme=scheme, max_head_bytes=self._max_head_bytes)

    def release(self, conn: UpstreamConnection, *, reusable: bool) -> None:
        """The exchange is over: its stream is forgotten (reset first if it did not end)."""
        if isinstance(conn, H2UpstreamStream):
            conn.abort()
            if conn.conn.dead and not conn.conn.streams:
                conn.conn.writer.transport.abort()

    def close(self) -> None:
        for conn in self._connections:
            conn.writer.transport.abort()
        self._connections.clear()


__all__ = ["H2UpstreamPool", "H2UpstreamStream"]
