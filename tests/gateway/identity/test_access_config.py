"""The auth, policy and upstream_credential config sections: TOML in, a working AccessControl out."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load, validate
from gateway.identity.access import AccessControl
from gateway.identity.apikeys import hash_api_key, new_api_key
from parsers.events import ANONYMOUS, Identity, RequestHead
from tests.gateway.identity.keys import AUDIENCE, ISSUER, claims, jwks, rsa_key

RSA = rsa_key()


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wardgate.toml"
    path.write_text(text)
    return path


def full_config(tmp_path: Path, key_hash: str) -> str:
    (tmp_path / "jwks.json").write_bytes(jwks(RSA))
    (tmp_path / "model.key").write_text("sk-upstream-secret\n")
    return f"""
[auth.oidc]
issuer = "{ISSUER}"
jwks_file = "{tmp_path / "jwks.json"}"
audience = ["{AUDIENCE}"]
groups_claim = "realm_access.roles"
leeway_s = 5

[[auth.api_keys]]
name = "ci-bot"
hash = "{key_hash}"
groups = ["ci"]

[[policy.rules]]
name = "devs-chat"
groups = ["dev"]
paths = ["/v1/chat/completions"]
methods = ["POST"]
models = ["mock-*"]
max_tokens = 100

[[policy.rules]]
name = "no-big-model"
effect = "deny"
models = ["mock-big*"]

[upstream_credential]
file = "{tmp_path / "model.key"}"
header = "X-Model-Key"
"""


async def test_a_full_config_authenticates_decides_and_rewrites(tmp_path: Path) -> None:
    key = new_api_key()
    config = validate(load(config_file(tmp_path, full_config(tmp_path, hash_api_key(key)))))
    assert config.auth.oidc is not None
    assert config.auth.oidc.groups_claim == "realm_access.roles"
    access = AccessControl.from_config(config, {})
    assert access is not None

    token = RSA.sign(claims(realm_access={"roles": ["dev"]}))
    head = RequestHead(
        method=b"POST",
        target=b"/v1/chat/completions",
        headers=[
            (b"Authorization", b"Bearer " + token.encode()),
            (b"API-Key", b"client-guess"),
            (b"x-model-key", b"client-guess"),
        ],
    )
    alice = await access.authenticate(head, "")
    assert (alice.subject, alice.groups, alice.method) == ("alice", ("dev",), "oidc")
    assert access.needs_body(alice, head)
    allowed = access.decide(alice, head, b'{"model": "mock-gpt", "max_tokens": 50}')
    assert allowed is not None
    assert (allowed.allowed, allowed.rule) == (True, "devs-chat")

    sent, recorded = access.outbound(head)
    assert sent.headers == [(b"X-Model-Key", b"sk-upstream-secret")]  # every client credential gone
    # A header name the recorder would not redact: the recording gets a placeholder.
    assert recorded.headers == [(b"X-Model-Key", b"[wardgate upstream credential]")]

    ci_head = RequestHead(
        method=b"GET", target=b"/v1/models", headers=[(b"authorization", b"Bearer " + key.encode())]
    )
    assert await access.authenticate(ci_head, "") == Identity(
        subject="ci-bot", method="api-key", groups=("ci",)
    )


def test_nothing_configured_means_no_access_control(tmp_path: Path) -> None:
    assert AccessControl.from_config(validate(load(None)), {}) is None


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('[[auth.api_keys]]\nname = "x"\nhash = "wg_plaintextkey"\n', r"auth\.api_keys\[0\]\.hash"),
        (
            '[[auth.api_keys]]\nname = "x"\nhash = "sha256:' + "0" * 64 + '"\n'
            '[[auth.api_keys]]\nname = "x"\nhash = "sha256:' + "1" * 64 + '"\n',
            r"auth\.api_keys\.name\[1\]",
        ),
        ('[auth.oidc]\naudience = ["w"]\n', r"auth\.oidc\.issuer"),
        ('[[auth.mtls]]\nsubject = "CN=a"\nname = "a"\n', r"auth\.mtls: .*tls_client_ca"),
        ('[[policy.rules]]\nname = "default-deny"\n', r"policy\.rules\[0\]\.name"),
        ('[[policy.rules]]\nname = "r"\nmethods = ["post"]\n', r"policy\.rules\[0\]\.methods"),
        ('[[policy.rules]]\nname = "r"\neffect = "deny"\nmax_tokens = 5\n', r"policy\.rules\[0\]"),
        ('[upstream_credential]\nenv = "A"\nfile = "b"\n', r"upstream_credential"),
        ('[upstream_credential]\nvalue = "sk-in-clear"\n', r"value"),  # no such field, on purpose
        ('[upstream_credential]\nenv = "A"\nheader = "bad header"\n', r"upstream_credential\.header"),
    ],
)
def test_bad_auth_settings_name_the_field(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        validate(load(config_file(tmp_path, text)))


def test_oidc_algorithms_exclude_none_and_hmac(tmp_path: Path) -> None:
    text = f'[auth.oidc]\nissuer = "{ISSUER}"\naudience = ["w"]\nalgorithms = ["HS256"]\n'
    config = validate(load(config_file(tmp_path, text)))
    with pytest.raises(ConfigError, match=r"auth\.oidc\.algorithms"):
        AccessControl.from_config(config, {})


def test_the_upstream_credential_comes_from_the_environment(tmp_path: Path) -> None:
    config = validate(load(config_file(tmp_path, '[upstream_credential]\nenv = "MODEL_KEY"\n')))
    with pytest.raises(ConfigError, match=r"\$MODEL_KEY is not set"):
        AccessControl.from_config(config, {})
    with pytest.raises(ConfigError, match="printable ASCII"):
        AccessControl.from_config(config, {"MODEL_KEY": "sk-1\r\nX-Injected: 1"})
    access = AccessControl.from_config(config, {"MODEL_KEY": "sk-env"})
    assert access is not None
    assert access.authenticator is None
    assert not access.policy.enforcing
    assert access.decide(ANONYMOUS, RequestHead(method=b"GET", target=b"/x", headers=[]), None) is None
    head = RequestHead(
        method=b"GET", target=b"/v1/models", headers=[(b"AUTHORIZATION", b"Bearer sk-client")] * 2
    )
    sent, recorded = access.outbound(head)
    assert sent.headers == [(b"Authorization", b"Bearer sk-env")]
    assert recorded == sent  # Authorization: the recorder keeps only a fingerprint
