"""The console's JSON API under ``/api``: sessions, exchanges, replay, export, live tail, verification.

Every handler authenticates first, then records the access (``AuditTrail``), then reads. Nothing here
builds SQL: filters become ``storage.query`` objects whose values ``storage.index`` binds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway.console._audit import AuditTrail
from gateway.console._auth import Access, Role
from gateway.console._detail import exchange_detail, replay_steps
from gateway.console._models import (
    AuditPage,
    ExchangePage,
    Me,
    SessionDetail,
    SessionPage,
    Verification,
)
from gateway.console._params import (
    AUDIT_FILTERS,
    EXCHANGE_FILTERS,
    SESSION_FILTERS,
    audit_limit,
    bounded,
    encode_cursor,
    exchange_query,
    given,
    session_query,
)
from gateway.console._reading import LogReader, LogTail
from gateway.render import replayed
from storage.assemble import ExchangeRecord

JSON = "application/json"
JSON_LINES = "application/x-ndjson"
SSE_KEEPALIVE_S = 15.0
MAX_ID_CHARS = 128
_encoder = msgspec.json.Encoder()


def json_response(value: object, status: int = 200) -> Response:
    return Response(_encoder.encode(value), status_code=status, media_type=JSON)


def _ident(request: Request, name: str) -> str:
    value = str(request.path_params[name])
    if not value or len(value) > MAX_ID_CHARS:
        raise HTTPException(404, f"no such {name.removesuffix('_id')}")
    return value


class ConsoleApi:
    """The route handlers, sharing one access policy, audit trail and log reader."""

    def __init__(self, access: Access, audit: AuditTrail, reader: LogReader, stopping: asyncio.Event) -> None:
        self.access = access
        self.audit = audit
        self.reader = reader
        self.stopping = stopping

    def routes(self) -> list[Route]:
        return [
            Route("/api/me", self.me),
            Route("/api/sessions", self.list_sessions),
            Route("/api/sessions/{session_id}", self.view_session),
            Route("/api/sessions/{session_id}/export", self.export_session),
            Route("/api/exchanges", self.search),
            Route("/api/exchanges/{exchange_id}", self.view_exchange),
            Route("/api/exchanges/{exchange_id}/replay", self.replay),
            Route("/api/tail", self.tail),
            Route("/api/verify", self.verify),
            Route("/api/audit", self.audit_trail),
        ]

    async def me(self, request: Request) -> Response:
        identity = await self.access.identify(request)
        return json_response(Me(identity=identity, roles=[r.value for r in self.access.roles(identity)]))

    async def list_sessions(self, request: Request) -> Response:
        identity = await self.access.require(request, Role.AUDITOR)
        query = session_query(request)
        await self.audit.record(request, identity, "list_sessions", query=given(request, SESSION_FILTERS))
        # One row more than asked tells whether another page exists.
        rows = await self.reader.sessions(msgspec.structs.replace(query, limit=query.limit + 1))
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        cursor = encode_cursor((rows[-1].last_ns, rows[-1].id)) if more else None
        return json_response(SessionPage(items=rows, next_cursor=cursor))

    async def view_session(self, request: Request) -> Response:
        identity = await self.access.require(request, Role.AUDITOR)
        session_id = _ident(request, "session_id")
        await self.audit.record(request, identity, "view_session", target=session_id)
        found = await self.reader.session(session_id)
        if found is None:
            raise HTTPException(404, "no such session")
        row, records = found
        return json_response(SessionDetail(session=row, exchanges=await self.reader.conversation(records)))

    async def export_session(self, request: Request) -> Response:
        identity = await self.access.require(request, Role.AUDITOR)
        session_id = _ident(request, "session_id")
        await self.audit.record(request, identity, "export", target=session_id)
        found = await self.reader.session(session_id)
        if found is None:
            raise HTTPException(404, "no such session")
        _, records = found

        async def lines() -> AsyncIterator[bytes]:
            for record in records:
                frames = await self.reader.frames(record)
                yield _encoder.encode(replayed(record, frames)) + b"\n"

        name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in session_id)
        disposition = f'attachment; filename="wardgate-session-{name}.jsonl"'
        return StreamingResponse(lines(), media_type=JSON_LINES, headers={"Content-Disposition": disposition})

    async def search(self, request: Request) -> Response:
        identity = await self.access.require(request, Role.AUDITOR)
        query = exchange_query(request)
        await self.audit.record(request, identity, "search", query=given(request, EXCHANGE_FILTERS))
        records = await self.reader.exchanges(msgspec.structs.replace(query, limit=query.limit + 1))
        more = len(records) > query.limit
        records = records[: query.limit]
        cursor = encode_cursor((records[-1].started_ns, records[-1].exchange_id)) if more else None
        return json_response(ExchangePage(items=records, next_cursor=cursor))

    async def _record(self, request: Request, action: str) -> ExchangeRecord:
        identity = await self.access.require(request, Role.AUDITOR)
        exchange_id = _ident(request, "exchange_id")
        await self.audit.record(request, identity, action, target=exchange_id)
        record = await self.reader.exchange(exchange_id)
        if record is None:
            raise HTTPException(404, "no such exchange")
        return record

    async def view_exchange(self, request: Request) -> Response:
        record = await self._record(request, "view_exchange")
        return json_response(exchange_detail(record, await self.reader.frames(record)))

    async def replay(self, request: Request) -> Response:
        record = await self._record(request, "replay")
        return json_response(replay_steps(record, await self.reader.frames(record)))

    async def tail(self, request: Request) -> Response:
        identity = await self.access.require(request, Role.AUDITOR)
        await self.audit.record(request, identity, "tail")
        tail = await self.reader.tail()  # positioned before answering: nothing that ends later is missed
        return StreamingResponse(
            self._tail_events(tail),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def _tail_events(self, tail: LogTail) -> AsyncIterator[bytes]:
        """SSE: an ``exchange`` event per finished exchange, a comment as keep-alive when quiet."""
        yield b": tailing the session log\n\n"
        queue: asyncio.Queue[ExchangeRecord | None] = asyncio.Queue(maxsize=1024)

        async def pump() -> None:
            try:
                async for record in tail.follow(self.stopping):
                    await queue.put(record)
            finally:
                await queue.put(None)

        async with asyncio.TaskGroup() as tasks:
            pumping = tasks.create_task(pump(), name="console-tail")
            try:
                while True:
                    try:
                        async with asyncio.timeout(SSE_KEEPALIVE_S):
                            record = await queue.get()
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    if record is None:
                        return
                    yield b"event: exchange\ndata: " + _encoder.encode(record) + b"\n\n"
            finally:
                pumping.cancel()

    async def audit_trail(self, request: Request) -> Response:
        identity = await self.access.require(request, Role.AUDITOR)
        limit = audit_limit(request)
        actor, target = bounded(request, "actor"), bounded(request, "target")
        await self.audit.record(request, identity, "audit", query=given(request, AUDIT_FILTERS))
        entries, complete = await self.reader.audit_trail(limit=limit, actor=actor, target=target)
        return json_response(AuditPage(items=entries, complete=complete))

    async def verify(self, request: Request) -> Response:
        identity = await self.access.require(request, Role.AUDITOR)
        await self.audit.record(request, identity, "verify")
        checked, reports = await self.reader.verify()
        failed = [report for report in reports if not report.ok]
        return json_response(
            Verification(checked_ns=checked, ok=not failed, report=(failed or reports)[0], series=reports)
        )


__all__ = ["JSON", "JSON_LINES", "ConsoleApi", "json_response"]
