"""The console API's held tool calls: list them, and approve or deny one, bound to the exact call shown.

The caller needs the approver role (listing: approver or auditor); the registry that holds the call then
checks the hold's own approver groups, self-approval and the arguments' digest, and its refusal is
answered with its status. Every call is a recorded ``ConsoleAccess`` frame, on disk before anything is
decided or shown; the decision itself is recorded by the data path (``ApprovalDecided``).
"""

from __future__ import annotations

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.approvals.registry import DecisionRefused, PendingHold
from gateway.console._api import MAX_ID_CHARS, json_response
from gateway.console._audit import AuditTrail
from gateway.console._auth import Access, Role
from gateway.console._models import DecisionRequest, HoldPage
from gateway.hold_source import HoldSource
from parsers.events import Identity

MAX_DECISION_BYTES = 16 * 1024
_decisions = msgspec.json.Decoder(DecisionRequest)


class NoHolds:
    """The source of a gateway without approval rules: nothing is ever held."""

    async def pending(self) -> list[PendingHold]:
        return []

    async def get(self, hold_id: str) -> PendingHold | None:
        return None

    async def decide(
        self, hold_id: str, *, approve: bool, approver: Identity, comment: str, arguments_sha256: str
    ) -> PendingHold:
        raise DecisionRefused(404, f"no pending hold {hold_id!r} (no approval rules are configured)")


def _hold_id(request: Request) -> str:
    value = str(request.path_params["hold_id"])
    if not value or len(value) > MAX_ID_CHARS:
        raise HTTPException(404, "no such hold")
    return value


async def _decision(request: Request) -> DecisionRequest:
    """The JSON body of a decision, bounded.

    Raises:
        HTTPException: 400 when it is not one (named in the detail), 413 when too large.
    """
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > MAX_DECISION_BYTES:
            raise HTTPException(413, f"a decision is at most {MAX_DECISION_BYTES} bytes")
    try:
        return _decisions.decode(body)
    except msgspec.DecodeError as exc:
        raise HTTPException(400, f"body: {exc}") from None


class ApprovalsApi:
    def __init__(self, access: Access, audit: AuditTrail, holds: HoldSource) -> None:
        self.access = access
        self.audit = audit
        self.holds = holds

    def routes(self) -> list[Route]:
        return [
            Route("/api/approvals", self.list_holds),
            Route("/api/approvals/{hold_id}", self.view_hold),
            Route("/api/approvals/{hold_id}/approve", self.approve, methods=["POST"]),
            Route("/api/approvals/{hold_id}/deny", self.deny, methods=["POST"]),
        ]

    async def list_holds(self, request: Request) -> Response:
        identity = await self.access.require(request, Role.APPROVER, Role.AUDITOR)
        await self.audit.record(request, identity, "list_approvals")
        return json_response(HoldPage(items=await self.holds.pending()))

    async def view_hold(self, request: Request) -> Response:
        identity = await self.access.require(request, Role.APPROVER, Role.AUDITOR)
        hold_id = _hold_id(request)
        await self.audit.record(request, identity, "view_approval", target=hold_id)
        hold = await self.holds.get(hold_id)
        if hold is None:
            raise HTTPException(404, f"no pending hold {hold_id!r}")
        return json_response(hold)

    async def approve(self, request: Request) -> Response:
        return await self._decide(request, approve=True)

    async def deny(self, request: Request) -> Response:
        return await self._decide(request, approve=False)

    async def _decide(self, request: Request, *, approve: bool) -> Response:
        identity = await self.access.require(request, Role.APPROVER)
        hold_id = _hold_id(request)
        decision = await _decision(request)
        given = {"comment": decision.comment, "arguments_sha256": decision.arguments_sha256}
        await self.audit.record(
            request, identity, "approve" if approve else "deny", target=hold_id, query=given
        )
        try:
            hold = await self.holds.decide(
                hold_id,
                approve=approve,
                approver=identity,
                comment=decision.comment,
                arguments_sha256=decision.arguments_sha256,
            )
        except DecisionRefused as exc:
            raise HTTPException(exc.status, str(exc)) from None
        return json_response(hold)


__all__ = ["ApprovalsApi", "NoHolds"]
