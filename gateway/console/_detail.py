"""One exchange's frames as the console shows them: the request, the response, each chunk with its time,
every other recorded event, and the answer's growth for the replay player.

Pure: frames in, Structs out. No I/O and no clock (times are offsets from the exchange's start).
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.console._models import Chunk, ExchangeDetail, ExchangeEvent, Message, Replay, ReplayStep
from gateway.render import replayed
from parsers.events import (
    BodyChunk,
    Direction,
    MessageEnd,
    RequestHead,
    ResponseHead,
    SseComment,
    SseMessage,
)
from parsers.openai import OpenAIExchange
from storage.assemble import OPEN, ExchangeRecord
from storage.codec import Frame

UNDECIDED = "undecided (gateway stopped)"
MAX_BODY_CHARS = 256 * 1024  # per message body in a detail answer; the export and the log keep it all
DIRECTION_NAMES = {
    Direction.FROM_CLIENT: "from_client",
    Direction.TO_UPSTREAM: "to_upstream",
    Direction.FROM_UPSTREAM: "from_upstream",
    Direction.TO_CLIENT: "to_client",
}
_RESPONSE_SIDE = (Direction.FROM_UPSTREAM, Direction.TO_CLIENT)
# Shown as the request, the response or the chunks; every other event is listed as recorded.
_SHOWN_ELSEWHERE = (RequestHead, ResponseHead, BodyChunk, MessageEnd, SseMessage, SseComment)


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers]


def _message(frame: Frame, head: RequestHead | ResponseHead, start_ns: int, body: list[bytes]) -> Message:
    data = b"".join(body)
    text = _text(data)
    message = Message(
        direction=DIRECTION_NAMES[frame.direction],
        t_ns=frame.ts_ns - start_ns,
        headers=_headers(head.headers),
        body_text=text[:MAX_BODY_CHARS],
        body_bytes=len(data),
        body_truncated=len(text) > MAX_BODY_CHARS,
    )
    if isinstance(head, RequestHead):
        message.method = _text(head.method)
        message.target = _text(head.target)
    else:
        message.status = head.status
    return message


def _fields(event: msgspec.Struct) -> dict[str, Any]:
    values: dict[str, Any] = msgspec.to_builtins(msgspec.structs.asdict(event))
    return values


def exchange_detail(record: ExchangeRecord, frames: list[Frame]) -> ExchangeDetail:
    """Everything recorded about one exchange, for ``GET /api/exchanges/{id}``."""
    start = record.started_ns
    request: tuple[Frame, RequestHead] | None = None
    response: tuple[Frame, ResponseHead] | None = None
    request_body: list[bytes] = []
    pieces: dict[Direction, list[Frame]] = {Direction.FROM_UPSTREAM: [], Direction.TO_CLIENT: []}
    events: list[ExchangeEvent] = []
    for frame in frames:
        event = frame.event
        match event:
            case RequestHead():
                # What the client sent, not the rewritten head the upstream got.
                if request is None or (
                    frame.direction == Direction.FROM_CLIENT and request[0].direction != Direction.FROM_CLIENT
                ):
                    request = frame, event
            case ResponseHead() if event.status >= 200 and frame.direction in _RESPONSE_SIDE:
                # The client's copy wins where the gateway recorded one.
                if response is None or frame.direction == Direction.TO_CLIENT:
                    response = frame, event
            case BodyChunk() if frame.direction == Direction.FROM_CLIENT:
                request_body.append(event.data)
            case BodyChunk() if frame.direction in _RESPONSE_SIDE:
                pieces[frame.direction].append(frame)
            case _ if not isinstance(event, _SHOWN_ELSEWHERE):
                tag = type(event).__struct_config__.tag
                events.append(
                    ExchangeEvent(
                        t_ns=frame.ts_ns - start,
                        direction=DIRECTION_NAMES[frame.direction],
                        type=str(tag),
                        fields=_fields(event),
                    )
                )
    _mark_undecided(events, record)
    body_frames = pieces[Direction.TO_CLIENT] or pieces[Direction.FROM_UPSTREAM]
    chunks = [
        Chunk(
            t_ns=frame.ts_ns - start,
            direction=DIRECTION_NAMES[frame.direction],
            bytes=len(data := _body(frame)),
            text=_text(data),
        )
        for frame in body_frames
    ]
    return ExchangeDetail(
        exchange=replayed(record, frames),
        request=_message(request[0], request[1], start, request_body) if request else None,
        response=(
            _message(response[0], response[1], start, [_body(f) for f in body_frames]) if response else None
        ),
        chunks=chunks,
        events=events,
    )


def _mark_undecided(events: list[ExchangeEvent], record: ExchangeRecord) -> None:
    """A held tool call with no decision: still pending, or its gateway stopped (a crash loses holds)."""
    decided = {e.fields.get("hold_id") for e in events if e.type == "approvaldecided"}
    for event in events:
        if event.type == "approvalrequested" and event.fields.get("hold_id") not in decided:
            event.fields["decision"] = "pending" if record.outcome == OPEN else UNDECIDED


def _body(frame: Frame) -> bytes:
    event = frame.event
    return event.data if isinstance(event, BodyChunk) else b""


def replay_steps(record: ExchangeRecord, frames: list[Frame]) -> Replay:
    """The answer's text at each response chunk that made it grow, at that chunk's recorded time."""
    parser = OpenAIExchange()
    steps: list[ReplayStep] = []
    shown = 0
    for frame in frames:
        parser.feed(frame.direction, frame.event)
        if frame.direction not in _RESPONSE_SIDE or not isinstance(frame.event, BodyChunk):
            continue
        answer = parser.summary().response_text
        if len(answer) > shown:
            steps.append(ReplayStep(t_ns=frame.ts_ns - record.started_ns, text=answer[shown:]))
            shown = len(answer)
    calls = parser.summary().tool_calls
    return Replay(
        exchange_id=record.exchange_id,
        stream=record.stream,
        duration_ns=record.duration_ns,
        ttfb_ns=record.ttfb_ns,
        steps=steps,
        tool_calls_text="".join(f"{call.name}({call.arguments})\n" for call in calls),
    )


__all__ = ["DIRECTION_NAMES", "MAX_BODY_CHARS", "exchange_detail", "replay_steps"]
