"""MaskingPlan: the global rules per scope, per-group overrides on top, computed once per group set."""

from __future__ import annotations

import msgspec
import pytest

from gateway.config import Config, ConfigError, validate
from gateway.masking import CustomRuleConfig, MaskingConfig, MaskingOverride, MaskingPlan
from parsers.events import ANONYMOUS, Identity
from parsers.masking import BUILTIN

EMPLOYEE = CustomRuleConfig(name="employee_id", pattern="EMP[0-9]{6}", scopes=[])
CONFIG = MaskingConfig(
    scopes={"email": ["record", "upstream"]},
    rules=[EMPLOYEE],
    overrides=[
        MaskingOverride(groups=["contractors"], scopes=["upstream"], enable=["card_number", "employee_id"]),
        MaskingOverride(groups=["security"], scopes=["upstream"], disable=["*"]),
    ],
)


def names(rules: tuple[object, ...]) -> list[str]:
    return [rule.name for rule in rules]  # type: ignore[attr-defined]


def caller(*groups: str) -> Identity:
    return Identity(subject="u", method="api-key", groups=groups)


def test_callers_without_overridden_groups_get_the_global_rules() -> None:
    plan = MaskingPlan(CONFIG)
    for identity in (ANONYMOUS, caller("developers")):
        rules = plan.for_identity(identity)
        assert names(rules.record) == list(BUILTIN)
        assert names(rules.upstream) == ["email"]
        assert rules.client == ()


def test_a_group_override_adds_rules_in_catalog_order() -> None:
    rules = MaskingPlan(CONFIG).for_identity(caller("developers", "contractors"))
    assert names(rules.upstream) == ["email", "card_number", "employee_id"]
    assert names(rules.record) == list(BUILTIN)  # the record scope is the same for everyone


def test_disable_star_and_later_overrides_win() -> None:
    plan = MaskingPlan(CONFIG)
    assert plan.for_identity(caller("security")).upstream == ()
    assert plan.for_identity(caller("contractors", "security")).upstream == ()  # security comes later


def test_one_computation_per_distinct_overridden_group_set() -> None:
    plan = MaskingPlan(CONFIG)
    first = plan.for_identity(caller("contractors", "a"))
    assert plan.for_identity(caller("b", "contractors")) is first  # groups no override names do not count
    assert plan.for_identity(caller("x")) is plan.default


def test_disabled_globally_masks_nothing() -> None:
    plan = MaskingPlan(msgspec.structs.replace(CONFIG, enabled=False))
    assert plan.for_identity(caller("contractors")) == plan.default == ((), (), ())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (MaskingOverride(groups=[], scopes=["upstream"], enable=["email"]), r"overrides\[0\].groups"),
        (MaskingOverride(groups=["g"], scopes=[], enable=["email"]), r"overrides\[0\].scopes: name"),
        (MaskingOverride(groups=["g"], scopes=["record"], enable=["email"]), "'record' cannot differ"),
        (MaskingOverride(groups=["g"], scopes=["logs"], enable=["email"]), "unknown scope 'logs'"),
        (MaskingOverride(groups=["g"], scopes=["upstream"]), "enable or disable at least one"),
        (MaskingOverride(groups=["g"], scopes=["upstream"], enable=["mail"]), r"enable: unknown rule 'mail'"),
    ],
)
def test_bad_override_names_the_field(override: MaskingOverride, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(Config(masking=MaskingConfig(overrides=[override])))


def test_duplicate_custom_rule_names_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"masking.rules\[1\]: rule name 'employee_id' is taken"):
        validate(Config(masking=MaskingConfig(rules=[EMPLOYEE, EMPLOYEE])))
