"""Masking of secrets and personal data, sans-IO: detectors, the streaming scan, and body maskers.

Nothing here does I/O or logs; no raw matched text ever goes into an exception message.
"""

from parsers.masking.bodies import BodyMasker, Hit, JsonMasker, TextMasker, mask_body
from parsers.masking.detectors import BUILTIN, DEFAULT_TEMPLATE, Rule, RuleError, custom_rule, select
from parsers.masking.engine import DEFAULT_MAX_HOLD_CHARS, Edit, StreamMasker, mask_text
from parsers.masking.sse import SseMasker

__all__ = [
    "BUILTIN",
    "DEFAULT_MAX_HOLD_CHARS",
    "DEFAULT_TEMPLATE",
    "BodyMasker",
    "Edit",
    "Hit",
    "JsonMasker",
    "Rule",
    "RuleError",
    "SseMasker",
    "StreamMasker",
    "TextMasker",
    "custom_rule",
    "mask_body",
    "mask_text",
    "select",
]
