"""Frames back into exchanges: groups a log's frames by exchange id and summarises each finished one.

Pure and bounded: no I/O, no clock (time comes from the frames). At most ``max_open`` exchanges are held;
the least recently active, or one silent for ``max_idle_ns`` of log time, is emitted as "incomplete".
OpenAI meaning comes from ``parsers.openai``; nothing here reads JSON.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import assert_never

import msgspec

from parsers.events import (
    ANONYMOUS,
    ApprovalDecided,
    ApprovalRequested,
    BodyChunk,
    Checkpoint,
    ConnectionClosed,
    ConsoleAccess,
    Direction,
    ExchangeEnded,
    ExchangeStarted,
    GatewayError,
    GatewayStarted,
    GoAway,
    Identity,
    MaskingApplied,
    MessageEnd,
    ParseFailed,
    PolicyDecision,
    Recovered,
    RequestHead,
    ResponseHead,
    Retention,
    SessionStarted,
    SseComment,
    SseMessage,
    StreamReset,
)
from parsers.openai import OpenAIExchange, ToolCall
from storage._format import Position
from storage.reader import StoredFrame

INCOMPLETE = "incomplete"
OPEN = "open"  # only in ``ExchangeAssembler.pending()``: still running when the log was read
_RESPONSE_SIDE = (Direction.FROM_UPSTREAM, Direction.TO_CLIENT)


class ExchangeRecord(msgspec.Struct, kw_only=True):
    """One exchange as the index stores it and the CLI shows it. Field names are the JSON output names."""

    exchange_id: str
    session_id: str = ""
    conn_id: str = ""
    subject: str = ""
    identity: Identity = ANONYMOUS
    client_addr: str = ""
    listener: str = ""
    protocol: str = ""
    upstream: str = ""
    method: str = ""
    path: str = ""
    status: int = 0
    outcome: str = ""  # complete | error | client_aborted | upstream_aborted | incomplete | open
    error: str = ""
    started_ns: int = 0
    ttfb_ns: int | None = None  # first response head or body frame, relative to the start
    duration_ns: int = 0
    request_bytes: int = 0
    response_bytes: int = 0
    stream: bool = False
    api: str = ""
    model: str = ""
    prompt_text: str = ""
    response_text: str = ""
    tool_calls: list[ToolCall] = []
    finish_reason: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    chunks: int = 0
    parse_error: str = ""
    start_segment: int = 0
    start_offset: int = 0
    end_segment: int = 0  # the last frame read for this exchange (its ExchangeEnded when complete)
    end_offset: int = 0
    tls_version: str = ""  # the client connection's TLS version, "" for plaintext
    alpn: str = ""
    series: int = 0  # the segment series (gateway worker) its frames are in; positions are within it
    policy: str = ""  # allow | deny: the identity layer's verdict; "" when none was recorded
    policy_rule: str = ""  # the rule that decided ("default-deny", "authentication", a configured name)

    @property
    def start(self) -> Position:
        return Position(self.start_segment, self.start_offset)


class _Open:
    """What is known about one exchange while its frames arrive."""

    def __init__(self, stored: StoredFrame, started: ExchangeStarted, max_text_bytes: int) -> None:
        self.started = started
        self.start = stored.position
        self.end = stored.position
        self.series = stored.series
        self.conn_id = stored.frame.conn_id
        self.started_ns = stored.frame.ts_ns
        self.last_ns = stored.frame.ts_ns
        self.parser = OpenAIExchange(max_text_bytes=max_text_bytes)
        self.request: RequestHead | None = None
        self.request_from_client = False
        self.upstream_status = 0
        self.client_status = 0
        self.first_response_ns: int | None = None
        self.error = ""
        self.error_status = 0
        self.request_bytes = 0
        self.response_bytes = 0
        self.ended: ExchangeEnded | None = None
        self.decision: PolicyDecision | None = None

    def feed(self, stored: StoredFrame) -> None:
        frame = stored.frame
        self.end = stored.position
        self.last_ns = max(self.last_ns, frame.ts_ns)
        direction = frame.direction
        event = frame.event
        if (
            self.first_response_ns is None
            and direction in _RESPONSE_SIDE
            and isinstance(event, ResponseHead | BodyChunk)
        ):
            self.first_response_ns = frame.ts_ns  # first response byte; gateway records do not count
        match event:
            case RequestHead():
                # What the client asked for, not the rewritten head the upstream got.
                if self.request is None or (
                    direction == Direction.FROM_CLIENT and not self.request_from_client
                ):
                    self.request = event
                    self.request_from_client = direction == Direction.FROM_CLIENT
            case ResponseHead():
                if event.status >= 200:
                    if direction == Direction.TO_CLIENT:
                        self.client_status = event.status
                    else:
                        self.upstream_status = event.status
            case BodyChunk():
                if direction == Direction.FROM_CLIENT:
                    self.request_bytes += len(event.data)
                elif direction in _RESPONSE_SIDE:
                    self.response_bytes += len(event.data)
            case GatewayError():
                if not self.error:
                    self.error = f"{event.kind}: {event.message}"
                    self.error_status = event.status
            case ExchangeEnded():
                self.ended = event
                return
            case PolicyDecision():
                if self.decision is None or not event.allowed:  # a refusal outranks an earlier allow
                    self.decision = event
                return
            case (
                ExchangeStarted()
                | SessionStarted()
                | Checkpoint()
                | Recovered()
                | Retention()
                | GatewayStarted()
                | StreamReset()
                | GoAway()
                | ConsoleAccess()
                | MaskingApplied()
                | ApprovalRequested()
                | ApprovalDecided()
            ):
                return
            case MessageEnd() | ConnectionClosed() | ParseFailed() | SseMessage() | SseComment():
                pass
            case _:
                assert_never(event)
        self.parser.feed(direction, event)

    def record(self, outcome: str) -> ExchangeRecord:
        started = self.started
        summary = self.parser.summary()
        ended = self.ended
        request = self.request
        status = (
            (ended.status if ended else 0) or self.client_status or self.upstream_status or self.error_status
        )
        usage = summary.usage
        return ExchangeRecord(
            exchange_id=started.exchange_id,
            session_id=started.session_id,
            conn_id=self.conn_id,
            subject=started.identity.subject,
            identity=started.identity,
            client_addr=started.client_addr,
            listener=started.listener,
            protocol=started.protocol,
            upstream=started.upstream,
            method=request.method.decode("latin-1") if request else "",
            path=request.target.decode("latin-1") if request else "",
            status=status,
            outcome=outcome,
            error=self.error or summary.error,
            started_ns=self.started_ns,
            ttfb_ns=None if self.first_response_ns is None else self.first_response_ns - self.started_ns,
            duration_ns=self.last_ns - self.started_ns,
            request_bytes=ended.request_bytes if ended else self.request_bytes,
            response_bytes=ended.response_bytes if ended else self.response_bytes,
            stream=summary.stream,
            api=summary.api,
            model=summary.model,
            prompt_text=summary.prompt_text,
            response_text=summary.response_text,
            tool_calls=list(summary.tool_calls),
            finish_reason=summary.finish_reason,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
            chunks=summary.chunks,
            parse_error=summary.parse_error,
            start_segment=self.start.segment,
            start_offset=self.start.offset,
            end_segment=self.end.segment,
            end_offset=self.end.offset,
            tls_version=started.tls_version,
            alpn=started.alpn,
            series=self.series,
            policy=("allow" if self.decision.allowed else "deny") if self.decision else "",
            policy_rule=self.decision.rule if self.decision else "",
        )


class ExchangeAssembler:
    """Feed frames in log order; get back each exchange once it ends (or is given up as incomplete)."""

    def __init__(
        self,
        *,
        max_open: int = 1024,
        max_idle_ns: int = 15 * 60 * 1_000_000_000,
        max_text_bytes: int = 1 << 20,
    ) -> None:
        self.max_open = max_open
        self.max_idle_ns = max_idle_ns
        self.max_text_bytes = max_text_bytes
        self.orphan_frames = 0  # frames of exchanges whose start was not seen (or already given up)
        self._open: OrderedDict[str, _Open] = OrderedDict()  # least recently active first
        self._newest_ns = 0

    def feed(self, stored: StoredFrame) -> list[ExchangeRecord]:
        """Returns the exchanges this frame finished: its own, and any it pushed out as incomplete."""
        frame = stored.frame
        exchange_id = frame.exchange_id
        self._newest_ns = max(self._newest_ns, frame.ts_ns)
        out: list[ExchangeRecord] = []
        if isinstance(frame.event, GatewayStarted):
            # A new process: whatever the previous one left open died with it.
            out = [left.record(INCOMPLETE) for left in self._open.values()]
            self._open.clear()
            return out
        if exchange_id:
            current = self._open.get(exchange_id)
            event = frame.event
            if current is not None:
                self._open.move_to_end(exchange_id)
                current.feed(stored)
                if current.ended is not None:
                    del self._open[exchange_id]
                    out.append(current.record(current.ended.outcome))
            elif isinstance(event, ExchangeStarted):
                self._open[exchange_id] = _Open(stored, event, self.max_text_bytes)
            elif not isinstance(event, SessionStarted):  # the gateway records it just before the start
                self.orphan_frames += 1
        self._evict(out)
        return out

    def open_since(self) -> Position | None:
        """The earliest start of a still-open exchange: where to resume reading to finish them all."""
        if not self._open:
            return None
        return min(current.start for current in self._open.values())

    def pending(self) -> list[ExchangeRecord]:
        """Snapshots of the exchanges still open (outcome "open"), oldest start first. They stay open."""
        ordered = sorted(self._open.values(), key=lambda current: current.start)
        return [current.record(OPEN) for current in ordered]

    def _evict(self, out: list[ExchangeRecord]) -> None:
        horizon = self._newest_ns - self.max_idle_ns
        while self._open:
            exchange_id, oldest = next(iter(self._open.items()))
            if len(self._open) <= self.max_open and oldest.last_ns >= horizon:
                return
            del self._open[exchange_id]
            out.append(oldest.record(INCOMPLETE))


__all__ = ["INCOMPLETE", "OPEN", "ExchangeAssembler", "ExchangeRecord"]
