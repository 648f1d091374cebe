"""The admin listener: ``/healthz``, ``/readyz`` and Prometheus ``/metrics`` on their own bind address.

Kept apart from the data plane so that probes and scrapes never queue behind model traffic, and so that
it can be bound to a private interface. One request per connection; no request body is read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from gateway.metrics import Exposition
from parsers.events import MessageEnd, RequestHead
from parsers.http1 import Http1Connection, Role, render_response

logger = logging.getLogger("wardgate.admin")


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reasons: tuple[str, ...] = ()


class AdminServer:
    """Answers health and metrics requests from what the gateway reports through two callables."""

    def __init__(
        self,
        readiness: Callable[[], Readiness],
        metrics: Callable[[Exposition], None],
        *,
        timeout_s: float = 10.0,
    ) -> None:
        self._readiness = readiness
        self._metrics = metrics
        self._timeout_s = timeout_s

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                status, content_type, body = await self._answer(reader)
                headers = [
                    (b"Content-Type", content_type),
                    (b"Content-Length", str(len(body)).encode()),
                    (b"Cache-Control", b"no-store"),
                    (b"Connection", b"close"),
                ]
                writer.write(render_response(status, _REASONS.get(status, b""), headers, body))
                await writer.drain()
        except (TimeoutError, ConnectionError):
            pass  # a probe that went away or stalled: nothing to answer
        except Exception:  # the one catch per connection: admin must outlive any bug
            logger.exception("admin request failed")
        finally:
            writer.transport.abort()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, bytes, bytes]:
        http = Http1Connection(Role.SERVER, max_head_bytes=16 * 1024)
        head: RequestHead | None = None
        while head is None:
            data = await reader.read(16 * 1024)
            events = http.feed(data) if data else http.feed_eof()
            for event in events:
                if isinstance(event, RequestHead):
                    head = event
                    break
                if not isinstance(event, MessageEnd):
                    return 400, b"text/plain", b"bad request\n"
            if not data and head is None:
                return 400, b"text/plain", b"bad request\n"
        if head.method not in (b"GET", b"HEAD"):
            return 405, b"text/plain", b"only GET\n"
        path = head.target.split(b"?", 1)[0]
        if path == b"/healthz":
            return 200, b"application/json", b'{"status":"ok"}'
        if path == b"/readyz":
            readiness = self._readiness()
            body = msgspec.json.encode({"ready": readiness.ready, "reasons": list(readiness.reasons)})
            return (200 if readiness.ready else 503), b"application/json", body
        if path == b"/metrics":
            exposition = Exposition()
            self._metrics(exposition)
            return 200, b"text/plain; version=0.0.4; charset=utf-8", exposition.text().encode()
        return 404, b"text/plain", b"not found\n"


_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    503: b"Service Unavailable",
}

__all__ = ["AdminServer", "Readiness"]
