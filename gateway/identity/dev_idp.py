"""``wardgate dev-idp``: a tiny local OIDC issuer for demos and tests. NOT FOR PRODUCTION.

It serves a discovery document, its JWKS (one RS256 key kept in the state dir) and ``POST /mint``,
which signs whatever claims a loopback client asks for: anyone on this host can mint any identity.
Its issuer is its own base URL. One request per connection.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk, jwt

from gateway.control_http import serve_one
from parsers.events import RequestHead

logger = logging.getLogger("wardgate.identity.dev_idp")

BANNER = (
    "wardgate dev-idp: DEVELOPMENT IDENTITY PROVIDER - NOT FOR PRODUCTION.\n"
    "  Any process on this host can mint a token for any user and group through POST /mint."
)
KEY_FILE = "dev-idp-signing-key.pem"
MAX_TTL_S = 7 * 24 * 3600
_MAX_BODY_BYTES = 16 * 1024


class MintError(Exception):
    """A mint request that cannot be honoured; the message goes back to the client."""


class SigningKey:
    """The dev IdP's RS256 key, created on first start and kept (mode 0600) in the state dir."""

    def __init__(self, state_dir: Path) -> None:
        path = state_dir / KEY_FILE
        if not path.exists():
            state_dir.mkdir(parents=True, exist_ok=True)
            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
        self._pem = path.read_bytes().decode()
        public = jwk.construct(self._pem, "RS256").public_key().to_dict()
        # RFC 7638: the kid is the JWK thumbprint, so a new key gets a new kid.
        members = json.dumps({k: public[k] for k in ("e", "kty", "n")}, separators=(",", ":"), sort_keys=True)
        self.kid = base64.urlsafe_b64encode(hashlib.sha256(members.encode()).digest()).rstrip(b"=").decode()
        self.public_jwk = {**public, "kid": self.kid, "use": "sig", "alg": "RS256"}

    def sign(self, claims: dict[str, Any]) -> str:
        return str(jwt.encode(claims, self._pem, algorithm="RS256", headers={"kid": self.kid}))


class DevIdp:
    """Answers discovery, JWKS and mint requests for ``issuer``."""

    def __init__(self, key: SigningKey, issuer: str, *, timeout_s: float = 10.0) -> None:
        self.key = key
        self.issuer = issuer.rstrip("/")
        self._timeout_s = timeout_s

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_one(
            reader,
            writer,
            self._json_answer,
            logger=logger,
            timeout_s=self._timeout_s,
            max_body_bytes=_MAX_BODY_BYTES,
        )

    def _json_answer(self, head: RequestHead | None, body: bytes, loopback: bool) -> tuple[int, bytes, bytes]:
        status, answer = self.answer(head, body, loopback)
        return status, b"application/json", answer

    def answer(self, head: RequestHead | None, body: bytes, loopback: bool) -> tuple[int, bytes]:
        if head is None:
            return 400, _error("bad request")
        path = head.target.split(b"?", 1)[0]
        if path == b"/.well-known/openid-configuration":
            return 200, json.dumps(self.discovery()).encode()
        if path == b"/jwks.json":
            return 200, json.dumps({"keys": [self.key.public_jwk]}).encode()
        if path != b"/mint":
            return 404, _error("not found")
        if head.method != b"POST":
            return 405, _error("POST only")
        if not loopback:
            return 403, _error("mint answers loopback clients only")
        try:
            token, ttl_s = self.mint(body)
        except MintError as exc:
            return 400, _error(str(exc))
        return 200, json.dumps({"access_token": token, "token_type": "Bearer", "expires_in": ttl_s}).encode()

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{self.issuer}/jwks.json",
            "token_endpoint": f"{self.issuer}/mint",
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
        }

    def mint(self, body: bytes) -> tuple[str, int]:
        """A signed token for the claims in a JSON body ``{sub, groups, aud, ttl_s, email, name}``."""
        try:
            request = json.loads(body)
        except (ValueError, RecursionError):
            raise MintError("body is not JSON") from None
        if not isinstance(request, dict):
            raise MintError("body is not a JSON object")
        sub = request.get("sub")
        groups = request.get("groups", [])
        aud = request.get("aud", "wardgate")
        ttl_s = request.get("ttl_s", 3600)
        if not isinstance(sub, str) or not sub:
            raise MintError("sub: expected a non-empty string")
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise MintError("groups: expected a list of strings")
        if not isinstance(aud, str) or not aud:
            raise MintError("aud: expected a non-empty string")
        if not isinstance(ttl_s, int) or isinstance(ttl_s, bool) or not 1 <= ttl_s <= MAX_TTL_S:
            raise MintError(f"ttl_s: expected an integer 1..{MAX_TTL_S}")
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": sub,
            "aud": aud,
            "iat": now,
            "nbf": now,
            "exp": now + ttl_s,
            "jti": secrets.token_urlsafe(12),
            "groups": groups,
        }
        for optional in ("email", "name"):
            value = request.get(optional)
            if value is not None:
                if not isinstance(value, str):
                    raise MintError(f"{optional}: expected a string")
                claims[optional] = value
        return self.key.sign(claims), ttl_s


async def serve(host: str, port: int, state_dir: Path, issuer: str | None, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set. The banner goes to stderr, then the issuer URL (bound port) to stdout."""
    key = SigningKey(state_dir)
    idp = DevIdp(key, issuer or "")
    server = await asyncio.start_server(idp.handle, host, port)
    async with server:
        bound_port = server.sockets[0].getsockname()[1]
        shown_host = f"[{host}]" if ":" in host else host
        idp.issuer = (issuer or f"http://{shown_host}:{bound_port}").rstrip("/")
        print(BANNER, file=sys.stderr, flush=True)
        print(f"wardgate dev-idp: issuer {idp.issuer} (kid {key.kid})", flush=True)
        await stop.wait()


def _error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


__all__ = ["BANNER", "DevIdp", "MintError", "SigningKey", "serve"]
