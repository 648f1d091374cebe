"""Identity and policy end to end: real sockets, the mock upstream counting requests, the recorded frames.

One gateway serves each test's requests: a JWKS file (the crafted keys), a service API key, a policy,
and the gateway's own upstream credential from a file.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import openai
import pytest

from gateway.config import (
    AdminConfig,
    ApiKeyConfig,
    AuthConfig,
    OidcConfig,
    PolicyConfig,
    PolicyRule,
    UpstreamCredentialConfig,
)
from gateway.identity.apikeys import hash_api_key, new_api_key
from gateway.mock_llm import MockLlm
from gateway.server import Gateway, running
from parsers.events import ExchangeStarted, PolicyDecision, RequestHead
from storage.reader import iter_frames
from tests.gateway.conftest import make_config
from tests.gateway.identity.keys import AUDIENCE, ISSUER, b64, claims, hs256, jwks, rsa_key, unsigned
from tests.gateway.processes import record_of

RSA = rsa_key("rsa-1")
ROTATED = rsa_key("rsa-2")
CI_KEY = new_api_key()
UPSTREAM_SECRET = "sk-upstream-held-by-the-gateway"
RULES = [
    PolicyRule(name="read-models", methods=["GET"], paths=["/v1/models"]),
    PolicyRule(
        name="dev-chat", groups=["dev"], methods=["POST"], paths=["/v1/chat/completions"], models=["mock-*"]
    ),
    PolicyRule(name="ci-embeddings", groups=["ci"], methods=["POST"], paths=["/v1/embeddings"]),
    PolicyRule(name="no-big-models", effect="deny", models=["mock-big*"]),
]


@asynccontextmanager
async def gateway(tmp_path: Path, mock: MockLlm, admin_listen: str = "") -> AsyncIterator[Gateway]:
    (tmp_path / "jwks.json").write_bytes(jwks(RSA))
    (tmp_path / "upstream.key").write_text(UPSTREAM_SECRET + "\n")
    config = make_config(tmp_path / "data", mock.port, max_head_bytes=2 * 1024 * 1024)
    config = msgspec.structs.replace(
        config,
        admin=AdminConfig(listen=admin_listen),
        auth=AuthConfig(
            oidc=OidcConfig(
                issuer=ISSUER,
                jwks_file=str(tmp_path / "jwks.json"),
                audience=[AUDIENCE],
                jwks_refetch_interval_s=0.05,
            ),
            api_keys=[ApiKeyConfig(name="ci-bot", hash=hash_api_key(CI_KEY), groups=["ci"])],
        ),
        policy=PolicyConfig(rules=RULES),
        upstream_credential=UpstreamCredentialConfig(file=str(tmp_path / "upstream.key")),
    )
    async with asyncio.timeout(60), running(config) as gw:
        yield gw


def decisions(data_dir: Path) -> dict[str, PolicyDecision]:
    return {
        s.frame.exchange_id: s.frame.event
        for s in iter_frames(data_dir)
        if isinstance(s.frame.event, PolicyDecision)
    }


async def test_crafted_tokens_get_401_are_recorded_and_never_reach_the_upstream(
    tmp_path: Path, mock: MockLlm
) -> None:
    now = int(time.time())
    valid = claims()
    good = RSA.sign(valid)
    head, _, signature = good.split(".")
    crafted = {
        "expired": (RSA.sign(claims(exp=now - 600)), "token expired"),
        "not yet valid": (RSA.sign(claims(nbf=now + 600)), "token not yet valid"),
        "wrong issuer": (RSA.sign(claims(iss="https://evil.example")), "wrong issuer"),
        "wrong audience": (RSA.sign(claims(aud="someone-else")), "wrong audience"),
        "alg none": (unsigned({"alg": "none", "kid": "rsa-1"}, valid, b"x"), "algorithm not allowed"),
        "alg none, no signature": (unsigned({"alg": "none"}, valid), "not a signed JWT"),
        "HS256 with the public key": (hs256(RSA.public_der, valid, "rsa-1"), "algorithm not allowed"),
        "tampered payload": (
            f"{head}.{b64(json.dumps(claims(sub='root')).encode())}.{signature}",
            "invalid signature or claims",
        ),
        "malformed base64": (f"{head}.!!!notbase64.{signature}", "malformed payload"),
        "1 MB token": ("e" * (1024 * 1024), "token too large"),
        "unknown kid": (ROTATED.sign(claims()), "unknown key id"),
    }
    data_dir = tmp_path / "data"
    async with gateway(tmp_path, mock) as gw, httpx.AsyncClient(timeout=10) as http:
        url = f"http://127.0.0.1:{gw.port}/v1/models"
        refused: dict[str, str] = {}
        for name, (token, _) in crafted.items():
            answer = await http.get(url, headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 401, name
            assert answer.headers["www-authenticate"] == 'Bearer error="invalid_token"'
            error = answer.json()["error"]
            assert error["code"] == "unauthorized"
            assert set(error) >= {"message", "type", "code"}
            refused[name] = answer.headers["x-wardgate-exchange"]
        answer = await http.get(url)
        assert answer.status_code == 401
        assert "missing credentials" in answer.json()["error"]["message"]
        assert mock.requests == 0  # not one of them reached the upstream

        # Key rotation without a restart: the new key appears in the JWKS, the next request refetches.
        (tmp_path / "jwks.json").write_bytes(jwks(RSA, ROTATED))
        await asyncio.sleep(0.1)  # past jwks_refetch_interval_s
        answer = await http.get(url, headers={"Authorization": f"Bearer {crafted['unknown kid'][0]}"})
        assert answer.status_code == 200
        assert mock.requests == 1
    recorded = decisions(data_dir)
    for name, exchange_id in refused.items():
        decision = recorded[exchange_id]
        assert (decision.allowed, decision.rule, decision.status) == (False, "authentication", 401)
        assert decision.reason.startswith(crafted[name][1]), (name, decision.reason)
        record = await record_of(data_dir, exchange_id)
        assert (record.status, record.policy, record.policy_rule) == (401, "deny", "authentication")
        assert record.identity.method == "none"


async def test_group_policy_across_paths_and_models(tmp_path: Path, mock: MockLlm) -> None:
    dev = RSA.sign(claims(sub="alice", groups=["dev"]))
    ops = RSA.sign(claims(sub="bob", email="bob@example.test", groups=["ops"]))
    cases: list[tuple[str, str, str, dict[str, Any] | None, int, str]] = [
        (dev, "GET", "/v1/models", None, 200, "read-models"),
        (dev, "POST", "/v1/chat/completions", {"model": "mock-gpt", "messages": []}, 200, "dev-chat"),
        (dev, "POST", "/v1/chat/completions", {"model": "gpt-4o", "messages": []}, 403, "default-deny"),
        (dev, "POST", "/v1/chat/completions", {"model": "mock-big", "messages": []}, 403, "no-big-models"),
        (dev, "POST", "/v1/embeddings", {"model": "mock-gpt", "input": "x"}, 403, "default-deny"),
        (ops, "GET", "/v1/models", None, 200, "read-models"),
        (ops, "POST", "/v1/chat/completions", {"model": "mock-gpt", "messages": []}, 403, "default-deny"),
        (CI_KEY, "POST", "/v1/embeddings", {"model": "mock-gpt", "input": "x"}, 200, "ci-embeddings"),
        (CI_KEY, "POST", "/v1/embeddings", {"model": "mock-big-1", "input": "x"}, 403, "no-big-models"),
    ]
    data_dir = tmp_path / "data"
    seen: list[tuple[str, int, str]] = []
    async with gateway(tmp_path, mock) as gw, httpx.AsyncClient(timeout=10) as http:
        for token, method, path, body, status, rule in cases:
            before = mock.requests
            answer = await http.request(
                method,
                f"http://127.0.0.1:{gw.port}{path}",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            )
            assert answer.status_code == status, (path, body, answer.text)
            assert mock.requests == before + (status == 200)  # a denied request never reaches it
            if status == 403:
                assert f"denied by policy rule {rule!r}" in answer.json()["error"]["message"]
                assert answer.json()["error"]["code"] == "forbidden"
            seen.append((answer.headers["x-wardgate-exchange"], status, rule))
    recorded = decisions(data_dir)
    for exchange_id, status, rule in seen:
        decision = recorded[exchange_id]
        assert (decision.allowed, decision.rule) == (status == 200, rule)
        assert decision.identity.subject in ("alice", "bob", "ci-bot")
        record = await record_of(data_dir, exchange_id)
        assert record.policy_rule == rule
    ci = await record_of(data_dir, seen[7][0])
    assert (ci.subject, ci.identity.method, ci.identity.groups) == ("ci-bot", "api-key", ("ci",))


async def test_the_upstream_only_ever_sees_the_gateways_credential(tmp_path: Path, mock: MockLlm) -> None:
    token = RSA.sign(claims(groups=["dev"]))
    async with gateway(tmp_path, mock) as gw, httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(
            f"http://127.0.0.1:{gw.port}/v1/models",
            headers=[
                ("Authorization", f"Bearer {token}"),
                ("api-key", "client-api-key"),
                ("X-Api-Key", "client-x-api-key"),
                ("Proxy-Authorization", "Basic Y2xpZW50"),
            ],
        )
        assert answer.status_code == 200
        credentials = [
            (name.lower(), value)
            for name, value in mock.last_request_headers
            if name.lower() in (b"authorization", b"api-key", b"x-api-key", b"proxy-authorization")
        ]
    assert credentials == [(b"authorization", f"Bearer {UPSTREAM_SECRET}".encode())]
    data_dir = tmp_path / "data"
    assert not [p for p in data_dir.rglob("*") if p.is_file() and UPSTREAM_SECRET.encode() in p.read_bytes()]
    forwarded = [s.frame.event for s in iter_frames(data_dir) if isinstance(s.frame.event, RequestHead)][-1]
    sent = [value for name, value in forwarded.headers if name.lower() == b"authorization"]
    assert len(sent) == 1
    assert sent[0].startswith(b"Bearer [redacted hmac-sha256:")


async def test_openai_sdk_with_a_token_as_api_key_records_the_identity(tmp_path: Path, mock: MockLlm) -> None:
    token = RSA.sign(claims(sub="alice", groups=["dev"], jti="jti-42"))
    async with gateway(tmp_path, mock) as gw:
        llm = openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{gw.port}/v1", api_key=token, max_retries=0, timeout=10
        )
        async with llm:
            raw = await llm.chat.completions.with_raw_response.create(
                model="mock-gpt", messages=[{"role": "user", "content": "who am I"}]
            )
            assert raw.parse().choices[0].message.content
            stream = await llm.chat.completions.create(
                model="mock-gpt", messages=[{"role": "user", "content": "stream"}], stream=True
            )
            assert [chunk async for chunk in stream]
            with pytest.raises(openai.PermissionDeniedError, match="default-deny"):
                await llm.embeddings.create(model="mock-gpt", input="x")
    data_dir = tmp_path / "data"
    record = await record_of(data_dir, raw.headers["x-wardgate-exchange"])
    assert record.identity.subject == "alice"
    assert (record.identity.email, record.identity.groups) == ("alice@example.test", ("dev",))
    assert (record.identity.method, record.identity.issuer, record.identity.token_id) == (
        "oidc",
        ISSUER,
        "jti-42",
    )
    assert (record.policy, record.policy_rule, record.status) == ("allow", "dev-chat", 200)
    started = [s.frame.event for s in iter_frames(data_dir) if isinstance(s.frame.event, ExchangeStarted)]
    assert all(event.identity.subject == "alice" for event in started)


async def test_http2_streams_authenticate_and_are_decided_like_http1(tmp_path: Path, mock: MockLlm) -> None:
    dev = RSA.sign(claims(sub="alice", groups=["dev"]))
    async with gateway(tmp_path, mock) as gw, httpx.AsyncClient(http1=False, http2=True, timeout=10) as http:
        url = f"http://127.0.0.1:{gw.port}/v1/chat/completions"  # h2c with prior knowledge
        chat = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}
        answers = await asyncio.gather(
            http.post(url, json=chat, headers={"Authorization": f"Bearer {dev}"}),
            http.post(url, json=chat, headers={"Authorization": "Bearer forged.token.here"}),
            http.post(url, json={**chat, "model": "mock-big"}, headers={"Authorization": f"Bearer {dev}"}),
            http.post(url, json=chat),
        )
        assert all(answer.http_version == "HTTP/2" for answer in answers)
        assert [answer.status_code for answer in answers] == [200, 401, 403, 401]
        assert answers[1].headers["www-authenticate"] == 'Bearer error="invalid_token"'
        assert mock.requests == 1
        sent = [v for n, v in mock.last_request_headers if n.lower() == b"authorization"]
        assert sent == [f"Bearer {UPSTREAM_SECRET}".encode()]
    data_dir = tmp_path / "data"
    ok = await record_of(data_dir, answers[0].headers["x-wardgate-exchange"])
    assert (ok.identity.subject, ok.policy, ok.policy_rule) == ("alice", "allow", "dev-chat")
    denied = await record_of(data_dir, answers[2].headers["x-wardgate-exchange"])
    assert (denied.identity.subject, denied.policy_rule, denied.status) == ("alice", "no-big-models", 403)


async def test_the_admin_console_accepts_the_same_tokens_and_keys(tmp_path: Path, mock: MockLlm) -> None:
    auditor = RSA.sign(claims(sub="carol", groups=["auditors"]))
    dev = RSA.sign(claims(sub="alice", groups=["dev"]))
    async with (
        gateway(tmp_path, mock, admin_listen="127.0.0.1:0") as gw,
        httpx.AsyncClient(timeout=10) as http,
    ):
        assert gw.admin_address is not None
        host, port = gw.admin_address
        url = f"http://{host}:{port}/api/sessions"
        assert (await http.get(url, headers={"Authorization": f"Bearer {auditor}"})).status_code == 200
        assert (await http.get(url, headers={"Authorization": f"Bearer {dev}"})).status_code == 403
        assert (await http.get(url, headers={"Authorization": f"Bearer {CI_KEY}"})).status_code == 403
        assert (await http.get(url, headers={"Authorization": "Bearer forged.token.x"})).status_code == 401
        assert (await http.get(url)).status_code == 401
