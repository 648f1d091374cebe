"""Writes realistic recorded exchanges into a real segment log, frame by frame as the proxy records them.

Used by the storage and inspect tests. Frames follow ``gateway/proxy.py``: the client's request head and
the forwarded one, the upstream's response head and the one sent to the client, body chunks as relayed.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from parsers.events import (
    ANONYMOUS,
    BodyChunk,
    Direction,
    Event,
    ExchangeEnded,
    ExchangeStarted,
    GatewayError,
    Headers,
    Identity,
    MessageEnd,
    RecordedEvent,
    RequestHead,
    ResponseHead,
    SessionStarted,
)
from storage.codec import Frame, encode_frame
from storage.segments import Position, SegmentLog

CAPTURES = Path(__file__).parent.parent / "fixtures" / "openai-captures"
MS = 1_000_000
T0 = 1_767_625_746_000_000_000  # 2026-01-05T15:09:06Z

ALICE = Identity(subject="alice", method="api-key", email="alice@example.com", name="Alice")
BOB = Identity(subject="bob", method="api-key", email="bob@example.com")


def load_capture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CAPTURES / f"{name}.json").read_text())
    return data


def response_body(capture: dict[str, Any]) -> bytes:
    return base64.b64decode(capture["response"]["body_b64"])


def sse_pieces(body: bytes) -> list[bytes]:
    """The body cut after each SSE event, as an upstream flushes them."""
    pieces = [piece + b"\n\n" for piece in body.split(b"\n\n") if piece]
    rest = len(body) - sum(len(p) for p in pieces)
    if rest < 0:  # the body did not end with a blank line
        pieces[-1] = pieces[-1][:rest]
    assert b"".join(pieces) == body
    return pieces


def _headers(pairs: list[list[str]]) -> Headers:
    return [(name.encode(), value.encode()) for name, value in pairs]


class Logbook:
    """A SegmentLog plus the bookkeeping the proxy does: connection ids, sequence numbers, clock."""

    def __init__(self, data_dir: Path, *, max_segment_bytes: int = 64 << 20) -> None:
        self.log = SegmentLog.open(data_dir, max_segment_bytes=max_segment_bytes)
        self.now = T0
        self._seq: dict[str, int] = {}
        self.positions: list[Position] = []
        self.frames: list[Frame] = []

    def emit(
        self, conn_id: str, direction: Direction, event: Event, exchange_id: str, *, after_ms: float = 1
    ) -> None:
        self.now += int(after_ms * MS)
        seq = self._seq.get(conn_id, 0)
        self._seq[conn_id] = seq + 1
        recorded: RecordedEvent = event  # type: ignore[assignment]
        frame = Frame(
            conn_id=conn_id,
            seq=seq,
            ts_ns=self.now,
            direction=direction,
            event=recorded,
            exchange_id=exchange_id,
        )
        self.frames.append(frame)
        self.positions.append(self.log.append(encode_frame(frame)))
        if self.log.needs_rotation:
            self.log.rotate()

    def start(
        self,
        conn_id: str,
        exchange_id: str,
        session_id: str,
        *,
        identity: Identity = ANONYMOUS,
        new_session: bool = False,
        after_ms: float = 1,
    ) -> None:
        client = "127.0.0.1:50000"
        if new_session:
            self.emit(
                conn_id,
                Direction.FROM_CLIENT,
                SessionStarted(
                    session_id=session_id, identity=identity, client_addr=client, source="assigned"
                ),
                exchange_id,
                after_ms=after_ms,
            )
        started = ExchangeStarted(
            exchange_id=exchange_id,
            session_id=session_id,
            identity=identity,
            client_addr=client,
            listener="default",
            protocol="http/1.1",
            upstream="127.0.0.1:8000",
        )
        self.emit(
            conn_id, Direction.FROM_CLIENT, started, exchange_id, after_ms=0 if new_session else after_ms
        )

    def capture_exchange(
        self,
        name: str,
        conn_id: str,
        exchange_id: str,
        session_id: str,
        *,
        identity: Identity = ANONYMOUS,
        new_session: bool = False,
        chunk_gap_ms: float = 20,
        end: bool = True,
        after_ms: float = 1,
    ) -> bytes:
        """Record one capture as a proxied exchange; returns the response body the client got."""
        capture = load_capture(name)
        request, response = capture["request"], capture["response"]
        self.start(
            conn_id, exchange_id, session_id, identity=identity, new_session=new_session, after_ms=after_ms
        )
        head = RequestHead(
            method=request["method"].encode(),
            target=request["path"].encode(),
            headers=[*_headers(request["headers"]), (b"Authorization", b"Bearer [redacted hmac-sha256:0]")],
        )
        self.emit(conn_id, Direction.FROM_CLIENT, head, exchange_id)
        forwarded = RequestHead(
            method=head.method, target=head.target, headers=[(b"Host", b"127.0.0.1:8000")]
        )
        self.emit(conn_id, Direction.TO_UPSTREAM, forwarded, exchange_id, after_ms=0)
        body = request["body"].encode()
        self.emit(conn_id, Direction.FROM_CLIENT, BodyChunk(data=body), exchange_id, after_ms=0.2)
        self.emit(conn_id, Direction.FROM_CLIENT, MessageEnd(), exchange_id, after_ms=0)
        status = int(response["status"])
        upstream_head = ResponseHead(
            status=status, reason=response["reason"].encode(), headers=_headers(response["headers"])
        )
        self.emit(conn_id, Direction.FROM_UPSTREAM, upstream_head, exchange_id, after_ms=250)
        client_head = ResponseHead(
            status=status,
            reason=upstream_head.reason,
            headers=[
                *(
                    h
                    for h in upstream_head.headers
                    if h[0].lower() not in (b"transfer-encoding", b"connection")
                ),
                (b"X-Wardgate-Session", session_id.encode()),
                (b"X-Wardgate-Exchange", exchange_id.encode()),
            ],
        )
        self.emit(conn_id, Direction.TO_CLIENT, client_head, exchange_id, after_ms=0)
        payload = response_body(capture)
        streamed = any(
            v.startswith("text/event-stream") for k, v in response["headers"] if k.lower() == "content-type"
        )
        pieces = sse_pieces(payload) if streamed else [payload]
        for piece in pieces:
            self.emit(
                conn_id, Direction.FROM_UPSTREAM, BodyChunk(data=piece), exchange_id, after_ms=chunk_gap_ms
            )
        self.emit(conn_id, Direction.FROM_UPSTREAM, MessageEnd(), exchange_id, after_ms=0)
        if end:
            ended = ExchangeEnded(
                outcome="complete", status=status, request_bytes=len(body), response_bytes=len(payload)
            )
            self.emit(conn_id, Direction.TO_CLIENT, ended, exchange_id, after_ms=0.1)
        return payload

    def gateway_error(
        self,
        conn_id: str,
        exchange_id: str,
        session_id: str,
        *,
        identity: Identity = ANONYMOUS,
        message: str = "upstream refused the connection",
    ) -> bytes:
        """An exchange the gateway answered itself (502, upstream down), as ``Proxy._refuse`` records it."""
        self.start(conn_id, exchange_id, session_id, identity=identity)
        head = RequestHead(method=b"POST", target=b"/v1/chat/completions", headers=[(b"Host", b"gw")])
        self.emit(conn_id, Direction.FROM_CLIENT, head, exchange_id)
        error = GatewayError(
            kind="upstream_refused", status=502, message=message, client_addr="127.0.0.1:50000"
        )
        self.emit(conn_id, Direction.TO_CLIENT, error, exchange_id, after_ms=3)
        body = json.dumps(
            {"error": {"message": message, "type": "wardgate_error", "code": "upstream_refused"}}
        ).encode()
        answer = ResponseHead(
            status=502,
            reason=b"Bad Gateway",
            headers=[(b"Content-Type", b"application/json"), (b"Content-Length", str(len(body)).encode())],
        )
        self.emit(conn_id, Direction.TO_CLIENT, answer, exchange_id, after_ms=0)
        self.emit(conn_id, Direction.TO_CLIENT, BodyChunk(data=body), exchange_id, after_ms=0)
        self.emit(conn_id, Direction.TO_CLIENT, MessageEnd(), exchange_id, after_ms=0)
        ended = ExchangeEnded(outcome="error", status=502, request_bytes=0, response_bytes=len(body))
        self.emit(conn_id, Direction.TO_CLIENT, ended, exchange_id, after_ms=0)
        return body

    def close(self) -> None:
        self.log.close()


__all__ = ["ALICE", "BOB", "MS", "T0", "Logbook", "load_capture", "response_body", "sse_pieces"]
