"""Masking: the ``[masking]`` config, who gets which rules (``MaskingPlan``), and the record scope.

``MaskingPlan.for_identity(identity)`` gives the rules per scope for one caller (global rules plus the
``[[masking.overrides]]`` of its groups). The record scope is the same for everyone: frames on their way
to the log lose every secret its rules find.

The recorder calls ``RecordMasking.frames()`` for every frame before queueing it, so no path that
records (the h11 relay, a fast relay, HTTP/2) can put a raw secret into the log, and the index, which
is built from the log alone, never sees one either. Per body (connection, exchange, direction, stream)
a streaming masker holds back only the tail that could still become a match:

- a ``bodychunk`` frame keeps its ``seq`` and arrival time and carries what is decided by then (possibly
  nothing); bytes held back appear in a later chunk of the same body;
- at ``messageend`` (or ``exchangeended``, for a body that never ended) the rest is flushed into one more
  ``bodychunk`` frame with that frame's ``seq`` and time, recorded just before it;
- each frame where something was replaced is followed by ``maskingapplied`` frames (rule, count, first
  position; same ``seq``).

gzip/deflate bodies are decoded before masking; the recorded head then names the coding as
``X-Wardgate-Masked-Content-Encoding`` so the record stays consistent (the client still got the bytes
the upstream sent).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Final, NamedTuple

import msgspec

from parsers.events import (
    BodyChunk,
    Direction,
    ExchangeEnded,
    Headers,
    Identity,
    MaskingApplied,
    MessageEnd,
    RequestHead,
    ResponseHead,
)
from parsers.masking import (
    BUILTIN,
    DEFAULT_MAX_HOLD_CHARS,
    DEFAULT_TEMPLATE,
    BodyMasker,
    JsonMasker,
    Rule,
    RuleError,
    SseMasker,
    TextMasker,
    custom_rule,
    mask_text,
)
from storage.codec import Frame

RECORD: Final = "record"
UPSTREAM: Final = "upstream"
CLIENT: Final = "client"
SCOPES: Final = (RECORD, UPSTREAM, CLIENT)
MASKED_ENCODING_FIELD: Final = b"X-Wardgate-Masked-Content-Encoding"
_DECODABLE: Final = {b"gzip": 31, b"x-gzip": 31, b"deflate": 15}  # zlib wbits per coding
MAX_CACHED_GROUP_SETS: Final = 4096  # MaskingPlan: distinct group sets kept; past this it starts over
MAX_OPEN_BODIES: Final = 100_000  # beyond this the oldest body's held tail is dropped (never written raw)

_BodyKey = tuple[str, str, int, int]  # conn_id, exchange_id, direction, stream_id


class CustomRuleConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    pattern: (
        str  # a regular expression (the ``regex`` module); a named group ``secret`` limits the replacement
    )
    replacement: str = DEFAULT_TEMPLATE  # "{rule}" is the name; \1 and \g<name> are groups of the match
    scopes: list[str] = msgspec.field(default_factory=lambda: [RECORD])  # []: only where an override enables


class MaskingOverride(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``[[masking.overrides]]``: for callers in ``groups``, rules turned on or off in ``scopes``.

    Overrides apply in config order on top of the global rules; a later one wins. ``"*"`` names every rule.
    """

    groups: list[str]
    scopes: list[str]  # upstream | client (the record scope is the same for everyone)
    enable: list[str] = msgspec.field(default_factory=list)  # detector or custom rule names
    disable: list[str] = msgspec.field(default_factory=list)


class MaskingConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = True
    disabled: list[str] = msgspec.field(default_factory=list)  # built-in detectors turned off, by name
    scopes: dict[str, list[str]] = msgspec.field(default_factory=dict)  # detector -> scopes; default record
    rules: list[CustomRuleConfig] = msgspec.field(default_factory=list)
    max_hold_chars: int = DEFAULT_MAX_HOLD_CHARS  # longest text a stream holds back while a match may form
    overrides: list[MaskingOverride] = msgspec.field(default_factory=list)


class MaskingConfigError(ValueError):
    """A masking setting that cannot work; the message names the field (``masking.rules[0].pattern``)."""


class ScopeRules(NamedTuple):
    """The rules one caller's traffic is masked with, per scope, in tie-breaking order (empty: none)."""

    record: tuple[Rule, ...]  # the log and index (the same for every caller)
    upstream: tuple[Rule, ...]  # the request body as the model gets it
    client: tuple[Rule, ...]  # the response as the client gets it


