"""The console API over real sockets: authorization, pagination, hostile filters, and the audit frames."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from storage.index import SqliteIndex, index_path
from tests.gateway.console.conftest import DEVELOPER_KEY, METRICS_KEY, Console, bearer

pytestmark = pytest.mark.asyncio(loop_scope="module")

AUDITED = [
    ("/api/sessions", "list_sessions"),
    ("/api/sessions/{session}", "view_session"),
    ("/api/sessions/{session}/export", "export"),
    ("/api/exchanges", "search"),
    ("/api/exchanges/{exchange}", "view_exchange"),
    ("/api/exchanges/{exchange}/replay", "replay"),
    ("/api/verify", "verify"),
    ("/api/audit", "audit"),
]


async def test_authorization_of_every_endpoint(console: Console) -> None:
    exchange = await console.chat("s-auth", "hello")
    await console.indexed(exchange)
    paths = [p.format(session="s-auth", exchange=exchange) for p, _ in AUDITED]
    for path in [*paths, "/api/tail", "/api/me"]:
        anonymous = await console.admin.get(path)
        assert anonymous.status_code == 401, path
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        assert anonymous.json()["error"] == "unauthorized"
        forged = await console.admin.get(path, headers=bearer("wg_" + "a" * 52))
        assert forged.status_code == 401, path
    for path in [*paths, "/api/tail"]:
        developer = await console.admin.get(path, headers=bearer(DEVELOPER_KEY))
        assert developer.status_code == 403, path
        assert developer.json() == {
            "error": "forbidden",
            "detail": "'dave-developer' is not in a group with the auditor role",
        }
    for path in paths:
        assert (await console.get(path)).status_code == 200, path
    me = await console.admin.get("/api/me", headers=bearer(DEVELOPER_KEY))
    assert me.json() == {
        "identity": {"subject": "dave-developer", "method": "api-key", "groups": ["developers"]},
        "roles": [],
    }
    # Health is open, metrics are not (auditors and the metrics group may scrape).
    assert (await console.admin.get("/healthz")).json() == {"status": "ok"}
    assert (await console.admin.get("/readyz")).json() == {"ready": True, "reasons": []}
    assert (await console.admin.get("/metrics")).status_code == 401
    assert (await console.admin.get("/metrics", headers=bearer(DEVELOPER_KEY))).status_code == 403
    scrape = await console.admin.get("/metrics", headers=bearer(METRICS_KEY))
    assert scrape.status_code == 200
    assert re.search(r"^wardgate_exchanges_total [1-9]", scrape.text, re.MULTILINE)
    assert (await console.admin.get("/metrics", headers=console.auditor)).status_code == 200
    assert (await console.admin.get("/api/openapi.json")).status_code == 200
    assert (await console.admin.post("/api/sessions", headers=console.auditor)).status_code == 405
    # Only the auditor's calls were recorded: refusals show nothing, so there is nothing to audit.
    assert {a.identity.subject for a in console.audit_frames()} == {"alice-auditor"}


async def test_every_call_leaves_its_audit_frame(console: Console) -> None:
    exchange = await console.chat("s-audit", "what is the audit of the auditors?")
    await console.indexed(exchange)
    for template, action in AUDITED:
        before = len(console.audit_frames())
        path = template.format(session="s-audit", exchange=exchange)
        params = (
            {"text": "auditors", "user": "dave-developer"} if action in ("search", "list_sessions") else {}
        )
        response = await console.get(path, **params)
        assert response.status_code == 200
        # The frame is on disk before the answer is sent.
        frames = console.audit_frames()
        assert len(frames) == before + 1, action
        frame = frames[-1]
        assert (frame.action, frame.identity.subject, frame.identity.method) == (
            action,
            "alice-auditor",
            "api-key",
        )
        assert frame.identity.groups == ("staff", "auditors")
        assert frame.client_addr.startswith("127.0.0.1:")
        expected_target = {"s-audit", exchange} if "{" in template else {""}
        assert frame.target in expected_target
        if params:
            assert json.loads(frame.query) == params
    async with console.admin.stream("GET", "/api/tail", headers=console.auditor) as tail:
        assert tail.status_code == 200
    assert console.audit_frames()[-1].action == "tail"
    # Looking at something that does not exist is recorded as well.
    assert (await console.get("/api/exchanges/x_nope")).status_code == 404
    assert (console.audit_frames()[-1].action, console.audit_frames()[-1].target) == (
        "view_exchange",
        "x_nope",
    )


async def test_who_looked_at_what_is_answerable(console: Console) -> None:
    exchange = await console.chat("s-watched", "who read this?")
    await console.indexed(exchange)
    assert (await console.get("/api/sessions/s-watched")).status_code == 200
    assert (await console.get(f"/api/exchanges/{exchange}/replay")).status_code == 200
    looks = (await console.get("/api/audit", target="s-watched")).json()
    assert looks["complete"] is True
    [entry] = looks["items"]
    assert (entry["action"], entry["identity"]["subject"]) == ("view_session", "alice-auditor")
    replays = (await console.get("/api/audit", target=exchange, actor="alice-auditor")).json()["items"]
    assert [e["action"] for e in replays] == ["replay"]
    assert (await console.get("/api/audit", actor="dave-developer")).json()["items"] == []
    newest = (await console.get("/api/audit", limit="2")).json()["items"]
    assert [e["action"] for e in newest] == ["audit", "audit"]  # the questions above, newest first
    assert newest[0]["ts_ns"] >= newest[1]["ts_ns"]
    assert (await console.get("/api/audit", limit="0")).status_code == 400
    # The index follower indexes the accesses too: the trail is read from the index, plus what was
    # recorded after the point it reached.
    async with asyncio.timeout(20):
        while True:
            async with await SqliteIndex.open(index_path(console.data_dir), readonly=True) as index:
                indexed = await index.console_accesses(limit=10, target="s-watched")
            if indexed:
                break
            await asyncio.sleep(0.05)
    assert [(r.event.action, r.event.identity.subject) for r in indexed] == [
        ("view_session", "alice-auditor")
    ]
    assert indexed[0].ts_ns == entry["ts_ns"]


async def test_nothing_is_shown_when_the_access_cannot_be_recorded(console: Console) -> None:
    recorder = console.gateway.recorder
    assert recorder is not None
    recorder.failure = OSError(28, "No space left on device")
    try:
        refused = await console.get("/api/sessions")
    finally:
        recorder.failure = None
    assert refused.status_code == 503
    assert refused.json()["error"] == "unavailable"
    assert "items" not in refused.text


async def test_sessions_page_by_cursor_in_a_stable_order(console: Console) -> None:
    ids = [await console.chat(f"s-page-{i}", f"pagination prompt {i}") for i in range(7)]
    await console.indexed(*ids)
    first = (await console.get("/api/sessions", text="pagination", limit="3")).json()
    assert [row["id"] for row in first["items"]] == ["s-page-6", "s-page-5", "s-page-4"]
    # New activity between pages must not shift what the next page holds.
    await console.indexed(await console.chat("s-page-new", "pagination arrives between two pages"))
    cursor = first["next_cursor"]
    second = (await console.get("/api/sessions", text="pagination", limit="3", cursor=cursor)).json()
    cursor = second["next_cursor"]
    third = (await console.get("/api/sessions", text="pagination", limit="3", cursor=cursor)).json()
    assert [row["id"] for row in second["items"]] == ["s-page-3", "s-page-2", "s-page-1"]
    assert [row["id"] for row in third["items"]] == ["s-page-0"]
    assert third["next_cursor"] is None
    everything = (await console.get("/api/sessions", text="pagination", limit="500")).json()
    assert len(everything["items"]) == 8
    assert everything["next_cursor"] is None
    exchanges = (await console.get("/api/exchanges", text="pagination", limit="5")).json()
    cursor = exchanges["next_cursor"]
    rest = (await console.get("/api/exchanges", text="pagination", limit="5", cursor=cursor)).json()
    seen = [r["exchange_id"] for r in exchanges["items"] + rest["items"]]
    assert len(seen) == len(set(seen)) == 8
    assert rest["next_cursor"] is None


async def test_filters(console: Console) -> None:
    plain = await console.chat("s-plain", "the quick brown fox")
    other = await console.chat("s-other", "a lazy dog sleeps", model="other-model", stream=True)
    await console.indexed(plain, other)

    async def sessions(**params: str) -> list[str]:
        response = await console.get("/api/sessions", **params)
        assert response.status_code == 200, response.text
        return [row["id"] for row in response.json()["items"]]

    both = "fox OR dog"  # not FTS syntax: all three words must occur, so nothing matches
    assert await sessions(text=both) == []
    assert await sessions(text="quick fox") == ["s-plain"]
    assert await sessions(text="lazy") == ["s-other"]
    assert await sessions(model="other-model") == ["s-other"]
    assert await sessions(model="other-*") == ["s-other"]
    assert await sessions(text="fox", status="200") == ["s-plain"]
    assert await sessions(text="fox", status="404") == []
    assert await sessions(text="fox", user="dave-developer") == ["s-plain"]
    assert await sessions(text="fox", user="alice") == []
    assert await sessions(text="fox", group="developers") == ["s-plain"]
    assert await sessions(text="fox", group="auditors") == []
    assert await sessions(text="fox", since="1h") == ["s-plain"]
    assert await sessions(text="fox", until="2000-01-01T00:00:00") == []
    found = (await console.get("/api/exchanges", text="lazy", session="s-other", path="/v1/chat")).json()
    assert [r["exchange_id"] for r in found["items"]] == [other]


HOSTILE = [
    "' OR '1'='1",
    "x'; DROP TABLE exchanges; --",
    '" OR ""="',
    "%",
    "*",
    "[",
    "\\",
    "s-plain' --",
    "NEAR(a b)",
    "prompt_text:fox",
    "fox*",
    "ü\u202e\ufeff",
]


async def test_hostile_filters_are_bound_not_spliced(console: Console) -> None:
    exchange = await console.chat("s-hostile", "the quick brown fox")
    await console.indexed(exchange)
    for value in HOSTILE:
        for name in ("user", "group", "model", "text", "session", "path"):
            params = {"session": "s-hostile", name: value}
            response = await console.get("/api/exchanges", **params)
            assert response.status_code == 200, (name, value, response.text)
            items = response.json()["items"]
            if (name in ("model", "path") and value == "*") or (name == "text" and value == "fox*"):
                assert len(items) == 1, (name, value)  # a glob, as documented; a word, not a prefix query
            else:
                assert items == [], (name, value)
        assert (await console.get("/api/sessions", user=value)).json()["items"] == []
    # The tables are all still there.
    assert len((await console.get("/api/exchanges", session="s-hostile")).json()["items"]) == 1


OUT_OF_BOUNDS = [
    ({"text": "x" * 1001}, "text"),
    ({"user": "u" * 10_000}, "user"),
    ({"status": "1" * 30}, "status"),
    ({"status": "99"}, "status"),
    ({"status": "2OO"}, "status"),
    ({"limit": "0"}, "limit"),
    ({"limit": "501"}, "limit"),
    ({"limit": "-1"}, "limit"),
    ({"since": "yesterday"}, "since"),
    ({"since": "9" * 40 + "d"}, "since"),
    ({"until": "99999-01-01"}, "until"),
    ({"cursor": "not a cursor"}, "cursor"),
    ({"cursor": "WzEsMiwzXQ"}, "cursor"),  # [1,2,3]
    ({"cursor": "Wy0xLCJhIl0"}, "cursor"),  # [-1,"a"]
    ({"model": "a\x00b"}, "model"),
]


async def test_out_of_bounds_values_are_refused_by_name(console: Console) -> None:
    for params, named in OUT_OF_BOUNDS:
        for path in ("/api/sessions", "/api/exchanges"):
            response = await console.get(path, **params)
            assert response.status_code == 400, (path, params, response.text)
            assert response.json()["error"] == "bad_parameter"
            assert response.json()["detail"].startswith(named + ":")


async def test_details_replay_and_export(console: Console) -> None:
    streamed = await console.chat("s-detail", "stream me <script>alert(1)</script>", stream=True)
    plain = await console.chat("s-detail", "and now in one piece")
    await console.indexed(streamed, plain)

    session = (await console.get("/api/sessions/s-detail")).json()
    assert session["session"]["exchanges"] == 2
    assert [x["exchange_id"] for x in session["exchanges"]] == [streamed, plain]
    assert session["exchanges"][0]["messages"] == [
        {"role": "user", "content": "stream me <script>alert(1)</script>"}
    ]

    detail = (await console.get(f"/api/exchanges/{streamed}")).json()
    assert detail["request"]["method"] == "POST"
    assert detail["request"]["target"] == "/v1/chat/completions"
    assert json.loads(detail["request"]["body_text"])["stream"] is True
    assert detail["response"]["status"] == 200
    times = [chunk["t_ns"] for chunk in detail["chunks"]]
    assert len(times) >= 3  # one recorded chunk per read: tokens 20 ms apart are (mostly) reads of their own
    assert times == sorted(times)
    assert "".join(chunk["text"] for chunk in detail["chunks"]) == detail["response"]["body_text"]
    types = [event["type"] for event in detail["events"]]
    assert types[0] == "exchangestarted"
    assert types[-1] == "exchangeended"
    assert detail["events"][-1]["fields"]["outcome"] == "complete"

    replay = (await console.get(f"/api/exchanges/{streamed}/replay")).json()
    assert "".join(step["text"] for step in replay["steps"]) == detail["exchange"]["response_text"]
    assert 3 <= len(replay["steps"]) <= len(times)
    steps = [step["t_ns"] for step in replay["steps"]]
    assert steps == sorted(steps)
    assert replay["stream"] is True

    export = await console.get("/api/sessions/s-detail/export")
    assert export.headers["content-type"] == "application/x-ndjson"
    assert "attachment" in export.headers["content-disposition"]
    lines = [json.loads(line) for line in export.text.splitlines()]
    assert [line["exchange_id"] for line in lines] == [streamed, plain]
    assert lines[1]["messages"] == [{"role": "user", "content": "and now in one piece"}]
    assert (await console.get("/api/sessions/s-none")).status_code == 404
    assert (await console.get("/api/sessions/" + "s" * 300)).status_code == 404


async def test_live_tail_streams_each_exchange_as_it_ends(console: Console) -> None:
    await console.indexed(await console.chat("s-before", "before the tail started"))
    async with console.admin.stream("GET", "/api/tail", headers=console.auditor) as tail:
        assert tail.headers["content-type"].startswith("text/event-stream")
        lines = aiter(tail.aiter_lines())
        assert (await anext(lines)).startswith(": ")
        exchange = await console.chat("s-tail", "watch me live")
        records = []
        async with asyncio.timeout(10):
            async for line in lines:
                if line.startswith("data: "):
                    records.append(json.loads(line.removeprefix("data: ")))
                    if records[-1]["exchange_id"] == exchange:
                        break
                else:
                    assert line in ("", "event: exchange") or line.startswith(":")
    assert [r["session_id"] for r in records] == ["s-tail"]  # nothing that ended before the tail began
    assert records[0]["prompt_text"] == "user: watch me live\n"


async def test_verify_reports_the_log(console: Console) -> None:
    await console.indexed(await console.chat("s-v", "verify me"))
    result = (await console.get("/api/verify")).json()
    report = result["report"]
    assert report["ok"] is True
    assert report["first_error"] is None
    assert report["frames"] > 10
    assert report["key_fingerprint"].startswith("SHA256:")


async def test_the_ui_is_served_offline_with_a_strict_policy(console: Console) -> None:
    page = await console.admin.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    for asset in ("/static/console.js", "/static/console.css"):
        assert (await console.admin.get(asset)).status_code == 200
        assert asset in page.text
    script = (await console.admin.get("/static/console.js")).text
    assert "innerHTML" not in script
    assert "http://" not in page.text + script
    assert "https://" not in page.text + script
