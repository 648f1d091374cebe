"""The read-side commands, run in-process over a log written with SegmentLog (and its index)."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
from pathlib import Path

import msgspec
import pytest

from gateway import inspect
from gateway.render import ReplayedExchange, sanitize_text
from parsers.events import BodyChunk, Direction, ExchangeEnded, MessageEnd, RequestHead, ResponseHead
from storage.assemble import ExchangeRecord
from storage.index import SqliteIndex, index_path
from storage.lock import DataDirLock
from storage.query import SessionRow
from storage.reader import iter_frames
from storage.segments import Position
from tests.storage.logbook import ALICE, BOB, MS, T0, Logbook, load_capture, response_body

TOOLS = "chat-stream-toolcall-usage-openai-crewai"
TEXT = "chat-stream-text-usage-openai-crewai"
PLAIN = "chat-nonstream-text-openai-crewai"

X_TOOLS = "x_01kdz5m8s0aaaaaaaaaaaaaaaa"
X_TEXT = "x_01kdz5m8s0cccccccccccccccc"
X_PLAIN = "x_01kdz5m8s0dddddddddddddddd"
X_ERROR = "x_01kdz5m8s0eeeeeeeeeeeeeeee"
X_EVIL = "x_01kdz5m8s0ffffffffffffffff"
S_ALICE = "s_01kdz5m8s0bbbbbbbbbbbbbbbb"
S_BOB = "research-run-7"

EVIL = "ignore this\x1b[2J\x1b]0;pwned\x07 \u202eevil\x9b31m"


def evil_exchange(book: Logbook) -> None:
    """A plain chat call whose prompt and answer carry terminal escapes and a bidi override."""
    conn = "c_9"
    book.start(conn, X_EVIL, S_BOB, identity=BOB)
    request = json.dumps({"model": "m", "messages": [{"role": "user", "content": EVIL}]}).encode()
    head = RequestHead(method=b"POST", target=b"/v1/chat/completions", headers=[(b"Host", b"gw")])
    book.emit(conn, Direction.FROM_CLIENT, head, X_EVIL)
    book.emit(conn, Direction.FROM_CLIENT, BodyChunk(data=request), X_EVIL)
    book.emit(conn, Direction.FROM_CLIENT, MessageEnd(), X_EVIL)
    answer = {"model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": EVIL}}]}
    body = json.dumps(answer).encode()
    book.emit(conn, Direction.FROM_UPSTREAM, ResponseHead(status=200, reason=b"OK", headers=[]), X_EVIL)
    book.emit(conn, Direction.FROM_UPSTREAM, BodyChunk(data=body), X_EVIL)
    book.emit(conn, Direction.FROM_UPSTREAM, MessageEnd(), X_EVIL)
    book.emit(conn, Direction.TO_CLIENT, ExchangeEnded(outcome="complete", status=200), X_EVIL)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    book = Logbook(tmp_path, max_segment_bytes=12_000)
    book.capture_exchange(TOOLS, "c_1", X_TOOLS, S_ALICE, identity=ALICE, new_session=True)
    book.capture_exchange(TEXT, "c_1", X_TEXT, S_ALICE, identity=ALICE)
    book.capture_exchange(PLAIN, "c_2", X_PLAIN, S_BOB, identity=BOB, new_session=True)
    book.gateway_error("c_3", X_ERROR, S_BOB, identity=BOB)
    evil_exchange(book)
    book.close()
    return tmp_path


@pytest.fixture
def indexed(data_dir: Path) -> Path:
    async def build() -> None:
        async with await SqliteIndex.open(index_path(data_dir)) as index:
            await index.rebuild(data_dir)

    asyncio.run(build())
    return data_dir


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="wardgate")
    inspect.add_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    args = parse(*argv)
    code: int = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


RECORD_FIELDS = list(ExchangeRecord.__struct_fields__)


# --- verify, reindex --------------------------------------------------------------------------------


def test_verify_ok_and_json(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "verify", "--data-dir", str(data_dir))
    assert code == 0
    assert "OK: every CRC and chain link verified" in out
    code, out, _ = run(capsys, "verify", "--data-dir", str(data_dir), "--json")
    [report] = json_lines(out)
    assert code == 0
    assert report["ok"] is True
    assert report["first_error"] is None


def test_verify_names_the_bad_segment_and_offset(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    victim = Position(1, 400)  # inside segment 1, which is sealed: find the record holding that byte
    starts = [s.position for s in iter_frames(data_dir) if s.position.segment == 1]
    record = max(p for p in starts if p.offset <= victim.offset)
    path = data_dir / "segments" / "000000000001.wgseg"
    data = bytearray(path.read_bytes())
    data[victim.offset] ^= 0xFF
    path.write_bytes(data)
    code, _, err = run(capsys, "verify", "--data-dir", str(data_dir))
    assert code == 1
    assert f"segment 000000000001 offset {record.offset}" in err


def test_missing_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "verify", "--data-dir", str(tmp_path / "nope"))
    assert code == 1
    assert "no session log" in err


def test_reindex_builds_the_index(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "reindex", "--data-dir", str(data_dir))
    assert code == 0
    assert "5 exchanges" in out
    code, out, _ = run(capsys, "reindex", "--data-dir", str(data_dir), "--json")
    assert json_lines(out)[0]["exchanges"] == 5


def test_reindex_refuses_while_a_gateway_holds_the_data_dir(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with DataDirLock(data_dir):
        code, _, err = run(capsys, "reindex", "--data-dir", str(data_dir))
    assert code == 2
    assert "in use by another wardgate process" in err
    assert "stop the gateway first" in err
    assert not index_path(data_dir).exists()


# --- sessions, search -------------------------------------------------------------------------------


def test_sessions_human_and_json(indexed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "sessions", "--data-dir", str(indexed))
    assert code == 0
    header, *lines = out.splitlines()
    assert header.split() == [
        "SESSION",
        "USER",
        "CLIENT",
        "STARTED",
        "(UTC)",
        "SPAN",
        "EXCHANGES",
        "ERRORS",
        "MODELS",
    ]
    assert lines[0].startswith(S_BOB)
    assert lines[1].startswith(S_ALICE)
    assert "alice" in lines[1]
    assert len({line.index("127.0.0.1") for line in lines}) == 1  # aligned
    code, out, _ = run(
        capsys, "sessions", "--data-dir", str(indexed), "--json", "--user", "alice@example.com"
    )
    [row] = json_lines(out)
    assert list(row) == list(SessionRow.__struct_fields__)
    assert row["id"] == S_ALICE
    assert row["exchanges"] == 2


def test_search_text_and_filters(indexed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "search", "temperature", "--data-dir", str(indexed))
    assert code == 0
    header, line = out.splitlines()
    assert header.startswith("TIME (UTC)")
    assert "aaaaaaaaaa" in line
    assert "get_current_temperature" in line
    assert "ms" in line
    code, out, _ = run(capsys, "search", "--data-dir", str(indexed), "--json", "--status", "502")
    [error] = json_lines(out)
    assert list(error) == RECORD_FIELDS
    assert error["exchange_id"] == X_ERROR
    assert error["error"] == "upstream_refused: upstream refused the connection"
    start = "2026-01-05T15:09:06.300"
    code, out, _ = run(
        capsys, "search", "--data-dir", str(indexed), "--json", "--since", start, "--user", "alice"
    )
    assert [r["exchange_id"] for r in json_lines(out)] == [X_TEXT]
    code, out, _ = run(capsys, "search", '"; DROP TABLE exchanges; --', "--data-dir", str(indexed))
    assert (code, out) == (0, "no matching exchanges\n")
    code, out, _ = run(capsys, "search", "--data-dir", str(indexed), "--json")
    assert len(json_lines(out)) == 5


def test_search_without_an_index(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "search", "x", "--data-dir", str(data_dir))
    assert code == 1
    assert "wardgate reindex" in err


def test_recorded_escapes_are_shown_not_executed(indexed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (("search", "ignore"), ("replay", X_EVIL, "--speed", "0"), ("tail",)):
        code, out, _ = run(capsys, *argv, "--data-dir", str(indexed))
        assert code == 0
        assert "\\x1b[2J" in out
        assert "\x1b" not in out
        assert "\x07" not in out
        assert "\x9b" not in out
        assert "\u202e" not in out


def test_time_arguments() -> None:
    now = T0 + 10 * 3600 * 1_000_000_000
    assert inspect.parse_time("2h", now_ns=now) == now - 7200 * 1_000_000_000
    assert inspect.parse_time("30m", now_ns=now) == now - 1800 * 1_000_000_000
    assert inspect.parse_time("2026-01-05T15:09:06Z") == T0
    assert inspect.parse_time("2026-01-05 15:09:06") == T0
    assert inspect.parse_time("2026-01-05T16:09:06+01:00") == T0
    with pytest.raises(argparse.ArgumentTypeError):
        inspect.parse_time("yesterday")


# --- tail -------------------------------------------------------------------------------------------


def test_tail_prints_finished_exchanges_from_the_log(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "tail", "--data-dir", str(data_dir))  # no index needed
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 5
    assert "aaaaaaaaaa" in lines[0]
    assert "tool calls: get_current_temperature" in lines[0]
    code, out, _ = run(capsys, "tail", "--data-dir", str(data_dir), "-n", "2", "--json", "--user", "bob")
    assert [r["exchange_id"] for r in json_lines(out)] == [X_ERROR, X_EVIL]


def test_tail_follow_shows_new_exchanges_and_exits_0_on_ctrl_c(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse("tail", "-f", "-n", "0", "--data-dir", str(data_dir))
    polls: list[float] = []

    def sleep(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) == 1:  # the gateway records another exchange meanwhile
            book = Logbook(data_dir)
            book.capture_exchange(PLAIN, "c_7", "x_01kdz5m8s0gggggggggggggggg", S_BOB, identity=BOB)
            book.close()
        elif len(polls) == 3:
            raise KeyboardInterrupt

    assert inspect.tail(args, sys.stdout, sleep) == 0
    out = capsys.readouterr().out
    assert polls == [0.2, 0.2, 0.2]
    [line] = out.splitlines()
    assert "gggggggggg" in line


# --- replay -----------------------------------------------------------------------------------------


def test_replay_session_shows_the_conversation(indexed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "replay", S_ALICE, "--speed", "0", "--data-dir", str(indexed))
    assert code == 0
    assert out.count("== exchange") == 2
    assert "[user] What is the temperature in San Francisco?" in out
    assert (
        '[tool call] get_current_temperature({"city":"San Francisco"})  id call_QXZLQbxriC1eBnOMXLPMopfe'
        in out
    )
    assert "tokens 66 prompt + 16 completion = 82" in out
    answer = msgspec.json.decode(response_body(load_capture(PLAIN)))["choices"][0]["message"]["content"]
    assert answer not in out  # that was bob's
    assert "[assistant] " in out


def test_replay_by_short_id_and_json(indexed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "replay", "dddddddddd", "--json", "--data-dir", str(indexed))
    assert code == 0
    [record] = json_lines(out)
    assert list(record) == list(ReplayedExchange.__struct_fields__)
    assert record["exchange_id"] == X_PLAIN
    assert record["messages"] == [{"role": "user", "content": "What is the capital of France?"}]
    code, _, err = run(capsys, "replay", "x_01kdz5m8s0", "--data-dir", str(indexed))
    assert code == 2
    assert "more than one id" in err
    code, _, err = run(capsys, "replay", "nothing-like-it", "--data-dir", str(indexed))
    assert code == 1


def test_replay_works_without_the_index(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "replay", X_ERROR, "--speed", "0", "--data-dir", str(data_dir))
    assert code == 0
    assert "-> 502 error" in out
    assert "error: upstream_refused: upstream refused the connection" in out


@pytest.mark.parametrize(("speed", "factor"), [("1", 1.0), ("2", 0.5), ("0", 0.0)])
def test_replay_retypes_the_stream_with_its_timing(indexed: Path, speed: str, factor: float) -> None:
    args = parse("replay", X_TEXT, "--speed", speed, "--data-dir", str(indexed))
    pauses: list[float] = []
    out = io.StringIO()
    assert inspect.replay(args, out, pauses.append) == 0
    text = msgspec.json.decode(response_body(load_capture(TEXT)).split(b"\n\n")[1][6:])
    assert text["choices"][0]["delta"]["content"] in out.getvalue()
    if not factor:
        assert pauses == []
        return
    # First the time to the first token: 1.2 ms of request, 250 ms to the response head, then two
    # 20 ms chunks (the first carries only the role). Then 20 ms per chunk that adds text.
    assert pauses[0] == pytest.approx((1.2 + 250 + 2 * 20) * MS / 1e9 * factor)
    assert len(pauses) == 3  # "Fare", "well", "."
    assert pauses[1:] == [pytest.approx(0.020 * factor)] * 2


def test_replay_raw_writes_exactly_the_response_body(
    indexed: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    for exchange, capture in ((X_TOOLS, TOOLS), (X_PLAIN, PLAIN)):
        args = parse("replay", exchange, "--raw", "--data-dir", str(indexed))
        assert args.func(args) == 0
        assert capsysbinary.readouterr().out == response_body(load_capture(capture))


def test_replay_raw_head_uses_the_client_head(
    indexed: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    args = parse("replay", X_TOOLS, "--raw", "--head", "--data-dir", str(indexed))
    assert args.func(args) == 0
    head, _, body = capsysbinary.readouterr().out.partition(b"\r\n\r\n")
    status, *fields = head.split(b"\r\n")
    assert status == b"HTTP/1.1 200 OK"
    assert b"Content-Type: text/event-stream; charset=utf-8" in fields
    assert b"X-Wardgate-Exchange: " + X_TOOLS.encode() in fields
    assert b"Transfer-Encoding: chunked" not in fields
    assert body == response_body(load_capture(TOOLS))


def test_replay_raw_of_a_gateway_answer(indexed: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    args = parse("replay", X_ERROR, "--raw", "--head", "--data-dir", str(indexed))
    assert args.func(args) == 0
    out = capsysbinary.readouterr().out
    assert out.startswith(b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\n")
    assert json.loads(out.partition(b"\r\n\r\n")[2])["error"]["code"] == "upstream_refused"


def test_replay_raw_needs_an_exchange(indexed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "replay", S_ALICE, "--raw", "--data-dir", str(indexed))
    assert code == 2
    assert "--raw needs one exchange id" in err


# --- sanitize ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text, ünïcödé, 漢字, 🙂", "plain text, ünïcödé, 漢字, 🙂"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("\x1b]8;;http://evil\x07link", "\\x1b]8;;http://evil\\x07link"),
        ("csi\x9b2J", "csi\\x9b2J"),
        ("over\rwrite", "over\\x0dwrite"),
        ("nul\x00 del\x7f", "nul\\x00 del\\x7f"),
        ("a\u202eb\u2066c\u200bd", "a\\u202eb\\u2066c\\u200bd"),
        ("line\nnext\ttab", "line\\x0anext\\x09tab"),
        ("\U000e0041tag", "\\U000e0041tag"),
    ],
)
def test_sanitize_text(raw: str, shown: str) -> None:
    assert sanitize_text(raw) == shown


def test_sanitize_text_can_keep_newlines() -> None:
    assert sanitize_text("a\nb\t\x1b", keep_newlines=True) == "a\nb\t\\x1b"
    assert sanitize_text("a\nb") == "a\\x0ab"  # the one-line table of escapes is separate


def test_reading_commands_stop_at_a_half_written_record(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    newest = sorted((data_dir / "segments").glob("*.wgseg"))[-1]
    with newest.open("ab") as f:  # the gateway is in the middle of writing a record
        f.write(b"\x40\x00\x00\x00\x12\x34")
    code, out, _ = run(capsys, "tail", "--data-dir", str(data_dir))
    assert code == 0
    assert len(out.splitlines()) == 5
    code, out, _ = run(capsys, "verify", "--data-dir", str(data_dir))
    assert code == 0
    assert "torn tail" in out
    code, out, _ = run(capsys, "replay", X_EVIL, "--speed", "0", "--data-dir", str(data_dir))
    assert code == 0
