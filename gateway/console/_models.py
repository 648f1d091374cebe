"""What the console API answers, as msgspec Structs: the JSON bodies and their OpenAPI schemas both come
from these, so the served document cannot drift from what is sent."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from gateway.approvals.registry import PendingHold
from gateway.render import ReplayedExchange
from parsers.events import Identity
from storage.assemble import ExchangeRecord
from storage.query import SessionRow
from storage.verify import VerifyReport


class Problem(msgspec.Struct, kw_only=True):
    """Every error answer: a short machine-readable code and a sentence for people."""

    error: str  # bad_parameter | unauthorized | forbidden | not_found | unavailable | ...
    detail: str


class Me(msgspec.Struct, kw_only=True):
    identity: Identity
    roles: list[str]


class SessionPage(msgspec.Struct, kw_only=True):
    """Most recently active first; pass ``next_cursor`` as ``cursor`` for the next page (null: no more)."""

    items: list[SessionRow]
    next_cursor: str | None


class ExchangePage(msgspec.Struct, kw_only=True):
    """Newest first; pass ``next_cursor`` as ``cursor`` for the next page (null: no more)."""

    items: list[ExchangeRecord]
    next_cursor: str | None


class SessionDetail(msgspec.Struct, kw_only=True):
    session: SessionRow
    exchanges: list[ReplayedExchange]  # oldest first: conversation order, with the prompt messages


class Message(msgspec.Struct, kw_only=True):
    """One HTTP message as recorded: head fields decoded for display, the body as text."""

    direction: str  # from_client | to_upstream | from_upstream | to_client
    t_ns: int  # after the exchange started
    headers: list[tuple[str, str]]  # wire order and case; credentials appear only as fingerprints
    method: str = ""
    target: str = ""
    status: int = 0
    body_text: str = ""  # UTF-8 (invalid bytes replaced), at most ``MAX_BODY_CHARS``
    body_bytes: int = 0
    body_truncated: bool = False


class Chunk(msgspec.Struct, kw_only=True):
    """One response body piece as it arrived, with its time."""

    t_ns: int  # after the exchange started
    direction: str
    bytes: int
    text: str  # UTF-8 (invalid bytes replaced)


class ExchangeEvent(msgspec.Struct, kw_only=True):
    """Any other recorded frame of the exchange (start, end, gateway errors, policy and masking records)."""

    t_ns: int
    direction: str
    type: str  # the event's tag in the log
    fields: dict[str, Any]  # its fields; bytes as base64


class ExchangeDetail(msgspec.Struct, kw_only=True):
    exchange: ReplayedExchange
    request: Message | None
    response: Message | None
    chunks: list[Chunk]
    events: list[ExchangeEvent]


class ReplayStep(msgspec.Struct, kw_only=True):
    t_ns: int  # after the exchange started
    text: str  # what the answer grew by at that moment


class Replay(msgspec.Struct, kw_only=True):
    """The answer as the client saw it grow: each step at its recorded time."""

    exchange_id: str
    stream: bool
    duration_ns: int
    ttfb_ns: int | None
    steps: list[ReplayStep]
    tool_calls_text: str  # the tool calls, once complete, as ``name(arguments)`` lines


class AuditEntry(msgspec.Struct, kw_only=True):
    """One recorded use of this API (a ``ConsoleAccess`` frame)."""

    ts_ns: int
    action: str
    identity: Identity
    target: str
    query: str  # the filters as JSON, "" when none
    client_addr: str


class AuditPage(msgspec.Struct, kw_only=True):
    """Newest first. ``complete``: every series was covered (the index, and what was recorded after the
    point it reached, read from the segments)."""

    items: list[AuditEntry]
    complete: bool


class HoldPage(msgspec.Struct, kw_only=True):
    """Tool calls held for a decision, oldest first (every worker's)."""

    items: list[PendingHold]


MAX_COMMENT_CHARS = 2000


class DecisionRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An approval or denial, bound to the arguments it was shown by their digest."""

    arguments_sha256: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
    comment: Annotated[str, msgspec.Meta(max_length=MAX_COMMENT_CHARS)] = ""


class Health(msgspec.Struct, kw_only=True):
    status: str


class ReadyStatus(msgspec.Struct, kw_only=True):
    ready: bool
    reasons: list[str]


class Verification(msgspec.Struct, kw_only=True):
    """``wardgate verify`` with the data directory's own public key, as of ``checked_ns``: ``ok`` when
    every segment series verifies; ``report`` is the first that does not (else series 0's)."""

    checked_ns: int
    ok: bool
    report: VerifyReport
    series: list[VerifyReport]  # one per series: each worker's, then the supervisor's


SCHEMA_TYPES: tuple[type[msgspec.Struct], ...] = (
    Problem,
    Me,
    SessionPage,
    ExchangePage,
    SessionDetail,
    ExchangeDetail,
    Replay,
    ReplayedExchange,
    ExchangeRecord,
    Health,
    ReadyStatus,
    Verification,
    AuditPage,
    HoldPage,
    PendingHold,
    DecisionRequest,
)

__all__ = [
    "SCHEMA_TYPES",
    "AuditEntry",
    "AuditPage",
    "Chunk",
    "DecisionRequest",
    "ExchangeDetail",
    "ExchangeEvent",
    "ExchangePage",
    "Health",
    "HoldPage",
    "Me",
    "Message",
    "Problem",
    "ReadyStatus",
    "Replay",
    "ReplayStep",
    "SessionDetail",
    "SessionPage",
    "Verification",
]
