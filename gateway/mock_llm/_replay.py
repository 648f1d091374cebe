"""Recorded captures for the mock's replay mode (tests/fixtures/openai-captures/ format).

Loads `<replay_dir>/<capture_id>.json` on first use and keeps it. Only the response half matters:
status, reason, headers minus the framing ones (the mock re-frames), and the exact body bytes.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Final, NamedTuple

import msgspec

_CAPTURE_ID: Final = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")
_FRAMING: Final = frozenset({b"content-length", b"transfer-encoding"})
_EVENT_END: Final = re.compile(rb"\r?\n\r?\n")


class CaptureError(Exception):
    """A capture is missing or unusable; `status` says which (404 or 500)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _CaptureResponse(msgspec.Struct):
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body_b64: str


class _Capture(msgspec.Struct):
    response: _CaptureResponse


class Recording(NamedTuple):
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    streamed: bool
    closes: bool


class CaptureLibrary:
    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._loaded: dict[bytes, Recording] = {}

    def get(self, capture_id: bytes) -> Recording:
        """Raises: CaptureError when the id is malformed, unknown or its file is unusable."""
        recording = self._loaded.get(capture_id)
        if recording is None:
            recording = self._loaded[capture_id] = self._load(capture_id)
        return recording

    def _load(self, capture_id: bytes) -> Recording:
        if not _CAPTURE_ID.fullmatch(capture_id):
            raise CaptureError(404, f"mock: malformed capture id {capture_id[:80]!r}")
        path = self._directory / f"{capture_id.decode()}.json"
        # Reading on the loop is acceptable here: captures are small local test files, read once.
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise CaptureError(404, f"mock: no capture {capture_id.decode()!r} in replay_dir") from None
        try:
            response = msgspec.json.decode(raw, type=_Capture).response
            body = base64.b64decode(response.body_b64, validate=True)
            headers = [(n.encode(), v.encode()) for n, v in response.headers]
            reason = response.reason.encode()
        except (msgspec.DecodeError, ValueError) as exc:
            raise CaptureError(500, f"mock: capture {path.name} is unusable: {exc}") from None
        if any(b"\r" in b or b"\n" in b for pair in headers for b in pair) or b"\r" in reason:
            raise CaptureError(500, f"mock: capture {path.name} has CR/LF inside a header")
        kept = [(n, v) for n, v in headers if n.lower() not in _FRAMING]
        content_types = [v.lower() for n, v in kept if n.lower() == b"content-type"]
        closes = any(n.lower() == b"connection" and v.lower() == b"close" for n, v in kept)
        streamed = any(ct.startswith(b"text/event-stream") for ct in content_types)
        return Recording(response.status, reason, kept, body, streamed, closes)


def sse_events(body: bytes) -> list[bytes]:
    """Cut a recorded SSE body after each blank line; the pieces concatenate back to `body`."""
    events, start = [], 0
    for match in _EVENT_END.finditer(body):
        events.append(body[start : match.end()])
        start = match.end()
    if start < len(body):
        events.append(body[start:])
    return events
