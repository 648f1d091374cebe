"""mask_forwarded: the forwarded and recorded heads get the same framing, any split of the body gives the
same request, and each rule and field is one maskingapplied event."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from gateway.masking import MaskingConfig, MaskingPlan
from gateway.upstream_masking import UpstreamRules, mask_forwarded, upstream_rules
from parsers.events import ANONYMOUS, BodyChunk, Event, MaskingApplied, MessageEnd, RequestHead
from tests.parsers.masking.fixtures import EMAIL, OPENAI_KEY
from tests.parsers.masking.strategies import cuts, split

PLAN = MaskingPlan(MaskingConfig(scopes={"email": ["upstream"], "openai_api_key": ["upstream"]}))
RULES = upstream_rules(PLAN, ANONYMOUS)
BODY = msgspec.json.encode(
    {"messages": [{"role": "user", "content": f"{EMAIL} {EMAIL}"}, {"role": "user", "content": OPENAI_KEY}]}
)
HEAD = RequestHead(
    method=b"POST",
    target=b"/v1/chat/completions",
    headers=[
        (b"Content-Type", b"application/json"),
        (b"Content-Length", b"%d" % len(BODY)),
        (b"api-key", b"s"),
    ],
)
RECORDED = msgspec.structs.replace(HEAD, headers=[*HEAD.headers[:2], (b"api-key", b"[placeholder]")])


def events(body: bytes, points: list[int], stream_id: int = 0) -> list[Event]:
    chunks: list[Event] = [BodyChunk(stream_id=stream_id, data=p) for p in split(body, points) if p]
    return [*chunks, MessageEnd(stream_id=stream_id)]


def test_no_rules_for_the_caller_means_no_masking() -> None:
    assert upstream_rules(MaskingPlan(MaskingConfig()), ANONYMOUS) is None
    assert upstream_rules(None, ANONYMOUS) is None


@given(st.data())
def test_any_split_of_the_body_gives_the_same_request(data: st.DataObject) -> None:
    assert isinstance(RULES, UpstreamRules)
    whole = mask_forwarded(HEAD, RECORDED, events(BODY, []), RULES, max_body_bytes=1 << 20)
    points = data.draw(cuts(len(BODY)))
    assert mask_forwarded(HEAD, RECORDED, events(BODY, points), RULES, max_body_bytes=1 << 20) == whole


def test_heads_applied_events_and_stream_ids() -> None:
    assert RULES is not None
    masked = mask_forwarded(HEAD, RECORDED, events(BODY, [5], stream_id=3), RULES, max_body_bytes=1 << 20)
    (chunk, end) = masked.body
    assert isinstance(chunk, BodyChunk)
    assert (chunk.stream_id, end.stream_id) == (3, 3)
    assert msgspec.json.decode(chunk.data)["messages"][0]["content"] == "[MASKED:email] [MASKED:email]"
    length = (b"Content-Length", b"%d" % len(chunk.data))
    assert masked.forwarded.headers == [(b"Content-Type", b"application/json"), (b"api-key", b"s"), length]
    assert masked.recorded.headers == [
        (b"Content-Type", b"application/json"),
        (b"api-key", b"[placeholder]"),  # the credential placeholder stays
        length,
    ]
    assert masked.applied == [
        MaskingApplied(
            stream_id=3,
            rule="email",
            scope="upstream",
            count=2,
            position=BODY.index(EMAIL.encode()),
            field="messages[0].content",
        ),
        MaskingApplied(
            stream_id=3,
            rule="openai_api_key",
            scope="upstream",
            count=1,
            position=BODY.index(OPENAI_KEY.encode()),
            field="messages[1].content",
        ),
    ]


def test_a_body_without_matches_is_forwarded_as_it_came() -> None:
    assert RULES is not None
    body = events(b'{"a": "nothing here"}', [3])
    masked = mask_forwarded(HEAD, RECORDED, body, RULES, max_body_bytes=1 << 20)
    assert masked == (HEAD, RECORDED, body, [])
