"""``wardgate signing-key init|show``: the Ed25519 key that signs the log's checkpoints.

``init`` creates it (never replacing one); ``show`` prints the public key an auditor passes to
``wardgate verify --pubkey``. The gateway creates the key by itself at its first start when none exists.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import msgspec

from storage.errors import StorageError
from storage.signing import (
    KeyExists,
    PublicKey,
    create_signing_key,
    public_key_path,
    read_public_key,
    signing_key_path,
)

DEFAULT_DATA_DIR = Path("./wardgate-data")


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``signing-key`` with its ``init`` and ``show`` actions; each sets ``func`` -> exit code."""
    p = sub.add_parser(
        "signing-key",
        help="create or show the key that signs the log's checkpoints",
        description="The Ed25519 key that signs the session log's checkpoints.",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    init = actions.add_parser("init", help="create the signing key (refuses to replace one)")
    init.set_defaults(func=cmd_init)
    show = actions.add_parser("show", help="print the public key and its fingerprint")
    show.add_argument("--json", action="store_true", help="one JSON object")
    show.set_defaults(func=cmd_show)
    for action in (init, show):
        action.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="default ./wardgate-data")


def cmd_init(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir
    try:
        key = create_signing_key(data_dir)
    except KeyExists as exc:
        print(f"wardgate: {exc}", file=sys.stderr)
        return 1
    print(f"created {signing_key_path(data_dir)} (private, mode 0600) and {public_key_path(data_dir)}")
    _print_public(key.public)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir
    try:
        public = read_public_key(data_dir)
    except StorageError as exc:
        print(f"wardgate: {exc}", file=sys.stderr)
        return 1
    if public is None:
        print(
            f"wardgate: no signing key in {data_dir} (run `wardgate signing-key init` or start the gateway)",
            file=sys.stderr,
        )
        return 1
    if args.json:
        shown = {"public_key": public.text, "hex": public.raw.hex(), "fingerprint": public.fingerprint}
        print(msgspec.json.encode(shown).decode())
    else:
        _print_public(public)
    return 0


def _print_public(public: PublicKey) -> None:
    # The first line alone is a valid --pubkey file (so is this whole output).
    print(public.text)
    print(f"fingerprint {public.fingerprint}")
    print(f"hex {public.raw.hex()}")


__all__ = ["add_command", "cmd_init", "cmd_show"]
