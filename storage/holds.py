"""Legal holds: sessions whose recordings retention must keep, in ``<data>/legal-holds`` (JSON Lines).

A plain file, not an index table: the index is derived data that ``reindex`` drops, a hold must survive
that. Changes rewrite the file atomically (temporary file, fsync, rename) under a flock, so the CLI and
a running gateway never see half a file.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from storage.errors import StorageError

HOLDS_NAME = "legal-holds"
_LOCK_TRIES = 100
_LOCK_PAUSE_S = 0.05
_SESSION_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")  # the X-Wardgate-Session alphabet


class Hold(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    since_ns: int
    note: str = ""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Hold)


def holds_path(data_dir: Path) -> Path:
    return data_dir / HOLDS_NAME


def check_session_id(session_id: str) -> str:
    """Raises:
    StorageError: not a session id (1-128 of ``A-Z a-z 0-9 . _ : @ -``).
    """
    if not _SESSION_ID.match(session_id):
        raise StorageError(f"not a session id: {session_id!r} (1-128 of A-Z a-z 0-9 . _ : @ -)")
    return session_id


def load_holds(data_dir: Path) -> dict[str, Hold]:
    """Every session on hold (empty when the file does not exist).

    Raises:
        StorageError: a line of the file is not a hold.
    """
    path = holds_path(data_dir)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return {}
    holds: dict[str, Hold] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            hold = _decoder.decode(line)
        except msgspec.DecodeError as exc:
            raise StorageError(f"{path} line {number}: {exc}") from exc
        holds[hold.session_id] = hold
    return holds


def place_hold(data_dir: Path, session_id: str, *, since_ns: int, note: str = "") -> bool:
    """Put a session on hold; False when it already was.

    Raises:
        StorageError: a bad session id, or an unreadable holds file.
    """
    check_session_id(session_id)
    with _locked(data_dir):
        holds = load_holds(data_dir)
        if session_id in holds:
            return False
        holds[session_id] = Hold(session_id=session_id, since_ns=since_ns, note=note)
        _write(data_dir, holds)
    return True


def release_hold(data_dir: Path, session_id: str) -> bool:
    """Take a session off hold; False when it was not on hold."""
    with _locked(data_dir):
        holds = load_holds(data_dir)
        if holds.pop(session_id, None) is None:
            return False
        _write(data_dir, holds)
    return True


@contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / f"{HOLDS_NAME}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        for _ in range(_LOCK_TRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(_LOCK_PAUSE_S)  # another hold or release: a few file operations at most
        else:
            raise StorageError(f"{holds_path(data_dir)} stayed locked by another process")
        yield
    finally:
        os.close(fd)


def _write(data_dir: Path, holds: dict[str, Hold]) -> None:
    path = holds_path(data_dir)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    data = b"".join(
        _encoder.encode(hold) + b"\n" for hold in sorted(holds.values(), key=lambda h: h.since_ns)
    )
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    directory = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


__all__ = ["HOLDS_NAME", "Hold", "check_session_id", "holds_path", "load_holds", "place_hold", "release_hold"]
