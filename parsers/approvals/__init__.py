"""Approvals of tool calls, sans-IO: rules, finding tool calls in responses, holding and replacing them.

Nothing here waits or reads the clock: the gateway decides when a held call is released or denied.
"""

from parsers.approvals.rules import ApprovalRule, first_match

__all__ = ["ApprovalRule", "first_match"]
