"""Body maskers: JSON stays JSON (only strings change), any split equals the whole, text byte for byte."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from parsers.masking import JsonMasker, TextMasker, mask_body, mask_text, select
from tests.parsers.masking.fixtures import AWS_KEY_ID, EMAIL, OPENAI_KEY, PEM, TRUE_POSITIVES
from tests.parsers.masking.strategies import cuts, split, texts

RULES = select()

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=12,
)


def masked_json(value: Any) -> Any:
    """What masking should do to a decoded document: every string masked on its own."""
    if isinstance(value, str):
        return mask_text(RULES, value)[0]
    if isinstance(value, list):
        return [masked_json(v) for v in value]
    if isinstance(value, dict):
        return {masked_json(k): masked_json(v) for k, v in value.items()}
    return value


def chunked(masker: JsonMasker | TextMasker, body: bytes, points: list[int]) -> bytes:
    return b"".join(masker.feed(piece) for piece in split(body, points)) + masker.finish()


@given(json_values, st.booleans(), st.data())
def test_masked_json_parses_and_any_split_equals_the_whole(
    value: Any, pretty: bool, data: st.DataObject
) -> None:
    body = msgspec.json.format(msgspec.json.encode(value), indent=2 if pretty else 0)
    whole = mask_body(JsonMasker(RULES), body)
    assert msgspec.json.decode(whole) == masked_json(value)
    points = data.draw(cuts(len(body)))
    assert chunked(JsonMasker(RULES), body, points) == whole


def test_unmasked_bytes_are_kept_exactly() -> None:
    body = b'{ "a" : "caf\\u00e9 \\"q\\" \xc3\xa9",\n  "n": [1, 2.5e3, true, null] }'
    assert mask_body(JsonMasker(RULES), body) == body


def test_secret_in_a_string_with_escapes_around_it() -> None:
    content = f"line\n{PEM}\nkey={OPENAI_KEY}\tmail:{EMAIL}\\"
    body = msgspec.json.encode({"messages": [{"role": "user", "content": content}]})
    masker = JsonMasker(RULES)
    out = chunked(masker, body, list(range(0, len(body), 3)))
    decoded = msgspec.json.decode(out)
    assert decoded["messages"][0]["content"] == mask_text(RULES, content)[0]
    assert [hit.rule for hit in masker.take_hits()] == ["private_key", "openai_api_key", "email"]


def test_hit_positions_are_body_offsets() -> None:
    body = b'{"k": "id ' + AWS_KEY_ID.encode() + b'"}'
    masker = JsonMasker(RULES)
    mask_body(masker, body)
    (hit,) = masker.take_hits()
    assert hit.position == body.index(AWS_KEY_ID.encode())


def test_not_json_is_masked_as_text_from_where_it_stops_being_json() -> None:
    body = b'{"a": 1, key=' + OPENAI_KEY.encode() + b"}"
    out = mask_body(JsonMasker(RULES), body)
    assert out == b'{"a": 1, key=[MASKED:openai_api_key]}'


@given(st.sampled_from(TRUE_POSITIVES), st.data())
def test_text_bodies_byte_for_byte(case: tuple[str, str, str], data: st.DataObject) -> None:
    _, text, secret = case
    body = b"\xff\x00 " + text.encode() + b" \xc3\xa9"
    whole = mask_body(TextMasker(RULES), body)
    assert secret.encode() not in whole
    assert whole.startswith(b"\xff\x00 ")
    assert whole.endswith(b" \xc3\xa9")
    assert chunked(TextMasker(RULES), body, data.draw(cuts(len(body)))) == whole


PLAIN_BODY = msgspec.json.encode(
    {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "say hello in 3 words"}],
        "stream": False,
        "max_tokens": 64,
    }
)


@given(st.data())
def test_body_with_nothing_to_mask_passes_byte_for_byte(data: st.DataObject) -> None:
    masker = JsonMasker(RULES)
    assert masker._passes(PLAIN_BODY)  # whole strings, no escapes, no rule can match: not looked into
    assert chunked(masker, PLAIN_BODY, data.draw(cuts(len(PLAIN_BODY)))) == PLAIN_BODY
    assert masker.take_hits() == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": "caf\\u00e9"}',  # an escape
        '{"a": "café"}'.encode(),  # not ASCII
        b'{"a": "open',  # a string goes on in the next piece
        b'{"a": 1, b=2}',  # not JSON
    ],
)
def test_bodies_that_are_looked_into(body: bytes) -> None:
    assert not JsonMasker(RULES)._passes(body)


@pytest.mark.parametrize(("rule", "text", "secret"), TRUE_POSITIVES)
def test_secret_in_a_plain_ascii_body_is_masked(rule: str, text: str, secret: str) -> None:
    body = msgspec.json.encode({"model": "m", "input": text, "n": 1})
    out = mask_body(JsonMasker(RULES), body)
    assert secret.encode() not in out
    assert msgspec.json.decode(out)["input"] == mask_text(RULES, text)[0]
    # After a piece with nothing to mask, the next one is still looked into.
    masker = JsonMasker(RULES)
    first = msgspec.json.encode({"model": "m"})[:-1] + b", "
    rest = body[1:]
    assert chunked(masker, first + rest, [len(first)]) == mask_body(JsonMasker(RULES), first + rest)
    assert secret.encode() not in chunked(JsonMasker(RULES), first + rest, [len(first)])
