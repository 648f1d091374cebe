"""The console's read side: the SQLite index (its own read-only connection) and the segment files.

Index reads go through aiosqlite's one thread. Segment reads (an exchange's frames, the live tail, a full
verification) are plain file reads of unbounded size, so they run in a worker thread: the gateway's event
loop also carries the data plane and must never wait on a console read. They cover every segment series
(each worker's, and the supervisor's own audit series), read as one log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

from gateway.console._models import AuditEntry
from gateway.inspect import exchange_frames
from gateway.render import ReplayedExchange, replayed
from parsers.events import ConsoleAccess
from storage.assemble import ExchangeAssembler, ExchangeRecord
from storage.codec import Frame
from storage.index import SqliteIndex, index_path
from storage.query import AccessRow, ExchangeQuery, SessionQuery, SessionRow
from storage.reader import LogCursor, StoredFrame, recent_start
from storage.segments import Position
from storage.series import list_series
from storage.signing import read_public_key
from storage.verify import VerifyReport, verify_all

TAIL_POLL_S = 0.25
_TAIL_BATCH = 4096


class LogReader:
    """Reads what the gateway recorded; owns one read-only index connection."""

    def __init__(self, data_dir: Path, index: SqliteIndex) -> None:
        self.data_dir = data_dir
        self._index = index

    @classmethod
    async def open(cls, data_dir: Path) -> LogReader:
        """Raises:
        StorageError: no index (the gateway creates it before the admin listener starts).
        """
        return cls(data_dir, await SqliteIndex.open(index_path(data_dir), readonly=True))

    async def close(self) -> None:
        await self._index.close()

    async def sessions(self, query: SessionQuery) -> list[SessionRow]:
        return await self._index.sessions(query)

    async def session(self, session_id: str) -> tuple[SessionRow, list[ExchangeRecord]] | None:
        records = await self._index.session_exchanges(session_id)
        if not records:
            return None
        first = records[0]
        row = SessionRow(
            id=session_id,
            subject=first.subject,
            email=first.identity.email,
            client_addr=first.client_addr,
            first_ns=first.started_ns,
            last_ns=max(r.started_ns + r.duration_ns for r in records),
            exchanges=len(records),
            errors=sum(r.outcome != "complete" or r.status >= 400 or bool(r.error) for r in records),
            models=sorted({r.model for r in records if r.model}),
        )
        return row, records

    async def exchanges(self, query: ExchangeQuery) -> list[ExchangeRecord]:
        return await self._index.exchanges(query)

    async def exchange(self, exchange_id: str) -> ExchangeRecord | None:
        return await self._index.exchange(exchange_id)

    async def frames(self, record: ExchangeRecord) -> list[Frame]:
        """The exchange's frames, read in a worker thread (see the module docstring)."""
        return await asyncio.to_thread(exchange_frames, self.data_dir, record)

    async def conversation(self, records: list[ExchangeRecord]) -> list[ReplayedExchange]:
        """Each record with its prompt messages re-read from the log (one worker thread call)."""

        def read() -> list[ReplayedExchange]:
            return [replayed(record, exchange_frames(self.data_dir, record)) for record in records]

        return await asyncio.to_thread(read)

    async def audit_trail(
        self, *, limit: int, actor: str = "", target: str = ""
    ) -> tuple[list[AuditEntry], bool]:
        """The newest ``limit`` console accesses (by ``actor``, of ``target``), newest first.

        The index holds them up to where each series was indexed; what was recorded since (the index
        follower polls) is read from the segments past that point, in a worker thread. Returns the
        entries and whether the whole log was covered (always, now that the index holds them).
        """
        series = await asyncio.to_thread(list_series, self.data_dir)
        starts = {n: await self._index.indexed_position(series=n) for n in series}
        indexed = await self._index.console_accesses(limit=limit, actor=actor, target=target)
        recent = await asyncio.to_thread(_accesses_since, self.data_dir, starts, actor, target)
        merged = {(row.series, row.position): row for row in [*indexed, *recent]}  # a frame may be in both
        newest = sorted(merged.values(), key=lambda row: (row.ts_ns, row.series, row.position), reverse=True)
        return [_entry(row) for row in newest[:limit]], True

    async def verify(self) -> tuple[int, list[VerifyReport]]:
        """A full ``verify`` of every series with the data dir's own key, in a worker thread; with when
        it started."""
        started = time.time_ns()
        key = await asyncio.to_thread(read_public_key, self.data_dir)
        return started, await asyncio.to_thread(verify_all, self.data_dir, public_key=key)

    async def tail(self) -> LogTail:
        """A tail positioned at the log's current end: it yields what ends from now on.

        Reading starts at the last segment's beginning so that exchanges already running are assembled
        whole; what ended before now is read and skipped here, before the caller answers.
        """
        tail = LogTail(LogCursor(self.data_dir, await asyncio.to_thread(_recent_starts, self.data_dir, 1)))
        for stored in await asyncio.to_thread(_drain, tail.cursor):
            tail.assembler.feed(stored)
        return tail


class LogTail:
    """A cursor and an assembler that follow the log."""

    def __init__(self, cursor: LogCursor) -> None:
        self.cursor = cursor
        self.assembler = ExchangeAssembler()

    async def follow(self, stop: asyncio.Event) -> AsyncIterator[ExchangeRecord]:
        """Each exchange as it ends, until ``stop`` is set (polled every ``TAIL_POLL_S``)."""
        while not stop.is_set():
            batch = await asyncio.to_thread(self.cursor.read_new, _TAIL_BATCH)
            for stored in batch:
                for record in self.assembler.feed(stored):
                    yield record
            if len(batch) < _TAIL_BATCH:
                try:
                    async with asyncio.timeout(TAIL_POLL_S):
                        await stop.wait()
                except TimeoutError:
                    pass


def _accesses_since(
    data_dir: Path, starts: dict[int, Position | None], actor: str, target: str
) -> list[AccessRow]:
    return [
        AccessRow(series=stored.series, position=stored.position, ts_ns=stored.frame.ts_ns, event=event)
        for stored in _drain(LogCursor(data_dir, starts))
        if isinstance(event := stored.frame.event, ConsoleAccess)
        and (not actor or actor in (event.identity.subject, event.identity.email))
        and (not target or event.target == target)
    ]


def _entry(row: AccessRow) -> AuditEntry:
    event = row.event
    return AuditEntry(
        ts_ns=row.ts_ns,
        action=event.action,
        identity=event.identity,
        target=event.target,
        query=event.query,
        client_addr=event.client_addr,
    )


def _recent_starts(data_dir: Path, segments: int) -> dict[int, Position | None]:
    """Where each series' ``segments`` newest segments begin."""
    return {n: recent_start(data_dir, segments=segments, series=n) for n in list_series(data_dir)}


def _drain(cursor: LogCursor) -> list[StoredFrame]:
    frames: list[StoredFrame] = []
    while batch := cursor.read_new(_TAIL_BATCH):
        frames += batch
    return frames


__all__ = ["TAIL_POLL_S", "LogReader", "LogTail"]
