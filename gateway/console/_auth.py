"""Who may use the admin listener: the gateway's own credentials (OIDC tokens, service keys), then roles.

Authentication is delegated to a ``Credentials`` object (the same one the data plane uses); this module
only maps the verified identity's groups to the console's roles. It answers nothing itself: a refusal is
an ``HTTPException`` the app turns into a JSON problem.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from starlette.exceptions import HTTPException
from starlette.requests import Request

from gateway.identity.authenticator import Unauthenticated  # one refusal type: the data plane's Authenticator
from parsers.events import Headers, Identity


class Role(enum.Enum):
    AUDITOR = "auditor"  # read everything recorded
    APPROVER = "approver"  # decide held tool calls
    METRICS = "metrics"  # scrape /metrics


class Credentials(Protocol):
    async def authenticate(self, headers: Headers, tls_peer_subject: str = "") -> Identity:
        """The caller's identity.

        Raises:
            Unauthenticated: missing, malformed or refused credentials.
        """
        ...


@dataclass(frozen=True)
class Access:
    """The roles each group grants. Without ``credentials`` every protected endpoint answers 401."""

    credentials: Credentials | None
    auditor_groups: frozenset[str]
    approver_groups: frozenset[str]
    metrics_groups: frozenset[str]

    @classmethod
    def of(
        cls,
        credentials: Credentials | None,
        *,
        auditors: Iterable[str],
        approvers: Iterable[str],
        metrics: Iterable[str],
    ) -> Access:
        return cls(credentials, frozenset(auditors), frozenset(approvers), frozenset(metrics))

    def roles(self, identity: Identity) -> list[Role]:
        groups = set(identity.groups)
        granted = [
            (Role.AUDITOR, self.auditor_groups),
            (Role.APPROVER, self.approver_groups),
            (Role.METRICS, self.metrics_groups | self.auditor_groups),
        ]
        return [role for role, allowed in granted if groups & allowed]

    async def identify(self, request: Request) -> Identity:
        """The verified caller, whatever its roles.

        Raises:
            HTTPException: 401 (or 503 when the identity provider is unreachable).
        """
        if self.credentials is None:
            raise HTTPException(401, "no authentication is configured for the admin listener (see [auth])")
        try:
            return await self.credentials.authenticate(request.headers.raw)
        except Unauthenticated as exc:
            headers = {"WWW-Authenticate": 'Bearer realm="wardgate-admin"'} if exc.status == 401 else None
            raise HTTPException(exc.status, exc.reason, headers=headers) from None

    async def require(self, request: Request, role: Role, *alternatives: Role) -> Identity:
        """The verified caller, if one of its groups grants ``role`` (or one of the ``alternatives``).

        Raises:
            HTTPException: 401 without acceptable credentials, 403 without the role.
        """
        identity = await self.identify(request)
        wanted = (role, *alternatives)
        if not set(wanted) & set(self.roles(identity)):
            names = " or ".join(r.value for r in wanted)
            raise HTTPException(403, f"{identity.subject!r} is not in a group with the {names} role")
        return identity


__all__ = ["Access", "Credentials", "Role", "Unauthenticated"]
