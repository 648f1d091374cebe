"""``wardgate approvals``, ``approve`` and ``deny`` as real subprocesses against the admin listener."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Protocol

import msgspec
import pytest
import trustme

from gateway.approvals.registry import APPROVED, DENIED
from gateway.cli import main
from gateway.config import AdminConfig
from gateway.mock_llm import MockLlm
from gateway.server import running
from tests.gateway.conftest import make_config
from tests.gateway.console.conftest import APPROVER_KEY, AUTH, DEVELOPER_KEY, Console
from tests.gateway.holding import holding, make_hold
from tests.gateway.processes import ROOT
from tests.gateway.test_tls import write_cert

pytestmark = pytest.mark.asyncio(loop_scope="module")

HOSTILE = "\x1b[2J\x1b]0;owned\x07 wipe it\u202e"


async def cli(*args: str, token: str | None = None) -> tuple[int, str, str]:
    """One ``wardgate`` command; the token (if any) from WARDGATE_TOKEN, as an operator would set it."""
    env = {k: v for k, v in os.environ.items() if k != "WARDGATE_TOKEN"}
    if token is not None:
        env["WARDGATE_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def in_process(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str, token: str | None = None
) -> tuple[int, str, str]:
    """The same command in a thread of this process (no interpreter start), for the cheap cases."""
    monkeypatch.delenv("WARDGATE_TOKEN", raising=False)
    if token is not None:
        monkeypatch.setenv("WARDGATE_TOKEN", token)
    capsys.readouterr()
    code = await asyncio.wait_for(asyncio.to_thread(main, list(args)), timeout=60)
    out, err = capsys.readouterr()
    return code, out, err


class Run(Protocol):
    async def __call__(self, *args: str, token: str | None = None) -> tuple[int, str, str]: ...


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    async def in_this_process(*args: str, token: str | None = None) -> tuple[int, str, str]:
        return await in_process(capsys, monkeypatch, *args, token=token)

    return in_this_process


def admin_url(console: Console) -> str:
    return str(console.admin.base_url).rstrip("/")


async def test_list_then_approve_and_deny(console: Console, run: Run) -> None:
    url = admin_url(console)
    async with holding(console.gateway.holds) as held:
        code, out, err = await run("approvals", "--admin", url, token=APPROVER_KEY)
        assert (code, out, err) == (0, "no tool call is waiting for a decision\n", "")
        first = await held.hold(make_hold(context=HOSTILE))
        second = await held.hold(make_hold(arguments='{"command": "mkfs.ext4 /dev/sda1"}'))
        code, out, err = await cli("approvals", "--admin", url, token=APPROVER_KEY)
        assert code == 0, err
        assert out.index(first.hold_id) < out.index(second.hold_id)  # oldest first
        assert "requested by dave-developer via api-key (groups developers)" in out
        assert "rule destructive-shell" in out
        assert "[system] you are a DBA" in out
        assert ">> tool call shell" in out
        assert '>> arguments {"command": "rm -rf /var/lib/postgres"}' in out
        assert '{"command": "mkfs.ext4 /dev/sda1"}' in out
        assert f">> arguments sha256 {first.arguments_sha256}" in out
        assert re.search(r"expires \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(in [01]m \d\ds\)", out)
        # Recorded text cannot drive the terminal: every control character is shown escaped.
        assert "\x1b" not in out
        assert "\x07" not in out
        assert "\u202e" not in out
        assert "[user] \\x1b[2J\\x1b]0;owned\\x07 wipe it\\u202e" in out
        listed = msgspec.json.decode(
            (await run("approvals", "--json", "--admin", url, token=APPROVER_KEY))[1]
        )
        assert [h["hold_id"] for h in listed] == [first.hold_id, second.hold_id]

        code, out, err = await cli(
            "approve", first.hold_id, "--comment", "looked fine", "--admin", url, token=APPROVER_KEY
        )
        assert code == 0, err
        assert f"{first.hold_id} approved" in out
        assert '>> arguments {"command": "rm -rf /var/lib/postgres"}' in out  # what was approved was shown
        got = await held.decision(first)
        assert (got.verdict, got.approver.subject, got.comment) == (APPROVED, "erin-approver", "looked fine")

        # --token wins over the environment.
        code, out, err = await run(
            "deny", second.hold_id, "--admin", url, "--token", APPROVER_KEY, token="wg_x"
        )
        assert code == 0, err
        assert (await held.decision(second)).verdict == DENIED


async def test_refusals_are_clear_and_nonzero(console: Console, run: Run) -> None:
    url = admin_url(console)
    cli = run
    async with holding(console.gateway.holds) as held:
        hold = await held.hold(make_hold())
        code, _, err = await cli("approve", hold.hold_id, "--admin", url)
        assert (code, err) == (2, "wardgate approve: no credentials: pass --token or set WARDGATE_TOKEN\n")
        code, _, err = await cli("approve", hold.hold_id, "--admin", url, token=DEVELOPER_KEY)
        assert code == 3
        assert "403: 'dave-developer' is not in a group with the approver or auditor role" in err
        code, _, err = await cli("approvals", "--admin", url, token="wg_" + "c" * 52)
        assert code == 3
        assert err.startswith("wardgate approvals: 401: ")
        code, _, err = await cli("deny", "h_nope", "--admin", url, token=APPROVER_KEY)
        assert (code, err) == (4, "wardgate deny: 404: no pending hold 'h_nope'\n")
        code, _, err = await cli("approvals", "--admin", "ftp://x", token=APPROVER_KEY)
        assert (code, err) == (
            2,
            "wardgate approvals: --admin: expected http[s]://HOST:PORT, got 'ftp://x'\n",
        )
        code, _, err = await cli("approvals", "--admin", "http://127.0.0.1:9", token=APPROVER_KEY)
        assert code == 1
        assert "cannot reach the admin listener http://127.0.0.1:9" in err
        assert not held.decided(hold)


async def test_self_approval_is_refused(console: Console, run: Run) -> None:
    erin = make_hold(requested_by=msgspec.structs.replace(make_hold().requested_by, subject="erin-approver"))
    async with holding(console.gateway.holds) as held:
        hold = await held.hold(erin)
        code, _out, err = await cli(
            "approve", hold.hold_id, "--admin", admin_url(console), token=APPROVER_KEY
        )
        assert code == 3
        assert err == "wardgate approve: 403: nobody may approve their own request\n"
        assert not held.decided(hold)
        pending = (await run("approvals", "--admin", admin_url(console), token=APPROVER_KEY))[1]
        assert hold.hold_id in pending


async def test_over_https_with_a_ca_file(tmp_path: Path, mock_llm: MockLlm, run: Run) -> None:
    ca = trustme.CA()
    cert_file, key_file = write_cert(ca.issue_cert("127.0.0.1"), tmp_path / "tls", "admin")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    admin = AdminConfig(listen="127.0.0.1:0", tls_cert=str(cert_file), tls_key=str(key_file))
    config = msgspec.structs.replace(make_config(tmp_path / "data", mock_llm.port), admin=admin, auth=AUTH)
    async with asyncio.timeout(60), running(config) as gw, holding(gw.holds) as held:
        assert gw.admin_address is not None
        url = f"https://127.0.0.1:{gw.admin_address[1]}"
        hold = await held.hold(make_hold())
        code, _, err = await run("approvals", "--admin", url, token=APPROVER_KEY)
        assert code == 1
        assert "CERTIFICATE_VERIFY_FAILED" in err
        code, _out, err = await run(
            "approve", hold.hold_id, "--admin", url, "--cacert", str(ca_file), token=APPROVER_KEY
        )
        assert code == 0, err
        assert (await held.decision(hold)).verdict == APPROVED
