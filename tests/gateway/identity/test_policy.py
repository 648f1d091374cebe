"""Policy decisions: groups and users, path/method/model globs, limits, deny wins, default-deny."""

from __future__ import annotations

import pytest

from gateway.config import PolicyRule
from gateway.identity.policy import DEFAULT_DENY, NORMAL_FORM, UNCHECKABLE, Policy, RequestFacts
from parsers.events import ANONYMOUS, Identity, RequestHead

DEV = Identity(subject="alice", method="oidc", email="alice@example.test", groups=("dev",))
OPS = Identity(subject="bob", method="oidc", groups=("ops",))
CI = Identity(subject="ci-bot", method="api-key", groups=("ci",))

RULES = [
    PolicyRule(name="read-models", methods=["GET"], paths=["/v1/models", "/v1/models/*"]),
    PolicyRule(
        name="dev-chat", groups=["dev"], paths=["/v1/chat/*"], methods=["POST"], models=["mock-*", "gpt-4o*"]
    ),
    PolicyRule(name="ops-anything", groups=["ops"], max_body_bytes=1000, max_tokens=64),
    PolicyRule(name="no-gpt4-for-ops", effect="deny", groups=["ops"], models=["gpt-4*"]),
    PolicyRule(name="bob-no-embeddings", effect="deny", users=["bob"], paths=["/v1/embeddings"]),
    PolicyRule(name="ci-embeddings", users=["ci-bot"], paths=["/v1/embeddings"], methods=["POST"]),
]
POLICY = Policy(RULES, enforcing=True)


def facts(method: str, target: str, body: bytes | None = None, **headers: str) -> RequestFacts:
    head = RequestHead(
        method=method.encode(),
        target=target.encode(),
        headers=[(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
    )
    return RequestFacts.of(head, body)


@pytest.mark.parametrize(
    ("who", "request_facts", "allowed", "rule"),
    [
        (DEV, facts("GET", "/v1/models"), True, "read-models"),
        (ANONYMOUS, facts("GET", "/v1/models/mock-gpt?x=1"), True, "read-models"),
        (DEV, facts("POST", "/v1/chat/completions", b'{"model":"mock-gpt"}'), True, "dev-chat"),
        (DEV, facts("POST", "/v1/chat/completions", b'{"model":"o1"}'), False, DEFAULT_DENY),
        (DEV, facts("POST", "/v1/chat/completions", b"not json"), False, DEFAULT_DENY),
        (DEV, facts("POST", "/v1/embeddings", b'{"model":"mock-gpt"}'), False, DEFAULT_DENY),
        (DEV, facts("DELETE", "/v1/chat/completions"), False, DEFAULT_DENY),
        (OPS, facts("POST", "/v1/chat/completions", b'{"model":"o1","max_tokens":64}'), True, "ops-anything"),
        (
            OPS,
            facts("POST", "/v1/chat/completions", b'{"model":"gpt-4o","max_tokens":9}'),
            False,
            "no-gpt4-for-ops",
        ),
        (
            OPS,
            facts("POST", "/v1/chat/completions", b'{"model":"o1","max_tokens":65}'),
            False,
            "ops-anything",
        ),
        (
            OPS,
            facts("POST", "/v1/responses", b'{"model":"o1","max_output_tokens":99}'),
            False,
            "ops-anything",
        ),
        (OPS, facts("POST", "/v1/chat/completions", b'{"model":"o1"}'), False, "ops-anything"),
        (OPS, facts("POST", "/v1/files", b"x" * 1001), False, "ops-anything"),
        (OPS, facts("POST", "/v1/embeddings", b'{"model":"e"}'), False, "bob-no-embeddings"),
        (CI, facts("POST", "/v1/embeddings", b'{"model":"e"}'), True, "ci-embeddings"),
        (CI, facts("POST", "/v1/chat/completions", b'{"model":"mock-gpt"}'), False, DEFAULT_DENY),
        (DEV, facts("GET", "/v1/./models"), False, NORMAL_FORM),
        (DEV, facts("GET", "/v1/%6dodels"), False, NORMAL_FORM),
        (DEV, facts("GET", "//v1/models"), False, NORMAL_FORM),
        (DEV, facts("GET", "http://x/v1/models"), False, NORMAL_FORM),
        (
            OPS,
            facts("POST", "/v1/chat/completions", b"\x1f\x8b...", content_encoding="gzip"),
            False,
            UNCHECKABLE,
        ),
    ],
)
def test_decisions(who: Identity, request_facts: RequestFacts, allowed: bool, rule: str) -> None:
    decision = POLICY.decide(who, request_facts)
    assert (decision.allowed, decision.rule) == (allowed, rule), decision.reason


def test_deny_wins_whatever_the_order() -> None:
    rules = [
        PolicyRule(name="deny-chat", effect="deny", paths=["/v1/chat/*"]),
        PolicyRule(name="allow-all"),
    ]
    for ordered in (rules, rules[::-1]):
        decision = Policy(ordered, enforcing=True).decide(DEV, facts("POST", "/v1/chat/completions", b"{}"))
        assert (decision.allowed, decision.rule) == (False, "deny-chat")


def test_users_match_by_subject_or_email_but_never_anonymous() -> None:
    rule = PolicyRule(name="alice", users=["alice@example.test"])
    assert Policy([rule], enforcing=True).decide(DEV, facts("GET", "/v1/models")).allowed
    rule = PolicyRule(name="anon", users=["anonymous"])
    assert not Policy([rule], enforcing=True).decide(ANONYMOUS, facts("GET", "/v1/models")).allowed


def test_the_body_is_needed_only_where_a_rule_looks_at_it() -> None:
    assert POLICY.needs_body(DEV, facts("POST", "/v1/chat/completions"))
    assert not POLICY.needs_body(DEV, facts("GET", "/v1/models"))
    assert not POLICY.needs_body(CI, facts("POST", "/v1/embeddings"))


def test_without_rules_or_auth_nothing_is_enforced() -> None:
    decision = Policy([], enforcing=False).decide(ANONYMOUS, facts("POST", "/anything/../x"))
    assert decision.allowed
    assert decision.rule == ""
