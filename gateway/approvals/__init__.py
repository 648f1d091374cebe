"""Approvals of tool calls: the ``[approvals]`` config and the registry of held calls.

The data path holds calls (``gateway.approvals.holding``); the admin API decides them through the
registry. Decisions and holds are recorded frames (``ApprovalRequested``, ``ApprovalDecided``).
"""

from gateway.approvals.config import ApprovalRuleConfig, ApprovalsConfig, ApprovalsConfigError, compile_rules
from gateway.approvals.registry import (
    APPROVED,
    DENIED,
    EXPIRED,
    FAILED,
    Decision,
    DecisionRefused,
    HoldRegistry,
    PendingHold,
    arguments_digest,
)

__all__ = [
    "APPROVED",
    "DENIED",
    "EXPIRED",
    "FAILED",
    "ApprovalRuleConfig",
    "ApprovalsConfig",
    "ApprovalsConfigError",
    "Decision",
    "DecisionRefused",
    "HoldRegistry",
    "PendingHold",
    "arguments_digest",
    "compile_rules",
]
