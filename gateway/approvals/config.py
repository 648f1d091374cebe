"""``[approvals]``: which tool calls in responses are held for a human decision, and who decides.

Only configuration and its validation; the compiled rules are ``parsers.approvals.ApprovalRule``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec

from parsers.approvals import ApprovalRule


class ApprovalRuleConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``[[approvals.rules]]``: a tool call whose name matches ``tool`` and arguments match ``arguments``."""

    name: str
    tool: str = "*"  # fnmatch glob over the function name ("shell", "k8s_*")
    arguments: str = ""  # regex searched in the arguments JSON text; "" matches every call of the tool
    request: str = ""  # regex over the request's user content; "" is not a condition
    groups: list[str] = []  # requesting groups it applies to; empty: everyone
    approver_groups: list[str] = []  # who may decide; empty: the admin approver_groups
    timeout_s: float = 300.0  # no decision by then denies


class ApprovalsConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    keepalive_s: float = 10.0  # an SSE comment this often while a stream waits for a decision
    rules: list[ApprovalRuleConfig] = []


class ApprovalsConfigError(ValueError):
    """An approvals setting that cannot work; the message names the field (``approvals.rules[0].tool``)."""


def _pattern(value: str, field: str) -> re.Pattern[str] | None:
    if not value:
        return None
    try:
        return re.compile(value)
    except re.error as exc:
        raise ApprovalsConfigError(f"{field}: not a valid regular expression: {exc}") from None


def compile_rules(config: ApprovalsConfig, default_approvers: Sequence[str]) -> tuple[ApprovalRule, ...]:
    """The rules in config order, approver groups resolved.

    Raises:
        ApprovalsConfigError: a bad pattern, a duplicate or empty name, a non-positive timeout, no approvers.
    """
    if config.keepalive_s <= 0:
        raise ApprovalsConfigError("approvals.keepalive_s: must be positive")
    seen: set[str] = set()
    out: list[ApprovalRule] = []
    for i, rule in enumerate(config.rules):
        field = f"approvals.rules[{i}]"
        if not rule.name:
            raise ApprovalsConfigError(f"{field}.name: must not be empty")
        if rule.name in seen:
            raise ApprovalsConfigError(f"{field}.name: {rule.name!r} appears twice")
        seen.add(rule.name)
        if not rule.tool:
            raise ApprovalsConfigError(f'{field}.tool: must not be empty ("*" matches every tool)')
        if rule.timeout_s <= 0:
            raise ApprovalsConfigError(f"{field}.timeout_s: must be positive")
        approvers = tuple(rule.approver_groups or default_approvers)
        if not approvers or not all(approvers):
            raise ApprovalsConfigError(f"{field}.approver_groups: nobody could decide (no approver group)")
        out.append(
            ApprovalRule(
                name=rule.name,
                tool=rule.tool,
                arguments=_pattern(rule.arguments, f"{field}.arguments"),
                request=_pattern(rule.request, f"{field}.request"),
                groups=frozenset(rule.groups),
                approver_groups=approvers,
                timeout_s=rule.timeout_s,
            )
        )
    return tuple(out)


__all__ = ["ApprovalRuleConfig", "ApprovalsConfig", "ApprovalsConfigError", "compile_rules"]
