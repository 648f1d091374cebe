"""One client connection: read requests, forward them upstream, stream responses back, record all of it.

Every byte that crosses is recorded as frames through the recorder; the connection itself never waits
for the disk except in strict mode, where a request is forwarded only once its frames are fsync'd.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import NoReturn

from gateway.approvals.guard import GuardSettings, ResponseGuard, Uninspectable, identity_encoding
from gateway.config import Durability, LimitsConfig
from gateway.conn_frames import ConnectionFrames
from gateway.forwarding import client_response_head, error_response, first, upstream_request_head
from gateway.identity.access import AccessControl, Refused
from gateway.ids import new_id
from gateway.masking import MaskingPlan
from gateway.read_watchdog import ReadWatchdog
from gateway.recorder import Recorder, RecordingFailed
from gateway.sessions import SESSION_HEADER, BadSessionHeader, SessionTracker
from gateway.tls import TlsPeer, TlsSession, session_of
from gateway.upstream import UpstreamConnection, UpstreamPool, UpstreamTlsError, UpstreamUnavailable
from gateway.upstream_masking import (
    MaskedRequest,
    UnmaskableBody,
    UpstreamRules,
    mask_forwarded,
    upstream_rules,
)
from parsers.body_framing import Framing
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
    Headers,
    Identity,
    MessageEnd,
    ParseFailed,
    PolicyDecision,
    RequestHead,
    ResponseHead,
    SessionStarted,
)
from parsers.http1 import Http1Connection, Role, render_response

logger = logging.getLogger("wardgate.proxy")

READ_SIZE = 64 * 1024
WRITE_HIGH_WATER = 64 * 1024


@dataclass
class ProxyStats:
    connections: int = 0
    exchanges: int = 0
    request_bytes: int = 0
    response_bytes: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # by GatewayError kind
    outcomes: dict[str, int] = field(default_factory=dict)  # by ExchangeEnded outcome


@dataclass
class ProxyContext:
    """What every connection of one listener shares."""

    listener: str
    durability: Durability
    limits: LimitsConfig
    recorder: Recorder
    sessions: SessionTracker
    pool: UpstreamPool
    upstream_authority: bytes  # the Host the upstream expects
    upstream_prefix: bytes  # path prefix of the upstream URL, prepended to every target
    stats: ProxyStats = field(default_factory=ProxyStats)
    access: AccessControl | None = None  # identity, policy, upstream credential; None: none configured
    masking: MaskingPlan | None = None  # per caller: the rules of each masking scope; None: no masking
    closing: bool = False  # shutting down: finish the exchange in flight, take no further request
    guard: GuardSettings | None = None  # approval rules, client-scope masking; None: none configured

    def outbound_heads(
        self, head: RequestHead, *, client_ip: str, tls: bool, guarded: bool
    ) -> tuple[RequestHead, RequestHead]:
        """The request head to send upstream, and the one to record as sent (credential placeholder).

        ``guarded``: the response goes through a ``ResponseGuard``, which must be able to read it.
        """
        forwarded = upstream_request_head(
            head,
            client_ip=client_ip,
            authority=self.upstream_authority,
            prefix=self.upstream_prefix,
            proto=b"https" if tls else b"http",
        )
        if guarded:
            forwarded = identity_encoding(forwarded)
        if self.access is not None:
            return self.access.outbound(forwarded)
        return forwarded, forwarded


class ExchangeAborted(Exception):
    """The exchange cannot go on; the reason was recorded and answered (or the connection cut)."""


class _Exchange:
    __slots__ = (
        "id",
        "request_body",
        "request_bytes",
        "response_bytes",
        "response_started",
        "session_id",
        "status",
    )

    def __init__(self, session_id: str) -> None:
        self.id = new_id("x_")
        self.session_id = session_id
        self.request_bytes = 0
        self.response_bytes = 0
        self.status = 0
        self.response_started = False  # a response head went to the client
        self.request_body: bytearray | None = None  # kept only when the response is guarded


class ClientConnection:
    """Serves one accepted client connection until it closes."""

    def __init__(
        self,
        ctx: ProxyContext,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        initial: bytes = b"",  # bytes already read from the client (by the HTTP/2 preface sniff)
    ) -> None:
        self.ctx = ctx
        self.reader = reader
        self.writer = writer
        self.conn_id = new_id("c_")
        peer = writer.get_extra_info("peername") or ("unknown", 0)
        self.client_ip = str(peer[0])
        self.client_addr = f"[{peer[0]}]:{peer[1]}" if ":" in self.client_ip else f"{peer[0]}:{peer[1]}"
        self.tls: TlsSession | None = session_of(writer.get_extra_info("ssl_object"))
        # The verified client certificate (mTLS): data for the identity layer, recorded meanwhile.
        self.tls_peer: TlsPeer | None = self.tls.peer if self.tls else None
        self.identity: Identity = ANONYMOUS  # the identity layer will set this per request
        self.http = Http1Connection(Role.SERVER, max_head_bytes=ctx.limits.max_head_bytes, relay_bodies=True)
        self._events: deque[Event] = deque()
        self._frames = ConnectionFrames(self.conn_id, ctx.recorder)
        self._emit = self._frames.emit
        self._keep_pace = self._frames.keep_pace
        self.busy = False  # inside an exchange: graceful shutdown lets it finish
        self._out: list[bytes] = []  # response bytes of the current upstream read, written at once
        if initial:
            self._events.extend(self.http.feed(initial))

    # --- recording -------------------------------------------------------------------------------

    # --- the connection loop ---------------------------------------------------------------------

    async def run(self) -> None:
        limits = self.ctx.limits
        wait_s = limits.header_timeout_s  # a new connection must start its request promptly
        while True:
            event = await self._next_head(wait_s)
            match event:
                case RequestHead():
                    self.busy = True
                    keep_alive = await self._serve(event)
                    self.busy = False
                    if not keep_alive or self.ctx.closing:
                        return
                    self._events.extend(self.http.next_cycle())
                    wait_s = limits.idle_timeout_s
                case ParseFailed():
                    await self._refuse_unparsed(event)
                    return
                case _:
                    return

    async def _next_head(self, wait_s: float) -> Event:
        """The next event from the client when a request head is due.

        The first byte may take ``wait_s`` (idle keep-alive); from then on the whole head must arrive
        within ``header_timeout_s``, so a client trickling bytes (slowloris) cannot hold a slot.
        """
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while not self._events:
            timeout_s = wait_s if deadline is None else deadline - loop.time()
            try:
                async with asyncio.timeout(timeout_s):
                    data = await self.reader.read(READ_SIZE)
            except TimeoutError:
                if deadline is None:
                    return ConnectionClosed()  # idle: nothing to answer
                limit = self.ctx.limits.header_timeout_s
                return ParseFailed(
                    error=f"http1: request head not complete within {limit} s", status_hint=408
                )
            if deadline is None:
                deadline = loop.time() + self.ctx.limits.header_timeout_s
            events = self.http.feed(data) if data else self.http.feed_eof()
            if not data and not events:
                return ConnectionClosed()
            self._events.extend(events)
        return self._events.popleft()

    async def _next_client_event(self, timeout_s: float) -> Event:
        while not self._events:
            async with asyncio.timeout(timeout_s):
                data = await self.reader.read(READ_SIZE)
            events = self.http.feed(data) if data else self.http.feed_eof()
            if not data and not events:
                return ConnectionClosed()
            self._events.extend(events)
        return self._events.popleft()

    # --- one exchange ----------------------------------------------------------------------------

    async def _serve(self, head: RequestHead) -> bool:
        """Forward one request and its response. Returns whether the connection may be kept alive."""
        ctx = self.ctx
        refused: Refused | None = None
        if ctx.access is not None:
            try:
                self.identity = await ctx.access.authenticate(head, self._peer_subject)
            except Refused as exc:
                self.identity, refused = ANONYMOUS, exc
        now = time.time_ns()
        session_header = first(head.headers, SESSION_HEADER)
        bad_session = ""
        try:
            ref = ctx.sessions.resolve(session_header, self.identity, self.client_ip, now)
        except BadSessionHeader as exc:
            bad_session = str(exc)
            ref = ctx.sessions.resolve(None, self.identity, self.client_ip, now)
        ex = _Exchange(ref.session_id)
        ctx.stats.exchanges += 1
        if ctx.guard is not None and refused is None and ctx.guard.applies(self.identity, head.method):
            ex.request_body = bytearray()
        try:
            self._open(ex, head, new_session=ref.is_new, source=ref.source)
            if refused is not None:
                raise refused
            self._check_request(head, bad_session)
            body_decision = ctx.access is not None and ctx.access.needs_body(self.identity, head)
            if ctx.access is not None and not body_decision:
                self._record_decision(ex, ctx.access.decide(self.identity, head, None))
            upstream = await self._forward_request(ex, head, body_decision=body_decision)
            try:
                await self._relay_response(ex, upstream)
            except BaseException:
                upstream.abort()
                raise
            ctx.pool.release(upstream, reusable=True)
            self._end(ex, "complete")
        except ExchangeAborted:
            return False
        except _Refusal as refusal:
            await self._refuse(ex, refusal.status, refusal.kind, refusal.message)
            return False
        except Refused as refusal:
            self._emit(Direction.FROM_CLIENT, refusal.decision, ex.id)
            await self._refuse(ex, refusal.status, refusal.kind, refusal.message, refusal.headers)
            return False
        except RecordingFailed as exc:
            # Fail closed: nothing goes on unrecorded.
            await self._refuse(ex, 503, "recording_unavailable", f"the session log cannot be written: {exc}")
            return False
        await self._keep_pace()
        return self.http.reusable

    def _check_request(self, head: RequestHead, bad_session: str) -> None:
        limits = self.ctx.limits
        if bad_session:
            raise _Refusal(400, "bad_request", bad_session)
        if self.ctx.recorder.failure is not None:
            raise RecordingFailed(str(self.ctx.recorder.failure))
        if head.method == b"CONNECT":
            raise _Refusal(501, "not_implemented", "CONNECT tunnels are not supported by this gateway")
        if first(head.headers, b"upgrade") is not None:
            raise _Refusal(501, "not_implemented", "protocol upgrades (WebSocket, h2c) are not supported yet")
        length = first(head.headers, b"content-length")
        if length is not None and int(length) > limits.max_body_bytes:
            raise _Refusal(
                413, "body_too_large", f"request body of {int(length)} bytes exceeds {limits.max_body_bytes}"
            )

    async def _forward_request(
        self, ex: _Exchange, head: RequestHead, *, body_decision: bool = False
    ) -> UpstreamConnection:
        """Send the request on; ``body_decision``: the policy decides once the whole body was read."""
        ctx = self.ctx
        forwarded, recorded = ctx.outbound_heads(
            head, client_ip=self.client_ip, tls=self.tls is not None, guarded=ex.request_body is not None
        )
        masking = upstream_rules(ctx.masking, self.identity)
        hold = body_decision or masking is not None  # the whole body first: the head is recorded after it
        if not hold:
            self._emit(Direction.TO_UPSTREAM, recorded, ex.id)
        if self.http.peer_waiting_for_100_continue:
            self.writer.write(self.http.send(ResponseHead(status=100, headers=[], reason=b"Continue")))
        if ctx.durability == "strict" or hold:
            # RFC-free rule of ours: in strict mode nothing reaches the upstream before it is on disk.
            body = await self._read_body(ex, None)
            if ctx.access is not None and body_decision:
                data = b"".join(event.data for event in body if isinstance(event, BodyChunk))
                self._record_decision(ex, ctx.access.decide(self.identity, head, data))
            if masking is not None:
                forwarded, recorded, body, applied = self._masked(forwarded, recorded, body, masking)
                self._emit(Direction.TO_UPSTREAM, recorded, ex.id)
                for masked in applied:
                    self._emit(Direction.TO_UPSTREAM, masked, ex.id)
            elif body_decision:
                self._emit(Direction.TO_UPSTREAM, recorded, ex.id)
            if ctx.durability == "strict":
                await ctx.recorder.durable()
            upstream = await self._connect(ex)
            try:
                upstream.send(forwarded)
                for event in body:
                    upstream.send(event)
                await upstream.drain()
            except (OSError, RuntimeError) as exc:
                upstream.abort()
                raise _Refusal(502, "upstream_refused", f"upstream closed while sending: {exc}") from exc
            return upstream
        upstream = await self._connect(ex)
        try:
            upstream.send(forwarded)
            await self._read_body(ex, upstream)
        except BaseException:
            upstream.abort()
            raise
        return upstream

    def _masked(
        self, forwarded: RequestHead, recorded: RequestHead, body: list[Event], masking: UpstreamRules
    ) -> MaskedRequest:
        limit = self.ctx.limits.max_body_bytes
        try:
            return mask_forwarded(forwarded, recorded, body, masking, max_body_bytes=limit)
        except UnmaskableBody as exc:
            kind = "body_too_large" if exc.status == 413 else "unmaskable_body"
            raise _Refusal(exc.status, kind, str(exc)) from None

    def _record_decision(self, ex: _Exchange, decision: PolicyDecision | None) -> None:
        if decision is not None:
            self._emit(Direction.FROM_CLIENT, decision, ex.id)

    @property
    def _peer_subject(self) -> str:
        return self.tls_peer.subject if self.tls_peer else ""

    async def _connect(self, ex: _Exchange) -> UpstreamConnection:
        try:
            return await self.ctx.pool.acquire()
        except UpstreamTlsError as exc:
            raise _Refusal(502, "upstream_tls_error", str(exc)) from exc
        except UpstreamUnavailable as exc:
            raise _Refusal(502, "upstream_refused", str(exc)) from exc
        except TimeoutError as exc:
            raise _Refusal(
                504,
                "upstream_timeout",
                f"no connection to the upstream within {self.ctx.limits.upstream_connect_timeout_s} s",
            ) from exc

    async def _read_body(self, ex: _Exchange, upstream: UpstreamConnection | None) -> list[Event]:
        """Read the request body, record it, and forward each piece at once (or return it, held)."""
        if self.http.body_framing is not None:
            return await self._relay_request_body(ex, upstream, self.http.body_framing)
        held: list[Event] = []
        limit = self.ctx.limits.max_body_bytes
        while True:
            try:
                event = await self._next_client_event(self.ctx.limits.idle_timeout_s)
            except TimeoutError:
                raise _Refusal(408, "request_timeout", "the request body stopped arriving") from None
            match event:
                case BodyChunk():
                    ex.request_bytes += len(event.data)
                    if ex.request_bytes > limit:
                        raise _Refusal(413, "body_too_large", f"request body exceeds {limit} bytes")
                    self._emit(Direction.FROM_CLIENT, event, ex.id)
                    if ex.request_body is not None:
                        ex.request_body += event.data
                case MessageEnd():
                    self._emit(Direction.FROM_CLIENT, event, ex.id)
                case ParseFailed():
                    raise _Refusal(event.status_hint, "bad_request", event.error)
                case _:
                    self._record_error(ex, "client_aborted", 0, "the client closed before the request ended")
                    self._end(ex, "client_aborted")
                    raise ExchangeAborted
            if upstream is None:
                held.append(event)
            else:
                try:
                    upstream.send(event)
                    await upstream.drain()
                except (OSError, RuntimeError) as exc:
                    raise _Refusal(502, "upstream_refused", f"upstream closed while sending: {exc}") from exc
            await self._keep_pace()
            if isinstance(event, MessageEnd):
                return held

    async def _relay_response(self, ex: _Exchange, upstream: UpstreamConnection) -> None:
        limits = self.ctx.limits
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limits.max_exchange_s
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                message = f"the exchange exceeded max_exchange_s ({limits.max_exchange_s} s)"
                self._upstream_failed(ex, 504, "exchange_too_long", message)
            timeout_s = min(limits.upstream_read_timeout_s, remaining)
            try:
                events = await upstream.receive(timeout_s)
            except TimeoutError:
                if timeout_s < limits.upstream_read_timeout_s:
                    continue  # the exchange deadline, reported at the top of the loop
                message = f"the upstream sent nothing for {timeout_s} s"
                self._upstream_failed(ex, 504, "upstream_timeout", message)
            except OSError as exc:
                self._upstream_failed(ex, 502, "upstream_aborted", f"upstream connection failed: {exc}")
            for i, event in enumerate(events):
                match event:
                    case ResponseHead() if event.status >= 200 and ex.request_body is not None:
                        self._emit(Direction.FROM_UPSTREAM, event, ex.id)
                        ex.status = event.status
                        await self._guarded_response(ex, upstream, event, deadline, events[i + 1 :])
                        return
                    case ResponseHead() if event.status < 200:
                        self._emit(Direction.FROM_UPSTREAM, event, ex.id)
                        if event.status != 100:  # 100 was ours to send; others (103) pass through
                            self._write(self.http.send(event))
                    case ResponseHead():
                        self._emit(Direction.FROM_UPSTREAM, event, ex.id)
                        ex.status = event.status
                        out = client_response_head(event, session_id=ex.session_id, exchange_id=ex.id)
                        self._emit(Direction.TO_CLIENT, out, ex.id)
                        self._write(self.http.send(out))
                        ex.response_started = True
                        if upstream.http.body_framing is not None:
                            await self._relay_response_body(
                                ex, upstream, upstream.http.body_framing, deadline
                            )
                            return
                    case BodyChunk():
                        self._emit(Direction.FROM_UPSTREAM, event, ex.id)
                        ex.response_bytes += len(event.data)
                        self._write(self.http.send(event))
                    case MessageEnd():
                        self._emit(Direction.FROM_UPSTREAM, event, ex.id)
                        self._write(self.http.send(event))
                        await self._drain(ex)
                        return
                    case ParseFailed() if upstream.eof:
                        self._upstream_failed(
                            ex, 502, "upstream_aborted", f"the upstream closed mid-response: {event.error}"
                        )
                    case ParseFailed():
                        self._upstream_failed(ex, 502, "upstream_protocol_error", event.error)
                    case _:
                        self._upstream_failed(
                            ex, 502, "upstream_aborted", "the upstream closed the connection mid-response"
                        )
            await self._drain(ex)
            if self._frames.behind:
                await self._keep_pace()

    # --- a guarded response: tool calls held for approval, client-scope masking --------------------

    async def _guarded_response(
        self,
        ex: _Exchange,
        upstream: UpstreamConnection,
        head: ResponseHead,
        deadline: float,
        events: list[Event],
    ) -> None:
        """The response through a ``ResponseGuard`` (never the fast path); what the client got is recorded."""
        settings = self.ctx.guard
        if settings is None or ex.request_body is None:
            raise RuntimeError("proxy: a guarded response without a guard")
        guard = ResponseGuard(
            settings,
            identity=self.identity,
            exchange_id=ex.id,
            session_id=ex.session_id,
            request_body=bytes(ex.request_body),
            record=lambda event: self._emit(Direction.TO_CLIENT, event, ex.id),
        )
        sink = _ClientSink(self, ex)
        try:
            out = guard.start(client_response_head(head, session_id=ex.session_id, exchange_id=ex.id))
            if out is not None:
                sink.head(out)
            async for data in self._upstream_body(ex, upstream, deadline, events):
                await guard.feed(data, sink)
            await guard.finish(sink)
        except Uninspectable as exc:
            self._upstream_failed(ex, 502, "upstream_uninspectable", str(exc))
        end = MessageEnd()
        self._emit(Direction.TO_CLIENT, end, ex.id)
        self._write(self.http.send(end))
        await self._drain(ex)

    async def _upstream_body(
        self, ex: _Exchange, upstream: UpstreamConnection, deadline: float, events: list[Event]
    ) -> AsyncIterator[bytes]:
        """The response body's pieces as they arrive (each recorded), relayed framing or h11 events."""
        limits = self.ctx.limits
        loop = asyncio.get_running_loop()

        def read_timeout_s() -> float:
            remaining = deadline - loop.time()
            if remaining <= 0:
                message = f"the exchange exceeded max_exchange_s ({limits.max_exchange_s} s)"
                self._upstream_failed(ex, 504, "exchange_too_long", message)
            return min(limits.upstream_read_timeout_s, remaining)

        silent = f"the upstream sent nothing for {limits.upstream_read_timeout_s} s"
        if upstream.http.body_framing is not None:
            data = b""  # first: what arrived with the head
            while True:
                try:
                    body = upstream.http.feed_body(data)
                except ParseError as exc:
                    self._upstream_failed(ex, 502, "upstream_protocol_error", str(exc))
                if body.data:
                    self._emit(Direction.FROM_UPSTREAM, BodyChunk(data=body.data), ex.id)
                    ex.response_bytes += len(body.data)
                    yield body.data
                if body.done:
                    self._emit(Direction.FROM_UPSTREAM, MessageEnd(trailers=body.trailers), ex.id)
                    return
                try:
                    async with asyncio.timeout(read_timeout_s()):
                        data = await upstream.read_body()
                except TimeoutError:
                    self._upstream_failed(ex, 504, "upstream_timeout", silent)
                except OSError as exc:
                    self._upstream_failed(ex, 502, "upstream_aborted", f"upstream connection failed: {exc}")
                if not data:
                    error = upstream.http.feed_body_eof()
                    self._upstream_failed(
                        ex, 502, "upstream_aborted", f"the upstream closed mid-response: {error}"
                    )
        while True:
            for event in events:
                match event:
                    case BodyChunk():
                        self._emit(Direction.FROM_UPSTREAM, event, ex.id)
                        ex.response_bytes += len(event.data)
                        yield event.data
                    case MessageEnd():
                        self._emit(Direction.FROM_UPSTREAM, event, ex.id)
                        return
                    case ParseFailed():
                        self._upstream_failed(ex, 502, "upstream_protocol_error", event.error)
                    case _:
                        message = "the upstream closed the connection mid-response"
                        self._upstream_failed(ex, 502, "upstream_aborted", message)
            try:
                events = await upstream.receive(read_timeout_s())
            except TimeoutError:
                self._upstream_failed(ex, 504, "upstream_timeout", silent)
            except OSError as exc:
                self._upstream_failed(ex, 502, "upstream_aborted", f"upstream connection failed: {exc}")

    # --- the relay fast path: bodies with known framing cross as read, h11 only for heads ------------

    async def _relay_request_body(
        self, ex: _Exchange, upstream: UpstreamConnection | None, framing: Framing
    ) -> list[Event]:
        """Forward the request body's bytes as read (or hold its events); each read is one recorded chunk."""
        raw_to = upstream if upstream is not None and upstream.http.relay_body(framing) else None
        pending: list[Event] = []  # decoded events for an upstream that needs them re-framed, or held
        limit = self.ctx.limits.max_body_bytes
        data = b""  # first: what arrived with the head
        while True:
            try:
                body = self.http.feed_body(data)
            except ParseError as exc:
                raise _Refusal(exc.status_hint, "bad_request", str(exc)) from None
            if body.data:
                ex.request_bytes += len(body.data)
                if ex.request_bytes > limit:
                    raise _Refusal(413, "body_too_large", f"request body exceeds {limit} bytes")
                chunk = BodyChunk(data=body.data)
                self._emit(Direction.FROM_CLIENT, chunk, ex.id)
                if ex.request_body is not None:
                    ex.request_body += body.data
                if raw_to is None:
                    pending.append(chunk)
            if body.done:
                end = MessageEnd(trailers=body.trailers)
                self._emit(Direction.FROM_CLIENT, end, ex.id)
                if raw_to is None:
                    pending.append(end)
            if raw_to is not None:
                raw_to.write(body.wire)
                if body.done:
                    raw_to.http.body_relayed()
                await self._send_upstream(raw_to, [])
            elif upstream is not None:
                await self._send_upstream(upstream, pending)
                pending = []
            await self._keep_pace()
            if body.done:
                return pending
            try:
                async with asyncio.timeout(self.ctx.limits.idle_timeout_s):
                    data = await self.reader.read(READ_SIZE)
            except TimeoutError:
                raise _Refusal(408, "request_timeout", "the request body stopped arriving") from None
            if not data:
                self._record_error(ex, "client_aborted", 0, "the client closed before the request ended")
                self._end(ex, "client_aborted")
                raise ExchangeAborted

    async def _send_upstream(self, upstream: UpstreamConnection, events: list[Event]) -> None:
        try:
            for event in events:
                upstream.send(event)
            await upstream.drain()
        except (OSError, RuntimeError) as exc:
            raise _Refusal(502, "upstream_refused", f"upstream closed while sending: {exc}") from exc

    async def _relay_response_body(
        self, ex: _Exchange, upstream: UpstreamConnection, framing: Framing, deadline: float
    ) -> None:
        """Write the response body's bytes as read, one write per upstream read, one recorded chunk each.

        The scanner only finds where the body ends; h11 re-frames it only for a client that needs
        other framing (HTTP/1.0). A framing error cuts the client: its head is already out.
        """
        raw = self.http.relay_body(framing)
        limits = self.ctx.limits
        try:
            async with asyncio.timeout(None) as timeout:
                watchdog = ReadWatchdog(timeout, idle_s=limits.upstream_read_timeout_s, deadline=deadline)
                try:
                    await self._relay_response_reads(ex, upstream, raw, watchdog)
                finally:
                    watchdog.cancel()
        except TimeoutError:
            if watchdog.reason == "deadline":
                message = f"the exchange exceeded max_exchange_s ({limits.max_exchange_s} s)"
                self._upstream_failed(ex, 504, "exchange_too_long", message)
            if watchdog.reason == "idle":
                message = f"the upstream sent nothing for {limits.upstream_read_timeout_s} s"
                self._upstream_failed(ex, 504, "upstream_timeout", message)
            raise  # a client write timeout inside, already recorded

    async def _relay_response_reads(
        self, ex: _Exchange, upstream: UpstreamConnection, raw: bool, watchdog: ReadWatchdog
    ) -> None:
        data = b""  # first: what arrived with the head
        while True:
            try:
                body = upstream.http.feed_body(data)
            except ParseError as exc:
                self._upstream_failed(ex, 502, "upstream_protocol_error", str(exc))
            if body.data:
                chunk = BodyChunk(data=body.data)
                self._emit(Direction.FROM_UPSTREAM, chunk, ex.id)
                ex.response_bytes += len(body.data)
                if not raw:
                    self._write(self.http.send(chunk))
            if raw:
                self._write(body.wire)
            if body.done:
                end = MessageEnd(trailers=body.trailers)
                self._emit(Direction.FROM_UPSTREAM, end, ex.id)
                if raw:
                    self.http.body_relayed()
                else:
                    self._write(self.http.send(end))
                await self._drain(ex)
                return
            await self._drain(ex)
            if self._frames.behind:
                await self._keep_pace()
            watchdog.waiting()
            try:
                data = await upstream.read_body()
            except OSError as exc:
                self._upstream_failed(ex, 502, "upstream_aborted", f"upstream connection failed: {exc}")
            watchdog.received()
            if not data:
                error = upstream.http.feed_body_eof()
                self._upstream_failed(
                    ex, 502, "upstream_aborted", f"the upstream closed mid-response: {error}"
                )

    def _write(self, data: bytes) -> None:
        if data:
            self._out.append(data)

    def _flush_out(self) -> None:
        """One write for everything one upstream read produced (head, chunks, end)."""
        if self._out:
            self.writer.write(self._out[0] if len(self._out) == 1 else b"".join(self._out))
            self._out.clear()

    async def _drain(self, ex: _Exchange) -> None:
        """Send what is pending; back-pressure: a slow client pauses our reads from the upstream."""
        self._flush_out()
        if self.writer.transport.get_write_buffer_size() <= WRITE_HIGH_WATER:
            if self.writer.is_closing():
                self._client_gone(ex, "the client closed the connection")
            return
        try:
            async with asyncio.timeout(self.ctx.limits.client_write_timeout_s):
                await self.writer.drain()
        except TimeoutError:
            self._client_gone(ex, "the client stopped reading (write timeout)")
        except ConnectionError as exc:
            self._client_gone(ex, f"the client went away: {exc}")

    def _client_gone(self, ex: _Exchange, message: str) -> NoReturn:
        self._record_error(ex, "client_aborted", 0, message)
        self._end(ex, "client_aborted")
        self.writer.transport.abort()
        raise ExchangeAborted

    def _upstream_failed(self, ex: _Exchange, status: int, kind: str, message: str) -> NoReturn:
        """Answer with ``status`` if no response started; else cut the client so it sees a truncation."""
        if not ex.response_started:
            raise _Refusal(status, kind, message)
        self._record_error(ex, kind, 0, message)
        self._end(ex, "upstream_aborted")
        # Deliver what did arrive, then close without a final chunk: the client must not mistake a
        # truncated stream for a whole one.
        self._flush_out()
        self.writer.close()
        raise ExchangeAborted

    # --- answers the gateway makes itself ---------------------------------------------------------

    def _record_error(self, ex: _Exchange, kind: str, status: int, message: str) -> None:
        errors = self.ctx.stats.errors
        errors[kind] = errors.get(kind, 0) + 1
        self._emit(
            Direction.TO_CLIENT,
            GatewayError(kind=kind, status=status, message=message, client_addr=self.client_addr),
            ex.id,
        )

    def _end(self, ex: _Exchange, outcome: str) -> None:
        stats = self.ctx.stats
        stats.request_bytes += ex.request_bytes
        stats.response_bytes += ex.response_bytes
        stats.outcomes[outcome] = stats.outcomes.get(outcome, 0) + 1
        self._emit(
            Direction.TO_CLIENT,
            ExchangeEnded(
                outcome=outcome,
                status=ex.status,
                request_bytes=ex.request_bytes,
                response_bytes=ex.response_bytes,
            ),
            ex.id,
        )

    async def _refuse(
        self, ex: _Exchange, status: int, kind: str, message: str, headers: Headers | None = None
    ) -> None:
        """Answer an error in OpenAI's error shape, record it (if the log works), and close the connection.

        After a response head went out, an error can only cut the connection: the client must see a
        truncated response, never a second head inside the first response's body.
        """
        if ex.response_started:
            self.writer.transport.abort()
            return
        self._flush_out()
        ex.status = status
        head, body = error_response(status, kind, message, session_id=ex.session_id, exchange_id=ex.id)
        if headers:
            head = ResponseHead(status=head.status, reason=head.reason, headers=[*head.headers, *headers])
        try:
            self._record_error(ex, kind, status, message)
            self._emit(Direction.TO_CLIENT, head, ex.id)
            self._emit(Direction.TO_CLIENT, BodyChunk(data=body), ex.id)
            self._emit(Direction.TO_CLIENT, MessageEnd(), ex.id)
            ex.response_bytes = len(body)
            self._end(ex, "error")
        except RecordingFailed:
            pass  # the log is down: the refusal still goes out, the model got nothing
        self.writer.write(render_response(status, head.reason, head.headers, body))
        try:
            async with asyncio.timeout(self.ctx.limits.client_write_timeout_s):
                await self.writer.drain()
        except (TimeoutError, ConnectionError):
            self.writer.transport.abort()

    def _open(self, ex: _Exchange, head: RequestHead | None, *, new_session: bool, source: str) -> None:
        """Record the start of an exchange (and of its session, if new)."""
        if new_session:
            started = SessionStarted(
                session_id=ex.session_id, identity=self.identity, client_addr=self.client_addr, source=source
            )
            self._emit(Direction.FROM_CLIENT, started, ex.id)
        self._emit(Direction.FROM_CLIENT, self._started(ex), ex.id)
        if head is not None:
            self._emit(Direction.FROM_CLIENT, head, ex.id)

    def _started(self, ex: _Exchange) -> ExchangeStarted:
        tls = self.tls
        return ExchangeStarted(
            exchange_id=ex.id,
            session_id=ex.session_id,
            identity=self.identity,
            client_addr=self.client_addr,
            listener=self.ctx.listener,
            protocol="http/1.1",
            upstream=f"{self.ctx.pool.host}:{self.ctx.pool.port}",
            tls_version=tls.version if tls else "",
            tls_cipher=tls.cipher if tls else "",
            alpn=tls.alpn if tls else "",
            tls_peer_subject=self.tls_peer.subject if self.tls_peer else "",
        )

    def _bare_exchange(self) -> _Exchange:
        """An exchange for traffic that never became a request (garbage bytes, overload)."""
        ref = self.ctx.sessions.resolve(None, self.identity, self.client_ip, time.time_ns())
        ex = _Exchange(ref.session_id)
        self._open(ex, None, new_session=ref.is_new, source=ref.source)
        return ex

    async def _refuse_unparsed(self, failure: ParseFailed) -> None:
        """Bytes that are not a request: record them as an exchange of their own, answer, close."""
        ex = self._bare_exchange()
        self._emit(Direction.FROM_CLIENT, failure, ex.id)
        status = failure.status_hint if failure.status_hint in (400, 408, 413, 414, 431, 501) else 400
        kind = {431: "header_too_large", 408: "request_timeout", 501: "not_implemented"}.get(
            status, "bad_request"
        )
        await self._refuse(ex, status, kind, failure.error)

    async def refuse_overloaded(self) -> None:
        """Over the connection limit: answer 503 at once instead of queueing without bound."""
        ex = self._bare_exchange()
        limit = self.ctx.limits.max_connections
        await self._refuse(ex, 503, "overloaded", f"the gateway is at its connection limit ({limit})")


class _ClientSink:
    """A guarded response's way to the HTTP/1.1 client: every piece recorded ``to_client``, then written."""

    __slots__ = ("_conn", "_ex")

    def __init__(self, conn: ClientConnection, ex: _Exchange) -> None:
        self._conn = conn
        self._ex = ex

    def head(self, head: ResponseHead) -> None:
        conn, ex = self._conn, self._ex
        conn._emit(Direction.TO_CLIENT, head, ex.id)
        conn._write(conn.http.send(head))
        ex.response_started = True

    async def send(self, data: bytes) -> None:
        if not data:
            return
        conn, ex = self._conn, self._ex
        chunk = BodyChunk(data=data)
        conn._emit(Direction.TO_CLIENT, chunk, ex.id)
        conn._write(conn.http.send(chunk))
        await conn._drain(ex)


class _Refusal(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


__all__ = ["ClientConnection", "ExchangeAborted", "ProxyContext", "ProxyStats"]
