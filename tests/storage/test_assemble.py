"""Frames back into exchange records, from logs written the way the proxy records them."""

from __future__ import annotations

from pathlib import Path

from parsers.events import BodyChunk, Direction, ExchangeEnded, GatewayError, GatewayStarted
from parsers.openai import ToolCall
from storage.assemble import INCOMPLETE, OPEN, ExchangeAssembler, ExchangeRecord
from storage.reader import iter_frames
from storage.segments import Position
from tests.storage.logbook import ALICE, BOB, MS, Logbook

STREAM = "chat-stream-toolcall-usage-openai-crewai"
PLAIN = "chat-nonstream-text-openai-crewai"


def assemble(data_dir: Path, assembler: ExchangeAssembler | None = None) -> list[ExchangeRecord]:
    assembler = assembler or ExchangeAssembler()
    return [record for stored in iter_frames(data_dir) for record in assembler.feed(stored)]


def test_streamed_tool_call_exchange(tmp_path: Path) -> None:
    book = Logbook(tmp_path)
    body = book.capture_exchange(STREAM, "c_1", "x_1", "s_1", identity=ALICE, new_session=True)
    book.close()
    [record] = assemble(tmp_path)
    assert record.exchange_id == "x_1"
    assert (record.session_id, record.conn_id, record.subject, record.identity) == (
        "s_1",
        "c_1",
        "alice",
        ALICE,
    )
    assert (record.method, record.path, record.status, record.outcome) == (
        "POST",
        "/v1/chat/completions",
        200,
        "complete",
    )
    assert record.stream
    assert (record.api, record.model) == ("chat.completions", "gpt-4o-mini-2024-07-18")
    assert record.prompt_text == "user: What is the temperature in San Francisco?\n"
    assert record.tool_calls == [
        ToolCall(
            id="call_QXZLQbxriC1eBnOMXLPMopfe",
            name="get_current_temperature",
            arguments='{"city":"San Francisco"}',
        )
    ]
    assert record.finish_reason == "tool_calls"
    assert (record.prompt_tokens, record.completion_tokens, record.total_tokens) == (66, 16, 82)
    assert record.response_bytes == len(body)
    assert record.ttfb_ns is not None
    assert 250 * MS <= record.ttfb_ns < record.duration_ns
    assert record.start == book.positions[1]  # the ExchangeStarted frame, after SessionStarted
    assert Position(record.end_segment, record.end_offset) == book.positions[-1]


def test_plain_and_gateway_error_exchanges(tmp_path: Path) -> None:
    book = Logbook(tmp_path)
    book.capture_exchange(PLAIN, "c_1", "x_1", "s_1")
    error_body = book.gateway_error("c_2", "x_2", "s_1", message="connection refused")
    book.close()
    plain, error = assemble(tmp_path)
    assert not plain.stream
    assert plain.response_text == "The capital of France is **Paris**."
    assert plain.finish_reason == "stop"
    assert (error.status, error.outcome) == (502, "error")
    assert error.error == "upstream_refused: connection refused"
    assert error.response_bytes == len(error_body)


def test_interleaved_exchanges_are_kept_apart(tmp_path: Path) -> None:
    book = Logbook(tmp_path)
    book.start("c_1", "x_1", "s_1", identity=ALICE)
    book.start("c_2", "x_2", "s_2", identity=BOB)
    book.capture_exchange(PLAIN, "c_3", "x_3", "s_1", identity=ALICE)
    book.close()
    assembler = ExchangeAssembler()
    [done] = assemble(tmp_path, assembler)
    assert done.exchange_id == "x_3"
    assert assembler.open_since() == book.positions[0]
    assert [(r.exchange_id, r.outcome) for r in assembler.pending()] == [("x_1", OPEN), ("x_2", OPEN)]
    assert assembler.open_since() == book.positions[0]  # pending() does not close anything


def test_open_exchanges_are_bounded(tmp_path: Path) -> None:
    book = Logbook(tmp_path)
    for i in range(4):
        book.start(f"c_{i}", f"x_{i}", "s_1")
    book.emit("c_0", Direction.FROM_CLIENT, BodyChunk(data=b"late"), "x_0")
    book.start("c_4", "x_4", "s_1")
    book.start("c_9", "x_9", "s_1")
    book.close()
    assembler = ExchangeAssembler(max_open=4)
    records = assemble(tmp_path, assembler)
    # x_0 was active most recently among the first four, so x_1 and x_2 go first.
    assert [(r.exchange_id, r.outcome) for r in records] == [("x_1", INCOMPLETE), ("x_2", INCOMPLETE)]
    assert sorted(r.exchange_id for r in assembler.pending()) == ["x_0", "x_3", "x_4", "x_9"]
    assert assembler.open_since() == book.positions[0]


def test_silent_exchanges_are_given_up_by_log_time(tmp_path: Path) -> None:
    book = Logbook(tmp_path)
    book.start("c_1", "x_1", "s_1")
    book.capture_exchange(PLAIN, "c_2", "x_2", "s_1", after_ms=10_000)
    book.close()
    records = assemble(tmp_path, ExchangeAssembler(max_idle_ns=5_000 * MS))
    assert [(r.exchange_id, r.outcome) for r in records] == [("x_1", INCOMPLETE), ("x_2", "complete")]


def test_frames_of_unknown_exchanges_are_counted_not_fatal(tmp_path: Path) -> None:
    book = Logbook(tmp_path)
    book.capture_exchange(PLAIN, "c_1", "x_1", "s_1")
    book.close()
    assembler = ExchangeAssembler()
    records = [r for stored in list(iter_frames(tmp_path))[2:] for r in assembler.feed(stored)]
    assert records == []
    assert assembler.orphan_frames > 0
    assert assembler.open_since() is None


def test_client_abort_before_any_response_has_no_first_byte(tmp_path: Path) -> None:
    book = Logbook(tmp_path)
    book.start("c_1", "x_1", "s_1")
    book.emit(
        "c_1", Direction.TO_CLIENT, GatewayError(kind="client_aborted", status=0, message="gone"), "x_1"
    )
    book.emit("c_1", Direction.TO_CLIENT, ExchangeEnded(outcome="client_aborted"), "x_1")
    book.close()
    [record] = assemble(tmp_path)
    assert (record.outcome, record.ttfb_ns, record.error) == ("client_aborted", None, "client_aborted: gone")


def test_a_new_gateway_process_gives_up_what_the_last_one_left_open(tmp_path: Path) -> None:
    book = Logbook(tmp_path)
    book.start("c_1", "x_1", "s_1")
    book.emit("", Direction.FROM_CLIENT, GatewayStarted(boot_id="b_2", pid=2, version="0"), "")
    book.capture_exchange(PLAIN, "c_2", "x_2", "s_1")
    book.close()
    assembler = ExchangeAssembler()
    records = assemble(tmp_path, assembler)
    assert [(r.exchange_id, r.outcome) for r in records] == [("x_1", INCOMPLETE), ("x_2", "complete")]
    assert assembler.open_since() is None
