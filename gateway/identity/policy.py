"""What a caller may do: the ``[[policy.rules]]`` of the config, evaluated per request. Pure: no I/O.

``Policy.decide(identity, facts) -> Decision``. A rule applies to callers in its ``groups`` or ``users``
(neither: everyone); it matches a request whose path, method and model each match one of its globs
(an empty list matches anything). A matching deny rule denies; otherwise a matching allow rule within
its limits allows; otherwise the request is denied by ``default-deny`` (when the policy is enforcing:
authentication or any rule configured). Deny always wins, whatever the rule order.

A path that is not in plain normal form (``%``-escapes, dot segments, ``//``, backslashes) is denied
outright: the upstream may read it differently from the globs, so it could slip past a deny rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import msgspec

from gateway.config import PolicyRule
from parsers.events import Identity, RequestHead
from parsers.openai import detect_api

DEFAULT_DENY = "default-deny"
NORMAL_FORM = "path-normal-form"
UNCHECKABLE = "uncheckable-body"
# Where max_tokens bounds the output (an embeddings request has none).
_GENERATING_APIS = frozenset({"chat.completions", "completions", "responses"})
_TOKEN_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


@dataclass(frozen=True)
class RequestFacts:
    """What the policy looks at. ``model`` and ``max_tokens`` come from the JSON body, once it is read."""

    method: str
    path: str  # the target without its query
    api: str = ""  # parsers.openai.detect_api: chat.completions | completions | responses | embeddings | ""
    body_read: bool = False
    body_bytes: int = 0
    model: str | None = None
    max_tokens: int | None = None
    compressed: bool = False  # a Content-Encoding the policy cannot look into

    @classmethod
    def of(cls, head: RequestHead, body: bytes | None = None) -> RequestFacts:
        """Facts from a request head and, when it was read, its whole body."""
        path = head.target.partition(b"?")[0].decode("latin-1")
        api = detect_api(head.method, head.target)
        compressed = any(
            name.lower() == b"content-encoding" and value.strip().lower() not in (b"", b"identity")
            for name, value in head.headers
        )
        if body is None:
            return cls(method=head.method.decode("latin-1"), path=path, api=api, compressed=compressed)
        model, max_tokens = (None, None) if compressed else _model_and_max_tokens(body)
        return cls(
            method=head.method.decode("latin-1"),
            path=path,
            api=api,
            body_read=True,
            body_bytes=len(body),
            model=model,
            max_tokens=max_tokens,
            compressed=compressed,
        )


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str  # the rule that decided; DEFAULT_DENY or NORMAL_FORM; "" when no policy is enforced
    reason: str


def _model_and_max_tokens(body: bytes) -> tuple[str | None, int | None]:
    try:
        value: Any = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None, None
    if not isinstance(value, dict):
        return None, None
    model = value.get("model")
    limits = [value.get(name) for name in _TOKEN_FIELDS]
    numbers = [n for n in limits if isinstance(n, int) and not isinstance(n, bool)]
    return (model if isinstance(model, str) else None), (max(numbers) if numbers else None)


def _in_normal_form(path: str) -> bool:
    if not path.startswith("/") or "%" in path or "\\" in path or "//" in path:
        return False
    return not any(segment in (".", "..") for segment in path.split("/"))


def _any(patterns: Sequence[str], value: str | None) -> bool:
    if not patterns:
        return True
    return value is not None and any(fnmatchcase(value, pattern) for pattern in patterns)


class Policy:
    """The configured rules. ``enforcing``: a request no rule allows is denied (``default-deny``)."""

    def __init__(self, rules: Sequence[PolicyRule], *, enforcing: bool) -> None:
        self.rules = tuple(rules)
        self.enforcing = enforcing

    def applies(self, rule: PolicyRule, identity: Identity) -> bool:
        if not rule.groups and not rule.users:
            return True
        if identity.method != "none" and (
            identity.subject in rule.users or (identity.email and identity.email in rule.users)
        ):
            return True
        return any(group in rule.groups for group in identity.groups)

    def needs_body(self, identity: Identity, facts: RequestFacts) -> bool:
        """Whether a rule that could decide this request looks at the body (model or a limit)."""
        return any(
            self.applies(rule, identity)
            and _any(rule.paths, facts.path)
            and _any(rule.methods, facts.method)
            and (rule.models or rule.max_body_bytes or rule.max_tokens)
            for rule in self.rules
        )

    def decide(self, identity: Identity, facts: RequestFacts) -> Decision:
        """The verdict on one request (``facts`` with its body, if ``needs_body`` said so)."""
        if not self.enforcing:
            return Decision(True, "", "no policy configured")
        if not _in_normal_form(facts.path):
            return Decision(False, NORMAL_FORM, "request path is not in plain normal form")
        candidates = [
            rule
            for rule in self.rules
            if self.applies(rule, identity)
            and _any(rule.paths, facts.path)
            and _any(rule.methods, facts.method)
        ]
        if facts.compressed and any(rule.models for rule in candidates):
            # The model is behind a Content-Encoding: a deny rule on it could not see it.
            return Decision(False, UNCHECKABLE, "a compressed request body cannot be checked for its model")
        matching = [rule for rule in candidates if _any(rule.models, facts.model)]
        for rule in matching:
            if rule.effect == "deny":
                return Decision(False, rule.name, "the request matches a deny rule")
        over_limit: Decision | None = None
        for rule in matching:
            problem = self._over_limit(rule, facts)
            if problem is None:
                return Decision(True, rule.name, f"allowed by rule {rule.name}")
            over_limit = over_limit or Decision(False, rule.name, problem)
        if over_limit is not None:
            return over_limit
        return Decision(False, DEFAULT_DENY, "no rule allows this request")

    def _over_limit(self, rule: PolicyRule, facts: RequestFacts) -> str | None:
        if rule.max_body_bytes and facts.body_bytes > rule.max_body_bytes:
            return f"request body of {facts.body_bytes} bytes exceeds {rule.max_body_bytes} ({rule.name})"
        if rule.max_tokens and facts.api in _GENERATING_APIS:
            if facts.max_tokens is None:
                return f"max_tokens must be set, at most {rule.max_tokens} ({rule.name})"
            if facts.max_tokens > rule.max_tokens:
                return f"max_tokens {facts.max_tokens} exceeds {rule.max_tokens} ({rule.name})"
        return None


__all__ = ["DEFAULT_DENY", "NORMAL_FORM", "UNCHECKABLE", "Decision", "Policy", "RequestFacts"]
