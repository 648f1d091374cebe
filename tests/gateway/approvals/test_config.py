"""``[approvals]`` in the config file: compiled in order, bad fields named."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from gateway.approvals import ApprovalsConfig, ApprovalsConfigError, compile_rules
from gateway.config import ConfigError, load, validate

EXAMPLE = """
[admin]
approver_groups = ["sre"]

[approvals]
keepalive_s = 5

[[approvals.rules]]
name = "shell-destructive"
tool = "shell"
arguments = 'rm\\s+-rf|mkfs|dd\\s+of='
groups = ["agents"]

[[approvals.rules]]
name = "terraform-destroy"
tool = "*terraform*"
arguments = "destroy"
approver_groups = ["platform"]
timeout_s = 60
"""


def test_rules_compile_in_order_with_default_approvers(tmp_path: Path) -> None:
    path = tmp_path / "wardgate.toml"
    path.write_text(EXAMPLE)
    config = validate(load(path))
    rules = compile_rules(config.approvals, config.admin.approver_groups)
    assert [rule.name for rule in rules] == ["shell-destructive", "terraform-destroy"]
    shell, terraform = rules
    assert shell.approver_groups == ("sre",)
    assert terraform.approver_groups == ("platform",)
    assert terraform.timeout_s == 60
    assert shell.matches("shell", '{"command": "rm -rf /"}')
    assert not shell.matches("shell", '{"command": "ls"}')
    assert not shell.matches("bash", '{"command": "rm -rf /"}')
    assert terraform.matches("run_terraform", '{"args": "destroy -auto-approve"}')
    assert shell.applies_to(("agents",), "")
    assert not shell.applies_to(("humans",), "")
    assert terraform.applies_to((), "")


def test_request_pattern_is_a_condition() -> None:
    approvals = msgspec.convert(
        {"rules": [{"name": "prod", "tool": "*", "request": "(?i)production"}]}, ApprovalsConfig
    )
    (rule,) = compile_rules(approvals, ["approvers"])
    assert rule.applies_to((), "deploy to Production now")
    assert not rule.applies_to((), "deploy to staging")


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ('[[approvals.rules]]\nname = "a"\narguments = "("', "approvals.rules[0].arguments"),
        ('[[approvals.rules]]\nname = "a"\nrequest = "[x"', "approvals.rules[0].request"),
        ('[[approvals.rules]]\nname = "a"\n[[approvals.rules]]\nname = "a"', "approvals.rules[1].name"),
        ('[[approvals.rules]]\nname = ""', "approvals.rules[0].name"),
        ('[[approvals.rules]]\nname = "a"\ntool = ""', "approvals.rules[0].tool"),
        ('[[approvals.rules]]\nname = "a"\ntimeout_s = 0', "approvals.rules[0].timeout_s"),
        ("[approvals]\nkeepalive_s = 0", "approvals.keepalive_s"),
        (
            '[admin]\napprover_groups = []\n[[approvals.rules]]\nname = "a"',
            "approvals.rules[0].approver_groups",
        ),
    ],
)
def test_bad_rules_name_the_field(tmp_path: Path, toml: str, field: str) -> None:
    path = tmp_path / "wardgate.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        validate(load(path))


def test_compile_raises_its_own_error() -> None:
    approvals = msgspec.convert({"rules": [{"name": "a", "arguments": "("}]}, ApprovalsConfig)
    with pytest.raises(ApprovalsConfigError):
        compile_rules(approvals, ["approvers"])
