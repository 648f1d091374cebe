"""Credential redaction for recorded headers, and the per data directory HMAC key it uses.

``redact_headers`` is pure. The HMAC keeps equal secrets recognisable (same tag) without storing them.
``load_or_create_key`` is the only file I/O here.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from parsers.events import Headers
from storage.errors import StorageError

SECRET_HEADERS = frozenset(
    {b"authorization", b"proxy-authorization", b"cookie", b"set-cookie", b"x-api-key", b"api-key"}
)
# Only well-known scheme words are kept: anything else before a space might be part of the secret.
_AUTH_SCHEMES = frozenset(
    {b"basic", b"bearer", b"digest", b"negotiate", b"ntlm", b"token", b"apikey", b"aws4-hmac-sha256", b"hoba"}
)
_AUTH_HEADERS = frozenset({b"authorization", b"proxy-authorization"})
KEY_BYTES = 32


def redact_value(value: bytes, key: bytes, known: dict[bytes, bytes] | None = None) -> bytes:
    """``[redacted hmac-sha256:<16 hex>]`` for one secret value.

    ``known`` caches results by value: a client sends the same key with every request, and the HMAC
    costs more than the rest of recording a request head. The caller owns it and bounds its size.
    """
    if known is not None and (redacted := known.get(value)) is not None:
        return redacted
    tag = hmac.new(key, value, hashlib.sha256).hexdigest()[:16].encode("ascii")
    redacted = b"[redacted hmac-sha256:" + tag + b"]"
    if known is not None:
        known[value] = redacted
    return redacted


def redact_headers(headers: Headers, key: bytes, known: dict[bytes, bytes] | None = None) -> Headers:
    """A copy of ``headers`` with credential values replaced; names, order and other values unchanged.

    ``Authorization: Bearer sk-...`` keeps its scheme word: ``Bearer [redacted hmac-sha256:...]``.
    Returns ``headers`` itself when nothing needs redacting, so callers can skip copying the event.
    ``known``: see ``redact_value``.
    """
    if not any(name.lower() in SECRET_HEADERS for name, _ in headers):
        return headers
    out: Headers = []
    for name, value in headers:
        lowered = name.lower()
        if lowered not in SECRET_HEADERS:
            out.append((name, value))
            continue
        if lowered in _AUTH_HEADERS:
            scheme, space, credential = value.strip().partition(b" ")
            if space and scheme.lower() in _AUTH_SCHEMES:
                out.append((name, scheme + b" " + redact_value(credential.strip(), key, known)))
                continue
        out.append((name, redact_value(value, key, known)))
    return out


def load_or_create_key(path: Path) -> bytes:
    """Read the 32-byte key at ``path``, or create it (mode 0600, never clobbering a concurrent creator).

    Raises:
        StorageError: the file exists but does not hold exactly 32 bytes.
    """
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, secrets.token_bytes(KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temporary, path)  # atomic, and fails instead of replacing a key someone else just made
    except FileExistsError:
        pass
    finally:
        temporary.unlink()
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise StorageError(f"{path}: expected a {KEY_BYTES} byte key, found {len(key)} bytes")
    return key


__all__ = ["KEY_BYTES", "SECRET_HEADERS", "load_or_create_key", "redact_headers", "redact_value"]
