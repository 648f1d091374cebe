"""Where the console finds held tool calls: a ``HoldSource`` (pending, get, decide), awaited.

In one process it is the gateway's own ``HoldRegistry`` (``LocalHolds``); under ``serve --workers N`` the
supervisor asks every worker over its unix socket (``gateway.hold_channel``). Either way the registry
that holds the call checks who may decide it; a source only carries the question there.
"""

from __future__ import annotations

from typing import Protocol

from gateway.approvals.registry import DecisionRefused, PendingHold
from parsers.events import Identity


class Registry(Protocol):
    """The part of ``gateway.approvals.registry.HoldRegistry`` the control plane uses."""

    def pending(self) -> list[PendingHold]: ...

    def get(self, hold_id: str) -> PendingHold | None: ...

    def decide(
        self, hold_id: str, *, approve: bool, approver: Identity, comment: str, arguments_sha256: str
    ) -> PendingHold: ...


class HoldSource(Protocol):
    async def pending(self) -> list[PendingHold]:
        """Every hold still waiting for a decision, oldest first."""
        ...

    async def get(self, hold_id: str) -> PendingHold | None: ...

    async def decide(
        self, hold_id: str, *, approve: bool, approver: Identity, comment: str, arguments_sha256: str
    ) -> PendingHold:
        """Release (``approve``) or deny the held call, by ``approver``, bound to ``arguments_sha256``.

        Raises:
            DecisionRefused: with the registry's status (403, 404, 409, 410) and reason.
        """
        ...


class LocalHolds:
    """The registry of this very process, as a ``HoldSource``."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    async def pending(self) -> list[PendingHold]:
        return sorted(self._registry.pending(), key=lambda hold: hold.created_at_ns)

    async def get(self, hold_id: str) -> PendingHold | None:
        return self._registry.get(hold_id)

    async def decide(
        self, hold_id: str, *, approve: bool, approver: Identity, comment: str, arguments_sha256: str
    ) -> PendingHold:
        return self._registry.decide(
            hold_id, approve=approve, approver=approver, comment=comment, arguments_sha256=arguments_sha256
        )


__all__ = ["DecisionRefused", "HoldSource", "LocalHolds", "PendingHold", "Registry"]
