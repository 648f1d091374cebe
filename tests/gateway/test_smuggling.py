"""Hostile request bytes against a running gateway: refused with 400, never forwarded, listener unharmed."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import AdminConfig
from gateway.mock_llm import MockLlm, MockLlmConfig
from gateway.server import running
from tests.gateway.conftest import make_config

CHUNKED = b"POST /v1/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
SMUGGLING = {
    "cl-and-te": (
        b"POST /v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "conflicting-cl": b"POST /v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "cl-sign": b"POST /v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
    "obs-fold": b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-A: a\r\n Transfer-Encoding: chunked\r\n\r\n",
    "bare-lf": b"GET /v1/models HTTP/1.1\nHost: x\n\n",
    "bare-lf-mixed": b"GET /v1/models HTTP/1.1\r\nHost: x\nX-B: y\r\n\r\n",
    "esc-in-value": b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-A: \x1b[2J\x1b[31mred\r\n\r\n",
    "del-in-value": b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n",
    "te-gzip-chunked": b"POST /v1/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "te-twice": CHUNKED[:-2] + b"Transfer-Encoding: x\r\n\r\n",
    "chunk-size-junk": CHUNKED + b"zz\r\nabc\r\n0\r\n\r\n",
    "chunk-size-0x": CHUNKED + b"0x3\r\nabc\r\n0\r\n\r\n",
    "chunk-size-huge": b"POST /v1/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"f" * 30
    + b"\r\n",
    "space-before-colon": b"GET /v1/models HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n",
    "two-hosts": b"GET /v1/models HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
    "nul-in-target": b"GET /v1/\x00models HTTP/1.1\r\nHost: x\r\n\r\n",
    # Aimed at the body relay (BodyScanner, not h11, reads these bodies).
    "chunk-size-bare-lf": CHUNKED + b"3\nabc\r\n0\r\n\r\n",
    "chunk-data-bare-lf": CHUNKED + b"3\r\nabc\n0\r\n\r\n",
    "chunk-data-too-long": CHUNKED + b"3\r\nabcd\r\n0\r\n\r\n",
    "chunk-size-negative": CHUNKED + b"-3\r\nabc\r\n0\r\n\r\n",
    "chunk-size-space-inside": CHUNKED + b"1 0\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n",
    "chunk-bad-trailer": CHUNKED + b"3\r\nabc\r\n0\r\nbad trailer\r\n\r\n",
}


class GatewayThread:
    """A mock upstream and a gateway on their own event loop, for synchronous (hypothesis) tests."""

    def __init__(self, data_dir: Path, durability: str = "strict") -> None:
        self.data_dir = data_dir
        self.durability = durability
        self.port = 0
        self.mock: MockLlm | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with MockLlm(MockLlmConfig(tokens=4)) as mock:
            config = make_config(self.data_dir, mock.port, header_timeout_s=2.0)
            config = msgspec.structs.replace(
                config,
                storage=msgspec.structs.replace(config.storage, durability=self.durability),
                admin=AdminConfig(listen=""),
            )
            async with running(config) as gw:
                self.mock, self.port = mock, gw.port
                self._ready.set()
                await self._stop.wait()

    def __enter__(self) -> GatewayThread:
        self._thread.start()
        assert self._ready.wait(30), "gateway thread did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    with GatewayThread(tmp_path_factory.mktemp("smuggling") / "data") as gw:
        yield gw


@pytest.fixture(scope="module")
def batched_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    """Batched mode: request bodies are forwarded as they arrive, through the body relay."""
    with GatewayThread(tmp_path_factory.mktemp("smuggling-batched") / "data", "batched") as gw:
        yield gw


def exchange(port: int, data: bytes) -> bytes:
    """Send bytes, close our sending side, read everything the gateway answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway may refuse before reading it all
        out = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out


def assert_serving(gw: GatewayThread) -> None:
    answer = exchange(gw.port, b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


@pytest.mark.parametrize("name", sorted(SMUGGLING))
def test_smuggling_inputs_refused_and_not_forwarded(gateway: GatewayThread, name: str) -> None:
    assert gateway.mock is not None
    before = gateway.mock.requests
    answer = exchange(gateway.port, SMUGGLING[name])
    # RFC 9112 §6.1: a transfer coding the server does not know is a 501; everything else a 400.
    expected = b"HTTP/1.1 501 " if name.startswith("te-") else b"HTTP/1.1 400 "
    assert answer.startswith(expected), answer[:300]
    assert gateway.mock.requests == before
    assert_serving(gateway)


@pytest.mark.parametrize("name", sorted(SMUGGLING))
def test_smuggling_inputs_refused_when_bodies_are_relayed(batched_gateway: GatewayThread, name: str) -> None:
    assert batched_gateway.mock is not None
    before = batched_gateway.mock.requests
    answer = exchange(batched_gateway.port, SMUGGLING[name])
    expected = b"HTTP/1.1 501 " if name.startswith("te-") else b"HTTP/1.1 400 "
    assert answer.startswith(expected), answer[:300]
    assert batched_gateway.mock.requests == before  # the head may have gone out, never a whole request
    assert_serving(batched_gateway)


@pytest.mark.parametrize(
    "smuggled",
    [
        b"GET /admin HTTP/1.1\nHost: x\n\n",  # bare LF in the request after the body
        b"GET /admin HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"0\r\n\r\n",  # the end of a chunked body that was not chunked
    ],
)
def test_bytes_past_a_relayed_body_are_parsed_as_a_new_request(
    batched_gateway: GatewayThread, smuggled: bytes
) -> None:
    """Content-Length says where the body ends; what follows is a request of its own and checked as one."""
    assert batched_gateway.mock is not None
    before = batched_gateway.mock.requests
    body = b'{"model": "m", "messages": []}'
    first = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )
    answer = exchange(batched_gateway.port, first + smuggled)
    assert answer.startswith(b"HTTP/1.1 "), answer[:300]
    statuses = [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]
    assert statuses == [200, 400], answer[-600:]
    assert batched_gateway.mock.requests == before + 1
    assert_serving(batched_gateway)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.binary(max_size=400),
        st.builds(
            lambda prefix, junk: prefix + junk,
            st.sampled_from([b"GET / HTTP/1.1\r\n", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"]),
            st.binary(max_size=200),
        ),
    )
)
def test_random_bytes_get_an_error_or_nothing_and_the_listener_survives(
    gateway: GatewayThread, data: bytes
) -> None:
    answer = exchange(gateway.port, data)
    if answer:
        status = int(answer.split(b" ", 2)[1])
        assert 200 <= status < 600
        if status >= 400:
            assert b"x-wardgate-exchange:" in answer.lower()
    assert_serving(gateway)
