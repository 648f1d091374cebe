"""The auditor console of ``wardgate serve --workers 2``: the supervisor serves it over both workers' series
and records every look in its own series, which ``verify`` checks with the others."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import msgspec

from gateway.identity.apikeys import hash_api_key
from gateway.mock_llm import MockLlm, MockLlmConfig
from parsers.events import ConsoleAccess
from storage.index import SqliteIndex, index_path
from storage.reader import iter_frames
from storage.series import SUPERVISOR_SERIES
from tests.gateway.console.conftest import AUDITOR_KEY, DEVELOPER_KEY, METRICS_KEY, bearer
from tests.gateway.processes import wardgate
from tests.gateway.test_workers import NO_KEEPALIVE, indexed, supervised

KEYS = """
[auth]
[[auth.api_keys]]
name = "alice-auditor"
hash = "{auditor}"
groups = ["auditors"]
[[auth.api_keys]]
name = "dave-developer"
hash = "{developer}"
groups = ["developers"]
[[auth.api_keys]]
name = "prometheus"
hash = "{metrics}"
groups = ["metrics"]

[[policy.rules]]
name = "developers"
effect = "allow"
groups = ["developers"]
"""
SESSION = "s-two-workers"
REQUESTS = 16  # one new connection each: all on one worker has odds 2**-15


def config() -> str:
    return KEYS.format(
        auditor=hash_api_key(AUDITOR_KEY),
        developer=hash_api_key(DEVELOPER_KEY),
        metrics=hash_api_key(METRICS_KEY),
    )


async def test_supervisor_serves_the_console_over_every_worker_and_records_each_look(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with (
        MockLlm(MockLlmConfig(tokens=4, token_delay_ms=1)) as mock,
        supervised(mock.port, data_dir, config=config()) as gw,
        httpx.AsyncClient(timeout=20, limits=NO_KEEPALIVE) as http,
    ):
        body = {"model": "m", "messages": [{"role": "user", "content": "which worker?"}]}
        headers = {"X-Wardgate-Session": SESSION, **bearer(DEVELOPER_KEY)}
        url = f"http://127.0.0.1:{gw.port}/v1/chat/completions"
        admin = f"http://127.0.0.1:{gw.admin}"
        auditor = bearer(AUDITOR_KEY)
        async with http.stream("GET", f"{admin}/api/tail", headers=auditor) as tail:
            assert tail.status_code == 200
            answers = await asyncio.gather(
                *(http.post(url, json=body, headers=headers) for _ in range(REQUESTS))
            )
            tailed: set[str] = set()
            async with asyncio.timeout(20):
                async for line in tail.aiter_lines():
                    if line.startswith("data: "):
                        tailed.add(msgspec.json.decode(line[6:])["exchange_id"])
                    if len(tailed) == REQUESTS:
                        break
        assert all(a.status_code == 200 for a in answers)
        ids = {a.headers["X-Wardgate-Exchange"]: a.content for a in answers}
        async with asyncio.timeout(20):
            while True:
                records = await indexed(data_dir)
                if set(ids) <= set(records):
                    break
                await asyncio.sleep(0.05)
        by_series = {r.series: x for x, r in records.items() if x in ids}
        assert set(by_series) == {0, 1}  # both workers answered some
        assert tailed == set(ids)  # the live tail follows both workers' series
        assert (await http.get(f"{admin}/api/sessions")).status_code == 401
        sessions = (await http.get(f"{admin}/api/sessions", headers=auditor)).json()["items"]
        assert [(s["id"], s["exchanges"]) for s in sessions] == [(SESSION, REQUESTS)]
        for exchange_id in by_series.values():
            answer = await http.get(f"{admin}/api/exchanges/{exchange_id}", headers=auditor)
            assert answer.status_code == 200, answer.text
            detail = answer.json()
            assert detail["exchange"]["exchange_id"] == exchange_id
            assert (
                detail["response"]["body_text"] == ids[exchange_id].decode()
            )  # frames of that worker's series
        trail = (
            await http.get(f"{admin}/api/audit", headers=auditor, params={"actor": "alice-auditor"})
        ).json()
        verified = (await http.get(f"{admin}/api/verify", headers=auditor)).json()
        metrics = await http.get(f"{admin}/metrics", headers=bearer(METRICS_KEY))
        ready = await http.get(f"{admin}/readyz")
        assert await gw.stop() == 0

    actions = [e["action"] for e in trail["items"]]  # newest first: the audit call sees itself
    assert actions == ["audit", "view_exchange", "view_exchange", "list_sessions", "tail"]
    assert {e["target"] for e in trail["items"][1:3]} == set(by_series.values())
    assert verified["ok"]
    assert [r["series"] for r in verified["series"]] == [0, 1, SUPERVISOR_SERIES]
    assert metrics.status_code == 200
    assert f"wardgate_exchanges_total {REQUESTS}" in metrics.text
    assert "wardgate_workers_scraped 2" in metrics.text
    assert ready.status_code == 200, ready.text

    # The supervisor's own follower indexed its series: the trail is in the index.
    async with await SqliteIndex.open(index_path(data_dir), readonly=True) as index:
        trail_rows = await index.console_accesses(limit=50, actor="alice-auditor")
    assert [r.event.action for r in trail_rows] == ["verify", *actions]  # verify came after the trail call
    assert {r.series for r in trail_rows} == {SUPERVISOR_SERIES}

    # Every audited call is on disk in the supervisor's own series, none in a worker's.
    looks = [
        s.frame.event
        for s in iter_frames(data_dir, series=SUPERVISOR_SERIES)
        if isinstance(s.frame.event, ConsoleAccess)
    ]
    assert [e.action for e in looks] == [
        "tail",
        "list_sessions",
        "view_exchange",
        "view_exchange",
        "audit",
        "verify",
    ]
    assert {e.identity.subject for e in looks} == {"alice-auditor"}
    for series in (0, 1):
        assert not any(isinstance(s.frame.event, ConsoleAccess) for s in iter_frames(data_dir, series=series))

    verify = wardgate("verify", "--data-dir", str(data_dir), "--json")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    reports = [msgspec.json.decode(line) for line in verify.stdout.splitlines()]
    assert [r["series"] for r in reports] == [0, 1, SUPERVISOR_SERIES]
    assert all(r["ok"] and r["anchored"] and r["unanchored"] is None for r in reports)
