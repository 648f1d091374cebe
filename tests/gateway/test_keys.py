"""``signing-key init|show``, ``verify --pubkey`` and ``hold|release|holds``, run in-process on real files."""

from __future__ import annotations

import argparse
import json
import stat
from pathlib import Path

import pytest

from gateway import inspect, keys, retention
from storage._format import segment_path
from storage.signing import create_signing_key, signing_key_path
from tests.storage.signed_log import SignedLog


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="wardgate")
    sub = parser.add_subparsers(dest="command", required=True)
    inspect.add_commands(sub)
    keys.add_command(sub)
    retention.add_commands(sub)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_init_creates_the_key_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "signing-key", "init", "--data-dir", str(tmp_path))
    assert code == 0
    assert "fingerprint SHA256:" in out
    assert stat.S_IMODE(signing_key_path(tmp_path).stat().st_mode) == 0o600
    before = signing_key_path(tmp_path).read_bytes()
    code, _, err = run(capsys, "signing-key", "init", "--data-dir", str(tmp_path))
    assert code == 1
    assert "never replaced" in err
    assert signing_key_path(tmp_path).read_bytes() == before


def test_show_prints_the_public_key_and_its_fingerprint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = create_signing_key(tmp_path)
    code, out, _ = run(capsys, "signing-key", "show", "--data-dir", str(tmp_path))
    assert code == 0
    assert out.splitlines() == [
        key.public.text,
        f"fingerprint {key.public.fingerprint}",
        f"hex {key.public.raw.hex()}",
    ]
    code, out, _ = run(capsys, "signing-key", "show", "--data-dir", str(tmp_path), "--json")
    assert json.loads(out) == {
        "public_key": key.public.text,
        "hex": key.public.raw.hex(),
        "fingerprint": key.public.fingerprint,
    }
    code, _, err = run(capsys, "signing-key", "show", "--data-dir", str(tmp_path / "none"))
    assert code == 1
    assert "no signing key" in err


@pytest.fixture
def signed(tmp_path: Path) -> SignedLog:
    data_dir = tmp_path / "data"
    book = SignedLog(data_dir, create_signing_key(data_dir), max_segment_bytes=1500).write(40)
    book.checkpoint("shutdown")
    return book


def auditor_key_file(book: SignedLog, capsys: pytest.CaptureFixture[str]) -> Path:
    """What an auditor keeps: the output of ``signing-key show``, taken before anything happened."""
    _, out, _ = run(capsys, "signing-key", "show", "--data-dir", str(book.data_dir))
    path = book.data_dir.parent / "auditor.pub"
    path.write_text(out)
    return path


def test_verify_with_the_auditors_key(signed: SignedLog, capsys: pytest.CaptureFixture[str]) -> None:
    signed.close()
    pub = auditor_key_file(signed, capsys)
    code, out, _ = run(capsys, "verify", "--data-dir", str(signed.data_dir), "--pubkey", str(pub))
    assert code == 0
    assert f"signed by key {signed.key.public.fingerprint} (from --pubkey" in out
    assert "all of it anchored by a signed checkpoint" in out
    code, out, _ = run(capsys, "verify", "--data-dir", str(signed.data_dir), "--pubkey", str(pub), "--json")
    report = json.loads(out)
    assert (report["ok"], report["unanchored"]) == (True, None)
    assert report["anchored"]["offset"] == signed.checkpoints[-1].offset


def test_verify_reports_the_unanchored_tail(signed: SignedLog, capsys: pytest.CaptureFixture[str]) -> None:
    signed.write(3, every=1000, start=40)
    signed.close()
    code, out, _ = run(capsys, "verify", "--data-dir", str(signed.data_dir))
    assert code == 0
    tail = signed.positions[40]
    assert "UNANCHORED: 3 frames" in out
    assert f"from segment {tail.segment:012d} offset {tail.offset} on" in out
    code, out, _ = run(capsys, "verify", "--data-dir", str(signed.data_dir), "--json")
    assert json.loads(out)["unanchored"]["frames"] == 3


def test_verify_catches_a_log_re_signed_with_a_replaced_key(
    signed: SignedLog, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signed.close()
    pub = auditor_key_file(signed, capsys)
    # The attacker rewrites the whole data dir with a key of their own, keys/ included.
    forged_dir = tmp_path / "forged"
    forged = SignedLog(forged_dir, create_signing_key(forged_dir), max_segment_bytes=1500).write(40)
    forged.checkpoint("shutdown")
    forged.close()
    code, _out, _ = run(capsys, "verify", "--data-dir", str(forged_dir))
    assert code == 0  # self-consistent with its own key: why an auditor brings theirs
    code, _, err = run(capsys, "verify", "--data-dir", str(forged_dir), "--pubkey", str(pub))
    assert code == 1
    first = forged.checkpoints[0]
    assert (
        f"CORRUPT: segment {first.segment:012d} offset {first.offset}: checkpoint signed by another key"
        in err
    )


def test_verify_names_a_tail_cut_beyond_the_last_checkpoint(
    signed: SignedLog, capsys: pytest.CaptureFixture[str]
) -> None:
    signed.close()
    last = signed.checkpoints[-1]
    path = segment_path(signed.data_dir, last.segment)
    path.write_bytes(path.read_bytes()[: last.offset])
    code, _, err = run(capsys, "verify", "--data-dir", str(signed.data_dir))
    assert code == 1
    assert f"segment {last.segment:012d} offset {last.offset}:" in err
    assert "cut short" in err


def test_verify_refuses_a_file_without_a_key(signed: SignedLog, capsys: pytest.CaptureFixture[str]) -> None:
    signed.close()
    bad = signed.data_dir.parent / "bad.pub"
    bad.write_text("hello\n")
    code, _, err = run(capsys, "verify", "--data-dir", str(signed.data_dir), "--pubkey", str(bad))
    assert code == 2
    assert "--pubkey" in err


def test_hold_release_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path)]
    code, out, _ = run(capsys, "hold", "case-42", "--note", "ticket 7", *data)
    assert (code, out.strip()) == (0, "case-42: on legal hold")
    code, out, _ = run(capsys, "hold", "case-42", *data)
    assert (code, out.strip()) == (0, "case-42: already on legal hold")
    code, out, _ = run(capsys, "holds", *data)
    assert out.startswith("case-42  since ")
    assert out.rstrip().endswith("ticket 7")
    code, out, _ = run(capsys, "holds", "--json", *data)
    assert json.loads(out)["session_id"] == "case-42"
    code, _, err = run(capsys, "hold", "not valid!", *data)
    assert code == 2
    assert "not a session id" in err
    code, out, _ = run(capsys, "release", "case-42", *data)
    assert code == 0
    code, _, err = run(capsys, "release", "case-42", *data)
    assert code == 1
    assert "not on legal hold" in err
    code, out, _ = run(capsys, "holds", *data)
    assert out == ""
