"""ResponseGuard without sockets: client-scope masking of streams and JSON, codings, per-group rules."""

from __future__ import annotations

import gzip
import json

import msgspec
import pytest

from gateway.approvals import HoldRegistry
from gateway.approvals.config import ApprovalsConfig
from gateway.approvals.guard import GuardSettings, ResponseGuard, Uninspectable, guard_settings
from gateway.masking import CustomRuleConfig, MaskingConfig, MaskingOverride, MaskingPlan
from parsers.events import ANONYMOUS, Event, Identity, MaskingApplied, ResponseHead

EMPLOYEE = "EMP-123456"
SSE_HEAD = ResponseHead(status=200, headers=[(b"Content-Type", b"text/event-stream")])
JSON_HEAD = ResponseHead(
    status=200, headers=[(b"Content-Type", b"application/json"), (b"Content-Length", b"99")]
)
INTERNS = Identity(subject="ian", method="oidc", groups=("interns",))


class Collected:
    """The client's side of a guarded response."""

    def __init__(self) -> None:
        self.heads: list[ResponseHead] = []
        self.body = bytearray()

    def head(self, head: ResponseHead) -> None:
        self.heads.append(head)

    async def send(self, data: bytes) -> None:
        self.body += data


def settings(*, client_for: list[str] | None = None) -> GuardSettings:
    """A custom rule masked for every client, or (``client_for``) only for those groups."""
    rule = CustomRuleConfig(
        name="employee_id", pattern=r"EMP-\d{6}", scopes=["record"] if client_for else ["record", "client"]
    )
    overrides = (
        [MaskingOverride(groups=client_for, scopes=["client"], enable=["employee_id"])] if client_for else []
    )
    plan = MaskingPlan(MaskingConfig(rules=[rule], overrides=overrides))
    return guard_settings(
        ApprovalsConfig(),
        plan,
        approver_groups=["approvers"],
        registry=HoldRegistry(),
        max_body_bytes=1 << 20,
    )


def guard(config: GuardSettings, records: list[Event], identity: Identity = ANONYMOUS) -> ResponseGuard:
    return ResponseGuard(
        config,
        identity=identity,
        exchange_id="x1",
        session_id="s1",
        request_body=b'{"messages": []}',
        record=records.append,
    )


def sse(content: str) -> bytes:
    return (
        b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": content}}]}).encode() + b"\n\n"
    )


async def test_a_secret_split_across_stream_events_is_masked_for_the_client() -> None:
    records: list[Event] = []
    g = guard(settings(), records)
    sink = Collected()
    head = g.start(SSE_HEAD)
    assert head is not None
    body = sse("id EMP-12") + sse("3456 ok") + b"data: [DONE]\n\n"
    for i in range(0, len(body), 5):
        await g.feed(body[i : i + 5], sink)
    await g.finish(sink)
    assert EMPLOYEE.encode() not in sink.body
    text = "".join(
        json.loads(b[6:])["choices"][0]["delta"]["content"]
        for b in bytes(sink.body).split(b"\n\n")
        if b.startswith(b"data: {")
    )
    assert text == "id [MASKED:employee_id] ok"
    (applied,) = [r for r in records if isinstance(r, MaskingApplied)]
    assert (applied.rule, applied.scope, applied.count) == ("employee_id", "client", 1)


async def test_a_json_body_is_masked_with_a_correct_content_length() -> None:
    records: list[Event] = []
    g = guard(settings(), records)
    sink = Collected()
    assert g.start(JSON_HEAD) is None  # the head waits for the body
    await g.feed(json.dumps({"choices": [{"message": {"content": f"see {EMPLOYEE}"}}]}).encode(), sink)
    await g.finish(sink)
    (head,) = sink.heads
    lengths = [v for n, v in head.headers if n.lower() == b"content-length"]
    assert lengths == [str(len(sink.body)).encode()]
    assert json.loads(sink.body)["choices"][0]["message"]["content"] == "see [MASKED:employee_id]"
    assert [r.scope for r in records if isinstance(r, MaskingApplied)] == ["client"]


async def test_a_gzip_body_is_read_and_sent_plain() -> None:
    g = guard(settings(), [])
    sink = Collected()
    coded = msgspec.structs.replace(JSON_HEAD, headers=[*JSON_HEAD.headers, (b"Content-Encoding", b"gzip")])
    assert g.start(coded) is None
    await g.feed(gzip.compress(json.dumps({"text": EMPLOYEE}).encode()), sink)
    await g.finish(sink)
    assert json.loads(sink.body) == {"text": "[MASKED:employee_id]"}
    assert not any(n.lower() == b"content-encoding" for n, _ in sink.heads[0].headers)


def test_an_unreadable_coding_is_refused() -> None:
    g = guard(settings(), [])
    with pytest.raises(Uninspectable, match="br"):
        g.start(msgspec.structs.replace(SSE_HEAD, headers=[*SSE_HEAD.headers, (b"Content-Encoding", b"br")]))


async def test_client_rules_follow_the_callers_groups() -> None:
    config = settings(client_for=["interns"])
    assert config.applies(INTERNS, b"POST")
    assert not config.applies(ANONYMOUS, b"POST")  # no approval rule, no client rule: the fast path
    assert not config.applies(INTERNS, b"GET")
    sink = Collected()
    g = guard(config, [], INTERNS)
    g.start(SSE_HEAD)
    await g.feed(sse(EMPLOYEE), sink)
    await g.finish(sink)
    assert b"[MASKED:employee_id]" in sink.body
