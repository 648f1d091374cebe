"""mTLS client certificates as service identities, end to end over TLS with trustme certificates."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import trustme

from gateway.config import AuthConfig, MtlsIdentityConfig, PolicyConfig, PolicyRule
from gateway.mock_llm import MockLlm
from gateway.server import running
from parsers.events import PolicyDecision
from storage.reader import iter_frames
from tests.gateway.processes import record_of
from tests.gateway.test_tls import GET_MODELS, connect, request, tls_config, trusting, write_ca, write_cert


async def test_a_mapped_client_certificate_is_a_service_identity(mock: MockLlm, tmp_path: Path) -> None:
    server_ca, client_ca = trustme.CA(), trustme.CA()
    cert_file, key_file = write_cert(server_ca.issue_cert("127.0.0.1", "localhost"), tmp_path / "tls", "gw")
    agent = client_ca.issue_cert(
        "agent.example", common_name="build-agent", organization_name="Example", organization_unit_name="ci"
    )
    alice = client_ca.issue_cert("alice.example", common_name="alice", organization_name="Example")
    data_dir = tmp_path / "data"
    config = tls_config(
        data_dir,
        f"http://127.0.0.1:{mock.port}",
        tls_cert=str(cert_file),
        tls_key=str(key_file),
        tls_client_ca=str(write_ca(client_ca, tmp_path / "client-ca.pem")),
    )
    config = msgspec.structs.replace(
        config,
        auth=AuthConfig(
            mtls=[
                MtlsIdentityConfig(
                    subject="CN=build-agent,OU=ci,O=Example", name="build-agent", groups=["ci"]
                )
            ]
        ),
        policy=PolicyConfig(rules=[PolicyRule(name="ci-reads", groups=["ci"], methods=["GET"])]),
    )
    async with asyncio.timeout(60), running(config) as gw:
        answers = []
        for cert in (agent, alice):
            reader, writer = await connect(gw.port, trusting(server_ca, cert))
            try:
                answers.append(await request(reader, writer, GET_MODELS))
            finally:
                writer.transport.abort()
    assert [status for status, _ in answers] == [200, 401]
    assert b"not a known service identity" in answers[1][1]
    assert mock.requests == 1
    allowed, refused = [s.frame for s in iter_frames(data_dir) if isinstance(s.frame.event, PolicyDecision)]
    assert isinstance(allowed.event, PolicyDecision)
    assert (allowed.event.allowed, allowed.event.rule, allowed.event.identity.subject) == (
        True,
        "ci-reads",
        "build-agent",
    )
    record = await record_of(data_dir, allowed.exchange_id)
    assert (record.identity.subject, record.identity.method, record.identity.groups) == (
        "build-agent",
        "mtls",
        ("ci",),
    )
    assert (await record_of(data_dir, refused.exchange_id)).status == 401
