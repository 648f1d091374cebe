"""One HTTP/2 stream as one exchange: its request forwarded to a pooled HTTP/1.1 upstream, its response
relayed back within the client's flow-control window, every piece recorded with its own time.

Owned and run by ``gateway.h2_connection``, which feeds ``inbox`` and cancels the task on RST_STREAM.
It must not touch the socket except through the connection (``send``, ``flush``, ``drain``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, NoReturn, TypeVar

from gateway.approvals.guard import ResponseGuard, Uninspectable
from gateway.forwarding import client_response_head, error_response, first
from gateway.h2_heads import h1_request_head, h2_response_head
from gateway.identity.access import Refused
from gateway.ids import new_id
from gateway.recorder import RecordingFailed
from gateway.sessions import SESSION_HEADER, BadSessionHeader
from gateway.upstream import UpstreamConnection, UpstreamTlsError, UpstreamUnavailable
from gateway.upstream_masking import UnmaskableBody, mask_forwarded, upstream_rules
from parsers.errors import ParseError
from parsers.events import (
    BodyChunk,
    Direction,
    Event,
    ExchangeEnded,
    GatewayError,
    Headers,
    Identity,
    MessageEnd,
    ParseFailed,
    PolicyDecision,
    RequestHead,
    ResponseHead,
    SessionStarted,
    StreamReset,
)
from parsers.http2 import CANCEL, INTERNAL_ERROR

if TYPE_CHECKING:
    from gateway.h2_connection import H2ClientConnection

_T = TypeVar("_T")

STREAM_HIGH_WATER = 64 * 1024  # response bytes held for a client that does not read this stream


class StreamAborted(Exception):
    """The exchange cannot go on; the reason was recorded and the stream answered or reset."""


class _Refusal(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


class StreamExchange:
    """The state of one client stream while its exchange runs."""

    def __init__(self, conn: H2ClientConnection, head: RequestHead, *, has_body: bool) -> None:
        self.conn = conn
        self.head = head
        self.has_body = has_body
        self.request_done = not has_body  # the client's side of the stream ended
        self.stream_id = head.stream_id
        self.inbox: asyncio.Queue[Event] = asyncio.Queue()  # bounded by the stream's window: acks come late
        self.task: asyncio.Task[None] | None = None
        self.reset_by_client: StreamReset | None = None
        self.cancel_reason = ""
        self.id = new_id("x_")
        self.session_id = ""
        self.request_bytes = 0
        self.response_bytes = 0
        self.status = 0
        self.response_started = False
        self.ended = False
        self.running = False  # the task started; before that a cancel never reaches its code
        self.opened = False  # its start is recorded
        self.identity: Identity = conn.identity  # the identity layer's verdict for this stream's request
        self.upstream: UpstreamConnection | None = None
        self.request_body: bytearray | None = None  # kept only when the response is guarded
        self._window = asyncio.Event()
        self._bad_session = ""

    # --- called by the connection ----------------------------------------------------------------

    def window_changed(self) -> None:
        """The client's window may have opened: a stream waiting to send looks again."""
        if self.conn.http.buffered(self.stream_id) <= STREAM_HIGH_WATER:
            self._window.set()

    def cancelled(self) -> None:
        """The task was cancelled: by the client's RST_STREAM or because the connection ended."""
        if self.upstream is not None:
            self.upstream.abort()
            self.upstream = None
        if self.ended:
            return
        reset = self.reset_by_client
        # The log being down changes nothing here: nothing went on unrecorded either.
        with contextlib.suppress(RecordingFailed):
            self._open()  # a stream cancelled before its task ran is on record too
            if reset is not None:
                self._emit(Direction.FROM_CLIENT, reset)
                self._record_error("client_aborted", 0, f"the client reset stream {self.stream_id}")
            else:
                self._record_error("client_aborted", 0, self.cancel_reason or "the connection closed")
            self._end("client_aborted")

    # --- the exchange ----------------------------------------------------------------------------

    def _open(self) -> None:
        """Record the start of the exchange (once), under the identity known by then."""
        if self.opened:
            return
        self.opened = True
        conn = self.conn
        head = self.head
        now = time.time_ns()
        try:
            ref = conn.ctx.sessions.resolve(
                first(head.headers, SESSION_HEADER), self.identity, conn.client_ip, now
            )
        except BadSessionHeader as exc:
            self._bad_session = str(exc)
            ref = conn.ctx.sessions.resolve(None, self.identity, conn.client_ip, now)
        self.session_id = ref.session_id
        conn.ctx.stats.exchanges += 1
        try:
            if ref.is_new:
                started = SessionStarted(
                    session_id=ref.session_id,
                    identity=self.identity,
                    client_addr=conn.client_addr,
                    source=ref.source,
                )
                self._emit(Direction.FROM_CLIENT, started)
            self._emit(Direction.FROM_CLIENT, conn.started(self.id, ref.session_id, self.identity))
            self._emit(Direction.FROM_CLIENT, head)
        except RecordingFailed:
            pass  # run() checks the recorder first and refuses with 503

    async def run(self) -> None:
        self.running = True
        access = self.conn.ctx.access
        refused: Refused | None = None
        if access is not None:
            tls = self.conn.tls
            try:
                head = h1_request_head(self.head, has_body=self.has_body)
                self.identity = await access.authenticate(head, tls.peer.subject if tls and tls.peer else "")
            except Refused as exc:
                refused = exc
        self._open()
        guard = self.conn.ctx.guard
        if guard is not None and refused is None and guard.applies(self.identity, self.head.method):
            self.request_body = bytearray()
        try:
            if refused is not None:
                raise refused
            self._check(self._bad_session)
            body_decision = access is not None and access.needs_body(self.identity, self.head)
            if access is not None and not body_decision:
                self._record_decision(access.decide(self.identity, self.head, None))
            upstream = await self._forward_request(body_decision=body_decision)
            await self._relay_response(upstream)
            self._end("complete")
        except _Refusal as refusal:
            await self._refuse(refusal.status, refusal.kind, refusal.message)
        except Refused as refusal:
            self._emit(Direction.FROM_CLIENT, refusal.decision)
            if not self.request_done:
                # RFC 9113 §8.1 allows answering before the request ends, but clients (httpx) then fail
                # the stream instead of reading the answer: take the rest (recorded, bounded) first.
                with contextlib.suppress(_Refusal):
                    await self._read_body(None)
            await self._refuse(refusal.status, refusal.kind, refusal.message, refusal.headers)
        except RecordingFailed as exc:
            await self._refuse(503, "recording_unavailable", f"the session log cannot be written: {exc}")
        finally:
            if self.upstream is not None and self.ended:
                self.upstream.abort()
                self.upstream = None
        await self.conn.keep_pace()

    def _check(self, bad_session: str) -> None:
        head = self.head
        limits = self.conn.ctx.limits
        if bad_session:
            raise _Refusal(400, "bad_request", bad_session)
        if self.conn.ctx.recorder.failure is not None:
            raise RecordingFailed(str(self.conn.ctx.recorder.failure))
        if head.method == b"CONNECT":
            raise _Refusal(501, "not_implemented", "CONNECT tunnels are not supported by this gateway")
        length = first(head.headers, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limits.max_body_bytes):
            raise _Refusal(
                413, "body_too_large", f"request body of {length!r} bytes exceeds {limits.max_body_bytes}"
            )

    def _record_decision(self, decision: PolicyDecision | None) -> None:
        if decision is not None:
            self._emit(Direction.FROM_CLIENT, decision)

    async def _forward_request(self, *, body_decision: bool = False) -> UpstreamConnection:
        """Send the request on; ``body_decision``: the policy decides once the whole body was read."""
        conn = self.conn
        ctx = conn.ctx
        forwarded, recorded = ctx.outbound_heads(
            h1_request_head(self.head, has_body=self.has_body),
            client_ip=conn.client_ip,
            tls=conn.tls is not None,
            guarded=self.request_body is not None,
        )
        masking = upstream_rules(ctx.masking, self.identity)
        hold = body_decision or masking is not None  # the whole body first: the head is recorded after it
        if not hold:
            self._emit(Direction.TO_UPSTREAM, recorded)
        if self.has_body and (first(self.head.headers, b"expect") or b"").lower() == b"100-continue":
            # The gateway answers Expect itself, as over HTTP/1.1 (RFC 9110 §10.1.1).
            self._send(ResponseHead(stream_id=self.stream_id, status=100, headers=[], http_version=b"2"))
        if ctx.durability == "strict" or hold:
            # Nothing reaches the upstream before it is on disk (the HTTP/1.1 path's rule too).
            body = await self._read_body(None)
            if ctx.access is not None and body_decision:
                data = b"".join(event.data for event in body if isinstance(event, BodyChunk))
                self._record_decision(ctx.access.decide(self.identity, self.head, data))
            if masking is not None:
                try:
                    limit = ctx.limits.max_body_bytes
                    forwarded, recorded, body, applied = mask_forwarded(
                        forwarded, recorded, body, masking, max_body_bytes=limit
                    )
                except UnmaskableBody as exc:
                    kind = "body_too_large" if exc.status == 413 else "unmaskable_body"
                    raise _Refusal(exc.status, kind, str(exc)) from None
                self._emit(Direction.TO_UPSTREAM, recorded)
                for masked in applied:
                    self._emit(Direction.TO_UPSTREAM, masked)
            elif body_decision:
                self._emit(Direction.TO_UPSTREAM, recorded)
            if ctx.durability == "strict":
                await ctx.recorder.durable()
            upstream = await self._connect()
            try:
                upstream.send(forwarded)
                for event in body:
                    upstream.send(event)
                await upstream.drain()
            except (OSError, RuntimeError, ParseError) as exc:
                upstream.abort()
                raise _Refusal(502, "upstream_refused", f"upstream closed while sending: {exc}") from exc
            return upstream
        upstream = await self._connect()
        self.upstream = upstream
        try:
            upstream.send(forwarded)
        except ParseError as exc:
            raise _Refusal(400, "bad_request", str(exc)) from exc
        await self._read_body(upstream)
        return upstream

    async def _connect(self) -> UpstreamConnection:
        limits = self.conn.ctx.limits
        try:
            return await self.conn.ctx.pool.acquire()
        except UpstreamTlsError as exc:
            raise _Refusal(502, "upstream_tls_error", str(exc)) from exc
        except UpstreamUnavailable as exc:
            raise _Refusal(502, "upstream_refused", str(exc)) from exc
        except TimeoutError as exc:
            message = f"no connection to the upstream within {limits.upstream_connect_timeout_s} s"
            raise _Refusal(504, "upstream_timeout", message) from exc

    async def _read_body(self, upstream: UpstreamConnection | None) -> list[Event]:
        """Record the request body and forward each piece (or hold it); ack it to the client once sent."""
        held: list[Event] = []
        conn = self.conn
        limit = conn.ctx.limits.max_body_bytes
        while True:
            try:
                async with asyncio.timeout(conn.ctx.limits.idle_timeout_s):
                    event = await self.inbox.get()
            except TimeoutError:
                raise _Refusal(408, "request_timeout", "the request body stopped arriving") from None
            size = len(event.data) if isinstance(event, BodyChunk) else 0
            if size:
                self.request_bytes += size
                if self.request_bytes > limit:
                    raise _Refusal(413, "body_too_large", f"request body exceeds {limit} bytes")
                if self.request_body is not None and isinstance(event, BodyChunk):
                    self.request_body += event.data
            self._emit(Direction.FROM_CLIENT, event)
            if upstream is None:
                held.append(event)
            else:
                try:
                    upstream.send(event)
                    await upstream.drain()
                except (OSError, RuntimeError, ParseError) as exc:
                    raise _Refusal(502, "upstream_refused", f"upstream closed while sending: {exc}") from exc
            conn.http.ack(self.stream_id, size)  # the client may send this much more now
            conn.flush()
            await conn.keep_pace()
            if isinstance(event, MessageEnd):
                self.request_done = True
                return held

    async def _relay_response(self, upstream: UpstreamConnection) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.conn.ctx.limits.max_exchange_s
        while True:
            try:
                events = await self._timed(upstream.receive, deadline)
            except OSError as exc:
                self._upstream_failed(502, "upstream_aborted", f"upstream connection failed: {exc}")
            for i, event in enumerate(events):
                if isinstance(event, ResponseHead) and event.status >= 200 and self.request_body is not None:
                    await self._guarded_response(upstream, event, deadline, events[i + 1 :])
                    return
                if await self._relay(event, upstream):
                    return
                if self.response_started and upstream.http.body_framing is not None:
                    await self._relay_body(upstream, deadline)  # the body comes raw, scanned
                    return
            await self._wait_for_window()
            await self.conn.keep_pace()

    async def _timed(self, read: Callable[[float], Awaitable[_T]], deadline: float) -> _T:
        """One upstream read within ``upstream_read_timeout_s`` and the exchange's deadline."""
        limits = self.conn.ctx.limits
        loop = asyncio.get_running_loop()
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                message = f"the exchange exceeded max_exchange_s ({limits.max_exchange_s} s)"
                self._upstream_failed(504, "exchange_too_long", message)
            timeout_s = min(limits.upstream_read_timeout_s, remaining)
            try:
                return await read(timeout_s)
            except TimeoutError:
                if timeout_s < limits.upstream_read_timeout_s:
                    continue  # the exchange deadline, reported at the top of the loop
                self._upstream_failed(504, "upstream_timeout", f"the upstream sent nothing for {timeout_s} s")

    async def _relay_body(self, upstream: UpstreamConnection, deadline: float) -> None:
        """A response body the upstream parser hands over raw: each read is one recorded chunk and one
        DATA frame's worth, within the client's window."""
        data = b""  # first: what arrived with the head
        while True:
            try:
                body = upstream.http.feed_body(data)
            except ParseError as exc:
                self._upstream_failed(502, "upstream_protocol_error", str(exc))
            if body.data:
                await self._relay(BodyChunk(data=body.data), upstream)
            if body.done:
                await self._relay(MessageEnd(trailers=body.trailers), upstream)
                return
            await self._wait_for_window()
            await self.conn.keep_pace()
            try:
                data = await self._timed(upstream.read, deadline)
            except OSError as exc:
                self._upstream_failed(502, "upstream_aborted", f"upstream connection failed: {exc}")
            if not data:
                error = upstream.http.feed_body_eof()
                self._upstream_failed(502, "upstream_aborted", f"the upstream closed mid-response: {error}")

    # --- a guarded response: tool calls held for approval, client-scope masking --------------------

    async def _guarded_response(
        self, upstream: UpstreamConnection, head: ResponseHead, deadline: float, events: list[Event]
    ) -> None:
        """The response through a ``ResponseGuard`` (never the raw relay); what the client got is recorded."""
        settings = self.conn.ctx.guard
        if settings is None or self.request_body is None:
            raise RuntimeError("h2: a guarded response without a guard")
        self._emit(Direction.FROM_UPSTREAM, head)
        self.status = head.status
        guard = ResponseGuard(
            settings,
            identity=self.identity,
            exchange_id=self.id,
            session_id=self.session_id,
            request_body=bytes(self.request_body),
            record=lambda event: self._emit(Direction.TO_CLIENT, event),
            stream_id=self.stream_id,
        )
        sink = _StreamSink(self)
        try:
            out = guard.start(client_response_head(head, session_id=self.session_id, exchange_id=self.id))
            if out is not None:
                sink.head(out)
            async for data in self._upstream_body(upstream, deadline, events):
                await guard.feed(data, sink)
            await guard.finish(sink)
        except Uninspectable as exc:
            self._upstream_failed(502, "upstream_uninspectable", str(exc))
        end = MessageEnd(stream_id=self.stream_id)
        self._emit(Direction.TO_CLIENT, end)
        self._send(end)
        self.conn.ctx.pool.release(upstream, reusable=True)
        self.upstream = None
        await self._wait_for_window(until_done=True)

    async def _upstream_body(
        self, upstream: UpstreamConnection, deadline: float, events: list[Event]
    ) -> AsyncIterator[bytes]:
        """The response body's pieces as they arrive (each recorded ``from_upstream``)."""
        if upstream.http.body_framing is not None:
            data = b""  # first: what arrived with the head
            while True:
                try:
                    body = upstream.http.feed_body(data)
                except ParseError as exc:
                    self._upstream_failed(502, "upstream_protocol_error", str(exc))
                if body.data:
                    self._emit(Direction.FROM_UPSTREAM, BodyChunk(data=body.data))
                    self.response_bytes += len(body.data)
                    yield body.data
                if body.done:
                    self._emit(Direction.FROM_UPSTREAM, MessageEnd(trailers=body.trailers))
                    return
                try:
                    data = await self._timed(upstream.read, deadline)
                except OSError as exc:
                    self._upstream_failed(502, "upstream_aborted", f"upstream connection failed: {exc}")
                if not data:
                    error = upstream.http.feed_body_eof()
                    self._upstream_failed(
                        502, "upstream_aborted", f"the upstream closed mid-response: {error}"
                    )
        while True:
            for event in events:
                match event:
                    case BodyChunk():
                        self._emit(Direction.FROM_UPSTREAM, event)
                        self.response_bytes += len(event.data)
                        yield event.data
                    case MessageEnd():
                        self._emit(Direction.FROM_UPSTREAM, event)
                        return
                    case ParseFailed():
                        self._upstream_failed(502, "upstream_protocol_error", event.error)
                    case _:
                        message = "the upstream closed the connection mid-response"
                        self._upstream_failed(502, "upstream_aborted", message)
            try:
                events = await self._timed(upstream.receive, deadline)
            except OSError as exc:
                self._upstream_failed(502, "upstream_aborted", f"upstream connection failed: {exc}")

    async def _relay(self, event: Event, upstream: UpstreamConnection) -> bool:
        """Pass one upstream event to the client. True once the response is complete."""
        sid = self.stream_id
        match event:
            case ResponseHead() if event.status < 200:
                self._emit(Direction.FROM_UPSTREAM, event)
                if event.status != 100:  # 100 answers the upstream's own Expect; others (103) pass
                    self._send(h2_response_head(event, sid))
            case ResponseHead():
                self._emit(Direction.FROM_UPSTREAM, event)
                self.status = event.status
                out = h2_response_head(
                    client_response_head(event, session_id=self.session_id, exchange_id=self.id), sid
                )
                self._emit(Direction.TO_CLIENT, out)
                self._send(out)
                self.response_started = True
            case BodyChunk():
                self._emit(Direction.FROM_UPSTREAM, event)
                self.response_bytes += len(event.data)
                self._send(BodyChunk(stream_id=sid, data=event.data))
            case MessageEnd():
                self._emit(Direction.FROM_UPSTREAM, event)
                self._send(MessageEnd(stream_id=sid, trailers=[(n.lower(), v) for n, v in event.trailers]))
                self.conn.ctx.pool.release(upstream, reusable=True)
                self.upstream = None
                await self._wait_for_window(until_done=True)
                return True
            case ParseFailed() if upstream.eof:
                message = f"the upstream closed mid-response: {event.error}"
                self._upstream_failed(502, "upstream_aborted", message)
            case ParseFailed():
                self._upstream_failed(502, "upstream_protocol_error", event.error)
            case _:
                self._upstream_failed(
                    502, "upstream_aborted", "the upstream closed the connection mid-response"
                )
        return False

    def _send(self, event: Event) -> None:
        try:
            self.conn.send(event)
        except ParseError as exc:
            self._client_gone(f"the client cannot take stream {self.stream_id} any more: {exc}")

    async def _wait_for_window(self, *, until_done: bool = False) -> None:
        """Back-pressure per stream: a client that does not read this stream pauses this upstream only."""
        conn = self.conn
        sid = self.stream_id
        limits = conn.ctx.limits
        try:
            await conn.drain()
            while conn.http.buffered(sid) > STREAM_HIGH_WATER or (
                until_done and not conn.http.stream_done(sid)
            ):
                self._window.clear()
                async with asyncio.timeout(limits.client_write_timeout_s):
                    await self._window.wait()
                await conn.drain()
        except TimeoutError:
            self._reset(CANCEL)
            self._client_gone(f"the client stopped reading stream {sid} (write timeout)")
        except ConnectionError as exc:
            self._client_gone(f"the client went away: {exc}")

    # --- endings ---------------------------------------------------------------------------------

    def _client_gone(self, message: str) -> NoReturn:
        self._record_error("client_aborted", 0, message)
        self._end("client_aborted")
        raise StreamAborted

    def _upstream_failed(self, status: int, kind: str, message: str) -> NoReturn:
        """Answer ``status`` if no response started; else reset the stream: the client sees a truncation."""
        if not self.response_started:
            raise _Refusal(status, kind, message)
        self._record_error(kind, 0, message)
        self._reset(INTERNAL_ERROR)
        self._end("upstream_aborted")
        raise StreamAborted

    async def _refuse(self, status: int, kind: str, message: str, headers: Headers | None = None) -> None:
        """Answer an error on this stream in OpenAI's error shape; other streams go on."""
        if self.upstream is not None:
            self.upstream.abort()
            self.upstream = None
        sid = self.stream_id
        if self.response_started:
            self._record_error(kind, 0, message)
            self._reset(INTERNAL_ERROR)
            self._end("error")
            return
        self.status = status
        head, body = error_response(status, kind, message, session_id=self.session_id, exchange_id=self.id)
        if headers:
            head = ResponseHead(status=head.status, reason=head.reason, headers=[*head.headers, *headers])
        out = h2_response_head(head, sid)
        try:
            self._record_error(kind, status, message)
            self._emit(Direction.TO_CLIENT, out)
            self._emit(Direction.TO_CLIENT, BodyChunk(stream_id=sid, data=body))
            self._emit(Direction.TO_CLIENT, MessageEnd(stream_id=sid))
            self.response_bytes = len(body)
            self._end("error")
        except RecordingFailed:
            pass  # the log is down: the refusal still goes out, the model got nothing
        try:
            self.conn.send(out)
            self.conn.send(BodyChunk(stream_id=sid, data=body))
            self.conn.send(MessageEnd(stream_id=sid))
        except ParseError:
            return  # the client reset the stream meanwhile
        if not self.request_done:
            await self._discard_rest()

    async def _discard_rest(self) -> None:
        """Take the rest of a refused request, unrecorded and bounded, so that a client that sends its
        whole body before it reads (httpx) sees the answer. Past ``max_body_bytes`` more, or a silence of
        ``idle_timeout_s``: RST_STREAM(NO_ERROR), RFC 9113 §8.1's "stop sending, the answer is complete"."""
        limits = self.conn.ctx.limits
        budget = limits.max_body_bytes
        try:
            while budget > 0:
                async with asyncio.timeout(limits.idle_timeout_s):
                    event = await self.inbox.get()
                if not isinstance(event, BodyChunk):
                    return  # the request ended
                budget -= len(event.data)
                self.conn.http.ack(self.stream_id, len(event.data))
                self.conn.flush()
        except TimeoutError:
            pass  # a silent client: stop waiting for it
        self._reset(0)

    def _reset(self, error_code: int) -> None:
        """RST_STREAM to the client, unless h2 closed the stream already (then nothing more reaches it)."""
        with contextlib.suppress(ParseError):
            self.conn.send(StreamReset(stream_id=self.stream_id, error_code=error_code))

    def _record_error(self, kind: str, status: int, message: str) -> None:
        errors = self.conn.ctx.stats.errors
        errors[kind] = errors.get(kind, 0) + 1
        error = GatewayError(kind=kind, status=status, message=message, client_addr=self.conn.client_addr)
        self._emit(Direction.TO_CLIENT, error)

    def _end(self, outcome: str) -> None:
        if self.ended:
            return
        self.ended = True
        stats = self.conn.ctx.stats
        stats.request_bytes += self.request_bytes
        stats.response_bytes += self.response_bytes
        stats.outcomes[outcome] = stats.outcomes.get(outcome, 0) + 1
        ended = ExchangeEnded(
            outcome=outcome,
            status=self.status,
            request_bytes=self.request_bytes,
            response_bytes=self.response_bytes,
        )
        self._emit(Direction.TO_CLIENT, ended)

    def _emit(self, direction: Direction, event: Event) -> None:
        self.conn.emit(direction, event, self.id)


class _StreamSink:
    """A guarded response's way to the HTTP/2 client: DATA frames within the stream's window, recorded."""

    __slots__ = ("_stream",)

    def __init__(self, stream: StreamExchange) -> None:
        self._stream = stream

    def head(self, head: ResponseHead) -> None:
        stream = self._stream
        out = h2_response_head(head, stream.stream_id)
        stream._emit(Direction.TO_CLIENT, out)
        stream._send(out)
        stream.response_started = True

    async def send(self, data: bytes) -> None:
        if not data:
            return
        stream = self._stream
        chunk = BodyChunk(stream_id=stream.stream_id, data=data)
        stream._emit(Direction.TO_CLIENT, chunk)
        stream._send(chunk)
        await stream._wait_for_window()
        await stream.conn.keep_pace()


__all__ = ["STREAM_HIGH_WATER", "StreamAborted", "StreamExchange"]
