"""The approvals API over real sockets: who may list and decide, what a decision does to the held call,
the registry's refusals as answers, and the audit frame of every call."""

from __future__ import annotations

import json
import time

import pytest

from gateway.approvals.registry import APPROVED, DENIED
from parsers.events import Identity
from tests.gateway.console.conftest import APPROVER_KEY, DBA_KEY, DEVELOPER_KEY, Console, bearer
from tests.gateway.holding import holding, make_hold

pytestmark = pytest.mark.asyncio(loop_scope="module")

ERIN = Identity(subject="erin-approver", method="api-key", groups=("approvers",))


def decision(sha: str, comment: str = "") -> dict[str, str]:
    return {"arguments_sha256": sha, "comment": comment}


async def test_who_may_list_and_decide(console: Console) -> None:
    async with holding(console.gateway.holds) as held:
        hold = await held.hold(make_hold())
        approver, developer = bearer(APPROVER_KEY), bearer(DEVELOPER_KEY)
        for path in ("/api/approvals", f"/api/approvals/{hold.hold_id}"):
            assert (await console.admin.get(path)).status_code == 401
            forbidden = await console.admin.get(path, headers=developer)
            assert forbidden.status_code == 403
            assert (
                forbidden.json()["detail"]
                == "'dave-developer' is not in a group with the approver or auditor role"
            )
            assert (await console.admin.get(path, headers=approver)).status_code == 200
            assert (await console.admin.get(path, headers=console.auditor)).status_code == 200
        body = decision(hold.arguments_sha256)
        for verb in ("approve", "deny"):
            path = f"/api/approvals/{hold.hold_id}/{verb}"
            assert (await console.admin.post(path, json=body)).status_code == 401
            assert (
                await console.admin.post(path, json=body, headers=bearer("wg_" + "b" * 52))
            ).status_code == 401
            # Reading everything recorded is not deciding: auditors and developers are refused.
            for headers in (console.auditor, developer):
                refused = await console.admin.post(path, json=body, headers=headers)
                assert refused.status_code == 403, refused.text
                assert refused.json()["error"] == "forbidden"
            assert (await console.admin.get(path, headers=approver)).status_code == 405
        assert not held.decided(hold)
        [listed] = (await console.admin.get("/api/approvals", headers=approver)).json()["items"]
        assert listed["hold_id"] == hold.hold_id


