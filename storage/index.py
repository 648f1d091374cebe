"""The SQLite index over the log: exchanges, sessions and full text, for auditors' searches.

One long-lived aiosqlite connection (its one thread is the only thread storage runs), WAL mode so readers
never block the gateway's writer. Derived data: ``rebuild`` recreates it from the segments at any time.
Reading segment files during ``catch_up`` is synchronous but bounded (page-cache reads, in slices that
yield to the loop); every SQL statement takes bound parameters only.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Collection
from pathlib import Path
from types import TracebackType
from typing import Any

import aiosqlite

from parsers.events import ConsoleAccess
from storage import _schema
from storage._format import Position
from storage.assemble import ExchangeAssembler, ExchangeRecord
from storage.errors import LogShrank, StorageError
from storage.query import (
    AccessRow,
    ExchangeQuery,
    IdKind,
    SessionQuery,
    SessionRow,
    fts_phrases,
    glob_escape,
    is_glob,
)
from storage.reader import SegmentCursor, chain_before
from storage.series import list_series

logger = logging.getLogger("wardgate.index")

INDEX_NAME = "index.sqlite3"
_READ_SLICE = 2048  # frames read and assembled between two yields to the event loop
_REBUILD_FRAMES = 200_000
_UPDATE_STATE = (
    "INSERT INTO index_state (id, resume_segment, resume_offset, resume_chain, frames) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT(id) DO UPDATE SET resume_segment = excluded.resume_segment,"
    " resume_offset = excluded.resume_offset, resume_chain = excluded.resume_chain,"
    " frames = index_state.frames + excluded.frames"
)
_DELETE_EMPTY_SESSION = (
    "DELETE FROM sessions WHERE id = :id AND NOT EXISTS (SELECT 1 FROM exchanges WHERE session_id = :id)"
)
_SELECT_SESSION = (
    "SELECT s.id, s.subject, s.email, s.client_addr, s.first_ns, s.last_ns, s.exchanges, s.errors, s.models"
    " FROM sessions AS s"
)


def index_path(data_dir: Path) -> Path:
    """Where the index of a data directory lives."""
    return data_dir / INDEX_NAME


class SqliteIndex:
    """The SQLite implementation of ``storage.query.IndexBackend``."""

    def __init__(self, db: aiosqlite.Connection, path: Path, *, readonly: bool) -> None:
        self.path = path
        self.readonly = readonly
        self._db = db
        # Per series: where reading stopped and the exchanges still open there.
        self._followed: dict[int, tuple[SegmentCursor, ExchangeAssembler]] = {}
        self._data_dir: Path | None = None
        self._busy = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path, *, readonly: bool = False) -> SqliteIndex:
        """Open (or create, unless ``readonly``) the index at ``path``.

        A writable index with another schema version is dropped and recreated empty: the next
        ``catch_up`` rebuilds it from the log.

        Raises:
            StorageError: ``readonly`` and the index is missing or of another schema version.
        """
        database, uri = _database(path, readonly=readonly)
        db = await _connect(database, uri=uri)
        try:
            await db.execute("PRAGMA busy_timeout = 5000")
            version = await _scalar(db, "PRAGMA user_version")
            if readonly:
                if version != _schema.SCHEMA_VERSION:
                    raise StorageError(
                        f"index {path} has schema version {version}, expected {_schema.SCHEMA_VERSION}: "
                        "run `wardgate reindex`"
                    )
            else:
                await db.execute("PRAGMA journal_mode = WAL")
                await db.execute("PRAGMA synchronous = NORMAL")  # derived data: a lost commit is re-read
                if version != _schema.SCHEMA_VERSION:
                    await db.executescript(_schema.DROP)
                await db.executescript(_schema.CREATE)
                await db.execute(f"PRAGMA user_version = {_schema.SCHEMA_VERSION:d}")
        except BaseException:
            await db.close()
            raise
        return cls(db, path, readonly=readonly)

    async def __aenter__(self) -> SqliteIndex:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._db.close()

    # --- writing ---------------------------------------------------------------------------------

    async def catch_up(self, data_dir: Path, *, max_frames: int = 50_000, series: int = 0) -> int:
        """Index up to ``max_frames`` new frames of one segment series in one transaction; returns how
        many were read.

        Idempotent: after a crash it resumes from the stored position, and re-applied exchanges replace
        their rows. Call it again while it returns ``max_frames``. Several processes may each follow
        their own series into one index: SQLite (WAL, ``BEGIN IMMEDIATE``, a busy timeout) serializes
        the commits, and each series keeps its own resume position.

        Raises:
            CorruptLog: the log is bad before its tail (nothing is committed for this call).
            sqlite3.OperationalError: another writer held the index past the busy timeout (retry).
        """
        self._require_writable()
        async with self._busy:
            if self._data_dir != data_dir:
                self._followed = {}
                self._data_dir = data_dir
            if series not in self._followed:
                start = await self._resume_from(data_dir, series)
                # The index trusts the stored chain hashes (CRCs still find torn writes): ``verify`` is the
                # audit, and a resume position is only taken back if its stored chain still matches.
                cursor = SegmentCursor(data_dir, start, series=series, check_chain=False)
                self._followed[series] = (cursor, ExchangeAssembler())
            cursor, assembler = self._followed[series]
            try:
                frames = 0
                records: dict[str, ExchangeRecord] = {}
                accesses: list[tuple[Any, ...]] = []
                while frames < max_frames:
                    batch = cursor.read_new(min(_READ_SLICE, max_frames - frames))
                    if not batch:
                        break
                    for stored in batch:
                        if isinstance(event := stored.frame.event, ConsoleAccess):
                            accesses.append(_schema.access_row_of(stored, event))
                        for record in assembler.feed(stored):
                            records[record.exchange_id] = record
                    frames += len(batch)
                    await asyncio.sleep(0)
                if frames:
                    resume = min(p for p in (assembler.open_since(), cursor.position) if p is not None)
                    chain = chain_before(data_dir, resume, series=series)
                    await self._apply(list(records.values()), accesses, series, resume, chain, frames)
            except LogShrank as exc:
                # A failed write made the recorder cut records this reader had seen (they went again
                # into the next segment): resume from the last commit, which rebuilds if it must.
                logger.warning("index %s: %s; resuming from the last commit", self.path, exc)
                del self._followed[series]
                return 0
            except BaseException:
                del self._followed[series]  # start over from what was committed
                raise
            return frames

    async def rebuild(self, data_dir: Path) -> int:
        """Drop everything and index the whole log again; returns the frames read.

        The caller must hold the data directory lock (no gateway may be indexing meanwhile).
        """
        self._require_writable()
        async with self._busy:
            await self._db.executescript(_schema.DROP)
            await self._db.executescript(_schema.CREATE)
            self._followed = {}
        total = 0
        for series in list_series(data_dir):
            while frames := await self.catch_up(data_dir, max_frames=_REBUILD_FRAMES, series=series):
                total += frames
        return total

    async def _apply(
        self,
        records: list[ExchangeRecord],
        accesses: list[tuple[Any, ...]],
        series: int,
        resume: Position,
        chain: bytes | None,
        frames: int,
    ) -> None:
        db = self._db
        await db.execute("BEGIN IMMEDIATE")
        try:
            await db.executemany(_schema.UPSERT_EXCHANGE, [_schema.row_of(record) for record in records])
            await db.executemany(_schema.INSERT_ACCESS, accesses)
            sessions = sorted({record.session_id for record in records})
            await db.executemany(_schema.REFRESH_SESSION, [{"id": session} for session in sessions])
            await db.execute(_UPDATE_STATE, (series, resume.segment, resume.offset, chain, frames))
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise

    async def _resume_from(self, data_dir: Path, series: int) -> Position | None:
        """The stored resume position of ``series``, if the log still holds what was indexed up to it.

        A log can lose records the index already saw (written, not yet fsynced, then a power cut); then
        that series is indexed again from its first segment (its rows go first; re-applying is
        idempotent).
        """
        sql = "SELECT resume_segment, resume_offset, resume_chain FROM index_state WHERE id = ?"
        async with self._db.execute(sql, (series,)) as c:
            row = await c.fetchone()
        if row is None or row[0] is None:
            return None
        resume = Position(int(row[0]), int(row[1]))
        if row[2] is not None and chain_before(data_dir, resume, series=series) == bytes(row[2]):
            return resume
        logger.warning(
            "index %s: series %d of the log no longer matches it at segment %d offset %d; "
            "indexing that series again from the log",
            self.path,
            series,
            resume.segment,
            resume.offset,
        )
        await self._forget_series(series)
        return None

    async def _forget_series(self, series: int) -> None:
        db = self._db
        await db.execute("BEGIN IMMEDIATE")
        try:
            rows = await db.execute_fetchall(
                "SELECT DISTINCT session_id FROM exchanges WHERE series = ?", (series,)
            )
            sessions = [{"id": row[0]} for row in rows]
            await db.execute("DELETE FROM exchanges WHERE series = ?", (series,))
            await db.execute("DELETE FROM console_access WHERE series = ?", (series,))
            await db.executemany(_DELETE_EMPTY_SESSION, sessions)
            await db.executemany(_schema.REFRESH_SESSION, sessions)
            await db.execute("DELETE FROM index_state WHERE id = ?", (series,))
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise

    async def forget_segments(self, segments: Collection[int], *, series: int = 0) -> int:
        """Delete the exchanges that start in ``segments`` of ``series`` (removed by retention); returns
        how many.

        Sessions are recomputed from the exchanges left, and dropped when none is left.
        """
        self._require_writable()
        numbers = sorted(set(segments))
        if not numbers:
            return 0
        marks = ", ".join("?" for _ in numbers)
        db = self._db
        async with self._busy:
            await db.execute("BEGIN IMMEDIATE")
            try:
                where = f"WHERE series = ? AND start_segment IN ({marks})"
                rows = await db.execute_fetchall(
                    f"SELECT DISTINCT session_id FROM exchanges {where}", [series, *numbers]
                )
                sessions = [{"id": row[0]} for row in rows]
                cursor = await db.execute(f"DELETE FROM exchanges {where}", [series, *numbers])
                deleted = cursor.rowcount
                await db.execute(
                    f"DELETE FROM console_access WHERE series = ? AND segment IN ({marks})",
                    [series, *numbers],
                )
                await db.executemany(_DELETE_EMPTY_SESSION, sessions)
                await db.executemany(_schema.REFRESH_SESSION, sessions)
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise
        return deleted

    async def segments_of_sessions(
        self, sessions: Collection[str], *, series: int = 0
    ) -> dict[int, set[str]]:
        """Every segment of ``series`` holding frames of an indexed exchange of ``sessions``, with those
        sessions."""
        found: dict[int, set[str]] = {}
        ids = sorted(set(sessions))
        for start in range(0, len(ids), 500):  # SQLite's bound parameter limit
            chunk = ids[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            sql = (
                "SELECT session_id, start_segment, end_segment FROM exchanges"
                f" WHERE series = ? AND session_id IN ({marks})"
            )
            for session, first, last in await self._db.execute_fetchall(sql, [series, *chunk]):
                for number in range(int(first), int(last) + 1):
                    found.setdefault(number, set()).add(str(session))
        return found

    async def indexed_position(self, *, series: int = 0) -> Position | None:
        """Where indexing of ``series`` resumes: every exchange of it that starts before it is in the
        index (None: nothing)."""
        sql = "SELECT resume_segment, resume_offset FROM index_state WHERE id = ?"
        async with self._db.execute(sql, (series,)) as c:
            row = await c.fetchone()
        if row is None or row[0] is None:
            return None
        return Position(int(row[0]), int(row[1]))

    def _require_writable(self) -> None:
        if self.readonly:
            raise StorageError(f"index {self.path} was opened read-only")

    # --- reading ---------------------------------------------------------------------------------

    async def exchanges(self, q: ExchangeQuery) -> list[ExchangeRecord]:
        """Exchanges matching every given filter, newest first."""
        where: list[str] = []
        params: list[Any] = []
        if q.user:
            where.append("(x.subject = ? OR x.email = ?)")
            params += [q.user, q.user]
        if q.group:
            where.append("x.id IN (SELECT exchange_rowid FROM exchange_groups WHERE grp = ?)")
            params.append(q.group)
        if q.session:
            where.append("x.session_id = ?")
            params.append(q.session)
        if q.path:
            where.append("x.path GLOB ?")
            params.append(q.path if is_glob(q.path) else glob_escape(q.path) + "*")
        if q.status is not None:
            where.append("x.status = ?")
            params.append(q.status)
        if q.model:
            where.append("x.model GLOB ?" if is_glob(q.model) else "x.model = ?")
            params.append(q.model)
        if q.since_ns is not None:
            where.append("x.started_ns >= ?")
            params.append(q.since_ns)
        if q.until_ns is not None:
            where.append("x.started_ns < ?")
            params.append(q.until_ns)
        if q.text:
            match = fts_phrases(q.text)
            if not match:
                return []
            where.append("x.id IN (SELECT rowid FROM exchanges_fts WHERE exchanges_fts MATCH ?)")
            params.append(match)
        if q.before is not None:
            where.append("(x.started_ns < ? OR (x.started_ns = ? AND x.exchange_id < ?))")
            params += [q.before[0], q.before[0], q.before[1]]
        sql = _schema.SELECT_EXCHANGE
        if where:
            sql += " WHERE " + " AND ".join(where)
        # exchange_id breaks ties, so a keyset page (``before``) continues exactly where the last ended.
        sql += " ORDER BY x.started_ns DESC, x.exchange_id DESC LIMIT ?"
        params.append(q.limit)
        return [_schema.record_of(row) for row in await self._db.execute_fetchall(sql, params)]

    async def sessions(self, q: SessionQuery) -> list[SessionRow]:
        """Sessions matching every given filter, most recently active first."""
        where: list[str] = []
        params: list[Any] = []
        if q.user:
            where.append("(s.subject = ? OR s.email = ?)")
            params += [q.user, q.user]
        if q.group:
            where.append(
                "EXISTS (SELECT 1 FROM exchanges AS x JOIN exchange_groups AS g ON g.exchange_rowid = x.id"
                " WHERE x.session_id = s.id AND g.grp = ?)"
            )
            params.append(q.group)
        if q.since_ns is not None:
            where.append("s.last_ns >= ?")
            params.append(q.since_ns)
        if q.until_ns is not None:
            where.append("s.first_ns < ?")
            params.append(q.until_ns)
        if q.model:
            op = "GLOB" if is_glob(q.model) else "="
            where.append(
                f"EXISTS (SELECT 1 FROM exchanges AS x WHERE x.session_id = s.id AND x.model {op} ?)"
            )
            params.append(q.model)
        if q.status is not None:
            where.append("EXISTS (SELECT 1 FROM exchanges AS x WHERE x.session_id = s.id AND x.status = ?)")
            params.append(q.status)
        if q.text:
            match = fts_phrases(q.text)
            if not match:
                return []
            where.append(
                "s.id IN (SELECT x.session_id FROM exchanges AS x WHERE x.id IN"
                " (SELECT rowid FROM exchanges_fts WHERE exchanges_fts MATCH ?))"
            )
            params.append(match)
        if q.before is not None:
            where.append("(s.last_ns < ? OR (s.last_ns = ? AND s.id < ?))")
            params += [q.before[0], q.before[0], q.before[1]]
        sql = _SELECT_SESSION
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY s.last_ns DESC, s.id DESC LIMIT ?"
        params.append(q.limit)
        rows = await self._db.execute_fetchall(sql, params)
        return [
            SessionRow(
                id=row[0],
                subject=row[1],
                email=row[2],
                client_addr=row[3],
                first_ns=row[4],
                last_ns=row[5],
                exchanges=row[6],
                errors=row[7],
                models=row[8].split(",") if row[8] else [],
            )
            for row in rows
        ]

    async def exchange(self, exchange_id: str) -> ExchangeRecord | None:
        rows = await self._db.execute_fetchall(
            _schema.SELECT_EXCHANGE + " WHERE x.exchange_id = ?", (exchange_id,)
        )
        return _schema.record_of(next(iter(rows))) if rows else None

    async def session_exchanges(self, session_id: str) -> list[ExchangeRecord]:
        """All exchanges of a session, oldest first (conversation order)."""
        sql = _schema.SELECT_EXCHANGE + " WHERE x.session_id = ? ORDER BY x.started_ns, x.id"
        return [_schema.record_of(row) for row in await self._db.execute_fetchall(sql, (session_id,))]

    async def count_exchanges(self) -> int:
        return await _scalar(self._db, "SELECT count(*) FROM exchanges")

    async def console_accesses(self, *, limit: int, actor: str = "", target: str = "") -> list[AccessRow]:
        """The newest ``limit`` indexed uses of the admin API (by ``actor``: subject or e-mail; of
        ``target``), newest first."""
        where: list[str] = []
        params: list[Any] = []
        if actor:
            where.append("(subject = ? OR email = ?)")
            params += [actor, actor]
        if target:
            where.append("target = ?")
            params.append(target)
        sql = _schema.SELECT_ACCESS + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY ts_ns DESC, series, segment DESC, frame_offset DESC LIMIT ?"
        rows = await self._db.execute_fetchall(sql, [*params, limit])
        return [_schema.access_of(row) for row in rows]

    async def match_ids(self, fragment: str, *, limit: int = 5) -> list[tuple[IdKind, str]]:
        """Exchange and session ids that start or end with ``fragment`` (for short ids typed by people)."""
        if not fragment:
            return []
        literal = glob_escape(fragment)
        patterns = (literal + "*", "*" + literal)
        found: list[tuple[IdKind, str]] = []
        sql = "SELECT exchange_id FROM exchanges WHERE exchange_id GLOB ? OR exchange_id GLOB ? LIMIT ?"
        for row in await self._db.execute_fetchall(sql, (*patterns, limit)):
            found.append(("exchange", row[0]))
        sql = "SELECT id FROM sessions WHERE id GLOB ? OR id GLOB ? LIMIT ?"
        for row in await self._db.execute_fetchall(sql, (*patterns, limit)):
            found.append(("session", row[0]))
        return found


def _database(path: Path, *, readonly: bool) -> tuple[str, bool]:
    """The name to connect to: a ``mode=ro`` URI for readers (a few stat calls, not worth a thread)."""
    if readonly:
        if not path.exists():
            raise StorageError(f"no index at {path}: start the gateway or run `wardgate reindex`")
        return f"{path.resolve().as_uri()}?mode=ro", True
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path), False


async def _connect(database: str, *, uri: bool = False) -> aiosqlite.Connection:
    try:
        return await aiosqlite.connect(database, uri=uri, isolation_level=None)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open index {database}: {exc}") from exc


async def _scalar(db: aiosqlite.Connection, sql: str) -> int:
    async with db.execute(sql) as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row is not None else 0


__all__ = ["INDEX_NAME", "SqliteIndex", "index_path"]
