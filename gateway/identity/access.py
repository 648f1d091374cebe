"""The proxy's one hook into identity and policy: authenticate, decide, rewrite credentials.

``AccessControl.from_config(config, environ)`` builds it (``None`` when nothing is configured, and the
proxy then behaves as before). Per request the proxy calls ``authenticate`` (head and TLS peer to an
``Identity``, or ``Refused``), ``needs_body`` (whether the decision must wait for the JSON body),
``decide`` (a ``PolicyDecision`` to record; ``Refused`` when it denies) and ``outbound`` (the head the
upstream gets: client credentials out, the gateway's in). It keeps no per-request state.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import msgspec

from gateway.config import Config
from gateway.identity.authenticator import Authenticator, Unauthenticated
from gateway.identity.credentials import UpstreamCredential
from gateway.identity.policy import Policy, RequestFacts
from parsers.events import ANONYMOUS, Headers, Identity, PolicyDecision, RequestHead
from storage.redact import SECRET_HEADERS

logger = logging.getLogger("wardgate.identity")

AUTHENTICATION = "authentication"  # the rule name recorded for a refused credential
RECORDED_CREDENTIAL = b"[wardgate upstream credential]"


class Refused(Exception):
    """The request must not reach the upstream: answer ``status`` with ``headers``; record ``decision``."""

    def __init__(self, decision: PolicyDecision, *, kind: str, headers: Headers, message: str = "") -> None:
        super().__init__(message or decision.reason)
        self.decision = decision
        self.status = decision.status
        self.kind = kind
        self.headers = headers
        self.message = message or decision.reason  # what the client is told


class AccessControl:
    """Authentication, policy and the upstream credential of one gateway."""

    def __init__(
        self, authenticator: Authenticator | None, policy: Policy, credential: UpstreamCredential
    ) -> None:
        self.authenticator = authenticator
        self.policy = policy
        self.credential = credential

    @classmethod
    def from_config(cls, config: Config, environ: Mapping[str, str]) -> AccessControl | None:
        """What ``config`` asks for, or ``None`` when it configures no auth, policy or credential.

        Raises:
            ConfigError: a setting that cannot work, or the credential cannot be read.
        """
        auth, rules = config.auth, config.policy.rules
        if not (auth.enabled or rules or config.upstream_credential.enabled):
            return None
        authenticator = Authenticator.from_config(auth)
        policy = Policy(rules, enforcing=auth.enabled or bool(rules))
        if auth.enabled and not any(rule.effect == "allow" for rule in rules):
            logger.warning("auth is configured but no policy rule allows anything: every request is denied")
        return cls(authenticator, policy, UpstreamCredential.load(config.upstream_credential, environ))

    async def authenticate(self, head: RequestHead, tls_peer_subject: str) -> Identity:
        """The caller (anonymous when no authentication is configured).

        Raises:
            Refused: 401 (or 503 when the issuer's keys cannot be had), with the reason.
        """
        if self.authenticator is None:
            return ANONYMOUS
        try:
            return await self.authenticator.authenticate(head.headers, tls_peer_subject)
        except Unauthenticated as exc:
            decision = PolicyDecision(
                allowed=False, rule=AUTHENTICATION, reason=exc.reason, identity=ANONYMOUS, status=exc.status
            )
            if exc.status == 401:
                # RFC 6750 §3: the challenge; the reason itself stays in the body and the recording.
                challenge = [(b"WWW-Authenticate", b'Bearer error="invalid_token"')]
                raise Refused(decision, kind="unauthorized", headers=challenge) from None
            raise Refused(decision, kind="identity_provider_unavailable", headers=[]) from None

    def needs_body(self, identity: Identity, head: RequestHead) -> bool:
        """Whether ``decide`` must see the whole request body (a model rule or a limit may apply)."""
        return self.policy.enforcing and self.policy.needs_body(identity, RequestFacts.of(head))

    def decide(self, identity: Identity, head: RequestHead, body: bytes | None) -> PolicyDecision | None:
        """The verdict on an allowed request, to record (``None``: no policy is enforced, nothing to record).

        Raises:
            Refused: 403 naming the rule that denied (its decision is to be recorded too).
        """
        if not self.policy.enforcing:
            return None
        verdict = self.policy.decide(identity, RequestFacts.of(head, body))
        decision = PolicyDecision(
            allowed=verdict.allowed,
            rule=verdict.rule,
            reason=verdict.reason,
            identity=identity,
            status=0 if verdict.allowed else 403,
        )
        if not verdict.allowed:
            message = f"denied by policy rule {verdict.rule!r}: {verdict.reason}"
            raise Refused(decision, kind="forbidden", headers=[], message=message)
        return decision

    def outbound(self, head: RequestHead) -> tuple[RequestHead, RequestHead]:
        """The head to send upstream and the one to record (a credential the recorder would not redact,
        under a custom header name, is replaced by a placeholder)."""
        sent = self.credential.apply(head.headers)
        forwarded = msgspec.structs.replace(head, headers=sent)
        if self.credential.value is None or self.credential.header.lower() in SECRET_HEADERS:
            return forwarded, forwarded  # the recorder keeps only a keyed fingerprint of these
        recorded = [*sent[:-1], (self.credential.header, _masked(self.credential.value))]
        return forwarded, msgspec.structs.replace(head, headers=recorded)


def _masked(value: bytes) -> bytes:
    scheme, space, _ = value.partition(b" ")
    return scheme + b" " + RECORDED_CREDENTIAL if space else RECORDED_CREDENTIAL


__all__ = ["AUTHENTICATION", "AccessControl", "Refused"]
