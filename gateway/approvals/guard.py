"""One response on its way to a client whose request approval rules (or client-scope masking) watch.

Transport-agnostic: the HTTP/1.1 and HTTP/2 paths hand it the upstream's head and body pieces and a
``ResponseSink`` that writes to the client. Streams go through ``parsers.approvals.StreamGate`` (text
at once, matching tool calls held) and then the client-scope masker; a JSON body is read whole, its
calls decided, and sent with a correct Content-Length. Every hold is an ``ApprovalRequested`` frame
and its outcome an ``ApprovalDecided`` frame; the bytes the client got are recorded ``to_client``.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from gateway.approvals.config import ApprovalsConfig, compile_rules
from gateway.approvals.registry import (
    EXPIRED,
    FAILED,
    Decision,
    HoldRegistry,
    PendingHold,
    arguments_digest,
)
from gateway.ids import new_id
from gateway.masking import MaskingPlan
from parsers.approvals import ApprovalRule, StreamGate, ToolCallSeen, body_tool_calls, denied_body
from parsers.events import (
    ApprovalDecided,
    ApprovalRequested,
    Event,
    Headers,
    Identity,
    MaskingApplied,
    RequestHead,
    ResponseHead,
)
from parsers.masking import BodyMasker, JsonMasker, Rule, SseMasker, mask_body, mask_text

logger = logging.getLogger("wardgate.approvals")

MAX_CONTEXT_MESSAGES = 50  # the approver sees the conversation's last messages
_DECODABLE = {b"gzip": 31, b"x-gzip": 31, b"deflate": 15}  # zlib wbits per coding
_DROPPED = (b"content-length", b"content-encoding", b"transfer-encoding")


class ResponseSink(Protocol):
    """Where the guarded response goes: the client connection (HTTP/1.1) or stream (HTTP/2)."""

    def head(self, head: ResponseHead) -> None: ...

    async def send(self, data: bytes) -> None: ...


class Uninspectable(Exception):
    """The upstream answered in a content coding the gateway cannot read; it must not pass unchecked."""


@dataclass(frozen=True)
class GuardSettings:
    """What every guarded exchange of a gateway shares (built once from the config)."""

    rules: tuple[ApprovalRule, ...]
    masking: MaskingPlan  # per caller: the client-scope rules, and the record-scope ones for the approver
    registry: HoldRegistry
    keepalive_s: float
    max_body_bytes: int

    def applies(self, identity: Identity, method: bytes) -> bool:
        """Whether a request needs its response guarded (else the relay fast path stays on)."""
        if method != b"POST":
            return False
        if self.masking.for_identity(identity).client:
            return True
        groups = identity.groups
        return any(not rule.groups or not rule.groups.isdisjoint(groups) for rule in self.rules)


def guard_settings(
    approvals: ApprovalsConfig,
    masking: MaskingPlan,
    *,
    approver_groups: Sequence[str],
    registry: HoldRegistry,
    max_body_bytes: int,
) -> GuardSettings:
    """What guarded exchanges share; which requests are guarded is ``GuardSettings.applies``."""
    # Always built: ``applies`` asks the masking plan per caller (overrides may give a group client rules).
    return GuardSettings(
        rules=compile_rules(approvals, approver_groups),
        masking=masking,
        registry=registry,
        keepalive_s=approvals.keepalive_s,
        max_body_bytes=max_body_bytes,
    )


def identity_encoding(head: RequestHead) -> RequestHead:
    """The request asking for an uncompressed answer, so the guard can read it (RFC 9110 §12.5.3)."""
    headers = [(n, v) for n, v in head.headers if n.lower() != b"accept-encoding"]
    return msgspec.structs.replace(head, headers=[*headers, (b"Accept-Encoding", b"identity")])


def _content_type(headers: Headers) -> bytes:
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.split(b";", 1)[0].strip().lower()
    return b""


def _coding(headers: Headers) -> bytes:
    for name, value in headers:
        if name.lower() == b"content-encoding":
            return value.strip().lower()
    return b""


class ResponseGuard:
    """Guards one response. ``start`` the head, ``feed`` each body piece, ``finish`` at its end."""

    def __init__(
        self,
        settings: GuardSettings,
        *,
        identity: Identity,
        exchange_id: str,
        session_id: str,
        request_body: bytes,
        record: Callable[[Event], None],
        stream_id: int = 0,
    ) -> None:
        self._settings = settings
        scoped = settings.masking.for_identity(identity)
        self._client_rules = scoped.client
        self._record_rules = scoped.record  # what the approver's view of the request must not show
        self._max_hold_chars = settings.masking.max_hold_chars
        self._identity = identity
        self._exchange_id = exchange_id
        self._session_id = session_id
        self._request_body = request_body
        self._record = record
        self._stream_id = stream_id
        self._rules: tuple[ApprovalRule, ...] = ()
        self._gate: StreamGate | None = None
        self._masker: BodyMasker | None = None
        self._inflate: Any = None  # zlib decompressor for a coded body
        self._buffer: bytearray | None = None  # a JSON body read whole
        self._head: ResponseHead | None = None  # the client's head while the body is read whole
        self._denied = False

    # --- the head ------------------------------------------------------------------------------

    def start(self, head: ResponseHead) -> ResponseHead | None:
        """The head to send the client now, or None: it goes out with the body (JSON read whole).

        Raises:
            Uninspectable: a content coding other than gzip or deflate.
        """
        kind = _content_type(head.headers)
        coding = _coding(head.headers)
        if coding and coding != b"identity":
            if coding not in _DECODABLE:
                raise Uninspectable(f"the upstream answered in content coding {coding.decode('latin-1')!r}")
            self._inflate = zlib.decompressobj(_DECODABLE[coding])
        self._rules = self._watching()
        headers = [(n, v) for n, v in head.headers if n.lower() not in _DROPPED]
        client = msgspec.structs.replace(head, headers=headers)
        if kind == b"text/event-stream":
            self._gate = StreamGate(self._rules) if self._rules else None
            if self._client_rules:
                self._masker = SseMasker(self._client_rules, max_hold_chars=self._max_hold_chars)
            return client
        if kind.endswith(b"json"):
            self._buffer = bytearray()
            self._head = client
            return None
        if self._inflate is None:
            return head  # neither a stream nor JSON: no tool call to hold, nothing to mask
        return client

    def _watching(self) -> tuple[ApprovalRule, ...]:
        groups = self._identity.groups
        text = ""
        if any(rule.request is not None for rule in self._settings.rules):
            text = _user_text(self._request_body)
        return tuple(rule for rule in self._settings.rules if rule.applies_to(groups, text))

    # --- the body ------------------------------------------------------------------------------

    async def feed(self, data: bytes, sink: ResponseSink) -> None:
        if self._inflate is not None:
            try:
                data = self._inflate.decompress(data)
            except zlib.error as exc:
                raise Uninspectable(f"the upstream's coded body does not decode: {exc}") from None
        if self._buffer is not None:
            self._buffer += data
            if len(self._buffer) > self._settings.max_body_bytes:
                raise Uninspectable(f"a JSON response over {self._settings.max_body_bytes} bytes")
            return
        if self._gate is not None:
            data = self._gate.feed(data)
        await self._out(data, sink)
        await self._decide_stream(sink)

    async def finish(self, sink: ResponseSink) -> None:
        """The upstream body ended: decide what is left and send the rest."""
        if self._inflate is not None:
            tail = self._inflate.flush()
            if tail:
                self._inflate = None
                await self.feed(tail, sink)
        if self._buffer is not None:
            await self._finish_json(bytes(self._buffer), sink)
            return
        if self._gate is not None:
            await self._out(self._gate.finish(), sink)
            await self._decide_stream(sink)
        if self._masker is not None:
            await sink.send(self._masked_tail())

    async def _decide_stream(self, sink: ResponseSink) -> None:
        gate = self._gate
        if gate is None or self._denied:
            return
        for call in gate.take_matches():
            decision = await self._hold(call, sink)
            if decision.approved:
                await self._out(gate.approve(call), sink)
            else:
                self._denied = True
                await self._out(gate.deny(denial_text(call, decision)), sink)
                return

    async def _finish_json(self, body: bytes, sink: ResponseSink) -> None:
        out = body
        for call in body_tool_calls(body, self._rules) if self._rules else []:
            if call.rule is None:
                continue
            decision = await self._hold(call, sink)
            if not decision.approved:
                out = denied_body(body, denial_text(call, decision))
                break
        if self._client_rules:
            masker = JsonMasker(self._client_rules, max_hold_chars=self._max_hold_chars)
            out = mask_body(masker, out)
            self._applied(masker)
        head = self._head
        if head is None:
            raise RuntimeError("approvals: a JSON body without its head")
        sink.head(
            msgspec.structs.replace(head, headers=[*head.headers, (b"Content-Length", b"%d" % len(out))])
        )
        await sink.send(out)

    async def _out(self, data: bytes, sink: ResponseSink) -> None:
        if self._masker is not None and data:
            data = self._masker.feed(data)
            self._applied(self._masker)
        if data:
            await sink.send(data)

    def _masked_tail(self) -> bytes:
        masker = self._masker
        if masker is None:
            return b""
        out = masker.finish()
        self._applied(masker)
        return out

    def _applied(self, masker: BodyMasker) -> None:
        """One ``MaskingApplied`` frame (scope client) per rule and field replaced."""
        if isinstance(masker, SseMasker):
            found = masker.take_field_hits()
        else:
            found = [(hit, "") for hit in masker.take_hits()]
        grouped: dict[tuple[str, str], tuple[int, int]] = {}
        for hit, field in found:
            count, position = grouped.get((hit.rule, field), (0, hit.position))
            grouped[(hit.rule, field)] = (count + 1, position)
        for (rule, field), (count, position) in grouped.items():
            self._record(
                MaskingApplied(
                    stream_id=self._stream_id,
                    rule=rule,
                    scope="client",
                    count=count,
                    position=position,
                    field=field,
                )
            )

    # --- one hold ------------------------------------------------------------------------------

    async def _hold(self, call: ToolCallSeen, sink: ResponseSink) -> Decision:
        rule = call.rule
        if rule is None:
            raise RuntimeError("approvals: holding a call no rule matched")
        registry = self._settings.registry
        now = registry.clock()
        record_rules = self._record_rules
        hold = PendingHold(
            hold_id=new_id("h_"),
            exchange_id=self._exchange_id,
            session_id=self._session_id,
            rule=rule.name,
            requested_by=self._identity,
            approver_groups=rule.approver_groups,
            tool_name=call.name,
            call_id=call.call_id,
            arguments=_masked_text(record_rules, call.arguments),
            arguments_sha256=arguments_digest(call.arguments),
            context=_context(record_rules, self._request_body),
            created_at_ns=now,
            expires_at_ns=now + int(rule.timeout_s * 1e9),
        )
        self._record(
            ApprovalRequested(
                stream_id=self._stream_id,
                hold_id=hold.hold_id,
                rule=rule.name,
                tool_name=call.name,
                call_id=call.call_id,
                arguments_sha256=hold.arguments_sha256,
                requested_by=self._identity,
                approver_groups=rule.approver_groups,
                expires_at_ns=hold.expires_at_ns,
            )
        )
        comment = b": wardgate: waiting for approval of " + _comment_safe(call.name) + b"\n\n"

        async def keepalive() -> None:
            if self._gate is not None:  # a stream: its head is out, comments keep proxies from timing out
                await sink.send(comment)

        try:
            decision = await registry.hold(hold, keepalive=keepalive, keepalive_s=self._settings.keepalive_s)
        except BaseException:
            self._decided(hold, Decision(verdict=FAILED, reason="the exchange ended while the call was held"))
            raise
        self._decided(hold, decision)
        return decision

    def _decided(self, hold: PendingHold, decision: Decision) -> None:
        self._record(
            ApprovalDecided(
                stream_id=self._stream_id,
                hold_id=hold.hold_id,
                verdict=decision.verdict,
                approver=decision.approver,
                comment=decision.comment,
                reason=decision.reason,
            )
        )


def denial_text(call: ToolCallSeen, decision: Decision) -> str:
    """What the agent reads instead of the tool call: which call, which rule, who, why."""
    rule = call.rule.name if call.rule is not None else "?"
    what = f"The call to the tool {call.name!r} (id {call.call_id or '-'}) was not run"
    if decision.verdict == EXPIRED:
        why = "nobody approved it in time"
    elif decision.verdict == FAILED:
        why = f"it could not be approved: {decision.reason}"
    else:
        who = decision.approver.name or decision.approver.subject
        why = f"{who} denied it" + (f": {decision.comment}" if decision.comment else "")
    return f"[wardgate] {what}: approval rule {rule!r} requires a human decision, and {why}."


def _comment_safe(name: str) -> bytes:
    """A tool name fit for one SSE comment line (no line breaks from the model)."""
    return "".join(c if c.isprintable() else "?" for c in name[:200]).encode("utf-8", "replace")


def _masked_text(rules: Sequence[Rule], text: str) -> str:
    return mask_text(rules, text)[0] if rules else text


def _decode(body: bytes) -> Any:
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return None


def _messages(doc: Any) -> list[dict[str, Any]]:
    if not isinstance(doc, dict):
        return []
    messages = doc.get("messages")
    if isinstance(messages, list):
        return [m for m in messages if isinstance(m, dict)]
    items = doc.get("input")
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if isinstance(items, list):
        return [m for m in items if isinstance(m, dict)]
    return []


def _context(rules: Sequence[Rule], body: bytes) -> list[dict[str, Any]]:
    """The request's messages as the approver may see them: masked by the record-scope rules."""
    if rules:
        body = mask_body(JsonMasker(rules), body)
    return _messages(_decode(body))[-MAX_CONTEXT_MESSAGES:]


def _user_text(body: bytes) -> str:
    """The request's user content, for rules with a ``request`` pattern."""
    parts: list[str] = []
    for message in _messages(_decode(body)):
        if message.get("role", "user") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return "\n".join(parts)


__all__ = [
    "GuardSettings",
    "ResponseGuard",
    "ResponseSink",
    "Uninspectable",
    "denial_text",
    "guard_settings",
    "identity_encoding",
]