async def test_approve_releases_the_call_and_is_recorded(console: Console) -> None:
    async with holding(console.gateway.holds) as held:
        hold = await held.hold(make_hold(context="<script>alert(1)</script> tidy up"))
        page = (await console.admin.get("/api/approvals", headers=bearer(APPROVER_KEY))).json()
        [shown] = page["items"]
        assert shown["tool_name"] == "shell"
        assert shown["arguments"] == hold.arguments
        assert shown["requested_by"] == {
            "subject": "dave-developer",
            "method": "api-key",
            "groups": ["developers"],
        }
        assert shown["context"][-1] == {"role": "user", "content": "<script>alert(1)</script> tidy up"}
        answer = await console.admin.post(
            f"/api/approvals/{hold.hold_id}/approve",
            json=decision(shown["arguments_sha256"], "checked the target"),
            headers=bearer(APPROVER_KEY),
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["hold_id"] == hold.hold_id
        got = await held.decision(hold)  # the held request's waiter woke with the decision
        assert (got.verdict, got.approver, got.comment) == (APPROVED, ERIN, "checked the target")
        frame = console.audit_frames()[-1]  # on disk before the answer
        assert (frame.action, frame.target, frame.identity) == ("approve", hold.hold_id, ERIN)
        assert json.loads(frame.query) == decision(hold.arguments_sha256, "checked the target")
        # Decided once: the hold is gone.
        again = await console.admin.post(
            f"/api/approvals/{hold.hold_id}/deny",
            json=decision(hold.arguments_sha256),
            headers=bearer(APPROVER_KEY),
        )
        assert again.status_code == 404
        assert again.json()["error"] == "not_found"
        assert (await console.admin.get("/api/approvals", headers=bearer(APPROVER_KEY))).json() == {
            "items": []
        }
        assert (
            await console.admin.get(f"/api/approvals/{hold.hold_id}", headers=console.auditor)
        ).status_code == 404
    actions = [(a.action, a.identity.subject) for a in console.audit_frames()[-5:]]
    assert actions == [
        ("list_approvals", "erin-approver"),
        ("approve", "erin-approver"),
        ("deny", "erin-approver"),
        ("list_approvals", "erin-approver"),
        ("view_approval", "alice-auditor"),
    ]


async def test_refusals_leave_the_call_held(console: Console) -> None:
    async with holding(console.gateway.holds) as held:
        own = await held.hold(make_hold(requested_by=ERIN))
        other = await held.hold(make_hold(approver_groups=("dba",)))
        approver = bearer(APPROVER_KEY)
        cases = [
            (own, "approve", decision(own.arguments_sha256), 403, "own request"),
            (other, "approve", decision(other.arguments_sha256), 403, "not in an approver group"),
            (own, "deny", decision("f" * 64), 409, "digest"),
            (own, "approve", decision("F" * 64 + "0"), 400, "arguments_sha256"),
            (own, "approve", {"comment": "no digest"}, 400, "arguments_sha256"),
            (own, "approve", {**decision(own.arguments_sha256), "approve": True}, 400, "approve"),
            (own, "approve", decision(own.arguments_sha256, "x" * 2001), 400, "comment"),
        ]
        for hold, verb, body, status, words in cases:
            answer = await console.admin.post(
                f"/api/approvals/{hold.hold_id}/{verb}", json=body, headers=approver
            )
            assert answer.status_code == status, (verb, body, answer.text)
            assert words in answer.json()["detail"]
        huge = await console.admin.post(
            f"/api/approvals/{own.hold_id}/approve", content=b"[" * 20_000, headers=approver
        )
        assert huge.status_code == 413
        unknown = await console.admin.post(
            "/api/approvals/h_unknown/approve", json=decision(own.arguments_sha256), headers=approver
        )
        assert unknown.status_code == 404
        assert not held.decided(own)
        assert not held.decided(other)
        # A requester may always refuse their own call (the agent's user says no).
        denied = await console.admin.post(
            f"/api/approvals/{own.hold_id}/deny",
            json=decision(own.arguments_sha256, "not now"),
            headers=approver,
        )
        assert denied.status_code == 200
        assert (await held.decision(own)).verdict == DENIED
        still = (await console.admin.get("/api/approvals", headers=approver)).json()["items"]
        assert [h["hold_id"] for h in still] == [other.hold_id]
        assert other.expires_at_ns > time.time_ns()


async def test_a_rules_own_approver_group_decides_its_holds_only(console: Console) -> None:
    """dana is in no admin approver group, only in the approver group of a rule."""
    dba = bearer(DBA_KEY)
    async with holding(console.gateway.holds) as held:
        theirs = await held.hold(make_hold(approver_groups=("dba",)))
        others = await held.hold(make_hold(approver_groups=("approvers",)))
        listed = (await console.admin.get("/api/approvals", headers=dba)).json()["items"]
        assert {h["hold_id"] for h in listed} == {theirs.hold_id, others.hold_id}
        refused = await console.admin.post(
            f"/api/approvals/{others.hold_id}/approve", json=decision(others.arguments_sha256), headers=dba
        )
        assert refused.status_code == 403
        assert "not in an approver group of this hold (approvers)" in refused.json()["detail"]
        approved = await console.admin.post(
            f"/api/approvals/{theirs.hold_id}/approve", json=decision(theirs.arguments_sha256), headers=dba
        )
        assert approved.status_code == 200
        assert (await held.decision(theirs)).approver.subject == "dana-dba"
        assert not held.decided(others)
