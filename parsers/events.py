"""The one event vocabulary: what parsers observe and what the gateway records.

Parsers emit the protocol events; the gateway adds the few records only it can know (exchange and
session boundaries, errors it produced). Storage persists every one of them as is and the CLI reads
them back: there is no second model of "a request" anywhere.

Schema evolution (msgspec rules): new fields go last with defaults; never rename, reorder or retype a
field and never reuse a tag. A breaking change bumps ``storage.codec.FORMAT_VERSION``.
"""

from __future__ import annotations

import enum

import msgspec

Headers = list[tuple[bytes, bytes]]


class Direction(enum.IntEnum):
    """Which way the recorded bytes travelled, seen from the gateway."""

    FROM_CLIENT = 0
    TO_UPSTREAM = 1
    FROM_UPSTREAM = 2
    TO_CLIENT = 3


class Event(msgspec.Struct, frozen=True, kw_only=True, array_like=True, tag_field="type", tag=str.lower):
    stream_id: int = 0  # 0 for HTTP/1.1; the stream id for HTTP/2


# --- HTTP: emitted by parsers -----------------------------------------------------------------------


class RequestHead(Event, frozen=True, kw_only=True):
    method: bytes
    target: bytes
    headers: Headers  # raw: wire order, original case
    http_version: bytes = b"1.1"


class ResponseHead(Event, frozen=True, kw_only=True):
    status: int  # 1xx heads are interim; the final head has status >= 200
    headers: Headers
    reason: bytes = b""
    http_version: bytes = b"1.1"


class BodyChunk(Event, frozen=True, kw_only=True):
    data: bytes  # after transfer decoding (no chunk framing), exactly the message body bytes


class MessageEnd(Event, frozen=True, kw_only=True):
    trailers: Headers = []


class ConnectionClosed(Event, frozen=True, kw_only=True):
    """The peer closed its side (EOF)."""


class ParseFailed(Event, frozen=True, kw_only=True):
    """The parser met bytes it cannot make sense of and went inert."""

    error: str
    status_hint: int = 400  # the HTTP status a server should answer with, where one applies


# --- Server-Sent Events: emitted by parsers.sse over a response body -------------------------------


class SseMessage(Event, frozen=True, kw_only=True):
    data: bytes
    event: bytes = b""  # empty means the default type, "message"
    id: bytes | None = None
    retry_ms: int | None = None


class SseComment(Event, frozen=True, kw_only=True):
    text: bytes


# --- Records only the gateway can make -------------------------------------------------------------


