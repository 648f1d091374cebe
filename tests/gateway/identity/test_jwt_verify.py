"""The verifier against crafted tokens: each python-jose weakness of issue 4 closed, each failure a reason."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jose import jwt

from gateway.config import ConfigError
from gateway.identity.jwks import JwksCache
from gateway.identity.jwt_verify import TokenRejected, TokenVerifier, VerifierConfig, groups_from
from parsers.events import Identity
from tests.gateway.identity.keys import (
    AUDIENCE,
    DROP,
    ISSUER,
    SigningKey,
    b64,
    claims,
    ec_key,
    hs256,
    jwks,
    rsa_key,
    unsigned,
)

RSA = rsa_key()
EC = ec_key()


def verifier(*keys: SigningKey | dict[str, Any], **config: Any) -> TokenVerifier:
    document = jwks(*(keys or (RSA, EC)))

    async def load() -> bytes:
        return document

    settings: dict[str, Any] = {"issuer": ISSUER, "audiences": (AUDIENCE,), **config}
    return TokenVerifier(VerifierConfig(**settings), JwksCache(load))


async def rejected(token: str, v: TokenVerifier | None = None) -> str:
    with pytest.raises(TokenRejected) as info:
        await (v or verifier()).verify(token)
    reason = info.value.reason
    assert len(reason) < 80  # short, and secret-free: no token material in it
    assert not any(len(part) > 8 and part in reason for part in token.split("."))
    return reason


async def test_valid_rs256_and_es256_tokens_give_the_identity() -> None:
    expected = Identity(
        subject="alice",
        method="oidc",
        email="alice@example.test",
        name="Alice",
        groups=("dev", "ops"),
        issuer=ISSUER,
        token_id="t-1",
    )
    assert await verifier().verify(RSA.sign(claims())) == expected
    assert await verifier().verify(EC.sign(claims())) == expected


async def test_aud_may_be_a_list_naming_us() -> None:
    identity = await verifier().verify(RSA.sign(claims(aud=["other", AUDIENCE])))
    assert identity.subject == "alice"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": 1000}, "token expired"),
        ({"nbf": 2**40}, "token not yet valid"),
        ({"iat": 2**40}, "token issued in the future"),
        ({"iss": "https://evil.example"}, "wrong issuer"),
        ({"aud": "someone-else"}, "wrong audience"),
        ({"aud": []}, "aud claim is not a string or a list of strings"),
        ({"aud": [AUDIENCE, 7]}, "aud claim is not a string or a list of strings"),
        ({"aud": DROP}, "missing aud claim"),
        ({"exp": DROP}, "missing exp claim"),
        ({"iss": DROP}, "missing iss claim"),
        ({"sub": DROP}, "missing sub claim"),
        ({"exp": [2**40]}, "exp claim is not a number"),  # jose: bare TypeError
        ({"nbf": None}, "nbf claim is not a number"),  # jose: bare TypeError
        ({"exp": str(2**40)}, "exp claim is not a number"),  # jose: accepted
        ({"exp": True}, "exp claim is not a number"),
        ({"exp": 10**400}, "exp claim is not a number"),
        ({"exp": float("nan")}, "exp claim is not a number"),
        ({"iat": float("inf")}, "iat claim is not a number"),
        ({"iss": [ISSUER]}, "iss claim is not a string"),
        ({"sub": 42}, "sub claim is not a string"),
    ],
)
async def test_bad_claims_are_refused_with_a_reason(overrides: dict[str, Any], reason: str) -> None:
    assert await rejected(RSA.sign(claims(**overrides))) == reason


async def test_leeway_is_configurable() -> None:
    token = RSA.sign(claims(exp=int(time.time()) - 20))
    assert (await verifier(leeway_s=60).verify(token)).subject == "alice"
    assert await rejected(token, verifier(leeway_s=0)) == "token expired"


async def test_required_claims_are_configurable() -> None:
    v = verifier(required_claims=frozenset({"exp"}), audiences=())
    assert (await v.verify(RSA.sign(claims(aud=DROP, iss=DROP)))).subject == "alice"


async def test_alg_none_is_refused() -> None:
    token = unsigned({"alg": "none", "kid": RSA.kid}, claims())
    assert await rejected(token) == "not a signed JWT"
    token = unsigned({"alg": "none", "kid": RSA.kid}, claims(), b"x")
    assert await rejected(token) == "algorithm not allowed"


@pytest.mark.parametrize("encoding", ["pem", "der"])
async def test_hs256_signed_with_the_rsa_public_key_is_refused(encoding: str) -> None:
    secret = RSA.public_pem if encoding == "pem" else RSA.public_der
    token = hs256(secret, claims(), RSA.kid)
    if encoding == "der":  # python-jose itself accepts this one when HS256 is among its algorithms
        assert jwt.decode(token, secret, algorithms=["HS256"], audience=AUDIENCE)["sub"] == "alice"
    assert await rejected(token) == "algorithm not allowed"


@pytest.mark.parametrize("alg", ["none", "HS256", "HS384", "HS512", "XX1"])
def test_the_allow_list_never_takes_none_or_hmac(alg: str) -> None:
    with pytest.raises(ConfigError, match=alg):
        VerifierConfig(issuer=ISSUER, audiences=(AUDIENCE,), algorithms=("RS256", alg))


async def test_an_algorithm_outside_the_configured_list_is_refused() -> None:
    assert await rejected(EC.sign(claims()), verifier(algorithms=("RS256",))) == "algorithm not allowed"


async def test_es256_token_with_an_rsa_key_under_that_kid_is_refused() -> None:
    impostor = ec_key(kid=RSA.kid)
    assert await rejected(impostor.sign(claims())) == "key type does not match algorithm"


async def test_only_the_key_named_by_kid_is_tried() -> None:
    other = rsa_key("rsa-2")
    # Signed by a key in the set, but naming another key's kid: jose alone would try every key.
    token = other.sign(claims(), kid=RSA.kid)
    assert await rejected(token, verifier(RSA, other)) == "invalid signature or claims"


async def test_unknown_kid_is_refused() -> None:
    assert await rejected(rsa_key("nobody").sign(claims())) == "unknown key id"


async def test_a_token_without_kid_uses_the_only_key_or_none() -> None:
    token = jwt.encode(claims(), RSA.private_pem.decode(), algorithm="RS256")
    assert (await verifier(RSA).verify(token)).subject == "alice"
    assert await rejected(token, verifier(RSA, EC)) == "unknown key id"


async def test_tampered_payload_is_refused() -> None:
    head, _, sig = RSA.sign(claims()).split(".")
    forged = b64(json.dumps(claims(sub="mallory")).encode())
    assert await rejected(f"{head}.{forged}.{sig}") == "invalid signature or claims"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("a.b", "not a signed JWT"),
        ("a.b.c.d.e", "not a signed JWT"),
        ("!!!.eyJ9.abc", "malformed header"),
        ("eyJhbGciOiJSUzI1NiJ9.%%%.abc", "malformed payload"),
        ("eyJhbGciOiJSUzI1NiJ9.a.abc", "malformed payload"),
        (f"{b64(b'[1]')}.{b64(b'{}')}.abc", "malformed header"),
        (f"{b64(b'not json')}.{b64(b'{}')}.abc", "malformed header"),
        ("eyJhbGciOiJSUzI1NiJ9.eyJ9.a+b/", "malformed signature"),
        ("é.é.é", "token is not ASCII"),
    ],
)
async def test_malformed_tokens_are_refused(token: str, reason: str) -> None:
    assert await rejected(token) == reason


@pytest.mark.parametrize("size", [16 * 1024, 1024 * 1024])
async def test_oversized_tokens_are_refused_before_parsing(size: int) -> None:
    token = RSA.sign(claims(pad="x" * size))
    assert await rejected(token) == "token too large"


async def test_crit_header_is_refused() -> None:
    assert await rejected(RSA.sign(claims(), crit=["exp"])) == "critical header extensions not supported"


async def test_a_key_marked_for_another_algorithm_is_refused() -> None:
    ps = {**RSA.jwk, "alg": "PS256"}
    assert await rejected(RSA.sign(claims()), verifier(ps)) == "key is for another algorithm"


async def test_verified_tokens_are_cached_until_expiry() -> None:
    now = [1_000_000.0]
    document = jwks(RSA)
    loads = 0

    async def load() -> bytes:
        nonlocal loads
        loads += 1
        return document

    config = VerifierConfig(issuer=ISSUER, audiences=(AUDIENCE,), leeway_s=0, cache_entries=2)
    v = TokenVerifier(config, JwksCache(load), clock=lambda: now[0])
    token = RSA.sign(claims(exp=1_000_100, iat=999_990, nbf=999_990))
    first = await v.verify(token)
    document = b'{"keys": []}'  # a cache hit needs no key
    assert await v.verify(token) is first
    now[0] = 1_000_100.0
    assert await rejected(token, v) == "token expired"


def test_groups_from_claim_paths() -> None:
    token = {
        "groups": ["a", 1, "b"],
        "roles": "x, y z",
        "realm_access": {"roles": ["admin"]},
        "https://example.test/roles": ["ns"],
        "deep": {"er": {"groups": "g1,g2"}},
    }
    assert groups_from(token, "groups") == ("a", "b")
    assert groups_from(token, "roles") == ("x", "y", "z")
    assert groups_from(token, "realm_access.roles") == ("admin",)
    assert groups_from(token, "https://example.test/roles") == ("ns",)
    assert groups_from(token, "deep.er.groups") == ("g1", "g2")
    assert groups_from(token, "missing.path") == ()
    assert groups_from({"groups": {"a": 1}}, "groups") == ()


async def test_groups_from_a_nested_claim_in_a_token() -> None:
    token = RSA.sign(claims(groups=DROP, realm_access={"roles": ["ops"]}))
    identity = await verifier(groups_claim="realm_access.roles").verify(token)
    assert identity.groups == ("ops",)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
CLAIM_NAMES = st.sampled_from(["exp", "nbf", "iat", "iss", "aud", "sub", "jti", "email", "name", "groups"])


@given(overrides=st.dictionaries(CLAIM_NAMES, JSON, max_size=4))
async def test_any_claim_values_give_an_identity_or_token_rejected(overrides: dict[str, Any]) -> None:
    token = RSA.sign(claims(**overrides))
    outcome: Identity | TokenRejected
    try:
        outcome = await HYPOTHESIS_VERIFIER.verify(token)
    except TokenRejected as exc:
        outcome = exc
    assert outcome.reason if isinstance(outcome, TokenRejected) else outcome.subject


@given(token=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b64(b) + "." + b64(b) + ".x"))
async def test_any_text_is_token_rejected(token: str) -> None:
    with pytest.raises(TokenRejected):
        await HYPOTHESIS_VERIFIER.verify(token)


HYPOTHESIS_VERIFIER = verifier()


@pytest.mark.parametrize("n", ["", "!!", "AA"])
async def test_a_broken_key_in_the_set_is_a_rejection_not_a_crash(n: str) -> None:
    broken = {**RSA.jwk, "n": n}
    assert await rejected(RSA.sign(claims()), verifier(broken)) in (
        "unusable key",
        "malformed key",
        "invalid signature or claims",
    )
