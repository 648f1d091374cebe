"""``wardgate bench --quick`` end to end: every scenario yields figures and the log holds every exchange.

Only the shape of the results and the recording proof are asserted, never a timing: figures depend on
the machine. Deselect with ``-m 'not bench'``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.loadjob import percentiles
from benchmarks.report import text_report
from benchmarks.scenarios import FULL, chat_request, select

ROOT = Path(__file__).resolve().parents[2]
BENCH_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def quick_run() -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "bench", "--quick", "--json"],
        cwd=ROOT,
        capture_output=True,
        timeout=BENCH_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    document: dict[str, Any] = json.loads(proc.stdout)
    return document


def _gateways(scenario: dict[str, Any]) -> list[str]:
    """The columns that are wardgate processes (not the mock, the relay floor or its stand-in "off")."""
    return [c for c in scenario["columns"] if not c.startswith(("direct", "floor", "off"))]


@pytest.mark.bench
@pytest.mark.timeout(BENCH_TIMEOUT_S + 30)
def test_quick_run_measures_every_scenario(quick_run: dict[str, Any]) -> None:
    names = [s["name"] for s in quick_run["scenarios"]]
    assert names == [s.name for s in select(None, quick_mode=True)]
    for scenario in quick_run["scenarios"]:
        medians = scenario["median"]
        assert _gateways(scenario), scenario["name"]
        for column in scenario["columns"]:
            row = medians[column]
            assert row["completed"] > 0, (scenario["name"], column)
            assert row["errors"] == 0, (scenario["name"], column)
        for column in [c for c in scenario["columns"] if not c.startswith("direct")]:
            row = medians[column]  # a process the harness started: its CPU and memory were read
            if scenario["name"].startswith("idle"):
                assert row["rss_per_stream_kib"] > 0
                assert row["open_streams"] > 0
            else:
                assert row["cpu_us_per_exchange"] > 0, (scenario["name"], column)
            if scenario["unit"] == "chunk":
                assert row["cpu_us_per_chunk"] > 0
                assert row["ttft_p50_ms"] > 0
        if scenario["name"].startswith("long"):
            assert medians["wardgate"]["rss_peak_kib"] > 0
            assert medians["wardgate"]["body_mb"] > 1


@pytest.mark.bench
@pytest.mark.timeout(BENCH_TIMEOUT_S + 30)
def test_quick_run_proves_the_gateway_recorded_every_exchange(quick_run: dict[str, Any]) -> None:
    assert quick_run["ok"]
    assert quick_run["failures"] == []
    for scenario in quick_run["scenarios"]:
        assert sorted(scenario["proof"]) == sorted(_gateways(scenario)), scenario["name"]
        for name, proof in scenario["proof"].items():
            assert proof["recorded"] == proof["sent"] > 0, (scenario["name"], name, proof)
            assert proof["other"] == 0
            assert proof["ok"]


@pytest.mark.bench
@pytest.mark.timeout(BENCH_TIMEOUT_S + 30)
def test_quick_run_measured_tls_h2_and_auth_as_claimed(quick_run: dict[str, Any]) -> None:
    """Every exchange of the TLS, HTTP/2 and auth columns was recorded with TLS, over h2, as that caller."""
    first = {
        prefix: next(s for s in quick_run["scenarios"] if s["name"].startswith(prefix))
        for prefix in ("tls-", "h2-", "auth-")
    }
    expected = {
        "tls-": {"wardgate-tls": {"tls"}, "wardgate": set()},
        "h2-": {"wardgate-h2": {"h2"}, "wardgate-h1": set()},
        "auth-": {"apikey": {"api-key"}, "oidc": {"oidc"}, "wardgate": set()},
    }
    for prefix, scenario in first.items():
        assert "direct" not in scenario["columns"] or prefix == "auth-"  # h2: the mock has no HTTP/2
        for column, traits in expected[prefix].items():
            proof = scenario["proof"][column]
            assert proof["expect"] == dict.fromkeys(traits, proof["recorded"]), (scenario["name"], column)
    assert {"direct-tls", "floor-tls"} <= set(first["tls-"]["columns"])
    assert first["h2-"]["note"]


@pytest.mark.bench
@pytest.mark.timeout(BENCH_TIMEOUT_S + 30)
def test_quick_run_reports_machine_and_renders(quick_run: dict[str, Any]) -> None:
    meta = quick_run["meta"]
    assert meta["machine"]["cores"] >= 1
    assert meta["machine"]["versions"]["h11"]
    assert meta["config"]["seed"] == 1
    assert meta["config"]["quick"] is True
    text = text_report(quick_run)
    for scenario in quick_run["scenarios"]:
        assert scenario["name"] in text


def test_scenario_selection_by_name_and_prefix() -> None:
    assert [s.name for s in select(["sse"], quick_mode=False)] == ["sse-c1", "sse-c16", "sse-c256"]
    assert [s.name for s in select(["chat-c1", "durability"], quick_mode=False)] == [
        "chat-c1",
        "durability-chat",
        "durability-sse",
    ]
    quick = [s.name for s in select(None, quick_mode=True)]
    assert set(quick) < {s.name for s in FULL} | {"long-10mb", "idle-500"}
    for prefix in ("tls-", "h2-", "auth-"):
        assert any(name.startswith(prefix) for name in quick), prefix
    assert [s.name for s in select(["h2"], quick_mode=True)] == ["h2-chat-c32", "h2-sse-c16"]
    with pytest.raises(ValueError, match="no scenario 'nope'"):
        select(["nope"], quick_mode=False)


def test_request_bytes_are_a_complete_http11_request() -> None:
    raw = chat_request("127.0.0.1:1", stream=True, max_tokens=3, prompt_text="hi")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert f"Content-Length: {len(body)}".encode() in head
    assert json.loads(body)["stream"] is True


def test_percentiles_nearest_rank() -> None:
    assert percentiles([], 50, 99) == [0.0, 0.0]
    assert percentiles([float(i) for i in range(101)], 50, 99) == [50.0, 99.0]
