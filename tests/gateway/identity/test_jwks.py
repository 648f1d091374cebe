"""The key cache against a real local HTTP server: discovery, rotation, and no refetch storm."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.config import ConfigError
from gateway.identity.http_client import FetchError, http_get
from gateway.identity.jwks import JwksCache, JwksError, discovery_loader, file_loader, parse_jwks
from gateway.identity.jwt_verify import KeysUnavailable, TokenRejected, TokenVerifier, VerifierConfig
from tests.gateway.identity.keys import AUDIENCE, b64, claims, ec_key, jwks, rsa_key


@dataclass
class KeyServer:
    """An issuer's discovery document and JWKS over real HTTP, counting the JWKS fetches."""

    jwks: bytes = b'{"keys": []}'
    jwks_status: int = 200
    discovery_issuer: str = ""
    jwks_hits: int = 0
    port: int = 0
    paths: list[str] = field(default_factory=list)

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ")[1].decode()
        self.paths.append(path)
        status, body = 404, b"{}"
        if path == "/.well-known/openid-configuration":
            doc = {"issuer": self.discovery_issuer or self.issuer, "jwks_uri": f"{self.issuer}/keys"}
            status, body = 200, json.dumps(doc).encode()
        elif path == "/keys":
            self.jwks_hits += 1
            await asyncio.sleep(0.05)  # slow enough that concurrent misses overlap
            status, body = self.jwks_status, self.jwks
        writer.write(b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n\r\n%s" % (status, len(body), body))
        await writer.drain()
        writer.close()


@pytest.fixture
async def server() -> AsyncIterator[KeyServer]:
    state = KeyServer()
    srv = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    state.port = srv.sockets[0].getsockname()[1]
    async with srv:
        yield state


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def verifier_for(server: KeyServer, clock: Clock) -> tuple[TokenVerifier, JwksCache]:
    cache = JwksCache(discovery_loader(server.issuer), min_refetch_interval_s=30, clock=clock)
    return TokenVerifier(VerifierConfig(issuer=server.issuer, audiences=(AUDIENCE,)), cache), cache


async def test_discovery_then_unknown_kid_is_accepted_after_one_refetch(server: KeyServer) -> None:
    old, new = rsa_key("old"), rsa_key("new")
    server.jwks = jwks(old)
    clock = Clock()
    verifier, cache = verifier_for(server, clock)
    assert (await verifier.verify(old.sign(claims(iss=server.issuer)))).issuer == server.issuer
    assert server.paths == ["/.well-known/openid-configuration", "/keys"]

    server.jwks = jwks(old, new)  # the IdP rotates in a new key
    new_token = new.sign(claims(iss=server.issuer))
    with pytest.raises(TokenRejected, match="unknown key id"):
        await verifier.verify(new_token)  # within the refetch interval of the first load: no fetch
    assert server.jwks_hits == 1
    clock.now += 31
    assert (await verifier.verify(new_token)).subject == "alice"
    assert server.jwks_hits == 2
    assert cache.fetches == 2
    with pytest.raises(TokenRejected, match="unknown key id"):
        await verifier.verify(rsa_key("forged").sign(claims(iss=server.issuer, jti="other")))
    assert server.jwks_hits == 2
    assert server.paths.count("/.well-known/openid-configuration") == 1


async def test_a_storm_of_unknown_kids_causes_one_fetch(server: KeyServer) -> None:
    known = ec_key("known")
    server.jwks = jwks(known)
    clock = Clock()
    verifier, _ = verifier_for(server, clock)
    await verifier.verify(known.sign(claims(iss=server.issuer)))
    clock.now += 31
    _, payload, signature = known.sign(claims(iss=server.issuer)).split(".")
    heads = [b64(json.dumps({"alg": "ES256", "kid": f"k{i}"}).encode()) for i in range(50)]
    forged = [f"{head}.{payload}.{signature}" for head in heads]
    async with asyncio.timeout(10):
        results = await asyncio.gather(*(verifier.verify(t) for t in forged), return_exceptions=True)
    assert all(isinstance(r, TokenRejected) and r.reason == "unknown key id" for r in results)
    assert server.jwks_hits == 2


async def test_max_age_refreshes_the_set_and_dropped_keys_stop_working(server: KeyServer) -> None:
    old, new = rsa_key("old"), rsa_key("new")
    server.jwks = jwks(old)
    clock = Clock()
    cache = JwksCache(discovery_loader(server.issuer), max_age_s=600, clock=clock)
    assert await cache.key("old") is not None
    server.jwks = jwks(new)
    clock.now += 601
    assert await cache.key("old") is None
    assert await cache.key("new") is not None
    assert server.jwks_hits == 2


async def test_an_unreachable_key_set_is_keys_unavailable_and_not_hammered(server: KeyServer) -> None:
    server.jwks_status = 500
    cache = JwksCache(discovery_loader(server.issuer), clock=Clock())
    for _ in range(3):
        with pytest.raises(KeysUnavailable):
            await cache.key("any")
    assert server.jwks_hits == 1


async def test_discovery_naming_another_issuer_is_refused(server: KeyServer) -> None:
    server.discovery_issuer = "https://elsewhere.example"
    with pytest.raises(KeysUnavailable):
        await JwksCache(discovery_loader(server.issuer)).key("x")
    assert server.jwks_hits == 0


def test_plain_http_issuers_only_on_loopback() -> None:
    with pytest.raises(ConfigError, match=r"auth\.oidc\.issuer: .*https required"):
        discovery_loader("http://idp.example.com")
    discovery_loader("http://localhost:1")
    discovery_loader("http://[::1]:1")


async def test_http_get_reports_failures_as_fetch_error(server: KeyServer) -> None:
    with pytest.raises(FetchError, match="HTTP 404"):
        await http_get(f"{server.issuer}/nothing")
    with pytest.raises(FetchError):
        await http_get("ftp://127.0.0.1/x")


async def test_file_loader_rotates_when_the_file_changes(tmp_path: Path) -> None:
    one, two = rsa_key("one"), rsa_key("two")
    path = tmp_path / "jwks.json"
    path.write_bytes(jwks(one))
    clock = Clock()
    cache = JwksCache(file_loader(path), clock=clock)
    assert await cache.key("one") is not None
    path.write_bytes(jwks(two))
    clock.now += 31
    assert await cache.key("two") is not None
    with pytest.raises(KeysUnavailable):
        await JwksCache(file_loader(tmp_path / "missing.json")).key("x")


def test_parse_jwks_skips_secrets_encryption_keys_and_ambiguous_kids() -> None:
    a, b = rsa_key("a"), rsa_key("dup")
    doc = jwks(
        a,
        b,
        {**ec_key("dup").jwk},
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        {**rsa_key("enc").jwk, "use": "enc"},
        {"kid": "no-kty"},
    )
    assert sorted(parse_jwks(doc)) == ["a"]
    for bad in (b"nope", b"[]", b'{"keys": 1}'):
        with pytest.raises(JwksError):
            parse_jwks(bad)
