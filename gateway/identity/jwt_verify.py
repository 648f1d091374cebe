"""A hardened OIDC bearer-token verifier on python-jose: a token in, an ``Identity`` or ``TokenRejected`` out.

python-jose only checks the signature here, with exactly one key (chosen by ``kid``) and exactly one
algorithm (from an allow-list that never holds ``none`` or HMAC). Everything jose is lax about (claim
types, required claims, issuer, audience, key type against algorithm) is checked here first. It does no
I/O itself: keys come from a ``KeySource`` (``gateway.identity.jwks.JwksCache``).
"""

from __future__ import annotations

import binascii
import hashlib
import json
import math
import re
import time
from base64 import urlsafe_b64decode
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from jose import jwk, jwt
from jose.exceptions import JOSEError

from gateway.config import ConfigError
from parsers.events import Identity

Jwk = Mapping[str, Any]

# RFC 7518 §3.1: the family of key each asymmetric algorithm needs (and the curve, for ECDSA).
_KEY_FAMILY: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
}
DEFAULT_ALGORITHMS = ("RS256", "ES256")
_B64URL = re.compile(rb"[A-Za-z0-9_-]*")
_TIME_CLAIMS = ("exp", "nbf", "iat")
_STRING_CLAIMS = ("iss", "sub", "jti", "email", "name")


class TokenRejected(Exception):
    """The token is not acceptable. ``reason`` is short and never contains token material or keys."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeysUnavailable(TokenRejected):
    """No key set could be loaded at all (the issuer is unreachable): not the client's fault."""


class KeySource(Protocol):
    async def key(self, kid: str | None) -> Jwk | None:
        """The one key with this ``kid`` (``None``: the only key of the set), or ``None`` when unknown.

        Raises:
            KeysUnavailable: no key set has ever been loaded.
        """
        ...


@dataclass(frozen=True)
class VerifierConfig:
    issuer: str
    audiences: tuple[str, ...]  # the token's aud must name at least one of these
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    required_claims: frozenset[str] = frozenset({"exp", "iss", "aud"})
    leeway_s: float = 30.0
    groups_claim: str = "groups"  # a top-level name, else a dotted path such as realm_access.roles
    max_token_bytes: int = 8 * 1024
    cache_entries: int = 10_000

    def __post_init__(self) -> None:
        if not self.issuer:
            raise ConfigError("auth.oidc.issuer: must not be empty")
        for alg in self.algorithms:
            if alg not in _KEY_FAMILY:
                # `none` and HS*: an HMAC "key" would be the IdP's public key, which everyone has.
                raise ConfigError(f"auth.oidc.algorithms: {alg!r} is not allowed (use RS*, PS* or ES*)")
        if not self.algorithms:
            raise ConfigError("auth.oidc.algorithms: must name at least one algorithm")
        if "aud" in self.required_claims and not self.audiences:
            raise ConfigError("auth.oidc.audience: required when aud is a required claim")
        if not (0 <= self.leeway_s <= 600):
            raise ConfigError(f"auth.oidc.leeway_s: expected 0..600, got {self.leeway_s}")


