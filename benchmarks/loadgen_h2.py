"""The load generator's HTTP/2 client: one connection carrying several of the job's requests as streams.

h2's sans-IO ``H2Connection`` on a raw uvloop transport, as the HTTP/1.1 client parses on one: bytes in,
events out, the bytes h2 wants sent written once per read. Timing is the shared ``Response``'s, per stream.
Speaks h2c with prior knowledge on a plain connection, h2 after ALPN on a TLS one (the caller's context).
"""

from __future__ import annotations

import asyncio
import time

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ConnectionTerminated, DataReceived, ResponseReceived, StreamEnded, StreamReset
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes

from benchmarks.loadjob import Job, Response

# Large receive windows: the generator must never be what holds a stream back (RFC 9113 §6.9.2).
WINDOW = 1 << 24
_DEFAULT_WINDOW = 65_535
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"})

Headers = list[tuple[bytes, bytes]]


def h2_request(raw: bytes, *, tls: bool) -> tuple[Headers, bytes]:
    """The HTTP/2 form of a complete HTTP/1.1 request: pseudo-headers first, names lower-cased,
    ``Host`` as ``:authority`` and no connection-specific fields (RFC 9113 §8.2.2, §8.3.1)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    request_line, *lines = head.split(b"\r\n")
    method, target, _ = request_line.split(b" ", 2)
    fields: Headers = []
    authority = b""
    for line in lines:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip()
        if name == b"host":
            authority = value
        elif name not in _HOP_BY_HOP:
            fields.append((name, value))
    pseudo = [
        (b":method", method),
        (b":scheme", b"https" if tls else b"http"),
        (b":authority", authority),
        (b":path", target),
    ]
    return pseudo + fields, body


class H2Client(asyncio.Protocol):
    """One HTTP/2 connection: keeps ``slots`` streams of the job's request in flight until the job ends."""

    def __init__(self, job: Job, slots: int, head: Headers, body: bytes) -> None:
        self.job = job
        self.slots = slots
        self.head = head
        self.body = body
        self.conn = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.streams: dict[int, Response] = {}
        self.transport: asyncio.Transport | None = None
        self.started = False  # before start(), the server's SETTINGS may arrive with no stream open
        self.finished = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.conn.initiate_connection()
        self.conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: WINDOW, SettingCodes.ENABLE_PUSH: 0})
        self.conn.increment_flow_control_window(WINDOW - _DEFAULT_WINDOW)
        self._flush()

    def start(self, now: float) -> None:
        """The measured part begins: open up to ``slots`` streams, or leave when the job is already over."""
        self.started = True
        for _ in range(self.slots):
            if not self.job.may_start(now):
                break
            self._open(now)
        self._flush()
        if not self.streams:
            self.finish()

    def _open(self, now: float) -> None:
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream_id, self.head)
        self.conn.send_data(stream_id, self.body, end_stream=True)
        response = Response()
        response.sent(now)
        self.streams[stream_id] = response
        self.job.started += 1

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        job = self.job
        try:
            events = self.conn.receive_data(data)
        except ProtocolError as exc:
            self._fail(f"h2: {exc!r}")
            return
        for event in events:
            if isinstance(event, DataReceived):
                if event.flow_controlled_length:
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                response = self.streams.get(event.stream_id)
                if response is not None and event.data:
                    response.body(job, event.data, 0, len(event.data), now)
            elif isinstance(event, ResponseReceived):
                response = self.streams.get(event.stream_id)
                if response is not None:
                    response.status = int(dict(event.headers or [])[b":status"])
            elif isinstance(event, StreamEnded):
                ended = self.streams.pop(event.stream_id, None)
                if ended is not None:
                    job.complete(ended, now)
                    self._next(now)
            elif isinstance(event, StreamReset):
                if self.streams.pop(event.stream_id, None) is not None:
                    job.error(f"h2: stream {event.stream_id} reset ({event.error_code!r})")
                    self._next(now)
            elif isinstance(event, ConnectionTerminated):
                self._fail(f"h2: GOAWAY ({event.error_code!r})")
                return
        self._flush()
        if self.started and not self.streams:
            self.finish()

    def _next(self, now: float) -> None:
        if self.job.may_start(now):
            self._open(now)

    def _fail(self, what: str) -> None:
        for _ in range(max(1, len(self.streams))):
            self.job.error(what)
        self.streams.clear()
        self.finish()

    def finish(self) -> None:
        """Leave the job: GOAWAY, close the connection, count it as done."""
        if self.finished:
            return
        self.finished = True
        self.job.connection_finished()
        if self.transport is not None and not self.transport.is_closing():
            self.conn.close_connection()
            self._flush()
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished:
            if self.streams:
                self._fail(f"connection lost mid-response: {exc or 'EOF'}")
            else:
                self.finish()
