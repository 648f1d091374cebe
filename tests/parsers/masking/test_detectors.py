"""Each built-in detector against what it must find and what it must leave alone."""

from __future__ import annotations

import pytest

from parsers.masking import BUILTIN, RuleError, custom_rule, mask_text, select
from parsers.masking.detectors import iban_valid, luhn_valid
from tests.parsers.masking.fixtures import NEAR_MISSES, TRUE_POSITIVES

RULES = select()


@pytest.mark.parametrize(("rule", "text", "secret"), TRUE_POSITIVES)
def test_detector_finds_its_secret(rule: str, text: str, secret: str) -> None:
    masked, edits = mask_text(RULES, text)
    assert secret not in masked
    assert f"[MASKED:{rule}]" in masked
    assert [edit.rule for edit in edits] == [rule]


@pytest.mark.parametrize(("rule", "text", "secret"), TRUE_POSITIVES)
def test_detector_alone_finds_its_secret(rule: str, text: str, secret: str) -> None:
    masked, _ = mask_text([BUILTIN[rule]], text)
    assert secret not in masked


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_near_misses_are_left_alone(text: str) -> None:
    assert mask_text(RULES, text) == (text, [])


def test_only_the_secret_part_is_replaced() -> None:
    masked, _ = mask_text(RULES, "postgres://app:pw1@db:5432/x and aws_secret_key=" + "A" * 40)
    assert masked == (
        "postgres://app:[MASKED:connection_string_password]@db:5432/x"
        " and aws_secret_key=[MASKED:aws_secret_key]"
    )


def test_checksums() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("5500-0000-0000-0004")
    assert not luhn_valid("4111111111111112")
    assert not luhn_valid("411111111111")  # too short
    assert iban_valid("DE89370400440532013000")
    assert iban_valid("gb82 west 1234 5698 7654 32")
    assert not iban_valid("DE89370400440532013001")
    assert not iban_valid("XX89370400440532013000")


def test_card_next_to_other_digits() -> None:
    masked, _ = mask_text(RULES, "ref 12 4111111111111111 end")
    assert masked == "ref 12 [MASKED:card_number] end"


def test_custom_rule_with_template() -> None:
    rule = custom_rule("ticket", r"TICKET-(?P<n>[0-9]{4})", r"[TICKET-\g<n>:{rule}]")
    assert mask_text([rule], "see TICKET-1234.")[0] == "see [TICKET-1234:ticket]."
    assert mask_text([custom_rule("employee", "EMP[0-9]{6}")], "EMP123456")[0] == "[MASKED:employee]"


@pytest.mark.parametrize(
    ("name", "pattern", "template", "problem"),
    [
        ("Bad-Name", "x", "[MASKED:{rule}]", "lowercase"),
        ("email", "x", "[MASKED:{rule}]", "built-in"),
        ("broken", "(", "[MASKED:{rule}]", "does not compile"),
        ("empty", "a*", "[MASKED:{rule}]", "empty string"),
        ("groups", "a", r"\g<nope>", "template"),
    ],
)
def test_bad_custom_rules(name: str, pattern: str, template: str, problem: str) -> None:
    with pytest.raises(RuleError, match=problem):
        custom_rule(name, pattern, template)


def test_select_by_name() -> None:
    assert [r.name for r in select(["email", "jwt"])] == ["email", "jwt"]
    assert "email" not in [r.name for r in select(disabled=["email"])]
    with pytest.raises(RuleError, match="unknown detector 'emails'"):
        select(disabled=["emails"])


@pytest.mark.parametrize(("rule", "text", "secret"), TRUE_POSITIVES)
def test_leads_admit_every_match(rule: str, text: str, secret: str) -> None:
    detector = BUILTIN[rule]
    match = detector.pattern.search(text)
    assert match is not None
    for lead in (detector.starts, detector.anchors):
        assert lead is not None
        hit = lead.search(text, match.start())
        assert hit is not None
        assert hit.start() <= match.start() + detector.back
