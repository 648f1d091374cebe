"""A hold the gateway never answered (it crashed while holding) shows up as such in verify, replay, detail."""

from __future__ import annotations

from pathlib import Path

from gateway.console._detail import UNDECIDED, exchange_detail
from gateway.render import approval_lines
from parsers.events import (
    ANONYMOUS,
    ApprovalDecided,
    ApprovalRequested,
    Direction,
    GatewayStarted,
    Identity,
)
from storage.assemble import ExchangeRecord
from storage.codec import Frame
from storage.verify import verify
from tests.storage.logbook import ALICE, Logbook

BOB = Identity(subject="bob", method="oidc", groups=("approvers",))


def requested(hold_id: str) -> ApprovalRequested:
    return ApprovalRequested(
        hold_id=hold_id,
        rule="shell-destructive",
        tool_name="shell",
        call_id=f"call_{hold_id}",
        arguments_sha256="0" * 64,
        requested_by=ALICE,
        approver_groups=("approvers",),
        expires_at_ns=0,
    )


def test_verify_names_holds_that_never_got_a_decision(tmp_path: Path) -> None:
    book = Logbook(tmp_path)
    book.start("c1", "x1", "s1", identity=ALICE, new_session=True)
    book.emit("c1", Direction.TO_CLIENT, requested("h_done"), "x1")
    decided = ApprovalDecided(hold_id="h_done", verdict="approved", approver=BOB)
    book.emit("c1", Direction.TO_CLIENT, decided, "x1")
    book.start("c2", "x2", "s1", identity=ALICE)
    book.emit("c2", Direction.TO_CLIENT, requested("h_lost"), "x2")
    book.emit("", Direction.TO_CLIENT, GatewayStarted(boot_id="b2", pid=2, version="t"), "")  # a restart
    book.start("c3", "x3", "s1", identity=ALICE)
    book.emit("c3", Direction.TO_CLIENT, requested("h_open"), "x3")
    book.close()
    notes = [note.reason for note in verify(tmp_path).notes]
    lost = [n for n in notes if "h_lost" in n]
    assert len(lost) == 1
    assert "undecided (gateway stopped)" in lost[0]
    assert any("h_open" in n and "no decision yet" in n for n in notes)
    assert not any("h_done" in n for n in notes)


def test_replay_and_detail_say_undecided() -> None:
    book_frames: list[Frame] = []
    for seq, event in enumerate([requested("h1"), requested("h2")]):
        book_frames.append(
            Frame(
                conn_id="c", seq=seq, ts_ns=seq, direction=Direction.TO_CLIENT, event=event, exchange_id="x"
            )
        )
    book_frames.append(
        Frame(
            conn_id="c",
            seq=2,
            ts_ns=2,
            direction=Direction.TO_CLIENT,
            event=ApprovalDecided(hold_id="h1", verdict="denied", approver=BOB, comment="no"),
            exchange_id="x",
        )
    )
    record = ExchangeRecord(exchange_id="x", outcome="incomplete", identity=ANONYMOUS)
    lines = approval_lines(record, book_frames)
    assert lines[0].endswith("hold h1: denied by bob: no")
    assert lines[1].endswith("hold h2: undecided (gateway stopped)")
    detail = exchange_detail(record, book_frames)
    marks = {
        e.fields["hold_id"]: e.fields.get("decision") for e in detail.events if e.type == "approvalrequested"
    }
    assert marks == {"h1": None, "h2": UNDECIDED}
    open_record = ExchangeRecord(exchange_id="x", outcome="open")
    assert approval_lines(open_record, book_frames[1:2]) == [
        "[approval] shell (call call_h2) held by rule shell-destructive, hold h2: pending"
    ]
