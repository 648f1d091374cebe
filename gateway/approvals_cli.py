"""``wardgate approvals``, ``wardgate approve ID`` and ``wardgate deny ID``: the admin API's held tool calls
from a terminal.

A decision is bound to the call it shows: the hold is fetched first, printed, and its arguments' digest
sent with the decision, so a call that changed in between is refused (409) instead of released.
Everything printed from a hold is recorded traffic and goes through ``sanitize_text``. Exit codes: 0 done,
1 the admin listener could not be reached or answered oddly, 2 bad usage, 3 not allowed (401/403),
4 no such pending hold (404/410), 5 the call is not the one shown (409).
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, TextIO, TypeVar

import msgspec

from gateway.approvals.registry import PendingHold
from gateway.config import AdminConfig
from gateway.render import format_time, sanitize_text

T = TypeVar("T")
TOKEN_ENV = "WARDGATE_TOKEN"
TIMEOUT_S = 30.0
EXIT_UNREACHABLE, EXIT_USAGE, EXIT_FORBIDDEN, EXIT_MISSING, EXIT_CONFLICT = 1, 2, 3, 4, 5
_EXIT_BY_STATUS = {
    401: EXIT_FORBIDDEN,
    403: EXIT_FORBIDDEN,
    404: EXIT_MISSING,
    410: EXIT_MISSING,
    409: EXIT_CONFLICT,
}
_pages = msgspec.json.Decoder(dict[str, list[PendingHold]])
_holds = msgspec.json.Decoder(PendingHold)


def default_admin_url() -> str:
    return f"http://{AdminConfig().listen}"


class Refused(Exception):
    """The admin API said no (or could not be asked); ``code`` is the exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class AdminClient:
    """Blocking JSON calls to the admin API (a command runs one or two, then exits)."""

    def __init__(self, base_url: str, token: str, *, cacert: str = "") -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise Refused(EXIT_USAGE, f"--admin: expected http[s]://HOST:PORT, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._tls = ssl.create_default_context(cafile=cacert or None) if parsed.scheme == "https" else None

    def call(self, method: str, path: str, body: bytes | None = None) -> bytes:
        """Raises:
        Refused: an error status (its detail in the message) or no answer.
        """
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base_url + path, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S, context=self._tls) as answer:
                payload: bytes = answer.read()
                return payload
        except urllib.error.HTTPError as exc:
            detail = _detail(exc.read())
            raise Refused(_EXIT_BY_STATUS.get(exc.code, EXIT_UNREACHABLE), f"{exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise Refused(
                EXIT_UNREACHABLE, f"cannot reach the admin listener {self.base_url}: {reason}"
            ) from None

    def pending(self) -> list[PendingHold]:
        return _decode(_pages, self.call("GET", "/api/approvals"))["items"]

    def hold(self, hold_id: str) -> PendingHold:
        return _decode(_holds, self.call("GET", "/api/approvals/" + urllib.parse.quote(hold_id, safe="")))

    def decide(self, hold: PendingHold, *, approve: bool, comment: str) -> PendingHold:
        verb = "approve" if approve else "deny"
        body = msgspec.json.encode({"comment": comment, "arguments_sha256": hold.arguments_sha256})
        path = f"/api/approvals/{urllib.parse.quote(hold.hold_id, safe='')}/{verb}"
        return _decode(_holds, self.call("POST", path, body))


def _decode(decoder: msgspec.json.Decoder[T], payload: bytes) -> T:
    try:
        return decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise Refused(EXIT_UNREACHABLE, f"not an answer of the wardgate admin API: {exc}") from None


def _detail(payload: bytes) -> str:
    try:
        problem = msgspec.json.decode(payload, type=dict[str, str])
    except msgspec.DecodeError:
        return sanitize_text(payload[:200].decode(errors="replace"))
    return sanitize_text(problem.get("detail", "") or problem.get("error", ""))


# --- what a hold looks like in a terminal ---------------------------------------------------------


