"""Signing keys, the signed checkpoint message and the checkpoint file, on real files."""

from __future__ import annotations

import base64
import stat
import struct
import zlib
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from storage.checkpoints import (
    CHECKPOINT_DOMAIN,
    CheckpointFile,
    checkpoint_message,
    checkpoint_path,
    read_checkpoint_file,
    sign_checkpoint,
    signature_valid,
)
from storage.errors import StorageError
from storage.segments import Anchor, Position
from storage.signing import (
    KeyExists,
    create_signing_key,
    load_or_create_signing_key,
    load_public_key,
    load_signing_key,
    public_key_path,
    read_public_key,
    signing_key_path,
)

ANCHOR = Anchor(Position(3, 1234), bytes(range(32)), 99)


def test_create_writes_a_private_key_only_its_owner_reads_and_never_replaces_it(tmp_path: Path) -> None:
    key = create_signing_key(tmp_path)
    private = signing_key_path(tmp_path)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert len(private.read_bytes()) == 32
    assert public_key_path(tmp_path).read_bytes() == key.public.raw
    with pytest.raises(KeyExists, match="never replaced"):
        create_signing_key(tmp_path)
    assert load_signing_key(tmp_path).public.raw == key.public.raw
    again, created = load_or_create_signing_key(tmp_path)
    assert (again.public.raw, created) == (key.public.raw, False)
    assert not [p for p in private.parent.iterdir() if p.name.endswith(".tmp")]


def test_load_or_create_creates_once(tmp_path: Path) -> None:
    first, created = load_or_create_signing_key(tmp_path)
    second, created_again = load_or_create_signing_key(tmp_path)
    assert (created, created_again) == (True, False)
    assert first.public.fingerprint == second.public.fingerprint
    assert first.public.fingerprint.startswith("SHA256:")


def test_the_public_key_is_derived_without_writing_when_its_file_is_gone(tmp_path: Path) -> None:
    key = create_signing_key(tmp_path)
    public_key_path(tmp_path).unlink()
    public = read_public_key(tmp_path)
    assert public is not None
    assert public.raw == key.public.raw
    assert not public_key_path(tmp_path).exists()
    load_signing_key(tmp_path)  # the gateway's load puts it back
    assert public_key_path(tmp_path).exists()
    assert read_public_key(tmp_path / "nothing") is None


def test_public_key_files_in_every_accepted_form(tmp_path: Path) -> None:
    key = create_signing_key(tmp_path)
    raw = key.public.raw
    pem = Ed25519PublicKey.from_public_bytes(raw).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forms = {
        "raw": raw,
        "text": key.public.text.encode() + b"\n",
        "base64": base64.b64encode(raw),
        "hex": raw.hex().encode(),
        "pem": pem,
        "show": f"{key.public.text}\nfingerprint {key.public.fingerprint}\nhex {raw.hex()}\n".encode(),
    }
    for name, data in forms.items():
        path = tmp_path / f"pub.{name}"
        path.write_bytes(data)
        assert load_public_key(path).raw == raw, name
    (tmp_path / "bad").write_text("ed25519:not-a-key\n")
    with pytest.raises(StorageError, match="no Ed25519 public key"):
        load_public_key(tmp_path / "bad")


def test_a_signature_covers_every_field_and_the_domain(tmp_path: Path) -> None:
    key = create_signing_key(tmp_path)
    checkpoint = sign_checkpoint(key, ANCHOR, 1_000, "interval")
    assert (checkpoint.segment, checkpoint.offset, checkpoint.frames) == (3, 1234, 99)
    assert signature_valid(checkpoint, key.public)
    message = checkpoint_message(3, 1234, ANCHOR.chain, 99, 1_000)
    assert message.startswith(CHECKPOINT_DOMAIN)
    assert key.public.verify(checkpoint.signature, message)
    assert not key.public.verify(checkpoint.signature, message[len(CHECKPOINT_DOMAIN) :])
    changes = {
        "segment": 4,
        "offset": 1235,
        "chain": bytes(32),
        "frames": 98,
        "ts_ns": 1_001,
        "key_id": bytes(8),
    }
    for field, value in changes.items():
        changed = msgspec.structs.replace(checkpoint, **{field: value})
        assert not signature_valid(changed, key.public), field
    other = create_signing_key(tmp_path / "other")
    assert not signature_valid(checkpoint, other.public)


def test_the_checkpoint_file_appends_reads_back_and_repairs_a_torn_entry(tmp_path: Path) -> None:
    assert read_checkpoint_file(tmp_path).payloads == []
    file = CheckpointFile.open(tmp_path)
    file.append(b"first")
    file.append(b"second")
    file.close()
    path = checkpoint_path(tmp_path)
    assert read_checkpoint_file(tmp_path).payloads == [b"first", b"second"]
    whole = path.read_bytes()
    entry = struct.pack("<II", 5, zlib.crc32(b"third")) + b"third"
    path.write_bytes(whole + entry[:9])  # an append cut short by a crash
    contents = read_checkpoint_file(tmp_path)
    assert contents.payloads == [b"first", b"second"]
    assert contents.torn_bytes == 9
    file = CheckpointFile.open(tmp_path)
    assert path.read_bytes() == whole
    file.append(b"third")
    file.close()
    assert read_checkpoint_file(tmp_path).payloads == [b"first", b"second", b"third"]


def test_a_damaged_entry_before_the_end_is_an_error(tmp_path: Path) -> None:
    file = CheckpointFile.open(tmp_path)
    file.append(b"first")
    file.append(b"second")
    file.close()
    path = checkpoint_path(tmp_path)
    data = bytearray(path.read_bytes())
    data[7 + 8 + 1] ^= 0x01  # inside "first"
    path.write_bytes(data)
    with pytest.raises(StorageError, match="damaged"):
        read_checkpoint_file(tmp_path)
    with pytest.raises(StorageError, match="damaged"):
        CheckpointFile.open(tmp_path)
    path.write_bytes(b"NOTIT\x01\x00")
    with pytest.raises(StorageError, match="not a version 1 checkpoint file"):
        read_checkpoint_file(tmp_path)
