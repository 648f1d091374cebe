"""The cost of the identity checks per request: a full token verification, a cached one, an API key,
and the whole per-request path of ``AccessControl`` (authenticate, policy decision, credential swap).

In-process and single-threaded: ``python -m benchmarks.identity [--n N]`` prints microseconds per
check. Keys come from an in-memory JWKS through the real ``JwksCache``; nothing here touches the network.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwk, jwt

from gateway.config import (
    ApiKeyConfig,
    AuthConfig,
    Config,
    PolicyConfig,
    PolicyRule,
    UpstreamCredentialConfig,
)
from gateway.identity.access import AccessControl
from gateway.identity.apikeys import ApiKey, hash_api_key, new_api_key, verify_api_key
from gateway.identity.jwks import JwksCache
from gateway.identity.jwt_verify import TokenVerifier, VerifierConfig
from parsers.events import RequestHead

ISSUER = "https://idp.bench.test"


@dataclass(frozen=True)
class Figure:
    name: str
    n: int
    us_per_op: float


def signer(alg: str, kid: str) -> tuple[dict[str, object], object]:
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if alg == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    key = jwk.construct(pem, alg)
    return {**key.public_key().to_dict(), "kid": kid}, key


async def measure(n: int) -> list[Figure]:
    """Per-check cost of each path, over ``n`` checks each."""
    figures = [*await _oidc(n, "RS256"), *await _oidc(n, "ES256")]
    keys = [new_api_key() for _ in range(20)]
    configured = [ApiKey(name=f"svc{i}", hash=hash_api_key(k)) for i, k in enumerate(keys)]

    async def check_key(i: int) -> object:
        return verify_api_key(keys[i % len(keys)], configured)

    figures.append(await _timed("api key (20 configured)", n, check_key))
    figures.append(await _access_path(n, keys[0], configured[0].hash))
    return figures


async def _access_path(n: int, key: str, key_hash: str) -> Figure:
    """The proxy's work per request with auth on: authenticate, decide on the JSON body, rewrite the head."""
    rules = [
        PolicyRule(name="read-models", methods=["GET"], paths=["/v1/models", "/v1/models/*"]),
        PolicyRule(name="no-big", effect="deny", models=["gpt-5*"]),
        PolicyRule(
            name="ci-chat", groups=["ci"], paths=["/v1/chat/completions"], models=["gpt-4o*"], max_tokens=512
        ),
    ]
    config = Config(
        auth=AuthConfig(api_keys=[ApiKeyConfig(name="svc0", hash=key_hash, groups=["ci"])]),
        policy=PolicyConfig(rules=rules),
        upstream_credential=UpstreamCredentialConfig(env="MODEL_KEY"),
    )
    access = AccessControl.from_config(config, {"MODEL_KEY": "sk-bench"})
    assert access is not None
    head = RequestHead(
        method=b"POST",
        target=b"/v1/chat/completions",
        headers=[
            (b"Host", b"gw"),
            (b"Content-Type", b"application/json"),
            (b"Authorization", f"Bearer {key}".encode()),
        ],
    )
    body = json.dumps(
        {"model": "gpt-4o-mini", "max_tokens": 256, "messages": [{"role": "user", "content": "hi"}]}
    ).encode()

    async def request(i: int) -> object:
        identity = await access.authenticate(head, "")
        access.decide(identity, head, body if access.needs_body(identity, head) else None)
        return access.outbound(head)

    return await _timed("access: key + policy + credential", n, request)


async def _oidc(n: int, alg: str) -> list[Figure]:
    public, private = signer(alg, alg.lower())
    document = json.dumps({"keys": [public]}).encode()

    async def load() -> bytes:
        return document

    config = VerifierConfig(issuer=ISSUER, audiences=("wardgate",), cache_entries=n + 1)
    verifier = TokenVerifier(config, JwksCache(load))
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "wardgate", "exp": now + 600}
    tokens = [
        str(jwt.encode({**claims, "sub": f"u{i}"}, private, algorithm=alg, headers={"kid": alg.lower()}))
        for i in range(n)
    ]
    await verifier.verify(tokens[0])  # loads the key set

    async def check(i: int) -> object:
        return await verifier.verify(tokens[i])

    return [
        await _timed(f"oidc {alg} full verify", n - 1, lambda i: check(i + 1)),
        await _timed(f"oidc {alg} cached", n, check),
    ]


async def _timed(name: str, n: int, op: Callable[[int], Awaitable[object]]) -> Figure:
    start = time.perf_counter_ns()
    for i in range(n):
        await op(i)
    return Figure(name, n, (time.perf_counter_ns() - start) / n / 1000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.identity", description=__doc__)
    parser.add_argument("--n", type=int, default=2000, help="checks per path (default 2000)")
    args = parser.parse_args(argv)
    for figure in asyncio.run(measure(args.n)):
        print(f"{figure.name:<34} {figure.us_per_op:10.1f} us/check  (n={figure.n})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