class Identity(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Who made a request. ``anonymous`` until the identity layer verifies someone."""

    subject: str = "anonymous"
    method: str = "none"  # none | oidc | api-key | mtls
    email: str = ""
    name: str = ""
    groups: tuple[str, ...] = ()
    issuer: str = ""
    token_id: str = ""


ANONYMOUS = Identity()


class SessionStarted(Event, frozen=True, kw_only=True):
    session_id: str
    identity: Identity
    client_addr: str
    source: str  # "header" (the client named it) or "assigned" (the gateway grouped by identity)


class ExchangeStarted(Event, frozen=True, kw_only=True):
    """Opens an exchange; every later frame with the same exchange id belongs to it."""

    exchange_id: str
    session_id: str
    identity: Identity
    client_addr: str
    listener: str
    protocol: str  # "http/1.1", later "h2"
    upstream: str = ""
    tls_version: str = ""  # "TLSv1.3"; "" for plaintext
    tls_cipher: str = ""
    alpn: str = ""  # the protocol the TLS handshake settled on, "" when none
    tls_peer_subject: str = ""  # the verified client certificate's subject (RFC 4514), with mTLS


class GatewayError(Event, frozen=True, kw_only=True):
    """The gateway answered or cut an exchange itself (bad input, upstream failure, a limit)."""

    kind: str  # bad_request | header_too_large | body_too_large | not_implemented | upstream_refused | ...
    status: int  # the status sent to the client, 0 when none could be sent
    message: str
    client_addr: str = ""


class ExchangeEnded(Event, frozen=True, kw_only=True):
    outcome: str  # complete | error | client_aborted | upstream_aborted
    status: int = 0
    request_bytes: int = 0
    response_bytes: int = 0


class PolicyDecision(Event, frozen=True, kw_only=True):
    """The identity layer's verdict on one request, recorded for allowed and refused requests alike."""

    allowed: bool
    rule: str  # the deciding rule; "default-deny"; "authentication" for a refused credential; "" no policy
    reason: str
    identity: Identity  # who asked (anonymous when the credential was refused)
    status: int = 0  # the status the gateway answered a refusal with (401, 403, 503); 0 when allowed


# --- Records of the log itself (written by the recorder, no connection: conn_id "", exchange_id "") ----


class Checkpoint(Event, frozen=True, kw_only=True):
    """A signed statement: the log up to ``(segment, offset)`` has ``frames`` records ending in ``chain``.

    The statement covers the records *before* this one (its own bytes cannot be in its signature). The
    signature is Ed25519 over ``storage.checkpoints.checkpoint_message(...)``, which is domain-separated.
    """

    segment: int
    offset: int  # where this checkpoint record starts
    chain: bytes  # the chain hash in force at ``offset`` (the previous record's, or the segment header's)
    frames: int  # records in the whole log before ``offset``, removed segments included
    ts_ns: int
    key_id: bytes  # the first 8 bytes of sha256(public key): which key signed
    signature: bytes
    reason: str = ""  # interval | rotation | shutdown | requested | recovery


class Recovered(Event, frozen=True, kw_only=True):
    """The recorder repaired the log: a torn tail cut at startup, or a segment sealed after a failed write."""

    kind: str  # torn_tail (cut at startup after a crash) | sealed (write or fsync failed; new segment)
    segment: int
    offset: int  # where the good records of that segment end
    bytes_cut: int  # bytes after ``offset`` that are no longer part of the log
    reason: str
    carried_frames: int = 0  # sealed: unsynced frames written again after this record, in order


class Retention(Event, frozen=True, kw_only=True):
    """Whole segments were removed by the retention policy; the log legitimately starts later."""

    removed: list[int]  # segment numbers removed
    first_kept: int  # the oldest segment kept after the removal
    chain: bytes  # that segment's header chain: where the removed part of the chain ended
    removed_bytes: int
    reason: str  # max_age | size_budget | both
    held_sessions: list[str] = []  # sessions on legal hold whose segments were kept
    kept_segments: list[int] = []  # old segments kept only because of a legal hold


class GatewayStarted(Event, frozen=True, kw_only=True):
    """A gateway process began writing. Exchanges still open in the log before it can never end."""

    boot_id: str
    pid: int
    version: str


# --- HTTP/2 stream and connection control: emitted by parsers.http2 ------------------------------------


class StreamReset(Event, frozen=True, kw_only=True):
    """RST_STREAM: one stream was cancelled (RFC 9113 §6.4). The frame's direction says by whom."""

    error_code: int  # RFC 9113 §7: 0x8 CANCEL, 0x7 REFUSED_STREAM, ...


class GoAway(Event, frozen=True, kw_only=True):
    """GOAWAY: the connection takes no stream above ``last_stream_id`` (RFC 9113 §6.8)."""

    error_code: int  # 0x0 NO_ERROR for a graceful close; 0x1 PROTOCOL_ERROR, 0xb ENHANCE_YOUR_CALM, ...
    last_stream_id: int
    debug: bytes = b""


# --- Records of the admin listener (no connection of the data plane: conn_id "", exchange_id "") ------


class ConsoleAccess(Event, frozen=True, kw_only=True):
    """An auditor used the admin API (the audit of the auditors): who looked at or decided what, when.

    Recorded before the answer is sent, so nothing is ever shown that the log does not know was shown.
    """

    action: (
        str  # list_sessions | view_session | search | view_exchange | replay | export | tail | verify | audit
    )
    identity: Identity
    target: str = ""  # the session or exchange id looked at, "" for a search or a listing
    query: str = ""  # the filters as JSON, exactly as the API took them
    client_addr: str = ""


# --- Guardrails: what the gateway changed or held, recorded next to what it observed ----------------------


class MaskingApplied(Event, frozen=True, kw_only=True):
    """Masking replaced text in the frame recorded just before this one (same connection and ``seq``);
    for scope ``upstream``: in the request body forwarded after the ``to_upstream`` head just before.

    Never holds the masked text itself: only which rule, where, and how often.
    """

    rule: str
    scope: str  # record (the log and index) | upstream (what the model got) | client (what the client got)
    count: int
    position: int  # byte offset in that body (as it arrived) of the first replaced text; 0 for heads
    field: str = ""  # where: "choices[0].delta.content" in a stream, "target", or a header name


# --- Approvals: a tool call held for a human decision (gateway.approvals) --------------------------------


class ApprovalRequested(Event, frozen=True, kw_only=True):
    """A tool call in the response matched an approval rule and is held until someone decides.

    The arguments themselves are in the recorded response body (record-masked like everything else);
    this frame binds the hold to them by digest.
    """

    hold_id: str
    rule: str
    tool_name: str
    call_id: str
    arguments_sha256: str  # hex SHA-256 of the arguments JSON text exactly as the model sent it
    requested_by: Identity
    approver_groups: tuple[str, ...]
    expires_at_ns: int  # wall clock; no decision by then denies (verdict "expired")


class ApprovalDecided(Event, frozen=True, kw_only=True):
    """What became of a hold: released to the agent (approved) or replaced by a denial (everything else)."""

    hold_id: str
    verdict: str  # approved | denied | expired | failed
    approver: Identity  # ANONYMOUS for expired and failed
    comment: str = ""
    reason: str = ""  # why it expired or failed ("gateway shutting down", "client disconnected")


RecordedEvent = (
    RequestHead
    | ResponseHead
    | BodyChunk
    | MessageEnd
    | ConnectionClosed
    | ParseFailed
    | SseMessage
    | SseComment
    | SessionStarted
    | ExchangeStarted
    | GatewayError
    | ExchangeEnded
    | Checkpoint
    | Recovered
    | Retention
    | GatewayStarted
    | StreamReset
    | GoAway
    | ConsoleAccess
    | PolicyDecision
    | MaskingApplied
    | ApprovalRequested
    | ApprovalDecided
)

__all__ = [
    "ANONYMOUS",
    "ApprovalDecided",
    "ApprovalRequested",
    "BodyChunk",
    "Checkpoint",
    "ConnectionClosed",
    "ConsoleAccess",
    "Direction",
    "Event",
    "ExchangeEnded",
    "ExchangeStarted",
    "GatewayError",
    "GatewayStarted",
    "GoAway",
    "Headers",
    "Identity",
    "MaskingApplied",
    "MessageEnd",
    "ParseFailed",
    "PolicyDecision",
    "RecordedEvent",
    "Recovered",
    "RequestHead",
    "ResponseHead",
    "Retention",
    "SessionStarted",
    "SseComment",
    "SseMessage",
    "StreamReset",
]
