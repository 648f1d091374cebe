"""Human output for the read-side commands: safe text, short ids, times, aligned columns, replays.

Recorded text comes from clients and models, so it is hostile: everything printed goes through
``sanitize_text`` first. Writes only to the stream it is given; reads no files.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import TextIO

import msgspec

from parsers.events import ApprovalDecided, ApprovalRequested, BodyChunk, Direction, MaskingApplied
from parsers.openai import ChatMessage, OpenAIExchange
from storage.assemble import OPEN, ExchangeRecord
from storage.codec import Frame

_GENERATED_ID = re.compile(r"^[a-z]_[0-9a-hjkmnp-tv-z]{26}$")
_SHORT_ID_CHARS = 10
_CACHED_BELOW = 0x800  # escapes of the first code points are memoised; the rest are computed
_RESPONSE_SIDE = (Direction.FROM_UPSTREAM, Direction.TO_CLIENT)
MAX_REPLAY_PAUSE_S = 10.0  # a longer recorded silence is shortened to this (before --speed applies)

Sleep = Callable[[float], None]


def _escape(code: int) -> str:
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


class _EscapeTable(dict[int, str]):
    """``str.translate`` table: printable characters map to themselves, the rest to an escape."""

    def __missing__(self, code: int) -> str:
        char = chr(code)
        value = char if char.isprintable() else _escape(code)
        if code < _CACHED_BELOW:
            self[code] = value
        return value


_ONE_LINE = _EscapeTable()
_MULTI_LINE = _EscapeTable({ord("\n"): "\n", ord("\t"): "\t"})


def sanitize_text(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` safe for a terminal: control, format and separator characters become visible escapes.

    ESC is shown as ``\\x1b`` (so no ANSI sequence can act), C1 controls, bidi overrides and zero-width
    characters as ``\\x9b``/``\\u202e``. Newlines and tabs are kept only with ``keep_newlines``.
    """
    if text.isprintable():
        return text
    return text.translate(_MULTI_LINE if keep_newlines else _ONE_LINE)


def one_line(text: str, width: int) -> str:
    """Sanitized, whitespace collapsed, cut to ``width`` characters (ending in "...")."""
    flat = sanitize_text(" ".join(text.split()))
    return flat if len(flat) <= width else flat[: max(width - 3, 0)] + "..."


def short_id(identifier: str) -> str:
    """The random tail of a generated id (``x_``/``s_`` + 26 chars); other ids unchanged."""
    if _GENERATED_ID.match(identifier):
        return identifier[-_SHORT_ID_CHARS:]
    return sanitize_text(identifier)


def format_time(ns: int) -> str:
    """UTC wall time to the second, e.g. ``2026-01-05 15:09:06``."""
    moment = dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def format_ms(ns: int | None) -> str:
    if ns is None:
        return "-"
    ms = ns / 1e6
    return f"{ms:,.1f} ms" if ms < 10 else f"{ms:,.0f} ms"


