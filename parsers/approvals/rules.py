"""Approval rules, compiled: which tool calls (and which requests) need a human decision.

Pure matching only. Which rules apply to a request (its caller's groups) and what happens to a held call
is the gateway's business (``gateway.approvals``).
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

import msgspec


class ApprovalRule(msgspec.Struct, frozen=True, kw_only=True):
    """One ``[[approvals.rules]]`` entry with its patterns compiled and its approver groups resolved."""

    name: str
    tool: str  # fnmatch glob over the function name, case-sensitive
    arguments: re.Pattern[str] | None  # searched in the arguments JSON text; None matches every call
    request: re.Pattern[str] | None  # searched in the request's user content; None: not a condition
    groups: frozenset[str]  # requesting groups it applies to; empty: everyone
    approver_groups: tuple[str, ...]  # who may decide
    timeout_s: float

    def applies_to(self, groups: tuple[str, ...] | frozenset[str], request_text: str) -> bool:
        """Whether this rule watches a request from a caller in ``groups`` with this user content."""
        if self.groups and self.groups.isdisjoint(groups):
            return False
        return self.request is None or self.request.search(request_text) is not None

    def could_match(self, tool_name: str) -> bool:
        """A call to ``tool_name`` may need approval (its arguments decide once complete)."""
        return fnmatchcase(tool_name, self.tool)

    def matches(self, tool_name: str, arguments: str) -> bool:
        if not self.could_match(tool_name):
            return False
        return self.arguments is None or self.arguments.search(arguments) is not None


def first_match(rules: tuple[ApprovalRule, ...], tool_name: str, arguments: str) -> ApprovalRule | None:
    """The first rule (in config order) that holds this call, or None to let it pass."""
    for rule in rules:
        if rule.matches(tool_name, arguments):
            return rule
    return None


__all__ = ["ApprovalRule", "first_match"]
