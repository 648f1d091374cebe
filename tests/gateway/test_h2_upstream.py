"""HTTP/2 towards the upstream: a gateway whose upstream is a second gateway speaking h2c, so every
request of the first becomes a stream on a few multiplexed connections, recorded as HTTP/2 by the second."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import trustme

from gateway.config import AdminConfig, Config, ListenerConfig, StorageConfig
from gateway.mock_llm import MockLlm, MockLlmConfig
from gateway.server import Gateway, running
from parsers.events import Direction, ExchangeEnded, ExchangeStarted, RequestHead
from storage.reader import iter_frames
from tests.gateway.test_h2 import chat
from tests.gateway.test_tls import write_ca, write_cert


def config(data_dir: Path, upstream: str, **listener: str) -> Config:
    return Config(
        listeners=[ListenerConfig(listen="127.0.0.1:0", upstream=upstream, **listener)],  # type: ignore[arg-type]
        storage=StorageConfig(data_dir=str(data_dir), durability="batched", group_commit_ms=5),
        admin=AdminConfig(listen=""),
    )


@asynccontextmanager
async def chain(tmp_path: Path) -> AsyncIterator[Gateway]:
    """client -> front (upstream_protocol h2) -> back (h2c) -> mock."""
    async with (
        asyncio.timeout(60),
        MockLlm(MockLlmConfig(tokens=20, token_delay_ms=2)) as mock,
        running(config(tmp_path / "back", f"http://127.0.0.1:{mock.port}")) as back,
        running(config(tmp_path / "front", f"http://127.0.0.1:{back.port}", upstream_protocol="h2")) as front,
    ):
        yield front


def started(data_dir: Path) -> list[tuple[str, ExchangeStarted]]:
    return [
        (s.frame.conn_id, s.frame.event)
        for s in iter_frames(data_dir)
        if isinstance(s.frame.event, ExchangeStarted)
    ]


async def test_http1_and_http2_clients_over_a_multiplexed_http2_upstream(tmp_path: Path) -> None:
    bodies: list[bytes] = []
    async with chain(tmp_path) as front:
        url = f"http://127.0.0.1:{front.port}"
        async with (
            httpx.AsyncClient(base_url=url, timeout=10) as h1,
            httpx.AsyncClient(base_url=url, http1=False, http2=True, timeout=10) as h2,
        ):

            async def one(client: httpx.AsyncClient, i: int) -> None:
                async with client.stream(
                    "POST", "/v1/chat/completions", json=chat(f"q{i}", max_tokens=20)
                ) as r:
                    assert r.status_code == 200
                    bodies.append(b"".join([piece async for piece in r.aiter_raw()]))

            await asyncio.gather(*(one(h1 if i % 2 else h2, i) for i in range(10)))
            models = await h1.get("/v1/models")
            assert json.loads(models.content)["data"]
    assert len(bodies) == 10
    assert all(body.endswith(b"data: [DONE]\n\n") for body in bodies)
    front_protocols = sorted(event.protocol for _, event in started(tmp_path / "front"))
    assert front_protocols == ["h2"] * 5 + ["http/1.1"] * 6
    back = started(tmp_path / "back")
    assert [event.protocol for _, event in back] == ["h2"] * 11  # the front spoke HTTP/2 to it
    assert len({conn_id for conn_id, _ in back}) <= 2  # multiplexed: a connection or two, not eleven
    received = [
        s.frame.event
        for s in iter_frames(tmp_path / "back")
        if isinstance(s.frame.event, RequestHead) and s.frame.direction == Direction.FROM_CLIENT
    ]
    assert [h.http_version for h in received] == [b"2"] * 11
    ended = [
        s.frame.event for s in iter_frames(tmp_path / "front") if isinstance(s.frame.event, ExchangeEnded)
    ]
    assert [e.outcome for e in ended] == ["complete"] * 11


async def test_an_http2_upstream_that_is_down_is_a_502(tmp_path: Path) -> None:
    async with (
        asyncio.timeout(60),
        running(config(tmp_path / "front", "http://127.0.0.1:9", upstream_protocol="h2")) as front,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{front.port}", timeout=10) as client,
    ):
        answer = await client.get("/v1/models")
    assert (answer.status_code, answer.json()["error"]["code"]) == (502, "upstream_refused")


async def test_https_upstream_negotiates_h2_by_alpn(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert_file, key_file = write_cert(ca.issue_cert("localhost"), tmp_path / "tls", "back")
    ca_file = write_ca(ca, tmp_path / "ca.pem")
    async with (
        asyncio.timeout(60),
        MockLlm(MockLlmConfig(tokens=5)) as mock,
        running(
            config(
                tmp_path / "back",
                f"http://127.0.0.1:{mock.port}",
                tls_cert=str(cert_file),
                tls_key=str(key_file),
            )
        ) as back,
        running(
            config(
                tmp_path / "front",
                f"https://localhost:{back.port}",
                upstream_protocol="h2",
                upstream_ca=str(ca_file),
            )
        ) as front,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{front.port}", timeout=10) as client,
    ):
        answer = await client.post("/v1/chat/completions", json=chat("over tls", stream=False))
        assert answer.status_code == 200
        assert answer.json()["choices"]
    [(_, event)] = started(tmp_path / "back")
    assert (event.protocol, event.alpn) == ("h2", "h2")
