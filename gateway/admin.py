"""The admin listener: ``/healthz``, ``/readyz`` and Prometheus ``/metrics`` on their own bind address.

Kept apart from the data plane so that probes and scrapes never queue behind model traffic, and so that
it can be bound to a private interface. One request per connection; no request body is read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec

from gateway.control_http import serve_one
from gateway.metrics import Exposition
from parsers.events import RequestHead

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
        refresh: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._readiness = readiness
        self._metrics = metrics
        self._timeout_s = timeout_s
        self._refresh = refresh  # gathers what the two callables report (a supervisor scrapes its workers)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refresh is not None:
            await self._refresh()
        await serve_one(
            reader, writer, self._answer, logger=logger, timeout_s=self._timeout_s, max_body_bytes=0
        )

    def _answer(self, head: RequestHead | None, body: bytes, loopback: bool) -> tuple[int, bytes, bytes]:
        if head is None:
            return 400, b"text/plain", b"bad request\n"
        if head.method not in (b"GET", b"HEAD"):
            return 405, b"text/plain", b"only GET\n"
        path = head.target.split(b"?", 1)[0]
        if path == b"/healthz":
            return 200, b"application/json", b'{"status":"ok"}'
        if path == b"/readyz":
            readiness = self._readiness()
            payload = msgspec.json.encode({"ready": readiness.ready, "reasons": list(readiness.reasons)})
            return (200 if readiness.ready else 503), b"application/json", payload
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
