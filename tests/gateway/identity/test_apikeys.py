"""Service API keys: shown once, stored as hashes, verified in constant time."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from gateway.identity.apikeys import (
    ApiKey,
    config_snippet,
    hash_api_key,
    is_valid_hash,
    new_api_key,
    verify_api_key,
)
from parsers.events import Identity
from tests.gateway.processes import ROOT


def test_keys_are_random_prefixed_and_hash_to_the_config_form() -> None:
    key = new_api_key()
    assert key.startswith("wg_")
    assert len(key) == 3 + 52
    assert new_api_key() != key
    assert is_valid_hash(hash_api_key(key))
    assert key not in hash_api_key(key)
    assert not is_valid_hash("sha256:xyz")


def test_verify_finds_the_matching_service_identity() -> None:
    ci, other = new_api_key(), new_api_key()
    configured = [
        ApiKey(name="other", hash=hash_api_key(other)),
        ApiKey(name="ci-bot", hash=hash_api_key(ci), groups=("ci",)),
    ]
    assert verify_api_key(ci, configured) == Identity(subject="ci-bot", method="api-key", groups=("ci",))
    assert verify_api_key(other, configured) == Identity(subject="other", method="api-key")
    assert verify_api_key(new_api_key(), configured) is None
    assert verify_api_key(hash_api_key(ci), configured) is None  # the stored hash is not a key
    assert verify_api_key("wg_" + "a" * 500, configured) is None
    assert verify_api_key("", configured) is None
    assert verify_api_key(ci, []) is None


def test_config_snippet_is_toml_that_round_trips() -> None:
    snippet = config_snippet('ci "bot"', hash_api_key("wg_x"), ["ci", "ops"])
    entry = tomllib.loads(snippet)["auth"]["api_keys"][0]
    assert entry == {"name": 'ci "bot"', "hash": hash_api_key("wg_x"), "groups": ["ci", "ops"]}


def test_apikey_new_prints_the_key_once_and_the_config_lines() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.identity",
            "apikey",
            "new",
            "--name",
            "ci-bot",
            "--groups",
            "ci",
        ],
        capture_output=True,
        timeout=30,
        cwd=ROOT,
        check=True,
    )
    out = result.stdout.decode()
    key = next(word for word in out.split() if word.startswith("wg_"))
    entry = tomllib.loads(out[out.index("[[auth.api_keys]]") :])["auth"]["api_keys"][0]
    assert out.count(key) == 1
    configured = [ApiKey(name=entry["name"], hash=entry["hash"], groups=tuple(entry["groups"]))]
    assert verify_api_key(key, configured) == Identity(subject="ci-bot", method="api-key", groups=("ci",))


def test_apikey_new_refuses_a_bad_name() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.identity", "apikey", "new", "--name", "a\nb"],
        capture_output=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 2
    assert b"--name" in result.stderr
