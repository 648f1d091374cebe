"""The SQLite index with a real aiosqlite database over real segment files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers.events import (
    BodyChunk,
    Direction,
    ExchangeEnded,
    ExchangeStarted,
    RecordedEvent,
    RequestHead,
    ResponseHead,
)
from storage.assemble import ExchangeRecord
from storage.codec import Frame, encode_frame
from storage.errors import LogWriteFailed, StorageError
from storage.index import SqliteIndex, index_path
from storage.query import ExchangeQuery, IndexBackend, SessionQuery, fts_phrases
from storage.segments import SegmentLog
from tests.storage.flaky_disk import FlakyDisk
from tests.storage.logbook import ALICE, BOB, MS, T0, Logbook

STREAM = "chat-stream-toolcall-usage-openai-crewai"
PLAIN = "chat-nonstream-text-openai-crewai"
LONG = "chat-stream-text-usage-openai-crewai-long"


def write_log(data_dir: Path) -> Logbook:
    book = Logbook(data_dir, max_segment_bytes=16_000)
    book.capture_exchange(STREAM, "c_1", "x_1", "s_alice", identity=ALICE, new_session=True)
    book.capture_exchange(PLAIN, "c_1", "x_2", "s_alice", identity=ALICE)
    book.capture_exchange(LONG, "c_2", "x_3", "s_bob", identity=BOB, new_session=True, chunk_gap_ms=1)
    book.gateway_error("c_3", "x_4", "s_bob", identity=BOB)
    book.close()
    return book


def rows(records: list[ExchangeRecord]) -> list[str]:
    return [r.exchange_id for r in records]


async def test_catch_up_indexes_exchanges_and_sessions(tmp_path: Path) -> None:
    book = write_log(tmp_path)
    async with await SqliteIndex.open(index_path(tmp_path)) as index:
        backend: IndexBackend = index  # the SQLite index implements the backend interface
        assert await backend.catch_up(tmp_path) == len(book.frames)
        assert await index.catch_up(tmp_path) == 0
        assert rows(await index.exchanges(ExchangeQuery())) == ["x_4", "x_3", "x_2", "x_1"]
        stream = await index.exchange("x_1")
        assert stream is not None
        assert stream.identity == ALICE
        assert stream.tool_calls[0].name == "get_current_temperature"
        assert stream.stream
        alice, bob = sorted(await index.sessions(SessionQuery()), key=lambda s: s.id)
        assert (alice.id, alice.subject, alice.email, alice.exchanges, alice.errors) == (
            "s_alice",
            "alice",
            "alice@example.com",
            2,
            0,
        )
        assert alice.models == ["gpt-4o-mini-2024-07-18", "o1-mini-2024-09-12"]
        assert (bob.exchanges, bob.errors) == (2, 1)
        assert rows(await index.session_exchanges("s_alice")) == ["x_1", "x_2"]
        assert await index.exchange("nope") is None


async def test_filters(tmp_path: Path) -> None:
    write_log(tmp_path)
    async with await SqliteIndex.open(index_path(tmp_path)) as index:
        await index.catch_up(tmp_path)
        x1 = await index.exchange("x_1")
        assert x1 is not None

        async def ids(**filters: object) -> list[str]:
            return rows(await index.exchanges(msgspec.convert(filters, ExchangeQuery)))

        assert await ids(user="alice") == ["x_2", "x_1"]
        assert await ids(user="bob@example.com") == ["x_4", "x_3"]
        assert await ids(session="s_bob", status=502) == ["x_4"]
        assert await ids(path="/v1/chat") == ["x_4", "x_3", "x_2", "x_1"]
        assert await ids(path="/v1/embed") == []
        assert await ids(path="*/completions") == ["x_4", "x_3", "x_2", "x_1"]
        assert await ids(model="gpt-4o-mini-2024-07-18") == ["x_3", "x_1"]
        assert await ids(model="o1-*") == ["x_2"]
        assert await ids(since_ns=x1.started_ns + 1) == ["x_4", "x_3", "x_2"]
        assert await ids(until_ns=x1.started_ns + 1) == ["x_1"]
        assert await ids(limit=1) == ["x_4"]
        assert await ids(text="temperature") == ["x_1"]
        assert await ids(text="capital France", user="alice") == ["x_2"]
        assert await ids(text="Paris", user="alice") == ["x_2"]  # response text is searched too
        assert [s.id for s in await index.sessions(SessionQuery(status=502))] == ["s_bob"]
        assert [s.id for s in await index.sessions(SessionQuery(model="o1*"))] == ["s_alice"]
        assert [s.id for s in await index.sessions(SessionQuery(user="alice@example.com"))] == ["s_alice"]
        assert await index.sessions(SessionQuery(since_ns=T0 + 3600 * 1000 * MS)) == []
        assert await index.match_ids("x_") != []
        assert await index.match_ids("alice") == [("session", "s_alice")]
        assert await index.match_ids("*") == []


HOSTILE = [
    '"',
    "'",
    "*",
    "NEAR",
    "NEAR(a b)",
    '"; DROP TABLE exchanges; --',
    "'; DROP TABLE exchanges; --",
    "prompt_text:temperature",
    "temperature*",
    "(temperature",
    "AND OR NOT",
    "^temperature",
    "{prompt_text}: x",
    "a\x00b",
    "",
    "   ",
]


@pytest.mark.parametrize("text", HOSTILE)
async def test_hostile_search_text_is_only_words(tmp_path: Path, text: str) -> None:
    write_log(tmp_path)
    async with await SqliteIndex.open(index_path(tmp_path)) as index:
        await index.catch_up(tmp_path)
        found = await index.exchanges(ExchangeQuery(text=text))
        assert all(isinstance(r, ExchangeRecord) for r in found)
        assert len(await index.exchanges(ExchangeQuery())) == 4  # nothing dropped


async def test_operators_are_searched_as_words(tmp_path: Path) -> None:
    write_log(tmp_path)
    async with await SqliteIndex.open(index_path(tmp_path)) as index:
        await index.catch_up(tmp_path)
        assert rows(await index.exchanges(ExchangeQuery(text='"temperature" OR *'))) == []  # "or" is absent
        assert rows(await index.exchanges(ExchangeQuery(text='temperature" "San'))) == ["x_1"]
        assert rows(await index.exchanges(ExchangeQuery(text="prompt_text:temperature"))) == []


def test_fts_phrases_quotes_every_word() -> None:
    assert fts_phrases('a "b" NEAR * c* don\'t x\x00y') == '"a" "b" "NEAR" "c" "don t" "x y"'
    assert fts_phrases("* ' \" ;--") == ""


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=40))
async def test_any_text_never_breaks_the_query(tmp_path: Path, text: str) -> None:
    data_dir = tmp_path / "any"
    if not data_dir.exists():
        write_log(data_dir)
    async with await SqliteIndex.open(index_path(data_dir)) as index:
        await index.catch_up(data_dir)
        await index.exchanges(ExchangeQuery(text=text))


async def test_catch_up_in_small_steps_equals_rebuild(tmp_path: Path) -> None:
    book = write_log(tmp_path)
    async with await SqliteIndex.open(tmp_path / "steps.sqlite") as steps:
        total = 0
        while frames := await steps.catch_up(tmp_path, max_frames=7):
            assert frames <= 7
            total += frames
        assert total == len(book.frames)
        stepped = await steps.exchanges(ExchangeQuery())
        stepped_sessions = await steps.sessions(SessionQuery())
    async with await SqliteIndex.open(tmp_path / "whole.sqlite") as whole:
        assert await whole.rebuild(tmp_path) == len(book.frames)
        assert await whole.rebuild(tmp_path) == len(book.frames)
        assert await whole.exchanges(ExchangeQuery()) == stepped
        assert await whole.sessions(SessionQuery()) == stepped_sessions


async def test_reapplying_frames_after_a_crash_does_not_duplicate(tmp_path: Path) -> None:
    write_log(tmp_path)
    path = index_path(tmp_path)
    async with await SqliteIndex.open(path) as index:
        await index.catch_up(tmp_path)
        before = await index.exchanges(ExchangeQuery())
        sessions_before = await index.sessions(SessionQuery())
    with sqlite3.connect(path) as db:  # as if the resume position had never been committed
        db.execute("UPDATE index_state SET resume_segment = NULL, resume_offset = NULL")
    async with await SqliteIndex.open(path) as index:
        await index.catch_up(tmp_path)
        assert await index.exchanges(ExchangeQuery()) == before
        assert await index.sessions(SessionQuery()) == sessions_before
        assert rows(await index.exchanges(ExchangeQuery(text="temperature"))) == ["x_1"]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM exchanges_fts").fetchone() == (4,)
        assert db.execute("INSERT INTO exchanges_fts(exchanges_fts) VALUES ('integrity-check')")


async def test_restart_in_the_middle_of_an_exchange_resumes_at_its_start(tmp_path: Path) -> None:
    book = Logbook(tmp_path)
    book.capture_exchange(PLAIN, "c_1", "x_1", "s_1", new_session=True)
    book.capture_exchange(STREAM, "c_2", "x_2", "s_1", end=False)
    book.log.flush()
    path = index_path(tmp_path)
    async with await SqliteIndex.open(path) as index:
        await index.catch_up(tmp_path)
        assert rows(await index.exchanges(ExchangeQuery())) == ["x_1"]
    book.capture_exchange(PLAIN, "c_1", "x_3", "s_1")
    book.emit("c_2", book.frames[-1].direction, book.frames[-1].event, "x_2")  # x_2's ExchangeEnded
    book.close()
    async with await SqliteIndex.open(path) as index:
        await index.catch_up(tmp_path)
        found = await index.exchanges(ExchangeQuery())
        assert sorted(rows(found)) == ["x_1", "x_2", "x_3"]
        x2 = await index.exchange("x_2")
        assert x2 is not None
        assert x2.tool_calls
        assert x2.outcome == "complete"


async def test_readonly_reader_beside_the_writer(tmp_path: Path) -> None:
    write_log(tmp_path)
    path = index_path(tmp_path)
    with pytest.raises(StorageError, match="no index"):
        await SqliteIndex.open(path, readonly=True)
    async with await SqliteIndex.open(path) as writer:
        await writer.catch_up(tmp_path, max_frames=10)
        async with await SqliteIndex.open(path, readonly=True) as reader:
            await writer.catch_up(tmp_path)
            assert len(await reader.exchanges(ExchangeQuery())) == 4
            with pytest.raises(StorageError, match="read-only"):
                await reader.catch_up(tmp_path)
    async with await SqliteIndex.open(path, readonly=True) as reader:
        assert len(await reader.exchanges(ExchangeQuery())) == 4


async def test_other_schema_version_is_rebuilt_from_the_log(tmp_path: Path) -> None:
    write_log(tmp_path)
    path = index_path(tmp_path)
    async with await SqliteIndex.open(path) as index:
        await index.catch_up(tmp_path)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 999")
    with pytest.raises(StorageError, match="schema version 999"):
        await SqliteIndex.open(path, readonly=True)
    async with await SqliteIndex.open(path) as index:
        assert await index.exchanges(ExchangeQuery()) == []
        await index.catch_up(tmp_path)
        assert len(await index.exchanges(ExchangeQuery())) == 4


async def test_session_without_any_model(tmp_path: Path) -> None:
    book = Logbook(tmp_path)
    book.gateway_error("c_1", "x_1", "s_down", identity=ALICE)
    book.close()
    async with await SqliteIndex.open(index_path(tmp_path)) as index:
        await index.catch_up(tmp_path)
        [session] = await index.sessions(SessionQuery())
        assert (session.id, session.models, session.errors) == ("s_down", [], 1)


async def test_log_that_lost_indexed_records_is_reindexed(tmp_path: Path) -> None:
    book = Logbook(tmp_path)
    book.capture_exchange(PLAIN, "c_1", "x_1", "s_1", new_session=True)
    cut = book.log.position
    book.capture_exchange(STREAM, "c_1", "x_2", "s_1")
    book.close()
    path = index_path(tmp_path)
    async with await SqliteIndex.open(path) as index:
        await index.catch_up(tmp_path)
        assert rows(await index.exchanges(ExchangeQuery())) == ["x_2", "x_1"]
    # Power cut: x_2 was written and indexed but never reached the disk; the gateway then goes on.
    segment = tmp_path / "segments" / f"{cut.segment:012d}.wgseg"
    segment.write_bytes(segment.read_bytes()[: cut.offset])
    book = Logbook(tmp_path)
    book.capture_exchange(LONG, "c_2", "x_3", "s_1")
    book.close()
    async with await SqliteIndex.open(path) as index:
        await index.catch_up(tmp_path)
        assert rows(await index.exchanges(ExchangeQuery())) == ["x_3", "x_1"]
        [session] = await index.sessions(SessionQuery())
        assert session.exchanges == 2


async def test_the_index_follows_a_log_cut_back_after_a_failed_fsync(tmp_path: Path) -> None:
    # The index reads what was written, fsync'd or not; a failed fsync makes the writer cut those records
    # and write them again into the next segment. The follower must neither stop nor count them twice.
    disk = FlakyDisk()
    log = SegmentLog.open(tmp_path, ops=disk)
    frames = exchange_frames("x_1", "s_1")
    for frame in frames[:2]:
        log.append(encode_frame(frame))
    log.flush()
    log.sync()
    for frame in frames[2:4]:
        log.append(encode_frame(frame))
    log.flush()
    async with await SqliteIndex.open(index_path(tmp_path)) as index:
        assert await index.catch_up(tmp_path) == 4
        disk.fsync_fails = True
        with pytest.raises(LogWriteFailed):
            log.sync()
        disk.fsync_fails = False
        log.seal_tail()
        log.restart([])
        for frame in frames[4:]:
            log.append(encode_frame(frame))
        log.close()
        assert await index.catch_up(tmp_path) == 0  # noticed, and resumes from its last commit
        await index.catch_up(tmp_path)
        [record] = await index.exchanges(ExchangeQuery())
        assert (record.exchange_id, record.outcome, record.end_segment) == ("x_1", "complete", 2)
        assert await index.catch_up(tmp_path) == 0
    async with await SqliteIndex.open(tmp_path / "fresh.sqlite3") as fresh:
        await fresh.rebuild(tmp_path)
        assert await fresh.exchanges(ExchangeQuery()) == [record]


def exchange_frames(exchange_id: str, session_id: str) -> list[Frame]:
    events: list[RecordedEvent] = [
        ExchangeStarted(
            exchange_id=exchange_id,
            session_id=session_id,
            identity=ALICE,
            client_addr="127.0.0.1:1",
            listener="default",
            protocol="http/1.1",
        ),
        RequestHead(method=b"GET", target=b"/v1/models", headers=[]),
        ResponseHead(status=200, headers=[]),
        BodyChunk(data=b"abc"),
        BodyChunk(data=b"def"),
        ExchangeEnded(outcome="complete", status=200),
    ]
    return [
        Frame(
            conn_id="c_1", seq=i, ts_ns=T0 + i * MS, direction=direction, event=event, exchange_id=exchange_id
        )
        for i, (event, direction) in enumerate(
            zip(
                events,
                [Direction.FROM_CLIENT] * 2 + [Direction.FROM_UPSTREAM] * 3 + [Direction.TO_CLIENT],
                strict=True,
            )
        )
    ]