class MaskingPlan:
    """Which rules apply to whom: the global ``[masking]`` rules with ``[[masking.overrides]]`` on top.

    Built once at startup (every regex compiled then); ``for_identity`` is the data path's one call.

    Raises:
        MaskingConfigError: (on construction) an unknown detector, rule or scope, or a custom rule that
            does not compile.
    """

    def __init__(self, config: MaskingConfig) -> None:
        self.max_hold_chars = config.max_hold_chars
        self._catalog = _catalog(config)  # every rule by name, built-ins first in documented order
        base: dict[str, set[str]] = {scope: set() for scope in SCOPES}
        if config.enabled:
            for name in BUILTIN:
                if name not in config.disabled:
                    for scope in config.scopes.get(name, [RECORD]):
                        base[scope].add(name)
            for custom in config.rules:
                for scope in custom.scopes:
                    base[scope].add(custom.name)
        self._base = base
        self._overrides = [
            (frozenset(o.groups), o.scopes, self._names(o.enable), self._names(o.disable))
            for o in (config.overrides if config.enabled else [])
        ]
        self._groups = frozenset(group for groups, *_ in self._overrides for group in groups)
        self._cache: dict[frozenset[str], ScopeRules] = {}
        self.default = self._build(frozenset())

    def for_identity(self, identity: Identity) -> ScopeRules:
        """The rules for this caller's groups: computed once per distinct set of overridden groups.

        Cheap enough for every request: a set intersection and a dict lookup; no regex is compiled here.
        """
        key = self._groups.intersection(identity.groups)
        if not key:
            return self.default
        rules = self._cache.get(key)
        if rules is None:
            if len(self._cache) >= MAX_CACHED_GROUP_SETS:
                self._cache.clear()
            rules = self._cache[key] = self._build(key)
        return rules

    def _names(self, names: list[str]) -> frozenset[str]:
        return frozenset(self._catalog) if "*" in names else frozenset(names)

    def _build(self, groups: frozenset[str]) -> ScopeRules:
        names = {scope: set(members) for scope, members in self._base.items()}
        for override_groups, scopes, enable, disable in self._overrides:
            if override_groups & groups:
                for scope in scopes:
                    names[scope] |= enable
                    names[scope] -= disable
        record, upstream, client = (
            tuple(rule for name, rule in self._catalog.items() if name in names[scope]) for scope in SCOPES
        )
        return ScopeRules(record=record, upstream=upstream, client=client)


def _catalog(config: MaskingConfig) -> dict[str, Rule]:
    """Every rule by name, validated: built-ins in their documented order, then the custom rules."""
    if config.max_hold_chars < 256:
        raise MaskingConfigError("masking.max_hold_chars: must be at least 256")
    for name in [*config.disabled, *config.scopes]:
        if name not in BUILTIN:
            raise MaskingConfigError(
                f"masking: unknown detector {name!r}; built-ins are {', '.join(BUILTIN)}"
            )
    for name, scopes in config.scopes.items():
        _check_scopes(scopes, f"masking.scopes.{name}")
    catalog = dict(BUILTIN)
    for i, custom in enumerate(config.rules):
        _check_scopes(custom.scopes, f"masking.rules[{i}].scopes")
        if custom.name in catalog:
            raise MaskingConfigError(f"masking.rules[{i}]: rule name {custom.name!r} is taken")
        try:
            catalog[custom.name] = custom_rule(custom.name, custom.pattern, custom.replacement)
        except RuleError as exc:
            raise MaskingConfigError(f"masking.rules[{i}]: {exc}") from None
    for i, override in enumerate(config.overrides):
        field = f"masking.overrides[{i}]"
        if not override.groups:
            raise MaskingConfigError(f"{field}.groups: name at least one group")
        if not override.scopes:
            raise MaskingConfigError(f"{field}.scopes: name at least one scope (upstream, client)")
        _check_scopes(override.scopes, f"{field}.scopes")
        if RECORD in override.scopes:
            raise MaskingConfigError(
                f"{field}.scopes: 'record' cannot differ per group (the log is masked alike for everyone)"
            )
        if not (override.enable or override.disable):
            raise MaskingConfigError(f"{field}: enable or disable at least one rule")
        for key in ("enable", "disable"):
            for name in getattr(override, key):
                if name != "*" and name not in catalog:
                    raise MaskingConfigError(
                        f"{field}.{key}: unknown rule {name!r}; rules are {', '.join(catalog)} or *"
                    )
    return catalog


