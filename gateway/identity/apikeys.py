"""Service API keys: made once, shown once, kept in the config only as a hash.

A key is ``wg_`` + 32 random bytes in base32 (256 bits). It is stored as ``sha256:<hex>`` of a
domain-separated SHA-256. With 256 random bits there is nothing to guess, so a slow KDF or a pepper
would add cost per request and no protection; a fast hash keeps the config useless to a reader.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from parsers.events import Identity

PREFIX = "wg_"
_DOMAIN = b"wardgate api key v1\x00"
_HASH_PREFIX = "sha256:"
_MAX_KEY_CHARS = 128


@dataclass(frozen=True)
class ApiKey:
    """One configured service identity: ``[[auth.api_keys]]`` in the config."""

    name: str
    hash: str  # "sha256:<64 hex>"
    groups: tuple[str, ...] = ()


def new_api_key() -> str:
    """A fresh key: ``wg_`` and 52 base32 characters."""
    return PREFIX + base64.b32encode(secrets.token_bytes(32)).decode().rstrip("=").lower()


def hash_api_key(key: str) -> str:
    """The form kept in the config."""
    return _HASH_PREFIX + hashlib.sha256(_DOMAIN + key.encode()).hexdigest()


def is_valid_hash(value: str) -> bool:
    digest = value.removeprefix(_HASH_PREFIX)
    return (
        value.startswith(_HASH_PREFIX) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
    )


def verify_api_key(presented: str, configured: Sequence[ApiKey]) -> Identity | None:
    """The service identity whose hash matches ``presented``, else ``None``.

    Every configured hash is compared, in constant time, whatever matched.
    """
    if not presented.startswith(PREFIX) or len(presented) > _MAX_KEY_CHARS or not presented.isascii():
        return None
    digest = hash_api_key(presented).encode()
    found: ApiKey | None = None
    for entry in configured:
        if hmac.compare_digest(digest, entry.hash.encode()) and found is None:
            found = entry
    if found is None:
        return None
    return Identity(subject=found.name, method="api-key", groups=found.groups)


def config_snippet(name: str, key_hash: str, groups: Sequence[str]) -> str:
    """The TOML block to paste under the config's ``[auth]`` section."""
    group_list = ", ".join(_toml_string(g) for g in groups)
    return (
        "[[auth.api_keys]]\n"
        f"name = {_toml_string(name)}\n"
        f"hash = {_toml_string(key_hash)}\n"
        f"groups = [{group_list}]\n"
    )


def _toml_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


__all__ = [
    "PREFIX",
    "ApiKey",
    "config_snippet",
    "hash_api_key",
    "is_valid_hash",
    "new_api_key",
    "verify_api_key",
]