def _content(value: object) -> str:
    """A chat message's content: a string, or the text of its parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(str(part.get("text", "")) for part in value if isinstance(part, dict))
    return "" if value is None else str(value)


def _expiry(hold: PendingHold, now_ns: int) -> str:
    left_s = max(0, (hold.expires_at_ns - now_ns) // 1_000_000_000)
    return f"expires {format_time(hold.expires_at_ns)} UTC (in {left_s // 60}m {left_s % 60:02d}s)"


def print_hold(hold: PendingHold, out: TextIO, *, now_ns: int) -> None:
    """A hold in full: who asked, where, the call and its arguments, the conversation, the expiry."""
    text = sanitize_text
    who = hold.requested_by
    name = text(who.subject) + (f" <{text(who.email)}>" if who.email else "")
    groups = f" (groups {text(', '.join(who.groups))})" if who.groups else ""
    print(f"== hold {text(hold.hold_id)}  rule {text(hold.rule)}  {_expiry(hold, now_ns)}", file=out)
    print(f"   requested by {name} via {text(who.method)}{groups}", file=out)
    print(f"   session {text(hold.session_id)}  exchange {text(hold.exchange_id)}", file=out)
    approvers = ", ".join(hold.approver_groups) or "-"
    print(f"   may decide: {text(approvers)}  held since {format_time(hold.created_at_ns)} UTC", file=out)
    for message in hold.context:
        role = text(str(message.get("role", "?")))
        content = _content(message.get("content"))
        if content:
            print(f"   [{role}] {text(content, keep_newlines=True)}", file=out)
        for call in message.get("tool_calls") or []:
            function = call.get("function", {}) if isinstance(call, dict) else {}
            if isinstance(function, dict):
                called = f"{function.get('name', '')}({function.get('arguments', '')})"
                print(f"   [{role} tool call] {text(called)}", file=out)
    print(f"   >> tool call {text(hold.tool_name)}  id {text(hold.call_id)}", file=out)
    print(f"   >> arguments {text(hold.arguments, keep_newlines=True)}", file=out)
    print(f"   >> arguments sha256 {text(hold.arguments_sha256)}", file=out)


# --- the commands ---------------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> AdminClient:
    token = args.token or os.environ.get(TOKEN_ENV, "")
    if not token:
        raise Refused(EXIT_USAGE, f"no credentials: pass --token or set {TOKEN_ENV}")
    return AdminClient(args.admin, token, cacert=args.cacert or "")


def _cmd_approvals(args: argparse.Namespace) -> int:
    holds = _client(args).pending()
    if args.json:
        sys.stdout.buffer.write(msgspec.json.encode(holds) + b"\n")
        return 0
    if not holds:
        print("no tool call is waiting for a decision")
        return 0
    now_ns = time.time_ns()
    for i, hold in enumerate(holds):
        if i:
            print()
        print_hold(hold, sys.stdout, now_ns=now_ns)
    return 0


def _cmd_decide(args: argparse.Namespace) -> int:
    approve = args.command == "approve"
    client = _client(args)
    hold = client.hold(args.hold_id)  # what is decided is what is shown: its digest goes with the decision
    print_hold(hold, sys.stdout, now_ns=time.time_ns())
    client.decide(hold, approve=approve, comment=args.comment)
    verdict = "approved: the agent receives this call" if approve else "denied: the agent is told so"
    print(f"{sanitize_text(hold.hold_id)} {verdict}")
    return 0


def _run(command: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            code: int = command(args)
        except Refused as exc:
            print(f"wardgate {args.command}: {exc}", file=sys.stderr)
            return exc.code
        return code

    return run


def _connection_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--admin",
        default=default_admin_url(),
        help="URL of the gateway's admin listener (default %(default)s)",
    )
    p.add_argument("--token", help=f"OIDC access token or service key (default: ${TOKEN_ENV})")
    p.add_argument("--cacert", help="PEM CA bundle to verify an https admin listener with")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "approvals",
        help="list tool calls held for a decision",
        description="List the tool calls held for a human decision, with who asked and the conversation.",
    )
    _connection_flags(p)
    p.add_argument("--json", action="store_true", help="the holds as JSON")
    p.set_defaults(func=_run(_cmd_approvals))
    for verb, effect in (
        ("approve", "release a held tool call to the agent"),
        ("deny", "refuse a held tool call (the agent is told so)"),
    ):
        p = sub.add_parser(verb, help=effect, description=f"{effect[0].upper()}{effect[1:]}.")
        p.add_argument("hold_id", metavar="ID", help="the hold's id (see `wardgate approvals`)")
        p.add_argument("--comment", default="", help="why (recorded with the decision)")
        _connection_flags(p)
        p.set_defaults(func=_run(_cmd_decide))


__all__ = ["TOKEN_ENV", "AdminClient", "Refused", "add_commands", "default_admin_url", "print_hold"]