def table(headers: list[str], rows: list[list[str]], *, right: frozenset[int] = frozenset()) -> list[str]:
    """Rows aligned under their headers; columns in ``right`` are right-aligned. Cells must be sanitized."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = []
    for cells in [headers, *rows]:
        parts = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
    return lines


EXCHANGE_HEADERS = ["TIME (UTC)", "EXCHANGE", "USER", "STATUS", "DURATION", "MODEL", "REQUEST", "SUMMARY"]


def exchange_cells(record: ExchangeRecord) -> list[str]:
    """One exchange as table cells (all sanitized)."""
    return [
        format_time(record.started_ns),
        short_id(record.exchange_id),
        one_line(record.subject, 16),
        str(record.status or "-"),
        format_ms(record.duration_ns),
        one_line(record.model or "-", 24),
        one_line(f"{record.method} {record.path}", 32),
        one_line(exchange_summary(record), 60),
    ]


def exchange_summary(record: ExchangeRecord) -> str:
    """What happened, in a few words: the error, the tool calls, or the start of the answer."""
    if record.error:
        return f"error: {record.error}"
    if record.outcome not in ("complete", ""):
        return record.outcome
    if record.tool_calls:
        return "tool calls: " + ", ".join(f"{call.name}({call.arguments})" for call in record.tool_calls)
    return record.response_text


def exchange_line(record: ExchangeRecord) -> str:
    """One exchange on one line with fixed-width columns (for ``tail``, which cannot look ahead)."""
    time, ident, user, status, duration, model, request, summary = exchange_cells(record)
    return (
        f"{time}  {ident:<10}  {user:<16}  {status:>3}  {duration:>9}  {model:<24}  {request:<32}  {summary}"
    )


# --- replay ----------------------------------------------------------------------------------------


class ReplayedExchange(ExchangeRecord, kw_only=True):
    """``replay --json``: the indexed record plus the prompt messages re-read from the log."""

    messages: list[ChatMessage] = msgspec.field(default_factory=list)
    reasoning_text: str = ""


def replayed(record: ExchangeRecord, frames: list[Frame]) -> ReplayedExchange:
    """``record`` with what only a second read of its frames gives: the prompt messages, the reasoning."""
    parser = OpenAIExchange()
    for frame in frames:
        parser.feed(frame.direction, frame.event)
    summary = parser.summary()
    fields = msgspec.structs.asdict(record)
    return ReplayedExchange(**fields, messages=summary.messages, reasoning_text=summary.reasoning_text)


def render_exchange(
    record: ExchangeRecord, frames: list[Frame], out: TextIO, *, speed: float, sleep: Sleep
) -> None:
    """The conversation of one exchange; a streamed answer is re-typed with its recorded timing."""
    full = replayed(record, frames)
    text = sanitize_text
    who = text(record.subject) + (f" <{text(record.identity.email)}>" if record.identity.email else "")
    started = format_time(record.started_ns)
    print(
        f"== exchange {text(record.exchange_id)}  session {text(record.session_id)}  {started} UTC", file=out
    )
    timing = f"{format_ms(record.duration_ns)} (first byte {format_ms(record.ttfb_ns)})"
    request = f"{text(record.method)} {text(record.path)}"
    print(f"   {who}  {request}  -> {record.status or '-'} {text(record.outcome)}  {timing}", file=out)
    if record.model or record.api:
        streamed = "  streamed" if record.stream else ""
        print(f"   model {text(record.model or '-')}  api {text(record.api or '-')}{streamed}", file=out)
    for message in full.messages:
        print(f"[{text(message.role)}] {text(message.content, keep_newlines=True)}", file=out)
    if masked := upstream_masking(frames):
        print(f"   masked before the model: {text(masked)}", file=out)
    if full.reasoning_text:
        print(f"[reasoning] {text(full.reasoning_text, keep_newlines=True)}", file=out)
    if record.stream:
        if retype_answer(frames, out, speed=speed, sleep=sleep):
            print(file=out)
    elif record.response_text:
        print(f"[assistant] {text(record.response_text, keep_newlines=True)}", file=out)
    for call in record.tool_calls:
        print(f"[tool call] {text(call.name)}({text(call.arguments)})  id {text(call.id)}", file=out)
    for line in approval_lines(record, frames):
        print(text(line), file=out)
    details = []
    if record.finish_reason:
        details.append(f"finish {text(record.finish_reason)}")
    if record.total_tokens is not None:
        tokens = f"{record.prompt_tokens} prompt + {record.completion_tokens} completion"
        details.append(f"tokens {tokens} = {record.total_tokens}")
    if details:
        print("   " + "  ".join(details), file=out)
    if record.error:
        print(f"   error: {text(record.error, keep_newlines=True)}", file=out)


def upstream_masking(frames: list[Frame]) -> str:
    """What the model got differently from the recorded request: ``email x2 (messages[0].content), ...``."""
    return ", ".join(
        f"{event.rule} x{event.count}" + (f" ({event.field})" if event.field else "")
        for frame in frames
        if isinstance(event := frame.event, MaskingApplied) and event.scope == "upstream"
    )


def approval_lines(record: ExchangeRecord, frames: list[Frame]) -> list[str]:
    """One line per held tool call: who had to decide, and what became of it."""
    requested: dict[str, ApprovalRequested] = {}
    decided: dict[str, ApprovalDecided] = {}
    for frame in frames:
        if isinstance(frame.event, ApprovalRequested):
            requested[frame.event.hold_id] = frame.event
        elif isinstance(frame.event, ApprovalDecided):
            decided[frame.event.hold_id] = frame.event
    lines = []
    for hold_id, held in requested.items():
        what = f"[approval] {held.tool_name} (call {held.call_id}) held by rule {held.rule}, hold {hold_id}: "
        decision = decided.get(hold_id)
        if decision is None:
            lines.append(what + ("pending" if record.outcome == OPEN else "undecided (gateway stopped)"))
            continue
        by = f" by {decision.approver.subject}" if decision.verdict in ("approved", "denied") else ""
        note = decision.comment or decision.reason
        lines.append(what + decision.verdict + by + (f": {note}" if note else ""))
    return lines


def retype_answer(frames: list[Frame], out: TextIO, *, speed: float, sleep: Sleep) -> bool:
    """Feed the frames again in order and print each growth of the answer after its recorded pause.

    The first pause is the time to the first token. ``speed`` 2 halves pauses, 0 drops them.
    Returns whether any answer text was printed.
    """
    parser = OpenAIExchange()
    shown = 0
    last_ns = frames[0].ts_ns if frames else 0
    for frame in frames:
        parser.feed(frame.direction, frame.event)
        if frame.direction not in _RESPONSE_SIDE or not isinstance(frame.event, BodyChunk):
            continue
        answer = parser.summary().response_text
        if len(answer) <= shown:
            continue
        if speed > 0:
            pause = min((frame.ts_ns - last_ns) / 1e9, MAX_REPLAY_PAUSE_S) / speed
            if pause > 0:
                out.flush()
                sleep(pause)
        last_ns = frame.ts_ns
        prefix = "" if shown else "[assistant] "
        print(prefix + sanitize_text(answer[shown:], keep_newlines=True), end="", file=out)
        shown = len(answer)
    return shown > 0


__all__ = [
    "EXCHANGE_HEADERS",
    "MAX_REPLAY_PAUSE_S",
    "ReplayedExchange",
    "Sleep",
    "approval_lines",
    "exchange_cells",
    "exchange_line",
    "exchange_summary",
    "format_ms",
    "format_time",
    "one_line",
    "render_exchange",
    "replayed",
    "retype_answer",
    "sanitize_text",
    "short_id",
    "table",
    "upstream_masking",
]