def rules_by_scope(config: MaskingConfig) -> dict[str, list[Rule]]:
    """The rules that apply in each scope to a caller no override names, built-ins first, then custom.

    Raises:
        MaskingConfigError: an unknown detector, rule or scope, or a custom rule that does not compile.
    """
    plan = MaskingPlan(config)
    return {scope: list(rules) for scope, rules in zip(SCOPES, plan.default, strict=True)}


def record_masking(config: MaskingConfig) -> RecordMasking | None:
    """What the recorder masks, or None when no rule applies in the record scope (config validated)."""
    rules = rules_by_scope(config)[RECORD]
    return RecordMasking(rules, max_hold_chars=config.max_hold_chars) if rules else None


def _check_scopes(scopes: list[str], field: str) -> None:
    for scope in scopes:
        if scope not in SCOPES:
            raise MaskingConfigError(f"{field}: unknown scope {scope!r}; scopes are {', '.join(SCOPES)}")


def body_masker(rules: Sequence[Rule], content_type: bytes, *, max_hold_chars: int) -> BodyMasker:
    """The masker for a body of this content type: SSE, JSON, or byte-for-byte text."""
    kind = content_type.split(b";", 1)[0].strip().lower()
    if kind == b"text/event-stream":
        return SseMasker(rules, max_hold_chars=max_hold_chars)
    if kind.endswith(b"json"):
        return JsonMasker(rules, max_hold_chars=max_hold_chars)
    return TextMasker(rules, max_hold_chars=max_hold_chars)


class _Body:
    __slots__ = ("inflate", "masker")

    def __init__(self, masker: BodyMasker, inflate: zlib._Decompress | None) -> None:
        self.masker = masker
        self.inflate = inflate

    def feed(self, data: bytes) -> bytes:
        if self.inflate is not None:
            try:
                data = self.inflate.decompress(data)
            except zlib.error:
                self.inflate = None  # not what the head said: mask the bytes as they are
        return self.masker.feed(data)

    def finish(self) -> bytes:
        out = b""
        if self.inflate is not None:
            try:
                out = self.masker.feed(self.inflate.flush())
            except zlib.error:
                self.inflate = None
        return out + self.masker.finish()


