"""The identity CLI commands: ``dev-idp``, ``token`` and ``apikey new``. Registered by ``add_commands``."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
from pathlib import Path

import uvloop

from gateway.identity import apikeys, dev_idp
from gateway.identity.http_client import FetchError, request

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_TTL = re.compile(r"(\d+)([smhd]?)")
_TTL_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``dev-idp``, ``token`` and ``apikey``; each sets ``func`` -> exit code."""
    p = sub.add_parser(
        "dev-idp",
        help="run a local OIDC issuer for demos and tests (NOT for production)",
        description="A development OIDC issuer: discovery, JWKS, and POST /mint for loopback clients. "
        "Anyone on this host can mint any identity with it: never use it in production.",
    )
    p.add_argument(
        "--listen", default="127.0.0.1:9400", help="HOST:PORT (default 127.0.0.1:9400; port 0: any)"
    )
    p.add_argument("--state-dir", type=Path, required=True, help="where its signing key is kept")
    p.add_argument("--issuer", help="the issuer URL to claim (default: its own base URL)")
    p.set_defaults(func=cmd_dev_idp)

    p_token = sub.add_parser("token", help="mint a token from a dev-idp and print it")
    p_token.add_argument("--idp", required=True, help="the dev-idp base URL (its issuer)")
    p_token.add_argument("--sub", required=True, help="the subject (user name)")
    p_token.add_argument("--groups", default="", help="comma-separated groups")
    p_token.add_argument("--aud", default="wardgate", help="the audience (default wardgate)")
    p_token.add_argument("--ttl", default="1h", help="lifetime: 90s, 30m, 1h, 2d (default 1h)")
    p_token.add_argument("--email", help="an email claim")
    p_token.add_argument("--name", help="a name claim")
    p_token.set_defaults(func=cmd_token)

    p_key = sub.add_parser("apikey", help="service API keys")
    key_sub = p_key.add_subparsers(dest="apikey_command", required=True, metavar="ACTION")
    p_new = key_sub.add_parser(
        "new", help="make a key: prints it once, and the config lines holding its hash"
    )
    p_new.add_argument("--name", required=True, help="the service identity (the subject), e.g. ci-bot")
    p_new.add_argument("--groups", default="", help="comma-separated groups")
    p_new.set_defaults(func=cmd_apikey_new)


def cmd_dev_idp(args: argparse.Namespace) -> int:
    host, sep, port = args.listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        print(f"wardgate: --listen: expected HOST:PORT, got {args.listen!r}", file=sys.stderr)
        return 2

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await dev_idp.serve(host.strip("[]") or "127.0.0.1", int(port), args.state_dir, args.issuer, stop)

    try:
        uvloop.run(run())
    except OSError as exc:
        print(f"wardgate: dev-idp: {exc}", file=sys.stderr)
        return 1
    return 0


def parse_ttl(text: str) -> int:
    """Seconds in ``90``, ``90s``, ``30m``, ``1h``, ``2d``.

    Raises:
        ValueError: anything else.
    """
    match = _TTL.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expected a duration like 30m or 1h, got {text!r}")
    return int(match[1]) * _TTL_UNITS[match[2]]


def _groups(text: str) -> list[str] | None:
    groups = [g.strip() for g in text.split(",") if g.strip()]
    return groups if all(_NAME.fullmatch(g) for g in groups) else None


def cmd_token(args: argparse.Namespace) -> int:
    groups = _groups(args.groups)
    try:
        ttl_s = parse_ttl(args.ttl)
    except ValueError as exc:
        print(f"wardgate: --ttl: {exc}", file=sys.stderr)
        return 2
    if groups is None:
        print(f"wardgate: --groups: expected comma-separated names, got {args.groups!r}", file=sys.stderr)
        return 2
    claims = {"sub": args.sub, "groups": groups, "aud": args.aud, "ttl_s": ttl_s}
    claims |= {k: v for k, v in (("email", args.email), ("name", args.name)) if v is not None}
    url = args.idp.rstrip("/") + "/mint"
    try:
        response = uvloop.run(request("POST", url, body=json.dumps(claims).encode()))
    except FetchError as exc:
        print(f"wardgate: token: {exc}", file=sys.stderr)
        return 1
    try:
        answer = json.loads(response.body)
    except ValueError:
        answer = {}
    if response.status != 200 or not isinstance(answer, dict) or "access_token" not in answer:
        error = answer.get("error", "") if isinstance(answer, dict) else ""
        print(f"wardgate: token: {url}: HTTP {response.status} {error}".rstrip(), file=sys.stderr)
        return 1
    print(answer["access_token"])
    return 0


def cmd_apikey_new(args: argparse.Namespace) -> int:
    groups = _groups(args.groups)
    if not _NAME.fullmatch(args.name):
        print(f"wardgate: --name: expected letters, digits, . _ @ -, got {args.name!r}", file=sys.stderr)
        return 2
    if groups is None:
        print(f"wardgate: --groups: expected comma-separated names, got {args.groups!r}", file=sys.stderr)
        return 2
    key = apikeys.new_api_key()
    print(f"API key for {args.name} (shown once; the config keeps only its hash):\n\n  {key}\n")
    print("Add to the config file:\n")
    print(apikeys.config_snippet(args.name, apikeys.hash_api_key(key), groups))
    return 0


def main(argv: list[str] | None = None) -> int:
    """These commands alone (``python -m gateway.identity``), until ``gateway.cli`` registers them."""
    parser = argparse.ArgumentParser(prog="wardgate")
    add_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


__all__ = ["add_commands", "cmd_apikey_new", "cmd_dev_idp", "cmd_token", "parse_ttl"]
