"""Every answer of the admin listener validates against the OpenAPI 3.1 document it serves."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from tests.gateway.console.conftest import APPROVER_KEY, DEVELOPER_KEY, METRICS_KEY, Console, bearer
from tests.gateway.holding import holding, make_hold

pytestmark = pytest.mark.asyncio(loop_scope="module")


class Document:
    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.checked: set[tuple[str, str]] = set()  # (path template, status)

    def _validator(self, schema: dict[str, Any]) -> Draft202012Validator:
        # The schema's $refs point into the document: validate with the document's components at the root.
        root = {**schema, "components": self.document["components"]}
        Draft202012Validator.check_schema(root)
        return Draft202012Validator(root)

    def response(self, template: str, response: httpx.Response) -> dict[str, Any]:
        """The documented answer for this status, checked against its media type and JSON schema."""
        declared = self.document["paths"][template][response.request.method.lower()]["responses"]
        status = str(response.status_code)
        assert status in declared, f"{template} answered {status}, not documented"
        content: dict[str, Any] = declared[status]["content"]
        media = response.headers["content-type"].split(";")[0]
        assert media in content, f"{template} {status}: {media} not documented ({list(content)})"
        if media == "application/json":
            self._validator(content[media]["schema"]).validate(response.json())
        self.checked.add((template, status))
        documented: dict[str, Any] = content[media]
        return documented

    def component(self, name: str, value: Any) -> None:
        self._validator({"$ref": f"#/components/schemas/{name}"}).validate(value)


async def test_every_response_matches_the_served_document(console: Console) -> None:
    streamed = await console.chat("s-schema", "schema <b>check</b>", stream=True)
    plain = await console.chat("s-schema", "and a plain one")
    await console.indexed(streamed, plain)
    served = await console.admin.get("/api/openapi.json")
    doc = Document(served.json())
    assert doc.document["openapi"] == "3.1.0"
    doc.response("/api/openapi.json", served)
    auditor, developer = console.auditor, bearer(DEVELOPER_KEY)

    calls: list[tuple[str, str, dict[str, str], dict[str, str]]] = [
        ("/healthz", "/healthz", {}, {}),
        ("/readyz", "/readyz", {}, {}),
        ("/metrics", "/metrics", bearer(METRICS_KEY), {}),
        ("/metrics", "/metrics", {}, {}),
        ("/metrics", "/metrics", developer, {}),
        ("/api/me", "/api/me", developer, {}),
        ("/api/me", "/api/me", {}, {}),
        ("/api/sessions", "/api/sessions", auditor, {"limit": "1"}),
        ("/api/sessions", "/api/sessions", auditor, {"text": "schema"}),
        ("/api/sessions", "/api/sessions", auditor, {"status": "12345"}),
        ("/api/sessions", "/api/sessions", developer, {}),
        ("/api/sessions/{session_id}", "/api/sessions/s-schema", auditor, {}),
        ("/api/sessions/{session_id}", "/api/sessions/s-missing", auditor, {}),
        ("/api/sessions/{session_id}/export", "/api/sessions/s-missing/export", auditor, {}),
        ("/api/exchanges", "/api/exchanges", auditor, {"session": "s-schema", "limit": "1"}),
        ("/api/exchanges", "/api/exchanges", auditor, {"cursor": "!"}),
        ("/api/exchanges/{exchange_id}", f"/api/exchanges/{streamed}", auditor, {}),
        ("/api/exchanges/{exchange_id}", f"/api/exchanges/{plain}", auditor, {}),
        ("/api/exchanges/{exchange_id}", "/api/exchanges/x_missing", auditor, {}),
        ("/api/exchanges/{exchange_id}/replay", f"/api/exchanges/{streamed}/replay", auditor, {}),
        ("/api/exchanges/{exchange_id}/replay", "/api/exchanges/x_missing/replay", developer, {}),
        ("/api/verify", "/api/verify", auditor, {}),
        ("/api/audit", "/api/audit", auditor, {"target": "s-schema"}),
        ("/api/audit", "/api/audit", auditor, {"limit": "x"}),
        ("/api/tail", "/api/tail", {}, {}),
    ]
    for template, path, headers, params in calls:
        doc.response(template, await console.admin.get(path, headers=headers, params=params))

    async with holding(console.gateway.holds) as held:
        first, second = await held.hold(make_hold()), await held.hold(make_hold())
        approver = bearer(APPROVER_KEY)
        one = "/api/approvals/{hold_id}"
        doc.response("/api/approvals", await console.admin.get("/api/approvals", headers=approver))
        doc.response("/api/approvals", await console.admin.get("/api/approvals", headers=developer))
        doc.response(one, await console.admin.get(f"/api/approvals/{first.hold_id}", headers=auditor))
        doc.response(one, await console.admin.get("/api/approvals/h_missing", headers=auditor))
        posts = [
            ("approve", first, {}, {}),
            ("approve", first, auditor, {"arguments_sha256": first.arguments_sha256}),
            ("approve", first, approver, {"arguments_sha256": "0" * 64}),
            ("approve", first, approver, {"comment": "no digest"}),
            ("deny", first, approver, {"arguments_sha256": first.arguments_sha256, "comment": "c" * 3000}),
            ("approve", first, approver, {"arguments_sha256": first.arguments_sha256, "comment": "ok"}),
            ("deny", first, approver, {"arguments_sha256": first.arguments_sha256}),
            ("deny", second, approver, {"arguments_sha256": second.arguments_sha256}),
        ]
        for verb, hold, headers, body in posts:
            path = f"/api/approvals/{hold.hold_id}/{verb}"
            doc.response(
                "/api/approvals/{hold_id}/" + verb, await console.admin.post(path, json=body, headers=headers)
            )
        big = await console.admin.post(
            f"/api/approvals/{second.hold_id}/approve", content=b" " * 20_000, headers=approver
        )
        doc.response("/api/approvals/{hold_id}/approve", big)
        doc.component("DecisionRequest", {"arguments_sha256": "a" * 64, "comment": "fine"})

    recorder = console.gateway.recorder
    assert recorder is not None
    recorder.failure = OSError(28, "No space left on device")
    try:
        doc.response("/api/verify", await console.admin.get("/api/verify", headers=auditor))
        doc.response("/readyz", await console.admin.get("/readyz"))
    finally:
        recorder.failure = None

    export = await console.admin.get("/api/sessions/s-schema/export", headers=auditor)
    doc.response("/api/sessions/{session_id}/export", export)
    lines = export.text.splitlines()
    assert len(lines) == 2
    for line in lines:
        doc.component("ReplayedExchange", json.loads(line))

    async with console.admin.stream("GET", "/api/tail", headers=auditor) as tail:
        doc.response("/api/tail", tail)
        lines_iter = aiter(tail.aiter_lines())
        await anext(lines_iter)
        exchange = await console.chat("s-schema-tail", "tail me")
        async for line in lines_iter:
            if line.startswith("data: "):
                record = json.loads(line.removeprefix("data: "))
                doc.component("ExchangeRecord", record)
                if record["exchange_id"] == exchange:
                    break

    # Every documented path was exercised, and every documented error status of the API at least once.
    assert {template for template, _ in doc.checked} == set(doc.document["paths"])
    statuses = {status for _, status in doc.checked}
    assert {"200", "400", "401", "403", "404", "409", "413", "503"} <= statuses
