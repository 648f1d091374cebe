"""The index's audit of the auditors: ``ConsoleAccess`` frames indexed with where they are in the log."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from parsers.events import ConsoleAccess, Direction, Identity
from storage.index import SqliteIndex, index_path
from storage.query import AccessRow
from tests.storage.logbook import ALICE, BOB, Logbook

AUDITOR = Identity(subject="carol", method="oidc", email="carol@example.com", groups=("auditors",))
APPROVER = Identity(subject="erin", method="api-key", groups=("approvers",))


def look(book: Logbook, who: Identity, action: str, target: str = "") -> None:
    book.emit("gateway", Direction.FROM_CLIENT, ConsoleAccess(action=action, identity=who, target=target), "")


def write_log(data_dir: Path) -> Logbook:
    """Exchanges and console accesses interleaved, over several segments."""
    book = Logbook(data_dir, max_segment_bytes=8_000)
    look(book, AUDITOR, "list_sessions")
    book.capture_exchange(
        "chat-nonstream-text-openai-crewai", "c_1", "x_1", "s_alice", identity=ALICE, new_session=True
    )
    look(book, AUDITOR, "view_session", "s_alice")
    book.capture_exchange(
        "chat-stream-text-usage-openai-crewai-long",
        "c_2",
        "x_2",
        "s_bob",
        identity=BOB,
        new_session=True,
        chunk_gap_ms=1,
    )
    look(book, APPROVER, "approve", "h_1")
    look(book, AUDITOR, "replay", "x_2")
    book.close()
    return book


def actions(rows: list[AccessRow]) -> list[tuple[str, str, str]]:
    return [(r.event.identity.subject, r.event.action, r.event.target) for r in rows]


async def test_accesses_are_indexed_filtered_and_never_doubled(tmp_path: Path) -> None:
    book = write_log(tmp_path)
    assert len({p.segment for p in book.positions}) >= 3
    path = index_path(tmp_path)
    async with await SqliteIndex.open(path) as index:
        while await index.catch_up(tmp_path, max_frames=5):
            pass
        every = await index.console_accesses(limit=50)
        assert actions(every) == [
            ("carol", "replay", "x_2"),
            ("erin", "approve", "h_1"),
            ("carol", "view_session", "s_alice"),
            ("carol", "list_sessions", ""),
        ]
        # Each row says where its frame is: the frame read there is the one indexed.
        by_position = dict(zip(book.positions, book.frames, strict=True))
        for row in every:
            frame = by_position[row.position]
            assert (frame.event, frame.ts_ns) == (row.event, row.ts_ns)
        assert every[-1].event.identity == AUDITOR
        assert actions(await index.console_accesses(limit=1)) == [("carol", "replay", "x_2")]
        assert actions(
            await index.console_accesses(limit=50, actor="carol@example.com", target="s_alice")
        ) == [("carol", "view_session", "s_alice")]
        assert actions(await index.console_accesses(limit=50, actor="erin")) == [("erin", "approve", "h_1")]
        assert await index.console_accesses(limit=50, actor="' OR 1=1 --") == []
    with sqlite3.connect(path) as db:  # as if the resume position had never been committed
        db.execute("UPDATE index_state SET resume_segment = NULL, resume_offset = NULL")
    async with await SqliteIndex.open(path) as index:
        await index.catch_up(tmp_path)
        assert await index.console_accesses(limit=50) == every
        # Retention removed the first segment: its accesses go with it.
        first = book.positions[0].segment
        await index.forget_segments([first])
        left = await index.console_accesses(limit=50)
        assert [r for r in every if r.position.segment != first] == left
        assert len(left) < len(every)
        assert await index.rebuild(tmp_path) == len(book.frames)
        assert await index.console_accesses(limit=50) == every
