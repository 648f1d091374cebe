"""A request body masked whole for the upstream scope: JSON stays JSON with a matching Content-Length,
hits name their field, compressed bodies are decoded, what cannot be masked is refused."""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from parsers.events import Headers
from parsers.masking import select
from parsers.masking.request import UnmaskableBody, json_fields, mask_request_body
from tests.parsers.masking.fixtures import EMAIL, OPENAI_KEY
from tests.parsers.masking.test_bodies import json_values, masked_json

RULES = select()
JSON_HEAD: Headers = [(b"Host", b"model"), (b"Content-Type", b"application/json"), (b"Content-Length", b"0")]
CHAT = {
    "model": "gpt-x",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": f"mail {EMAIL} and key {OPENAI_KEY}"},
    ],
    "tools": [{"type": "function", "function": {"name": "f", "description": f"ask {EMAIL}"}}],
}


def masked(body: bytes, headers: Headers = JSON_HEAD, **options: Any) -> tuple[bytes, Headers, list[Any]]:
    result = mask_request_body(
        headers, body, RULES, max_hold_chars=4096, max_body_bytes=options.pop("limit", 1 << 20), **options
    )
    return result.data, result.headers, result.hits


def length(headers: Headers) -> int:
    (value,) = [v for n, v in headers if n.lower() == b"content-length"]
    return int(value)


@given(json_values)
def test_masked_json_parses_with_its_content_length(value: Any) -> None:
    body = msgspec.json.encode(value)
    data, headers, hits = masked(body, chunked=False)
    assert msgspec.json.decode(data) == masked_json(value)
    if hits:
        assert length(headers) == len(data)
    else:
        assert (data, headers) == (body, JSON_HEAD)  # nothing to mask: byte for byte, head and all


def test_chat_request_hits_name_their_fields() -> None:
    body = msgspec.json.encode(CHAT)
    data, headers, hits = masked(body, chunked=False)
    decoded = msgspec.json.decode(data)
    assert decoded["messages"][1]["content"] == "mail [MASKED:email] and key [MASKED:openai_api_key]"
    assert [(hit.rule, field) for hit, field in hits] == [
        ("email", "messages[1].content"),
        ("openai_api_key", "messages[1].content"),
        ("email", "tools[0].function.description"),
    ]
    assert hits[0][0].position == body.index(EMAIL.encode())
    assert headers[:2] == JSON_HEAD[:2]
    assert length(headers) == len(data)


def test_trailers_keep_chunked_framing() -> None:
    head: Headers = [(b"Content-Type", b"application/json"), (b"Transfer-Encoding", b"chunked")]
    data, headers, _ = masked(msgspec.json.encode(CHAT), head, chunked=True)
    assert headers == [(b"Content-Type", b"application/json"), (b"Transfer-Encoding", b"chunked")]
    assert EMAIL.encode() not in data


@pytest.mark.parametrize("coding", [b"gzip", b"deflate"])
def test_compressed_bodies_are_decoded_and_forwarded_plain(coding: bytes) -> None:
    plain = msgspec.json.encode(CHAT)
    body = gzip.compress(plain) if coding == b"gzip" else zlib.compress(plain)
    data, headers, hits = masked(body, [*JSON_HEAD, (b"Content-Encoding", coding)], chunked=False)
    assert len(hits) == 3
    assert all(name.lower() != b"content-encoding" for name, _ in headers)
    assert msgspec.json.decode(data)["model"] == "gpt-x"
    assert length(headers) == len(data)


def test_text_bodies_are_masked_byte_for_byte() -> None:
    head: Headers = [(b"Content-Type", b"text/plain")]
    data, headers, hits = masked(b"\xff key " + OPENAI_KEY.encode(), head, chunked=False)
    assert data == b"\xff key [MASKED:openai_api_key]"
    assert hits[0][1] == ""
    assert headers == [*head, (b"Content-Length", b"%d" % len(data))]


@pytest.mark.parametrize(
    ("coding", "body", "status"),
    [
        (b"br", b"\x00", 415),
        (b"gzip, gzip", b"\x00", 415),
        (b"gzip", b"not gzip at all", 400),
        (b"gzip", gzip.compress(b"{}" + b" " * 5000), 413),  # decodes past the limit: a zip bomb
    ],
)
def test_what_cannot_be_masked_is_refused(coding: bytes, body: bytes, status: int) -> None:
    with pytest.raises(UnmaskableBody) as refused:
        masked(body, [*JSON_HEAD, (b"Content-Encoding", coding)], chunked=False, limit=4096)
    assert refused.value.status == status


_KEYS = st.text(alphabet="abcxyz_", min_size=1, max_size=4)
_SHAPES: st.SearchStrategy[Any] = st.recursive(
    st.just("leaf") | st.integers() | st.none(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_KEYS, children, max_size=3),
    max_leaves=10,
)


def _marked(shape: Any, path: str, leaves: dict[str, str]) -> Any:
    """``shape`` with each "leaf" replaced by a unique marker, remembering each marker's path."""
    if shape == "leaf":
        marker = f"@@{len(leaves)}@@"
        leaves[marker] = path
        return f'say "{marker}"'  # an escape before it: offsets count raw bytes
    if isinstance(shape, list):
        return [_marked(v, f"{path}[{i}]", leaves) for i, v in enumerate(shape)]
    if isinstance(shape, dict):
        return {k: _marked(v, f"{path}.{k}" if path else k, leaves) for k, v in shape.items()}
    return shape


@given(_SHAPES, st.booleans())
def test_json_fields_finds_the_path_of_any_string(shape: Any, pretty: bool) -> None:
    leaves: dict[str, str] = {}
    body = msgspec.json.encode(_marked(shape, "", leaves))
    body = msgspec.json.format(body, indent=2) if pretty else body
    offsets = {marker: body.index(marker.encode()) for marker in leaves}
    found = json_fields(body, list(offsets.values()))
    assert {marker: found[offset] for marker, offset in offsets.items()} == leaves


def test_offsets_outside_strings_have_no_field() -> None:
    body = b'{"a": [1, "x"], "b": 2}'
    assert json_fields(body, [0, body.index(b"2"), body.index(b"x"), len(body) + 5]) == {
        0: "",
        body.index(b"2"): "",
        body.index(b"x"): "a[1]",
        len(body) + 5: "",
    }
