"""The authenticator: which credential decides, and every refusal a short reason, never an exception."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.identity.apikeys import ApiKey, hash_api_key, new_api_key
from gateway.identity.authenticator import Authenticator, Unauthenticated
from gateway.identity.jwks import JwksCache
from gateway.identity.jwt_verify import TokenVerifier, VerifierConfig
from parsers.events import Identity
from tests.gateway.identity.keys import AUDIENCE, ISSUER, claims, jwks, rsa_key

RSA = rsa_key()
KEY = new_api_key()
ROBOT = Identity(subject="build-agent", method="mtls", groups=("ci",))


def authenticator(*, oidc: bool = True) -> Authenticator:
    document = jwks(RSA)

    async def load() -> bytes:
        return document

    verifier = TokenVerifier(VerifierConfig(issuer=ISSUER, audiences=(AUDIENCE,)), JwksCache(load))
    return Authenticator(
        verifier=verifier if oidc else None,
        api_keys=[ApiKey(name="ci-bot", hash=hash_api_key(KEY), groups=("ci",))],
        mtls={"CN=build-agent,O=Example": ROBOT},
    )


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"Authorization", b"Bearer " + token.encode())]


async def refused(headers: list[tuple[bytes, bytes]], peer: str = "", **kw: Any) -> str:
    with pytest.raises(Unauthenticated) as info:
        await authenticator(**kw).authenticate(headers, peer)
    assert info.value.status == 401
    return info.value.reason


async def test_each_kind_of_credential_gives_its_identity() -> None:
    auth = authenticator()
    alice = await auth.authenticate(bearer(RSA.sign(claims())), "")
    assert (alice.subject, alice.method, alice.email) == ("alice", "oidc", "alice@example.test")
    lower = [(b"authorization", b"bearer " + RSA.sign(claims()).encode())]  # scheme is case-insensitive
    assert (await auth.authenticate(lower, "")).subject == "alice"
    assert await auth.authenticate(bearer(KEY), "") == Identity(
        subject="ci-bot", method="api-key", groups=("ci",)
    )
    assert await auth.authenticate([], "CN=build-agent,O=Example") == ROBOT


async def test_a_bad_bearer_is_refused_even_with_a_known_client_certificate() -> None:
    assert await refused(bearer("wg_" + "a" * 52), "CN=build-agent,O=Example") == "unknown API key"


@pytest.mark.parametrize(
    ("headers", "peer", "reason"),
    [
        ([], "", "missing credentials"),
        ([], "CN=stranger", "client certificate subject is not a known service identity"),
        ([(b"Authorization", b"Basic YWxpY2U6cHc=")], "", "unsupported authorization scheme"),
        ([(b"Authorization", b"Bearer ")], "", "malformed bearer token"),
        ([(b"Authorization", b"Bearer \xff\xfe")], "", "malformed bearer token"),
        (bearer("a.b.c") * 2, "", "more than one Authorization header"),
        (bearer("x" * 20_000), "", "token too large"),
        (bearer("not-a-jwt"), "", "not a signed JWT"),
    ],
)
async def test_refusals_have_reasons(headers: list[tuple[bytes, bytes]], peer: str, reason: str) -> None:
    assert (await refused(headers, peer)).startswith(reason)


async def test_without_an_issuer_jwts_are_refused_but_keys_work() -> None:
    assert "no OIDC issuer" in await refused(bearer(RSA.sign(claims())), oidc=False)
    assert (await authenticator(oidc=False).authenticate(bearer(KEY), "")).subject == "ci-bot"


async def test_an_unreachable_issuer_is_a_503_not_the_clients_fault() -> None:
    async def down() -> bytes:
        from gateway.identity.http_client import FetchError

        raise FetchError("connection refused")

    verifier = TokenVerifier(VerifierConfig(issuer=ISSUER, audiences=(AUDIENCE,)), JwksCache(down))
    with pytest.raises(Unauthenticated) as info:
        await Authenticator(verifier=verifier).authenticate(bearer(RSA.sign(claims())), "")
    assert info.value.status == 503
