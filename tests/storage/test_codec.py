"""The frame codec: every event type survives encode/decode unchanged."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from parsers.events import (
    ApprovalDecided,
    ApprovalRequested,
    BodyChunk,
    Checkpoint,
    ConnectionClosed,
    ConsoleAccess,
    Direction,
    ExchangeEnded,
    ExchangeStarted,
    GatewayError,
    GatewayStarted,
    GoAway,
    Identity,
    MaskingApplied,
    MessageEnd,
    ParseFailed,
    PolicyDecision,
    RecordedEvent,
    Recovered,
    RequestHead,
    ResponseHead,
    Retention,
    SessionStarted,
    SseComment,
    SseMessage,
    StreamReset,
)
from storage.codec import Frame, decode_frame, encode_frame

texts = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=20)
small = st.integers(min_value=0, max_value=2**31)
i64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
headers = st.lists(st.tuples(st.binary(max_size=12), st.binary(max_size=24)), max_size=4)
identities = st.builds(
    Identity,
    subject=texts,
    method=st.sampled_from(["none", "oidc", "api-key", "mtls"]),
    email=texts,
    name=texts,
    groups=st.lists(texts, max_size=3).map(tuple),
    issuer=texts,
    token_id=texts,
)

events: st.SearchStrategy[RecordedEvent] = st.one_of(
    st.builds(
        RequestHead,
        stream_id=small,
        method=st.binary(max_size=8),
        target=st.binary(max_size=40),
        headers=headers,
        http_version=st.binary(max_size=3),
    ),
    st.builds(
        ResponseHead,
        stream_id=small,
        status=st.integers(100, 999),
        headers=headers,
        reason=st.binary(max_size=12),
    ),
    st.builds(BodyChunk, stream_id=small, data=st.binary(max_size=200)),
    st.builds(MessageEnd, stream_id=small, trailers=headers),
    st.builds(ConnectionClosed, stream_id=small),
    st.builds(ParseFailed, stream_id=small, error=texts, status_hint=st.integers(0, 599)),
    st.builds(
        SseMessage,
        stream_id=small,
        data=st.binary(max_size=100),
        event=st.binary(max_size=10),
        id=st.none() | st.binary(max_size=8),
        retry_ms=st.none() | i64,
    ),
    st.builds(SseComment, stream_id=small, text=st.binary(max_size=30)),
    st.builds(
        SessionStarted,
        session_id=texts,
        identity=identities,
        client_addr=texts,
        source=st.sampled_from(["header", "assigned"]),
    ),
    st.builds(
        ExchangeStarted,
        exchange_id=texts,
        session_id=texts,
        identity=identities,
        client_addr=texts,
        listener=texts,
        protocol=texts,
        upstream=texts,
    ),
    st.builds(GatewayError, kind=texts, status=st.integers(0, 599), message=texts, client_addr=texts),
    st.builds(
        ExchangeEnded, outcome=texts, status=st.integers(0, 599), request_bytes=small, response_bytes=small
    ),
    st.builds(
        Checkpoint,
        segment=small,
        offset=small,
        chain=st.binary(min_size=32, max_size=32),
        frames=small,
        ts_ns=i64,
        key_id=st.binary(max_size=8),
        signature=st.binary(max_size=64),
        reason=texts,
    ),
    st.builds(
        Recovered,
        kind=st.sampled_from(["torn_tail", "sealed"]),
        segment=small,
        offset=small,
        bytes_cut=small,
        reason=texts,
        carried_frames=small,
    ),
    st.builds(
        Retention,
        removed=st.lists(small, max_size=4),
        first_kept=small,
        chain=st.binary(min_size=32, max_size=32),
        removed_bytes=small,
        reason=texts,
        held_sessions=st.lists(texts, max_size=3),
        kept_segments=st.lists(small, max_size=3),
    ),
    st.builds(GatewayStarted, boot_id=texts, pid=small, version=texts),
    st.builds(StreamReset, stream_id=small, error_code=small),
    st.builds(GoAway, error_code=small, last_stream_id=small, debug=st.binary(max_size=20)),
    st.builds(ConsoleAccess, action=texts, identity=identities, target=texts, query=texts, client_addr=texts),
    st.builds(
        PolicyDecision,
        allowed=st.booleans(),
        rule=texts,
        reason=texts,
        identity=identities,
        status=st.integers(0, 599),
    ),
    st.builds(
        MaskingApplied,
        stream_id=small,
        rule=st.text(max_size=20),
        scope=st.sampled_from(["record", "client"]),
        count=small,
        position=small,
        field=st.text(max_size=20),
    ),
    st.builds(
        ApprovalRequested,
        stream_id=small,
        hold_id=texts,
        rule=texts,
        tool_name=texts,
        call_id=texts,
        arguments_sha256=texts,
        requested_by=identities,
        approver_groups=st.lists(texts, max_size=3).map(tuple),
        expires_at_ns=i64,
    ),
    st.builds(
        ApprovalDecided,
        stream_id=small,
        hold_id=texts,
        verdict=st.sampled_from(["approved", "denied", "expired", "failed"]),
        approver=identities,
        comment=texts,
        reason=texts,
    ),
)

frames = st.builds(
    Frame,
    conn_id=texts,
    seq=small,
    ts_ns=i64,
    direction=st.sampled_from(Direction),
    event=events,
    exchange_id=texts,
)


@given(frames)
def test_decode_of_encode_is_identity(frame: Frame) -> None:
    assert decode_frame(encode_frame(frame)) == frame


def test_every_event_type_is_covered() -> None:
    assert len(RecordedEvent.__args__) == 23  # a new event type needs a strategy above
