"""Keys and tokens crafted for the identity tests (with ``cryptography`` and python-jose)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwk, jwt

ISSUER = "https://idp.example.test"
AUDIENCE = "wardgate"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class SigningKey:
    alg: str
    kid: str
    private_pem: bytes
    public_pem: bytes
    public_der: bytes
    jwk: dict[str, Any] = field(default_factory=dict)

    _jose_key: Any = None

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        if self._jose_key is None:  # parsing the PEM each time costs more than signing
            self._jose_key = jwk.construct(self.private_pem.decode(), self.alg)
        headers = {"kid": self.kid, **header}
        return str(jwt.encode(claims, self._jose_key, algorithm=self.alg, headers=headers))


def _pems(private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> tuple[bytes, bytes, bytes]:
    return (
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


def rsa_key(kid: str = "rsa-1") -> SigningKey:
    key = SigningKey("RS256", kid, *_pems(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    key.jwk = {**jwk.construct(key.public_pem.decode(), "RS256").to_dict(), "kid": kid, "use": "sig"}
    return key


def ec_key(kid: str = "ec-1") -> SigningKey:
    key = SigningKey("ES256", kid, *_pems(ec.generate_private_key(ec.SECP256R1())))
    key.jwk = {**jwk.construct(key.public_pem.decode(), "ES256").to_dict(), "kid": kid, "use": "sig"}
    return key


def jwks(*keys: SigningKey | dict[str, Any]) -> bytes:
    return json.dumps({"keys": [k.jwk if isinstance(k, SigningKey) else k for k in keys]}).encode()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "exp": now + 300,
        "iat": now,
        "nbf": now,
        "jti": "t-1",
        "email": "alice@example.test",
        "name": "Alice",
        "groups": ["dev", "ops"],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP: Any = object()
DROP = _DROP  # claims(aud=DROP) leaves the claim out


def unsigned(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join([b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(signature)])


def hs256(secret: bytes, payload: dict[str, Any], kid: str) -> str:
    """An HS256 token, signed by hand: jose refuses to use a PEM as an HMAC secret when signing."""
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64(json.dumps(payload).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"
