"""What the read side asks the index, and the interface any index backend (SQLite now) implements.

Plain data and a Protocol: no SQL and no I/O here, so a PostgreSQL backend could implement the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

import msgspec

from parsers.events import ConsoleAccess
from storage._format import Position
from storage.assemble import ExchangeRecord

DEFAULT_LIMIT = 50


class ExchangeQuery(msgspec.Struct, frozen=True, kw_only=True):
    """Filters combine with AND; results come newest first."""

    user: str = ""  # identity subject or email, exact
    group: str = ""  # one of the caller's groups, exact
    session: str = ""
    path: str = ""  # a glob (``*``, ``?``, ``[``) or else a prefix
    status: int | None = None
    model: str = ""  # a glob, or else exact
    since_ns: int | None = None  # started at or after
    until_ns: int | None = None  # started before
    text: str = ""  # full text over prompt and response: every word must occur (no query syntax)
    limit: int = DEFAULT_LIMIT
    before: tuple[int, str] | None = None  # keyset page: only rows after (started_ns, exchange_id)


class SessionQuery(msgspec.Struct, frozen=True, kw_only=True):
    """Sessions with activity in the window; model/status match any exchange of the session."""

    user: str = ""
    since_ns: int | None = None
    until_ns: int | None = None
    model: str = ""
    status: int | None = None
    limit: int = DEFAULT_LIMIT
    group: str = ""  # any exchange's caller was in this group
    text: str = ""  # any exchange matches the full text (as ``ExchangeQuery.text``)
    before: tuple[int, str] | None = None  # keyset page: only rows after (last_ns, id)


class SessionRow(msgspec.Struct, kw_only=True):
    id: str
    subject: str = ""
    email: str = ""
    client_addr: str = ""
    first_ns: int = 0
    last_ns: int = 0
    exchanges: int = 0
    errors: int = 0
    models: list[str] = []


class AccessRow(msgspec.Struct, frozen=True, kw_only=True):
    """One recorded use of the admin API (a ``ConsoleAccess`` frame) and where it is in the log."""

    series: int
    position: Position
    ts_ns: int
    event: ConsoleAccess


IdKind = Literal["exchange", "session"]


class IndexBackend(Protocol):
    """The searchable index over the log. Derived data: ``rebuild`` recreates it from the segments."""

    async def catch_up(self, data_dir: Path, *, max_frames: int = 50_000) -> int: ...

    async def rebuild(self, data_dir: Path) -> int: ...

    async def exchanges(self, q: ExchangeQuery) -> list[ExchangeRecord]: ...

    async def sessions(self, q: SessionQuery) -> list[SessionRow]: ...

    async def exchange(self, exchange_id: str) -> ExchangeRecord | None: ...

    async def session_exchanges(self, session_id: str) -> list[ExchangeRecord]: ...

    async def count_exchanges(self) -> int: ...

    async def match_ids(self, fragment: str, *, limit: int = 5) -> list[tuple[IdKind, str]]: ...

    async def console_accesses(self, *, limit: int, actor: str = "", target: str = "") -> list[AccessRow]: ...

    async def close(self) -> None: ...


def fts_phrases(text: str) -> str:
    """User text as an FTS5 query: each whitespace-separated word becomes a quoted phrase (implicit AND).

    Inside a word every character that is not a letter or digit becomes a space, which is what the
    tokenizer does anyway, so no operator, column filter, prefix star, quote or NUL reaches FTS5.
    Returns "" when no word remains.
    """
    phrases = []
    for word in text.split():
        cleaned = " ".join("".join(ch if ch.isalnum() else " " for ch in word).split())
        if cleaned:
            phrases.append('"' + cleaned.replace('"', '""') + '"')
    return " ".join(phrases)


def is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def glob_escape(literal: str) -> str:
    """A GLOB pattern matching ``literal`` exactly (each metacharacter in its own bracket class)."""
    return "".join(f"[{ch}]" if ch in "*?[" else ch for ch in literal)


__all__ = [
    "DEFAULT_LIMIT",
    "AccessRow",
    "ExchangeQuery",
    "IdKind",
    "IndexBackend",
    "SessionQuery",
    "SessionRow",
    "fts_phrases",
    "glob_escape",
    "is_glob",
]
