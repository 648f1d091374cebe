"""`wardgate mock-llm`: a fast, faithful fake OpenAI-compatible upstream for demos, tests and benchmarks.

Public surface only: `MockLlmConfig`, `MockLlm`, the generated-text helpers tests predict with, and
the CLI subcommand. HTTP parsing, routing, rendering and replay live in the `_mock_*` modules.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl as _ssl
import sys
from pathlib import Path
from types import TracebackType

import uvloop

from gateway.mock_llm._app import MockApp
from gateway.mock_llm._config import MockLlmConfig
from gateway.mock_llm._embed import mock_embedding
from gateway.mock_llm._script import FAIL_AFTER_TOKENS, SLOW_FIRST_TOKEN_S
from gateway.mock_llm._server import Connection
from gateway.mock_llm._wire import mock_text, mock_token

__all__ = [
    "FAIL_AFTER_TOKENS",
    "SLOW_FIRST_TOKEN_S",
    "MockLlm",
    "MockLlmConfig",
    "add_command",
    "main",
    "mock_embedding",
    "mock_text",
    "mock_token",
]


class MockLlm:
    """An OpenAI-compatible HTTP/1.1 server on the running loop; `async with` starts it on 127.0.0.1:0."""

    def __init__(self, config: MockLlmConfig) -> None:
        """Raises: ValueError naming a bad config field."""
        config.validate()
        self.config = config
        self._app = MockApp(config)
        self._live: set[Connection] = set()
        self._server: asyncio.Server | None = None
        self._port = 0
        self._scheme = "http"

    async def start(self, host: str = "127.0.0.1", port: int = 0, ssl: _ssl.SSLContext | None = None) -> None:
        """Listen on ``host:port``; with ``ssl`` (a server context) it serves HTTPS."""
        if self._server is not None:
            raise RuntimeError("MockLlm already started")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Connection(self._app, self._live), host, port, backlog=4096, reuse_address=True, ssl=ssl
        )
        self._scheme = "https" if ssl else "http"
        self._port = self._server.sockets[0].getsockname()[1]

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("MockLlm not started")
        return self._port

    @property
    def base_url(self) -> str:
        """What an OpenAI client takes as `base_url`, e.g. "http://127.0.0.1:43210/v1"."""
        return f"{self._scheme}://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> int:
        """Requests served so far (every parsed request, errors included)."""
        return self._app.requests

    @property
    def last_request_headers(self) -> list[tuple[bytes, bytes]]:
        """Raw headers of the latest request: wire order, original case."""
        last = self._app.last_request
        return [] if last is None else last.headers

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for connection in list(self._live):
            connection.abort()
        await server.wait_closed()

    async def __aenter__(self) -> MockLlm:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


# -- CLI -------------------------------------------------------------------------------------------


def _listen_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"--listen expects HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `mock-llm` on a subparsers action; it sets `func(args) -> int`."""
    parser = sub.add_parser("mock-llm", help="run a fake OpenAI-compatible upstream")
    defaults = MockLlmConfig()
    parser.add_argument("--listen", type=_listen_address, default=("127.0.0.1", 8001), metavar="HOST:PORT")
    parser.add_argument("--tokens", type=int, default=defaults.tokens, help="completion tokens per response")
    parser.add_argument("--token-delay-ms", type=float, default=defaults.token_delay_ms)
    parser.add_argument("--model", default=defaults.model, help="model listed by /v1/models")
    parser.add_argument("--tool-call-every", type=int, default=defaults.tool_call_every, metavar="N")
    parser.add_argument("--replay-dir", type=Path, default=None, metavar="DIR")
    parser.set_defaults(func=_run_command)


def _run_command(args: argparse.Namespace) -> int:
    config = MockLlmConfig(
        tokens=args.tokens,
        token_delay_ms=args.token_delay_ms,
        model=args.model,
        tool_call_every=args.tool_call_every,
        replay_dir=args.replay_dir,
    )
    try:
        config.validate()
    except ValueError as exc:
        print(f"wardgate mock-llm: {exc}", file=sys.stderr)
        return 2
    host, port = args.listen
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_serve_until_signalled(config, host, port))


async def _serve_until_signalled(config: MockLlmConfig, host: str, port: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    mock = MockLlm(config)
    try:
        await mock.start(host, port)
    except OSError as exc:
        print(f"wardgate mock-llm: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        shown = f"[{host}]" if ":" in host else host
        print(f"mock-llm listening on http://{shown}:{mock.port}/v1", flush=True)
        await stop.wait()
    finally:
        await mock.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m gateway.mock_llm mock-llm ...`: the subcommand without the rest of the wardgate CLI."""
    parser = argparse.ArgumentParser(prog="wardgate")
    add_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code
