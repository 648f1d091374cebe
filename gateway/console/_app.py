"""The admin listener's Starlette app: health, readiness, metrics, the console API and the web UI.

The UI is three files shipped in this package (no CDN, no build step), read once at startup and served
from memory with a Content-Security-Policy that allows only this origin's script and style: recorded
content is rendered with ``textContent`` and, even if it were not, no inline script could run.
"""

from __future__ import annotations

import asyncio
import importlib.resources
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.admin import Readiness
from gateway.console._api import ConsoleApi, json_response
from gateway.console._approvals import ApprovalsApi, NoHolds
from gateway.console._audit import AuditTrail
from gateway.console._auth import Access, Role
from gateway.console._models import Health, Problem, ReadyStatus
from gateway.console._openapi import openapi_document
from gateway.console._reading import LogReader
from gateway.hold_source import HoldSource
from gateway.metrics import Exposition
from storage.errors import StorageError

_CODES = {
    400: "bad_parameter",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "gone",
    413: "too_large",
    503: "unavailable",
}
_ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/console.js": ("console.js", "text/javascript; charset=utf-8"),
    "/static/console.css": ("console.css", "text/css; charset=utf-8"),
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", CSP.encode()),
]


class _SecurityHeaders:
    """Adds the same hardening headers to every answer (and no-store unless a handler chose otherwise)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [(n, v) for n, v in _SECURITY_HEADERS if n not in names]
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _problem(status: int, detail: str, headers: Mapping[str, str] | None = None) -> Response:
    body = msgspec.json.encode(Problem(error=_CODES.get(status, "error"), detail=detail))
    return Response(body, status_code=status, media_type="application/json", headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _problem(exc.status_code, str(exc.detail), exc.headers)


async def _storage_error(request: Request, exc: Exception) -> Response:
    return _problem(503, f"the session log or its index cannot be read: {exc}")


def _asset(name: str) -> bytes:
    return importlib.resources.files("gateway.console").joinpath("static", name).read_bytes()


def build_app(
    *,
    access: Access,
    audit: AuditTrail,
    reader: LogReader,
    readiness: Callable[[], Readiness],
    metrics: Callable[[Exposition], None],
    public_metrics: bool,
    version: str,
    stopping: asyncio.Event,
    refresh: Callable[[], Awaitable[None]] | None = None,
    holds: HoldSource | None = None,
) -> ASGIApp:
    """The ASGI app of the admin listener; ``refresh`` gathers what ``readiness`` and ``metrics`` then
    report (a supervisor scrapes its workers); ``holds`` are the tool calls waiting for a decision."""
    document = msgspec.json.encode(openapi_document(version))
    assets = {path: (_asset(name), media) for path, (name, media) in _ASSETS.items()}
    api = ConsoleApi(access, audit, reader, stopping)
    approvals = ApprovalsApi(access, audit, holds or NoHolds())

    async def healthz(request: Request) -> Response:
        return json_response(Health(status="ok"))

    async def readyz(request: Request) -> Response:
        if refresh is not None:
            await refresh()
        ready = readiness()
        body = ReadyStatus(ready=ready.ready, reasons=list(ready.reasons))
        return json_response(body, 200 if ready.ready else 503)

    async def metrics_page(request: Request) -> Response:
        if not public_metrics:
            await access.require(request, Role.METRICS)
        if refresh is not None:
            await refresh()
        exposition = Exposition()
        metrics(exposition)
        return Response(exposition.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def openapi(request: Request) -> Response:
        return Response(document, media_type="application/json")

    async def asset(request: Request) -> Response:
        body, media = assets[request.url.path]
        return Response(body, media_type=media, headers={"Cache-Control": "no-cache"})

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_page),
        Route("/api/openapi.json", openapi),
        *api.routes(),
        *approvals.routes(),
        *(Route(path, asset) for path in assets),
    ]
    handlers: dict[Any, Any] = {HTTPException: _http_error, StorageError: _storage_error}
    app = Starlette(routes=routes, exception_handlers=handlers)
    return _SecurityHeaders(app)


__all__ = ["CSP", "build_app"]