class RecordMasking:
    """Masks what is recorded: heads (target, header values), and bodies as they stream."""

    def __init__(self, rules: Sequence[Rule], *, max_hold_chars: int, scope: str = RECORD) -> None:
        self._rules = list(rules)
        self._max_hold = max_hold_chars
        self._scope = scope
        self._pending: dict[_BodyKey, tuple[bytes, int | None]] = {}  # content type, coding, from a head
        self._bodies: dict[_BodyKey, _Body] = {}
        self.masked: dict[str, int] = {}  # replacements by rule, for metrics
        self.dropped_bodies = 0  # bodies whose held tail was dropped because too many were open

    @property
    def open_bodies(self) -> int:
        return len(self._bodies)

    def frames(self, frame: Frame) -> list[Frame] | None:
        """The frames to record instead of ``frame``, or None to record it as it is."""
        event = frame.event
        match event:
            case BodyChunk():
                return self._chunk(frame, event)
            case MessageEnd():
                body = self._bodies.pop(self._key(frame), None)
                self._pending.pop(self._key(frame), None)
                return None if body is None else [*self._flushed(frame, body, event.stream_id), frame]
            case RequestHead() | ResponseHead():
                return self._head(frame, event)
            case ExchangeEnded():
                return self._exchange_ended(frame)
            case _:
                return None

    def _key(self, frame: Frame) -> _BodyKey:
        return (frame.conn_id, frame.exchange_id, int(frame.direction), frame.event.stream_id)

    def _chunk(self, frame: Frame, event: BodyChunk) -> list[Frame]:
        key = self._key(frame)
        body = self._bodies.get(key)
        if body is None:
            content_type, wbits = self._pending.pop(key, (b"", None))
            masker = body_masker(self._rules, content_type, max_hold_chars=self._max_hold)
            body = self._bodies[key] = _Body(masker, None if wbits is None else zlib.decompressobj(wbits))
            if len(self._bodies) > MAX_OPEN_BODIES:  # exchanges that never ended (a cancelled task)
                del self._bodies[next(iter(self._bodies))]
                self.dropped_bodies += 1
        data = body.feed(event.data)
        out = [msgspec.structs.replace(frame, event=BodyChunk(stream_id=event.stream_id, data=data))]
        out += self._applied(frame, body.masker)
        return out

    def _flushed(self, frame: Frame, body: _Body, stream_id: int) -> list[Frame]:
        tail = body.finish()
        out = (
            [msgspec.structs.replace(frame, event=BodyChunk(stream_id=stream_id, data=tail))] if tail else []
        )
        return out + self._applied(frame, body.masker)

    def _exchange_ended(self, frame: Frame) -> list[Frame] | None:
        keys = [key for key in self._bodies if key[0] == frame.conn_id and key[1] == frame.exchange_id]
        for key in [key for key in self._pending if key[0] == frame.conn_id and key[1] == frame.exchange_id]:
            del self._pending[key]
        if not keys:
            return None
        out: list[Frame] = []
        for key in keys:
            body = self._bodies.pop(key)
            template = msgspec.structs.replace(frame, direction=Direction(key[2]))
            out += self._flushed(template, body, key[3])
        return [*out, frame]

    def _applied(self, frame: Frame, masker: BodyMasker) -> list[Frame]:
        if isinstance(masker, SseMasker):
            found = masker.take_field_hits()
        else:
            found = [(hit, "") for hit in masker.take_hits()]
        if not found:
            return []
        grouped: dict[tuple[str, str], MaskingApplied] = {}
        for hit, field in found:
            seen = grouped.get((hit.rule, field))
            count = 1 if seen is None else seen.count + 1
            position = hit.position if seen is None else seen.position
            grouped[(hit.rule, field)] = MaskingApplied(
                stream_id=frame.event.stream_id,
                rule=hit.rule,
                scope=self._scope,
                count=count,
                position=position,
                field=field,
            )
            self.masked[hit.rule] = self.masked.get(hit.rule, 0) + 1
        return [msgspec.structs.replace(frame, event=event) for event in grouped.values()]

    def _head(self, frame: Frame, head: RequestHead | ResponseHead) -> list[Frame] | None:
        if isinstance(head, ResponseHead) and head.status < 200:
            return None
        content_type = b""
        wbits: int | None = None
        headers = head.headers
        for name, value in headers:
            lower = name.lower()
            if lower == b"content-type":
                content_type = value
            elif lower == b"content-encoding" and value.strip().lower() in _DECODABLE:
                wbits = _DECODABLE[value.strip().lower()]
        if wbits is not None:
            headers = [
                (MASKED_ENCODING_FIELD if name.lower() == b"content-encoding" else name, value)
                for name, value in headers
            ]
        self._pending[self._key(frame)] = (content_type, wbits)
        if len(self._pending) > MAX_OPEN_BODIES:
            del self._pending[next(iter(self._pending))]
        applied: list[MaskingApplied] = []
        target = head.target if isinstance(head, RequestHead) else b""
        if self._could_match(target, headers):
            target = self._masked_value(target, "target", head.stream_id, applied)
            headers = [
                (name, self._masked_value(value, name.decode("latin-1"), head.stream_id, applied))
                for name, value in headers
            ]
        if not applied and headers is head.headers:
            return None
        changed: RequestHead | ResponseHead
        if isinstance(head, RequestHead):
            changed = msgspec.structs.replace(head, target=target, headers=headers)
        else:
            changed = msgspec.structs.replace(head, headers=headers)
        return [msgspec.structs.replace(frame, event=changed)] + [
            msgspec.structs.replace(frame, event=event) for event in applied
        ]

    def _could_match(self, target: bytes, headers: Headers) -> bool:
        """One scan over the whole head: most heads have nothing to mask, then no value is scanned alone."""
        text = b"\n".join([target, *(value for _, value in headers)]).decode("latin-1")
        return bool(mask_text(self._rules, text)[1])

    def _masked_value(self, value: bytes, field: str, stream_id: int, applied: list[MaskingApplied]) -> bytes:
        masked, edits = mask_text(self._rules, value.decode("latin-1"))
        if not edits:
            return value
        for rule in dict.fromkeys(edit.rule for edit in edits):
            count = sum(1 for edit in edits if edit.rule == rule)
            applied.append(
                MaskingApplied(
                    stream_id=stream_id, rule=rule, scope=self._scope, count=count, position=0, field=field
                )
            )
            self.masked[rule] = self.masked.get(rule, 0) + count
        return masked.encode("latin-1", "replace")


__all__ = [
    "CLIENT",
    "MASKED_ENCODING_FIELD",
    "RECORD",
    "SCOPES",
    "UPSTREAM",
    "CustomRuleConfig",
    "MaskingConfig",
    "MaskingConfigError",
    "MaskingOverride",
    "MaskingPlan",
    "RecordMasking",
    "ScopeRules",
    "body_masker",
    "record_masking",
    "rules_by_scope",
]
