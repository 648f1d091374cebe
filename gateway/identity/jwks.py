"""The issuer's signing keys: loaded from a JWKS file or through OIDC discovery, cached, refetched on demand.

An unknown ``kid`` triggers at most one refetch per ``min_refetch_interval_s``; concurrent misses wait for
that one fetch (a lock, checked again after it is taken), so a burst of forged kids cannot make a refetch
storm. Keys rotate without a restart. It never verifies tokens (``jwt_verify`` does).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.config import ConfigError
from gateway.identity.http_client import FetchError, http_get
from gateway.identity.jwt_verify import Jwk, KeysUnavailable

logger = logging.getLogger("wardgate.identity.jwks")

Fetcher = Callable[[str], Awaitable[bytes]]  # URL -> the body of a 200 answer; raises FetchError
Loader = Callable[[], Awaitable[bytes]]  # -> the JWKS document


class JwksError(Exception):
    """A key set or discovery document that cannot be used."""


def parse_jwks(document: bytes) -> dict[str, Jwk]:
    """Signing keys by ``kid`` (``""`` for a key without one). A ``kid`` used twice is dropped: ambiguous.

    Raises:
        JwksError: not a JWKS document.
    """
    try:
        value = json.loads(document)
    except (ValueError, RecursionError):
        raise JwksError("JWKS is not JSON") from None
    keys = value.get("keys") if isinstance(value, dict) else None
    if not isinstance(keys, list):
        raise JwksError('JWKS has no "keys" list')
    found: dict[str, Jwk] = {}
    ambiguous: set[str] = set()
    for key in keys:
        if not isinstance(key, dict) or not isinstance(key.get("kty"), str):
            continue
        if key.get("use", "sig") != "sig" or key.get("kty") == "oct":  # never a shared secret
            continue
        kid = key.get("kid", "")
        if not isinstance(kid, str):
            continue
        if kid in found:
            ambiguous.add(kid)
        found[kid] = key
    for kid in ambiguous:
        logger.warning("JWKS: kid %r names more than one key; ignoring it", kid)
        del found[kid]
    return found


def file_loader(path: Path) -> Loader:
    """Reads a local JWKS file (re-read on refetch, so replacing the file rotates keys)."""

    async def load() -> bytes:
        return _read_small_file(path)  # a few KB from local disk, rarely: not worth a thread

    return load


def _read_small_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise FetchError(f"{path}: {exc.strerror}") from None


def discovery_loader(issuer: str, fetch: Fetcher = http_get) -> Loader:
    """Finds ``jwks_uri`` in the issuer's discovery document (once), then fetches that on each load.

    Plain http is accepted only for loopback issuers (the dev IdP, tests).

    Raises:
        ConfigError: the issuer is not an https URL (or http on loopback).
    """
    try:
        _require_https(issuer)
    except JwksError as exc:
        raise ConfigError(f"auth.oidc.issuer: {exc}") from None
    jwks_uri: str | None = None

    async def load() -> bytes:
        nonlocal jwks_uri
        if jwks_uri is None:
            doc = _json_object(await fetch(issuer.rstrip("/") + "/.well-known/openid-configuration"))
            # OpenID Connect Discovery 1.0 §4.3: the document's issuer must be the one we asked.
            if doc.get("issuer") != issuer:
                raise JwksError("discovery document names another issuer")
            uri = doc.get("jwks_uri")
            if not isinstance(uri, str):
                raise JwksError("discovery document has no jwks_uri")
            _require_https(uri)
            jwks_uri = uri
        return await fetch(jwks_uri)

    return load


class JwksCache:
    """The current key set; implements ``jwt_verify.KeySource``."""

    def __init__(
        self,
        load: Loader,
        *,
        min_refetch_interval_s: float = 30.0,
        max_age_s: float = 3600.0,
        fetch_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._min_refetch_interval_s = min_refetch_interval_s
        self._max_age_s = max_age_s
        self._fetch_timeout_s = fetch_timeout_s
        self._clock = clock
        self._keys: dict[str, Jwk] | None = None
        self._loaded_at = -float("inf")
        self._attempted_at = -float("inf")
        self._lock = asyncio.Lock()
        self.fetches = 0  # attempts, for metrics and tests

    async def key(self, kid: str | None) -> Jwk | None:
        if self._stale():
            await self._refresh(lambda: self._stale() and self._may_refetch())
        elif not self._has(kid):
            await self._refresh(lambda: not self._has(kid) and self._may_refetch())
        if self._keys is None:
            raise KeysUnavailable("signing keys unavailable")
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    def _has(self, kid: str | None) -> bool:
        return self._keys is not None and (len(self._keys) == 1 if kid is None else kid in self._keys)

    def _stale(self) -> bool:
        return self._keys is None or self._clock() - self._loaded_at >= self._max_age_s

    def _may_refetch(self) -> bool:
        return self._clock() - self._attempted_at >= self._min_refetch_interval_s

    async def _refresh(self, still_needed: Callable[[], bool]) -> None:
        async with self._lock:
            if not still_needed():
                return  # another task refreshed (or tried to) while this one waited
            self._attempted_at = self._clock()
            self.fetches += 1
            try:
                async with asyncio.timeout(self._fetch_timeout_s):
                    keys = parse_jwks(await self._load())
            except (FetchError, JwksError, TimeoutError) as exc:
                logger.warning("signing keys not refreshed: %s", exc or "timed out")
                return
            self._keys = keys
            self._loaded_at = self._clock()


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise JwksError("discovery document is not JSON") from None
    if not isinstance(value, dict):
        raise JwksError("discovery document is not a JSON object")
    return value


def _require_https(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https":
        return
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme != "http" or not loopback:
        raise JwksError(f"{url}: https required (plain http only on loopback)")


__all__ = ["Fetcher", "JwksCache", "JwksError", "Loader", "discovery_loader", "file_loader", "parse_jwks"]