class TokenVerifier:
    """Verifies bearer tokens; verified ones are cached by their SHA-256 until they expire."""

    def __init__(
        self, config: VerifierConfig, keys: KeySource, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self._keys = keys
        self._clock = clock
        self._cache: OrderedDict[bytes, tuple[float, Identity]] = OrderedDict()
        # jose Key objects by (alg, id of the JWK): building one costs more than verifying a signature.
        # The JWK itself is kept alongside, so its id cannot be reused by another object meanwhile.
        self._jose_keys: dict[tuple[str, int], tuple[Jwk, Any]] = {}

    async def verify(self, token: str) -> Identity:
        """The identity a valid token carries.

        Raises:
            TokenRejected: anything wrong with the token, with a short reason.
        """
        if not isinstance(token, str) or not token.isascii():
            raise TokenRejected("token is not ASCII")
        if len(token) > self.config.max_token_bytes:
            raise TokenRejected("token too large")
        digest = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None:
            if now < cached[0]:
                self._cache.move_to_end(digest)
                return cached[1]
            del self._cache[digest]
        header, claims = _split(token)
        alg, kid = self._check_header(header)
        self._check_claims(claims, now)
        key = await self._keys.key(kid)
        if key is None:
            raise TokenRejected("unknown key id")
        _check_key(key, alg)
        _verify_signature(token, self._jose_key(key, alg), alg)
        identity = self._identity(claims)
        expires = float(claims.get("exp", now + 300))  # no exp (not required): re-verify after 5 min
        self._cache[digest] = (min(expires, now + 3600), identity)
        while len(self._cache) > self.config.cache_entries:
            self._cache.popitem(last=False)
        return identity

    def _jose_key(self, key: Jwk, alg: str) -> Any:
        cached = self._jose_keys.get((alg, id(key)))
        if cached is not None and cached[0] is key:
            return cached[1]
        try:
            built = jwk.construct(dict(key), alg)
        except JOSEError:
            raise TokenRejected("unusable key") from None
        except (TypeError, ValueError, KeyError):
            raise TokenRejected("malformed key") from None
        if len(self._jose_keys) >= 64:  # keys rotate rarely; a full table is stale entries
            self._jose_keys.clear()
        self._jose_keys[(alg, id(key))] = (key, built)
        return built

    def _check_header(self, header: dict[str, Any]) -> tuple[str, str | None]:
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.config.algorithms:
            raise TokenRejected("algorithm not allowed")
        if "crit" in header:
            raise TokenRejected("critical header extensions not supported")  # RFC 7515 §4.1.11
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenRejected("kid is not a string")
        return alg, kid

    def _check_claims(self, claims: dict[str, Any], now: float) -> None:
        # sub is always required: an Identity without a subject could not be told apart from another.
        for name in self.config.required_claims | {"sub"}:
            if name not in claims:
                raise TokenRejected(f"missing {name} claim")
        for name in _TIME_CLAIMS:
            if name in claims and not _is_number(claims[name]):
                raise TokenRejected(f"{name} claim is not a number")
        for name in _STRING_CLAIMS:
            if name in claims and not isinstance(claims[name], str):
                raise TokenRejected(f"{name} claim is not a string")
        if not claims["sub"]:
            raise TokenRejected("empty sub claim")
        leeway = self.config.leeway_s
        if "exp" in claims and claims["exp"] <= now - leeway:
            raise TokenRejected("token expired")
        if "nbf" in claims and claims["nbf"] > now + leeway:
            raise TokenRejected("token not yet valid")
        if "iat" in claims and claims["iat"] > now + leeway:
            raise TokenRejected("token issued in the future")
        if "iss" in claims and claims["iss"] != self.config.issuer:
            raise TokenRejected("wrong issuer")
        if "aud" in claims:
            aud = claims["aud"]
            auds = [aud] if isinstance(aud, str) else aud
            if not isinstance(auds, list) or not auds or not all(isinstance(a, str) for a in auds):
                raise TokenRejected("aud claim is not a string or a list of strings")
            if not set(auds) & set(self.config.audiences):
                raise TokenRejected("wrong audience")

    def _identity(self, claims: dict[str, Any]) -> Identity:
        return Identity(
            subject=claims["sub"],
            method="oidc",
            email=claims.get("email", ""),
            name=claims.get("name", ""),
            groups=groups_from(claims, self.config.groups_claim),
            issuer=claims.get("iss", ""),
            token_id=claims.get("jti", ""),
        )


def groups_from(claims: Mapping[str, Any], path: str) -> tuple[str, ...]:
    """The groups at ``path``: a top-level claim of that exact name (``https://x/roles``), else a dotted path.

    A list keeps its string items; a string is split on commas and whitespace; anything else is no groups.
    """
    value: Any = claims.get(path)
    if value is None and "." in path:
        value = claims
        for part in path.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, str):
        return tuple(g for g in re.split(r"[,\s]+", value) if g)
    if isinstance(value, list):
        return tuple(g for g in value if isinstance(g, str) and g)
    return ()


def _is_number(value: object) -> bool:
    # bool is an int subclass; jose would compare True with a timestamp. NaN/inf compare oddly too.
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int past float range, e.g. exp = 10**400
        return False


def _b64_json(part: str, what: str) -> dict[str, Any]:
    raw = part.encode()
    if not _B64URL.fullmatch(raw) or len(raw) % 4 == 1:
        raise TokenRejected(f"malformed {what}")
    try:
        value = json.loads(urlsafe_b64decode(raw + b"=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        raise TokenRejected(f"malformed {what}") from None
    if not isinstance(value, dict):
        raise TokenRejected(f"malformed {what}")
    return value


def _split(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise TokenRejected("not a signed JWT")  # a JWE has 5 parts; an unsigned one an empty third
    if not _B64URL.fullmatch(parts[2].encode()):
        raise TokenRejected("malformed signature")
    return _b64_json(parts[0], "header"), _b64_json(parts[1], "payload")


def _check_key(key: Jwk, alg: str) -> None:
    family, curve = _KEY_FAMILY[alg]
    if key.get("kty") != family:
        raise TokenRejected("key type does not match algorithm")
    if curve is not None and key.get("crv") != curve:
        raise TokenRejected("key curve does not match algorithm")
    if key.get("alg", alg) != alg:
        raise TokenRejected("key is for another algorithm")
    if key.get("use", "sig") != "sig":
        raise TokenRejected("key is not a signing key")
    ops = key.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise TokenRejected("key may not verify")


def _verify_signature(token: str, one_key: Any, alg: str) -> None:
    # One Key object (jose would try every key of a set) and one algorithm. Every claim was checked
    # above, against the verifier's clock, so jose checks only the signature.
    skip = ("aud", "iss", "sub", "jti", "exp", "nbf", "iat", "at_hash")
    try:
        jwt.decode(token, one_key, algorithms=[alg], options={f"verify_{name}": False for name in skip})
    except JOSEError:
        raise TokenRejected("invalid signature or claims") from None
    except (TypeError, ValueError, KeyError):
        raise TokenRejected("malformed token") from None


__all__ = [
    "DEFAULT_ALGORITHMS",
    "Jwk",
    "KeySource",
    "KeysUnavailable",
    "TokenRejected",
    "TokenVerifier",
    "VerifierConfig",
    "groups_from",
]
