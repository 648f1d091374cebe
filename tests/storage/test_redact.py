"""Credential redaction: secrets never survive, equal secrets get equal tags, other headers are untouched."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.errors import StorageError
from storage.redact import KEY_BYTES, load_or_create_key, redact_headers

KEY = bytes(range(32))
SECRET = b"sk-proj-Zq8r1VJm2cT0pA4nXyWe9B"
REDACTED = re.compile(rb"((Bearer|Basic) )?\[redacted hmac-sha256:[0-9a-f]{16}\]")


def test_bearer_keeps_its_scheme_and_loses_the_token() -> None:
    [(name, value)] = redact_headers([(b"Authorization", b"Bearer " + SECRET)], KEY)
    assert name == b"Authorization"
    assert value.startswith(b"Bearer [redacted hmac-sha256:")
    assert value.endswith(b"]")
    assert len(value) == len(b"Bearer [redacted hmac-sha256:]") + 16
    assert SECRET not in value


@pytest.mark.parametrize(
    "name", [b"authorization", b"PROXY-AUTHORIZATION", b"Cookie", b"Set-Cookie", b"X-Api-Key", b"api-key"]
)
def test_every_secret_header_is_redacted_case_insensitively(name: bytes) -> None:
    [(_, value)] = redact_headers([(name, SECRET)], KEY)
    assert SECRET not in value
    assert value.startswith(b"[redacted hmac-sha256:")


def test_unknown_scheme_word_is_not_kept() -> None:
    # "sk-abc def" has no real scheme: keeping the first word would leak half the secret.
    [(_, value)] = redact_headers([(b"Authorization", b"sk-abc def")], KEY)
    assert b"sk-abc" not in value


def test_same_secret_same_tag_other_key_other_tag() -> None:
    one = redact_headers([(b"x-api-key", SECRET)], KEY)
    two = redact_headers([(b"X-API-KEY", SECRET)], KEY)
    other = redact_headers([(b"x-api-key", SECRET)], bytes(32))
    assert one[0][1] == two[0][1] != other[0][1]


def test_other_headers_untouched_and_order_kept() -> None:
    headers = [(b"Host", b"api"), (b"Cookie", b"a=b"), (b"Content-Type", b"application/json")]
    out = redact_headers(headers, KEY)
    assert [h[0] for h in out] == [h[0] for h in headers]
    assert out[0] == headers[0]
    assert out[2] == headers[2]
    assert out[1][1] != b"a=b"


def test_nothing_to_redact_returns_the_same_list() -> None:
    headers = [(b"Host", b"api")]
    assert redact_headers(headers, KEY) is headers


@given(st.binary(min_size=8, max_size=64), st.sampled_from([b"Authorization", b"cookie", b"api-key"]))
def test_secret_bytes_never_survive(secret: bytes, name: bytes) -> None:
    for value in (secret, b"Bearer " + secret, b"Basic " + secret):
        [(_, out)] = redact_headers([(name, value)], KEY)
        # The output is only a known scheme word and the tag: nothing of the value can be in it.
        assert REDACTED.fullmatch(out), out


def test_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "redact.key"
    key = load_or_create_key(path)
    assert len(key) == KEY_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key
    assert [p.name for p in path.parent.iterdir()] == ["redact.key"]


def test_bad_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "redact.key"
    path.write_bytes(b"short")
    with pytest.raises(StorageError, match="32 byte key"):
        load_or_create_key(path)


def test_known_secrets_give_the_same_tags_as_computing_them() -> None:
    key = b"k" * KEY_BYTES
    headers = [(b"Authorization", b"Bearer sk-one"), (b"X-Api-Key", b"two"), (b"Accept", b"*/*")]
    known: dict[bytes, bytes] = {}
    first = redact_headers(headers, key, known)
    assert first == redact_headers(headers, key)
    assert set(known) == {b"sk-one", b"two"}
    known[b"two"] = b"[cached]"  # a second head with the same secret takes the tag from the cache
    assert redact_headers(headers, key, known)[1] == (b"X-Api-Key", b"[cached]")
