"""The load generator's TLS client, the HTTP/2 request form and the auth scenarios' callers, each alone.

Real sockets and the real mock (over TLS with the run's throwaway CA), the real gateway config loader
and identity layer; no timing is asserted.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest

from benchmarks.callers import AuthKind, write_callers
from benchmarks.certs import server_context, write_tls_files
from benchmarks.loadgen import Worker
from benchmarks.loadgen_h2 import h2_request
from benchmarks.scenarios import chat_request
from gateway.config import load, validate
from gateway.identity.access import AccessControl, Refused
from gateway.mock_llm import MockLlm, MockLlmConfig
from parsers.events import RequestHead


@pytest.mark.parametrize("stream", [False, True])
async def test_generator_completes_requests_over_tls(tmp_path: Path, stream: bool) -> None:
    files = write_tls_files(tmp_path)
    (tmp_path / "other").mkdir()
    other_ca = write_tls_files(tmp_path / "other").ca
    messages: list[dict[str, Any]] = []
    tls_mock = MockLlm(MockLlmConfig(tokens=8))
    await tls_mock.start(ssl=server_context(files.cert, files.key))
    try:
        request = chat_request(f"127.0.0.1:{tls_mock.port}", stream=stream, max_tokens=8, prompt_text="hi")
        cmd = {
            "host": "127.0.0.1",
            "port": tls_mock.port,
            "tls": {"ca": str(files.ca)},
            "request": base64.b64encode(request).decode(),
            "concurrency": 3,
            "duration_s": None,
            "max_requests": 9,
        }
        result = await Worker(messages.append).run(cmd)
        # Verification is on: another run's CA does not vouch for this certificate.
        refused = await Worker(messages.append).run({**cmd, "tls": {"ca": str(other_ca)}})
    finally:
        await tls_mock.close()
    assert (result["completed"], result["errors"]) == (9, 0), result["error_samples"]
    assert tls_mock.requests == 9
    if stream:
        assert result["events"] >= 9 * 8  # every token event counted, through TLS records
    assert refused["completed"] == 0
    assert refused["errors"] == 3


def test_h2_request_form() -> None:
    raw = chat_request("127.0.0.1:9", stream=True, max_tokens=3, prompt_text="hi", bearer="wg_key")
    head, body = h2_request(raw + b"", tls=True)
    assert head[:4] == [
        (b":method", b"POST"),
        (b":scheme", b"https"),
        (b":authority", b"127.0.0.1:9"),
        (b":path", b"/v1/chat/completions"),
    ]
    names = [name for name, _ in head[4:]]
    assert b"host" not in names
    assert all(name == name.lower() for name in names)
    assert (b"authorization", b"Bearer wg_key") in head
    assert (b"content-length", str(len(body)).encode()) in head
    assert raw.endswith(body)


@pytest.mark.parametrize(("kind", "method"), [("apikey", "api-key"), ("oidc", "oidc")])
async def test_callers_pass_the_gateways_own_identity_layer(
    tmp_path: Path, kind: AuthKind, method: str
) -> None:
    callers = write_callers(tmp_path)
    config_file = tmp_path / "gateway.toml"
    config_file.write_text(callers.toml(kind))
    access = AccessControl.from_config(validate(load(config_file)), {})
    assert access is not None

    def head(bearer: str) -> RequestHead:
        headers = [(b"Host", b"gw"), (b"Authorization", f"Bearer {bearer}".encode())]
        return RequestHead(method=b"POST", target=b"/v1/chat/completions", headers=headers)

    identity = await access.authenticate(head(callers.bearer(kind)), "")
    assert identity.method == method
    assert "bench" in identity.groups
    decision = access.decide(identity, head(callers.bearer(kind)), None)  # raises Refused if denied
    assert decision is not None
    assert decision.rule == "bench-chat"
    other: AuthKind = "apikey" if kind == "oidc" else "oidc"
    with pytest.raises(Refused):
        await access.authenticate(head(callers.bearer(other)), "")


async def test_connect_first_waits_for_go_between_setup_and_traffic() -> None:
    """With ``connect_first`` the generator says every connection is up and sends nothing until "go"."""
    messages: list[dict[str, Any]] = []
    said = asyncio.Event()

    def emit(message: dict[str, Any]) -> None:
        messages.append(message)
        said.set()

    commands = asyncio.StreamReader()
    async with MockLlm(MockLlmConfig(tokens=4)) as mock:
        request = chat_request(f"127.0.0.1:{mock.port}", stream=False, max_tokens=4, prompt_text="hi")
        cmd = {
            "host": "127.0.0.1",
            "port": mock.port,
            "request": base64.b64encode(request).decode(),
            "concurrency": 2,
            "duration_s": None,
            "max_requests": 4,
            "connect_first": True,
        }
        async with asyncio.TaskGroup() as tasks:
            run = tasks.create_task(Worker(emit, commands).run(cmd), name="run")
            async with asyncio.timeout(10):
                await said.wait()
            assert messages == [{"connected": {"connections": 2}}]
            assert mock.requests == 0  # connected, and not one request sent before the go
            commands.feed_data(b'{"op": "go"}\n')
        assert run.result()["completed"] == 4
    assert mock.requests == 4
