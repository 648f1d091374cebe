"""Ed25519 keys that sign checkpoints: ``<data>/keys/signing.key`` (raw, 0600) and ``signing.pub``.

The only module that uses ``cryptography``. File I/O is limited to the two key files; creating a key
never replaces an existing one (it is linked into place, which fails instead of clobbering).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from storage.errors import StorageError

RAW_KEY_BYTES = 32
KEY_ID_BYTES = 8
_PREFIX = "ed25519:"


def signing_key_path(data_dir: Path) -> Path:
    return data_dir / "keys" / "signing.key"


def public_key_path(data_dir: Path) -> Path:
    return data_dir / "keys" / "signing.pub"


class KeyExists(StorageError):
    """A signing key is never replaced: the checkpoints it signed would become unverifiable."""


class PublicKey:
    """An Ed25519 public key: checks checkpoint signatures."""

    def __init__(self, raw: bytes) -> None:
        if len(raw) != RAW_KEY_BYTES:
            raise StorageError(f"an Ed25519 public key has {RAW_KEY_BYTES} bytes, got {len(raw)}")
        self.raw = raw
        self._key = Ed25519PublicKey.from_public_bytes(raw)
        digest = hashlib.sha256(raw).digest()
        self.key_id = digest[:KEY_ID_BYTES]
        self.fingerprint = "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")

    @property
    def text(self) -> str:
        """``ed25519:<base64>``: what ``signing-key show`` prints and ``load_public_key`` reads back."""
        return _PREFIX + base64.b64encode(self.raw).decode("ascii")

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


class SigningKey:
    """An Ed25519 private key. Signing is pure CPU work (about 50 µs)."""

    def __init__(self, raw: bytes) -> None:
        if len(raw) != RAW_KEY_BYTES:
            raise StorageError(f"an Ed25519 private key has {RAW_KEY_BYTES} bytes, got {len(raw)}")
        self._key = Ed25519PrivateKey.from_private_bytes(raw)
        self.public = PublicKey(self._key.public_key().public_bytes_raw())

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


def create_signing_key(data_dir: Path) -> SigningKey:
    """Create ``signing.key`` (0600) and ``signing.pub``.

    Raises:
        KeyExists: a signing key is already there (it is never replaced).
    """
    path = signing_key_path(data_dir)
    if path.exists():
        raise KeyExists(f"{path} already exists; it is never replaced")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    raw = secrets.token_bytes(RAW_KEY_BYTES)
    key = SigningKey(raw)
    temporary = _write_temporary(path, raw, 0o600)
    try:
        os.link(temporary, path)  # atomic, and fails instead of replacing a key someone else just made
    except FileExistsError:
        raise KeyExists(f"{path} already exists; it is never replaced") from None
    finally:
        temporary.unlink()
    _write_public(data_dir, key.public)
    return key


def load_signing_key(data_dir: Path) -> SigningKey:
    """Read ``signing.key`` (and write ``signing.pub`` again if it is missing or differs).

    Raises:
        FileNotFoundError: there is no signing key.
        StorageError: the file does not hold a raw 32-byte key.
    """
    path = signing_key_path(data_dir)
    key = SigningKey(_read_raw(path))
    try:
        current = public_key_path(data_dir).read_bytes()
    except FileNotFoundError:
        current = b""
    if current != key.public.raw:
        _write_public(data_dir, key.public)
    return key


def load_or_create_signing_key(data_dir: Path) -> tuple[SigningKey, bool]:
    """The data directory's signing key, created on first use; the flag says whether it was just created."""
    try:
        return load_signing_key(data_dir), False
    except FileNotFoundError:
        pass
    try:
        return create_signing_key(data_dir), True
    except KeyExists:
        return load_signing_key(data_dir), False


def read_public_key(data_dir: Path) -> PublicKey | None:
    """The data directory's public key (``signing.pub``, else derived from ``signing.key``), or None.
    Writes nothing.

    Raises:
        StorageError: a key file holds no key.
    """
    try:
        return load_public_key(public_key_path(data_dir))
    except FileNotFoundError:
        pass
    try:
        return SigningKey(_read_raw(signing_key_path(data_dir))).public
    except FileNotFoundError:
        return None


def load_public_key(path: Path) -> PublicKey:
    """A public key from a file: raw 32 bytes, ``ed25519:<base64>``, bare base64 or hex, or PEM.

    Raises:
        StorageError: the file holds none of these.
    """
    data = path.read_bytes()
    if len(data) == RAW_KEY_BYTES:
        return PublicKey(data)
    text = data.decode("ascii", "replace").strip()
    if text.startswith("-----BEGIN"):
        try:
            loaded = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise StorageError(f"{path}: not a PEM public key: {exc}") from exc
        if not isinstance(loaded, Ed25519PublicKey):
            raise StorageError(f"{path}: a PEM key, but not an Ed25519 one")
        return PublicKey(loaded.public_bytes_raw())
    for token in text.split():
        if (raw := _decode_token(token)) is not None:
            return PublicKey(raw)
    raise StorageError(f"{path}: no Ed25519 public key found (expected ed25519:<base64>, hex, raw or PEM)")


def _decode_token(token: str) -> bytes | None:
    token = token.removeprefix(_PREFIX)
    if len(token) == 2 * RAW_KEY_BYTES:
        try:
            return bytes.fromhex(token)
        except ValueError:
            return None
    try:
        raw = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == RAW_KEY_BYTES else None


def _write_public(data_dir: Path, public: PublicKey) -> None:
    path = public_key_path(data_dir)
    temporary = _write_temporary(path, public.raw, 0o644)
    os.replace(temporary, path)


def _write_temporary(path: Path, data: bytes, mode: int) -> Path:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return temporary


def _read_raw(path: Path) -> bytes:
    raw = path.read_bytes()
    if len(raw) != RAW_KEY_BYTES:
        raise StorageError(f"{path}: expected a raw {RAW_KEY_BYTES} byte Ed25519 key, found {len(raw)} bytes")
    return raw


__all__ = [
    "KeyExists",
    "PublicKey",
    "SigningKey",
    "create_signing_key",
    "load_or_create_signing_key",
    "load_public_key",
    "load_signing_key",
    "public_key_path",
    "read_public_key",
    "signing_key_path",
]
