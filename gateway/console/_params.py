"""Query parameters of the console API, checked before anything reaches SQL.

Every value is bounded (length, range) and only ever bound as an SQL parameter by ``storage.index``;
anything out of bounds is a 400 naming the parameter. Cursors are opaque to clients: base64url JSON of
the last row's ordering key.
"""

from __future__ import annotations

import argparse
import base64
import binascii

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request

from gateway.inspect import parse_time
from storage.query import ExchangeQuery, SessionQuery

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
MAX_TEXT_CHARS = 1000
MAX_VALUE_CHARS = 256
_INT64 = 2**63 - 1
_cursor_decoder = msgspec.json.Decoder(tuple[int, str])

SESSION_FILTERS = ("user", "group", "model", "status", "since", "until", "text", "limit", "cursor")
EXCHANGE_FILTERS = (*SESSION_FILTERS, "session", "path")
AUDIT_FILTERS = ("actor", "target", "limit")


class BadParameter(HTTPException):
    def __init__(self, name: str, problem: str) -> None:
        super().__init__(400, f"{name}: {problem}")


def _string(request: Request, name: str, *, max_chars: int = MAX_VALUE_CHARS) -> str:
    value = request.query_params.get(name, "")
    if len(value) > max_chars:
        raise BadParameter(name, f"at most {max_chars} characters, got {len(value)}")
    if "\x00" in value:
        raise BadParameter(name, "must not contain NUL")
    return value


def _int(request: Request, name: str, *, low: int, high: int) -> int | None:
    raw = _string(request, name, max_chars=24)
    if not raw:
        return None
    if not raw.isascii() or not raw.lstrip("-").isdigit():
        raise BadParameter(name, f"expected an integer, got {raw!r}")
    value = int(raw)
    if not low <= value <= high:
        raise BadParameter(name, f"expected {low}..{high}, got {value}")
    return value


def _time(request: Request, name: str) -> int | None:
    raw = _string(request, name, max_chars=64)
    if not raw:
        return None
    try:
        value = parse_time(raw)
    except (argparse.ArgumentTypeError, OverflowError, ValueError) as exc:
        raise BadParameter(name, str(exc)) from None
    if not 0 <= value <= _INT64:
        raise BadParameter(name, "out of range")
    return value


def encode_cursor(key: tuple[int, str]) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(key)).decode().rstrip("=")


def _cursor(request: Request) -> tuple[int, str] | None:
    raw = _string(request, "cursor", max_chars=512)
    if not raw:
        return None
    try:
        key = _cursor_decoder.decode(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise BadParameter("cursor", "not a cursor this API gave out") from None
    if not 0 <= key[0] <= _INT64:
        raise BadParameter("cursor", "not a cursor this API gave out")
    return key


def session_query(request: Request) -> SessionQuery:
    """Raises:
    BadParameter: a value out of bounds (400).
    """
    return SessionQuery(
        user=_string(request, "user"),
        group=_string(request, "group"),
        model=_string(request, "model"),
        status=_int(request, "status", low=100, high=999),
        since_ns=_time(request, "since"),
        until_ns=_time(request, "until"),
        text=_string(request, "text", max_chars=MAX_TEXT_CHARS),
        limit=_int(request, "limit", low=1, high=MAX_LIMIT) or DEFAULT_LIMIT,
        before=_cursor(request),
    )


def exchange_query(request: Request) -> ExchangeQuery:
    """The same filters as ``session_query``, plus session and path.

    Raises:
        BadParameter: a value out of bounds (400).
    """
    q = session_query(request)
    return ExchangeQuery(
        user=q.user,
        group=q.group,
        model=q.model,
        status=q.status,
        since_ns=q.since_ns,
        until_ns=q.until_ns,
        text=q.text,
        limit=q.limit,
        before=q.before,
        session=_string(request, "session"),
        path=_string(request, "path"),
    )


def bounded(request: Request, name: str) -> str:
    """A plain string parameter ("" when absent).

    Raises:
        BadParameter: too long, or holding NUL (400).
    """
    return _string(request, name)


def audit_limit(request: Request) -> int:
    """Raises:
    BadParameter: not 1..MAX_LIMIT (400).
    """
    return _int(request, "limit", low=1, high=MAX_LIMIT) or DEFAULT_LIMIT


def given(request: Request, names: tuple[str, ...]) -> dict[str, str]:
    """The filters the caller gave, as given (what the audit record keeps)."""
    return {name: request.query_params[name] for name in names if request.query_params.get(name)}


__all__ = [
    "AUDIT_FILTERS",
    "EXCHANGE_FILTERS",
    "MAX_LIMIT",
    "SESSION_FILTERS",
    "BadParameter",
    "audit_limit",
    "bounded",
    "encode_cursor",
    "exchange_query",
    "given",
    "session_query",
]
