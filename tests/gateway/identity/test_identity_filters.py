"""Identity in the index: --user and --group on sessions, search and tail; rebuilt from the segments alone."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from gateway import inspect
from parsers.events import Direction, ExchangeEnded, Identity, PolicyDecision
from storage.index import SqliteIndex, index_path
from storage.query import ExchangeQuery, SessionQuery
from tests.storage.logbook import Logbook

DANA = Identity(
    subject="dana", method="oidc", email="dana@example.test", groups=("dev", "ops"), issuer="https://idp"
)
CI = Identity(subject="ci-bot", method="api-key", groups=("ci",))
PLAIN = "chat-nonstream-text-openai-crewai"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    book = Logbook(tmp_path)
    book.capture_exchange(PLAIN, "c_1", "x_dana1", "s_dana", identity=DANA, new_session=True)
    book.capture_exchange(PLAIN, "c_2", "x_ci1", "s_ci", identity=CI, new_session=True)
    book.start("c_3", "x_denied", "s_ci", identity=CI)
    denied = PolicyDecision(
        allowed=False, rule="default-deny", reason="no rule allows", identity=CI, status=403
    )
    book.emit("c_3", Direction.FROM_CLIENT, denied, "x_denied")
    book.emit("c_3", Direction.TO_CLIENT, ExchangeEnded(outcome="error", status=403), "x_denied")
    book.gateway_error(
        "c_4", "x_group_injection", "s_other", identity=Identity(subject="o", groups=("' OR 1=1 --",))
    )
    book.close()
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, object]]:
    parser = argparse.ArgumentParser(prog="wardgate")
    inspect.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


async def rebuilt(data_dir: Path) -> None:
    async with await SqliteIndex.open(index_path(data_dir)) as index:
        await index.rebuild(data_dir)


def test_group_and_user_filters_on_every_command(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "reindex", "--data-dir", str(data_dir), "--json")
    where = ("--data-dir", str(data_dir), "--json")
    assert [r["id"] for r in run(capsys, "sessions", *where, "--group", "ops")] == ["s_dana"]
    assert [r["id"] for r in run(capsys, "sessions", *where, "--group", "ci")] == ["s_ci"]
    assert [r["exchange_id"] for r in run(capsys, "search", *where, "--group", "dev")] == ["x_dana1"]
    assert [r["exchange_id"] for r in run(capsys, "search", *where, "--user", "dana@example.test")] == [
        "x_dana1"
    ]
    assert run(capsys, "search", *where, "--group", "' OR 1=1 --", "--user", "dana") == []
    assert [r["exchange_id"] for r in run(capsys, "search", *where, "--group", "' OR 1=1 --")] == [
        "x_group_injection"
    ]
    assert run(capsys, "search", *where, "--group", "nobody") == []
    assert [r["exchange_id"] for r in run(capsys, "tail", *where, "--group", "dev")] == ["x_dana1"]
    ci = run(capsys, "tail", *where, "--user", "ci-bot", "--group", "ci")
    assert [r["exchange_id"] for r in ci] == ["x_ci1", "x_denied"]


async def test_identity_and_decisions_come_back_from_the_segments_alone(data_dir: Path) -> None:
    await rebuilt(data_dir)
    index_path(data_dir).unlink()  # nothing kept but the log
    await rebuilt(data_dir)
    async with await SqliteIndex.open(index_path(data_dir), readonly=True) as index:
        record = await index.exchange("x_dana1")
        assert record is not None
        assert record.identity == DANA
        assert [s.id for s in await index.sessions(SessionQuery(group="dev", user="dana"))] == ["s_dana"]
        assert [r.exchange_id for r in await index.exchanges(ExchangeQuery(group="ci"))] == [
            "x_denied",
            "x_ci1",
        ]
        denied = await index.exchange("x_denied")
        assert denied is not None
        assert (denied.policy, denied.policy_rule, denied.status) == ("deny", "default-deny", 403)
    # Retention's delete keeps the group table in step (its trigger): nothing is left pointing nowhere.
    async with await SqliteIndex.open(index_path(data_dir)) as index:
        await index.forget_segments([1])
        assert await index.exchanges(ExchangeQuery(group="dev")) == []
