"""Who is calling: a request's head (and its verified TLS client certificate) in, an ``Identity`` out.

``await Authenticator.authenticate(headers, tls_peer_subject)`` returns the identity or raises
``Unauthenticated`` (its ``reason`` is short and never holds credential material). An ``Authorization``
header decides when present: ``Bearer wg_...`` is a service API key, any other ``Bearer`` a JWT; a bad one
is refused even if a client certificate would map, so a credential is never swapped for another. Without
the header, a mapped mTLS subject is a service identity. It decides nothing about what the caller may do
(``gateway.identity.policy``) and writes no responses.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from gateway.config import AuthConfig, ConfigError
from gateway.identity.apikeys import PREFIX as API_KEY_PREFIX
from gateway.identity.apikeys import ApiKey, verify_api_key
from gateway.identity.http_client import http_get
from gateway.identity.jwks import Fetcher, JwksCache, Loader, discovery_loader, file_loader
from gateway.identity.jwt_verify import KeysUnavailable, TokenRejected, TokenVerifier, VerifierConfig
from parsers.events import Headers, Identity

logger = logging.getLogger("wardgate.identity")

_MAX_AUTHORIZATION_BYTES = 16 * 1024  # a JWT over this is refused before any parsing (jwt_verify: 8 KB)


class Unauthenticated(Exception):
    """No acceptable credential. ``status`` is 401, or 503 when the issuer's keys cannot be loaded."""

    def __init__(self, reason: str, *, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class Authenticator:
    """Checks credentials against the configured OIDC issuer, service API keys and mTLS subjects."""

    def __init__(
        self,
        *,
        verifier: TokenVerifier | None = None,
        api_keys: Sequence[ApiKey] = (),
        mtls: Mapping[str, Identity] | None = None,
    ) -> None:
        self.verifier = verifier
        self.api_keys = tuple(api_keys)
        self.mtls = dict(mtls or {})

    @classmethod
    def from_config(cls, auth: AuthConfig, *, fetch: Fetcher = http_get) -> Authenticator | None:
        """The authenticator ``auth`` describes, or ``None`` when no authentication is configured.

        Raises:
            ConfigError: an OIDC setting that cannot work, named.
        """
        if not auth.enabled:
            return None
        verifier = None
        if auth.oidc is not None:
            oidc = auth.oidc
            loader: Loader
            if oidc.jwks_file:
                path = Path(oidc.jwks_file)
                if not path.is_file():
                    raise ConfigError(f"auth.oidc.jwks_file: no such file: {path}")
                loader = file_loader(path)
            else:
                loader = discovery_loader(oidc.issuer, fetch)
            keys = JwksCache(
                loader, min_refetch_interval_s=oidc.jwks_refetch_interval_s, max_age_s=oidc.jwks_max_age_s
            )
            config = VerifierConfig(
                issuer=oidc.issuer,
                audiences=tuple(oidc.audience),
                algorithms=tuple(oidc.algorithms),
                required_claims=frozenset(oidc.required_claims),
                leeway_s=oidc.leeway_s,
                groups_claim=oidc.groups_claim,
            )
            verifier = TokenVerifier(config, keys)
        api_keys = [ApiKey(name=k.name, hash=k.hash, groups=tuple(k.groups)) for k in auth.api_keys]
        mtls = {
            entry.subject: Identity(subject=entry.name, method="mtls", groups=tuple(entry.groups))
            for entry in auth.mtls
        }
        return cls(verifier=verifier, api_keys=api_keys, mtls=mtls)

    async def authenticate(self, headers: Headers, tls_peer_subject: str = "") -> Identity:
        """The caller's identity.

        Raises:
            Unauthenticated: missing, malformed or refused credentials (or the issuer's keys unavailable).
        """
        values = [value for name, value in headers if name.lower() == b"authorization"]
        if len(values) > 1:
            raise Unauthenticated("more than one Authorization header")
        if values:
            return await self._bearer(values[0])
        if tls_peer_subject:
            identity = self.mtls.get(tls_peer_subject)
            if identity is not None:
                return identity
            if self.mtls:
                raise Unauthenticated("client certificate subject is not a known service identity")
        raise Unauthenticated("missing credentials: send Authorization: Bearer <token>")

    async def _bearer(self, value: bytes) -> Identity:
        if len(value) > _MAX_AUTHORIZATION_BYTES:
            raise Unauthenticated("token too large")
        scheme, _, credential = value.strip().partition(b" ")
        if scheme.lower() != b"bearer":  # RFC 9110 §11.1: the scheme is case-insensitive
            raise Unauthenticated("unsupported authorization scheme (expected Bearer)")
        token = credential.strip()
        if not token or not token.isascii():
            raise Unauthenticated("malformed bearer token")
        text = token.decode("ascii")
        if text.startswith(API_KEY_PREFIX):
            identity = verify_api_key(text, self.api_keys)
            if identity is None:
                raise Unauthenticated("unknown API key")
            return identity
        if self.verifier is None:
            raise Unauthenticated("bearer tokens are not accepted here (no OIDC issuer configured)")
        try:
            return await self.verifier.verify(text)
        except KeysUnavailable as exc:
            logger.warning("token not verified: %s", exc.reason)
            raise Unauthenticated(exc.reason, status=503) from None
        except TokenRejected as exc:
            raise Unauthenticated(exc.reason) from None


__all__ = ["Authenticator", "Unauthenticated"]
