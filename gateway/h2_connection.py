"""One HTTP/2 client connection: every stream is its own exchange, served over the HTTP/1.1 upstream pool.

Owns the socket, the h2 state (``parsers.http2``) and one named task per stream. Flow control runs end to
end: request DATA is acked to the client only once written upstream, response DATA waits in the parser
for the client's window, and a stream whose backlog is full stops reading its upstream while the others
go on. Abuse (rapid resets, protocol errors, floods) closes only this connection, with a GOAWAY that is
recorded. It parses nothing itself and knows nothing of HTTP/1.1 clients (``gateway.proxy``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from gateway.conn_frames import ConnectionFrames
from gateway.h2_stream import StreamAborted, StreamExchange
from gateway.ids import new_id
from gateway.proxy import ProxyContext
from gateway.recorder import RecordingFailed
from gateway.tls import TlsSession, session_of
from parsers.errors import ParseError
from parsers.events import (
    ANONYMOUS,
    BodyChunk,
    ConnectionClosed,
    Direction,
    Event,
    ExchangeEnded,
    ExchangeStarted,
    GatewayError,
    GoAway,
    Identity,
    MessageEnd,
    ParseFailed,
    RequestHead,
    SessionStarted,
    StreamReset,
)
from parsers.http1 import Role
from parsers.http2 import ENHANCE_YOUR_CALM, NO_ERROR, REFUSED_STREAM, Http2Connection

logger = logging.getLogger("wardgate.h2")

READ_SIZE = 64 * 1024
WRITE_HIGH_WATER = 256 * 1024  # socket bytes not yet taken by the kernel before a stream waits


class ResetBudget:
    """A token bucket for streams the client cancels while in flight (CVE-2023-44487, "rapid reset").

    h2 counts open streams but not reset ones, so a client can open and cancel streams without end,
    each one costing us an exchange and an upstream request. ``burst`` cancels are free; after that
    they refill at ``per_s``.
    """

    def __init__(self, *, per_s: float, burst: int, clock: Callable[[], float]) -> None:
        self._per_s = per_s
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._last = clock()

    def take(self) -> bool:
        """Spend one token; False when the bucket is empty (the client is over its rate)."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._per_s)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class H2ClientConnection:
    """Serves one client connection that speaks HTTP/2 (ALPN ``h2`` or the h2c preface) until it closes."""

    def __init__(
        self,
        ctx: ProxyContext,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        initial: bytes = b"",
    ) -> None:
        """``initial``: bytes already read from the client (the sniffed preface)."""
        self.ctx = ctx
        self._initial = initial
        self.reader = reader
        self.writer = writer
        self.conn_id = new_id("c_")
        peer = writer.get_extra_info("peername") or ("unknown", 0)
        self.client_ip = str(peer[0])
        self.client_addr = f"[{peer[0]}]:{peer[1]}" if ":" in self.client_ip else f"{peer[0]}:{peer[1]}"
        self.tls: TlsSession | None = session_of(writer.get_extra_info("ssl_object"))
        self.identity: Identity = ANONYMOUS
        limits = ctx.limits
        self.http = Http2Connection(
            Role.SERVER,
            max_concurrent_streams=limits.h2_max_concurrent_streams,
            max_header_list_bytes=limits.max_head_bytes,
        )
        self.streams: dict[int, StreamExchange] = {}
        self._resets = ResetBudget(
            per_s=limits.h2_resets_per_s, burst=limits.h2_reset_burst, clock=asyncio.get_running_loop().time
        )
        self._tasks: asyncio.TaskGroup | None = None
        self._frames = ConnectionFrames(self.conn_id, ctx.recorder)
        self.emit = self._frames.emit
        self.keep_pace = self._frames.keep_pace
        self._draining = False  # shutting down: no new stream; GOAWAY once the last one ends
        self._closed = False

    @property
    def busy(self) -> bool:
        """Streams in flight: graceful shutdown lets them finish."""
        return bool(self.streams)

    # --- recording -------------------------------------------------------------------------------

    def started(self, exchange_id: str, session_id: str, identity: Identity) -> ExchangeStarted:
        tls = self.tls
        return ExchangeStarted(
            exchange_id=exchange_id,
            session_id=session_id,
            identity=identity,
            client_addr=self.client_addr,
            listener=self.ctx.listener,
            protocol="h2",
            upstream=f"{self.ctx.pool.host}:{self.ctx.pool.port}",
            tls_version=tls.version if tls else "",
            tls_cipher=tls.cipher if tls else "",
            alpn=tls.alpn if tls else "",
            tls_peer_subject=tls.peer.subject if tls and tls.peer else "",
        )

    # --- writing ---------------------------------------------------------------------------------

    def flush(self) -> None:
        """Hand everything h2 queued to the socket."""
        data = self.http.data_to_send()
        if data and not self._closed:
            self.writer.write(data)

    async def drain(self) -> None:
        """Wait while the socket's buffer is full.

        Raises:
            ConnectionError, TimeoutError: the client is gone or stopped reading.
        """
        if self.writer.transport.get_write_buffer_size() <= WRITE_HIGH_WATER:
            if self.writer.is_closing():
                raise ConnectionResetError("the client connection closed")
            return
        async with asyncio.timeout(self.ctx.limits.client_write_timeout_s):
            await self.writer.drain()

    def send(self, event: Event) -> None:
        """Queue an event on its stream and write it. Raises ParseError: the stream cannot take it."""
        self.http.send(event)
        self.flush()

    # --- the connection loop ---------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until the client closes, the connection fails, or shutdown drains it."""
        limits = self.ctx.limits
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                self.flush()  # our SETTINGS: the server's connection preface
                go_on = self._receive(self._initial) if self._initial else True
                wait_s = limits.header_timeout_s  # the preface and first request must come promptly
                while go_on and not self._closed:
                    try:
                        async with asyncio.timeout(wait_s):
                            data = await self.reader.read(READ_SIZE)
                    except TimeoutError:
                        if self.streams:
                            continue
                        self._goaway(NO_ERROR)  # idle: RFC 9113 §6.8, a graceful close
                        break
                    except ConnectionError:
                        data = b""
                    wait_s = limits.idle_timeout_s
                    go_on = self._receive(data) and await self._reader_drain()
                    await self.keep_pace()
                self._end_streams("the client connection closed")
        finally:
            self._closed = True
            self._tasks = None

    async def _reader_drain(self) -> bool:
        """Read no more while the client leaves our writes unread: frames h2 answers by itself (PING and
        SETTINGS acks, RST_STREAM on closed streams) must not pile up without bound (CVE-2019-9512,
        -9514, -9515). False: the client stopped reading for ``client_write_timeout_s``."""
        if self.writer.transport.get_write_buffer_size() <= WRITE_HIGH_WATER:
            return True
        try:
            async with asyncio.timeout(self.ctx.limits.client_write_timeout_s):
                await self.writer.drain()
        except (TimeoutError, ConnectionError):
            logger.warning(
                "connection %s from %s closed: it stopped reading our frames", self.conn_id, self.client_addr
            )
            self._end_streams("the client stopped reading (write timeout)")
            self._closed = True
            self.writer.transport.abort()
            return False
        return True

    def _receive(self, data: bytes) -> bool:
        """Feed bytes from the client and route the events to their streams. False: the connection ends."""
        events = self.http.feed(data) if data else self.http.feed_eof()
        go_on = True
        for i, event in enumerate(events):
            match event:
                case RequestHead():
                    # The parser puts MessageEnd right behind a head that ended the stream: no body.
                    after = events[i + 1] if i + 1 < len(events) else None
                    ended = isinstance(after, MessageEnd) and after.stream_id == event.stream_id
                    self._open_stream(event, has_body=not ended)
                case BodyChunk() | MessageEnd():
                    stream = self.streams.get(event.stream_id)
                    if stream is not None:
                        stream.inbox.put_nowait(event)
                    elif isinstance(event, BodyChunk):
                        # A stream we already answered: give its bytes back to the connection window.
                        self.http.ack(event.stream_id, len(event.data))
                case StreamReset():
                    if not self._client_reset(event):
                        return False  # closed for a flood: the rest of this read is not served
                case GoAway():
                    # Connection-level, no exchange's. h2 takes nothing more after a GOAWAY: streams still
                    # in flight end as their sends fail.
                    with contextlib.suppress(RecordingFailed):
                        self.emit(Direction.FROM_CLIENT, event, "")
                    go_on = bool(self.streams) and go_on
                case ParseFailed():
                    self._abuse(event, kind="h2_protocol_error", message=event.error)
                    return False
                case ConnectionClosed():
                    go_on = False
                case _:
                    pass
        self.flush()
        for stream in self.streams.values():
            stream.window_changed()
        return go_on

    def _open_stream(self, head: RequestHead, *, has_body: bool) -> None:
        sid = head.stream_id
        if self._draining or self._tasks is None:
            # RFC 9113 §8.7: REFUSED_STREAM means nothing was processed; the client may retry elsewhere.
            self.http.send(StreamReset(stream_id=sid, error_code=REFUSED_STREAM))
            return
        stream = StreamExchange(self, head, has_body=has_body)
        self.streams[sid] = stream
        stream.task = self._tasks.create_task(self._serve(stream), name=f"h2 {self.conn_id} stream {sid}")

    def _cancel(self, stream: StreamExchange) -> None:
        """Cancel one stream's exchange. A task that never ran is cancelled without running any of its
        code, so its ending is recorded here."""
        if stream.task is not None:
            stream.task.cancel()
        if not stream.running:
            stream.cancelled()
            self._stream_gone(stream)

    def _stream_gone(self, stream: StreamExchange) -> None:
        self.streams.pop(stream.stream_id, None)
        if self._draining and not self.streams:
            self._goaway(NO_ERROR)

    async def _serve(self, stream: StreamExchange) -> None:
        try:
            await stream.run()
        except StreamAborted:
            pass  # recorded and answered by the stream
        except asyncio.CancelledError:
            stream.cancelled()
            raise
        finally:
            self._stream_gone(stream)

    def _client_reset(self, reset: StreamReset) -> bool:
        """RST_STREAM from the client cancels exactly that exchange. False: over the rapid-reset budget."""
        stream = self.streams.get(reset.stream_id)
        if stream is None:
            return True
        stream.reset_by_client = reset
        self._cancel(stream)
        if self._resets.take():
            return True
        limits = self.ctx.limits
        self._abuse(
            reset,
            kind="h2_rapid_reset",
            message=(
                f"more than {limits.h2_reset_burst} streams cancelled in flight "
                f"(refill {limits.h2_resets_per_s}/s): rapid-reset flood"
            ),
            error_code=ENHANCE_YOUR_CALM,
        )
        return False

    # --- connection-level outcomes ---------------------------------------------------------------

    def _abuse(self, event: Event, *, kind: str, message: str, error_code: int | None = None) -> None:
        """Close this connection for a protocol error or a flood; other connections are untouched."""
        if error_code is not None:
            self.http.send(GoAway(error_code=error_code, last_stream_id=self.http.highest_stream_id))
        self.flush()
        logger.warning("connection %s from %s closed: %s: %s", self.conn_id, self.client_addr, kind, message)
        with contextlib.suppress(RecordingFailed):  # the connection closes either way
            self._record_connection(event, kind=kind, message=message)
        self._end_streams(f"the connection was closed: {kind}")
        self._close()

    def _record_connection(self, event: Event, *, kind: str, message: str) -> None:
        """Record why the gateway closed a connection as a short exchange of its own (search finds it):
        what the client did, the error, and the GOAWAY that went out."""
        errors = self.ctx.stats.errors
        errors[kind] = errors.get(kind, 0) + 1
        ref = self.ctx.sessions.resolve(None, self.identity, self.client_ip, time.time_ns())
        exchange_id = new_id("x_")
        if ref.is_new:
            started = SessionStarted(
                session_id=ref.session_id,
                identity=self.identity,
                client_addr=self.client_addr,
                source=ref.source,
            )
            self.emit(Direction.FROM_CLIENT, started, exchange_id)
        self.emit(
            Direction.FROM_CLIENT, self.started(exchange_id, ref.session_id, self.identity), exchange_id
        )
        self.emit(Direction.FROM_CLIENT, event, exchange_id)
        error = GatewayError(kind=kind, status=0, message=message, client_addr=self.client_addr)
        self.emit(Direction.TO_CLIENT, error, exchange_id)
        if self.http.sent_goaway is not None:
            self.emit(Direction.TO_CLIENT, self.http.sent_goaway, exchange_id)
        self.emit(Direction.TO_CLIENT, ExchangeEnded(outcome="error"), exchange_id)

    def _end_streams(self, reason: str) -> None:
        for stream in list(self.streams.values()):
            stream.cancel_reason = reason
            self._cancel(stream)

    def _goaway(self, error_code: int) -> None:
        if self._closed or self.http.sent_goaway is not None:
            return
        goaway = GoAway(error_code=error_code, last_stream_id=self.http.highest_stream_id)
        try:
            self.http.send(goaway)
        except ParseError:
            return  # the client's GOAWAY or a failure closed h2 already
        with contextlib.suppress(RecordingFailed):
            self.emit(Direction.TO_CLIENT, goaway, "")
        self.flush()
        self._close()

    def _close(self) -> None:
        self._closed = True
        self.writer.close()  # flushes what is buffered (the GOAWAY) first

    def begin_shutdown(self) -> None:
        """Graceful shutdown: refuse new streams, GOAWAY once the streams in flight are done.

        h2 and the clients built on it (httpx) take nothing on a stream after a GOAWAY, so the GOAWAY
        waits for the last stream instead of going first.
        """
        self._draining = True
        if not self.streams:
            self._goaway(NO_ERROR)

    async def refuse_overloaded(self) -> None:
        """Over the connection limit: GOAWAY before any stream (RFC 9113 §6.8: none was processed)."""
        goaway = GoAway(error_code=NO_ERROR, last_stream_id=0, debug=b"overloaded")
        self.http.send(goaway)
        self.flush()
        message = f"the gateway is at its connection limit ({self.ctx.limits.max_connections})"
        with contextlib.suppress(RecordingFailed):
            self._record_connection(ConnectionClosed(), kind="overloaded", message=message)
        self._close()


__all__ = ["H2ClientConnection", "ResetBudget"]
