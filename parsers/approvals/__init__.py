"""Approvals of tool calls, sans-IO: rules, finding tool calls in responses, holding and replacing them.

Nothing here waits or reads the clock: the gateway decides when a held call is released or denied.
"""

from parsers.approvals.calls import ToolCallSeen, body_tool_calls, denied_body
from parsers.approvals.rules import ApprovalRule, first_match
from parsers.approvals.stream import StreamGate

__all__ = ["ApprovalRule", "StreamGate", "ToolCallSeen", "body_tool_calls", "denied_body", "first_match"]
