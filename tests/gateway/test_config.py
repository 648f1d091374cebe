"""Configuration: typed decoding, validation that names the field, flags over the file."""

from __future__ import annotations

import argparse
from pathlib import Path

import msgspec
import pytest

from gateway.config import (
    Config,
    ConfigError,
    ListenerConfig,
    UpstreamUrl,
    apply_flags,
    load,
    parse_upstream,
    validate,
)


def test_defaults_validate() -> None:
    config = validate(Config())
    assert config.storage.durability == "strict"
    assert config.listeners[0].protocol == "http1"


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ('[limits]\nmax_head_bytes = "x"\n', "limits.max_head_bytes"),
        ('[storage]\ndurability = "sometimes"\n', "storage.durability"),
        ("[[listeners]]\nlisten = 8080\n", "listeners[0].listen"),
        ("[sessions]\nidle = 3\n", "idle"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_bad_file_names_the_field(tmp_path: Path, toml: str, field: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        load(path)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (Config(listeners=[ListenerConfig(protocol="pgwire")]), r"listeners\[0\].protocol: unknown protocol"),
        (
            Config(listeners=[ListenerConfig(listen="localhost")]),
            r"listeners\[0\].listen: expected HOST:PORT",
        ),
        (Config(listeners=[ListenerConfig(upstream="ftp://x")]), r"listeners\[0\].upstream"),
        (Config(listeners=[]), "at least one listener"),
        (Config(listeners=[ListenerConfig(tls_cert="c.pem")]), r"listeners\[0\].tls_cert: .* go together"),
        (Config(listeners=[ListenerConfig(tls_key="k.pem")]), r"listeners\[0\].tls_cert: .* go together"),
        (Config(listeners=[ListenerConfig(tls_client_ca="ca.pem")]), r"listeners\[0\].tls_client_ca: .*TLS"),
        (
            Config(listeners=[ListenerConfig(upstream_ca="ca.pem")]),
            r"listeners\[0\].upstream_ca: applies to https:// upstreams only",
        ),
        (
            Config(listeners=[ListenerConfig(upstream_insecure=True)]),
            r"listeners\[0\].upstream_insecure: applies to https:// upstreams only",
        ),
        (
            Config(
                listeners=[ListenerConfig(upstream="https://m", upstream_ca="ca.pem", upstream_insecure=True)]
            ),
            r"listeners\[0\].upstream_insecure: contradicts upstream_ca",
        ),
    ],
)
def test_validation_names_the_field(config: Config, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(config)


def test_negative_limit_is_refused() -> None:
    config = Config()
    config = msgspec.structs.replace(config, limits=msgspec.structs.replace(config.limits, max_body_bytes=-1))
    with pytest.raises(ConfigError, match=r"limits\.max_body_bytes"):
        validate(config)


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[[listeners]]\nlisten = "127.0.0.1:1"\nupstream = "http://u:1"\ndurability = "batched"\n'
        '[storage]\ndata_dir = "/file"\n'
    )
    args = argparse.Namespace(
        listen="127.0.0.1:2",
        upstream=None,
        data_dir="/flag",
        durability=None,
        admin_listen="",
        tls_cert="/tls/cert.pem",
        tls_key="/tls/key.pem",
        tls_client_ca=None,
    )
    config = validate(apply_flags(load(path), args))
    assert config.listeners[0].listen == "127.0.0.1:2"
    assert (config.listeners[0].tls_cert, config.listeners[0].tls_key) == ("/tls/cert.pem", "/tls/key.pem")
    assert config.listeners[0].tls_client_ca == ""
    assert config.listeners[0].upstream == "http://u:1"
    assert config.listeners[0].durability == "batched"
    assert config.storage.data_dir == "/flag"
    assert config.admin.listen == ""


def test_upstream_url_forms() -> None:
    assert parse_upstream("http://10.0.0.5:8000/openai/", field="f") == UpstreamUrl(
        "http", "10.0.0.5", 8000, "/openai"
    )
    assert parse_upstream("http://[::1]:8000", field="f") == UpstreamUrl("http", "::1", 8000, "")
    assert parse_upstream("http://model", field="f") == UpstreamUrl("http", "model", 80, "")
    assert parse_upstream("https://api.example.com/v1", field="f") == UpstreamUrl(
        "https", "api.example.com", 443, "/v1"
    )
    assert parse_upstream("https://[::1]:8443", field="f").authority == "[::1]:8443"
    assert parse_upstream("https://model:443", field="f").authority == "model"
    assert parse_upstream("http://model:8000", field="f").authority == "model:8000"
