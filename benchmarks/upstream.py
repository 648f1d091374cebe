"""The upstream process: the mock LLM servers every scenario talks to, in one uvloop process.

``python -m benchmarks.upstream`` starts three `MockLlm` servers and prints their ports as one JSON
object: ``fast`` (tokens back to back), ``paced`` (one write per token, ``--paced-ms`` apart) and ``idle``
(one token after ``--idle-ms``: streams that stay open and silent). Requests pick their token count with
``max_tokens``. With ``--tls-cert/--tls-key`` each also listens over TLS (HTTP/1.1 only: the mock has no
HTTP/2), under ``"tls"`` in the printed object. It measures nothing; the orchestrator starts and stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import ssl
import sys
from contextlib import AsyncExitStack

import uvloop

from benchmarks.certs import server_context
from benchmarks.loadjob import raise_nofile_limit
from gateway.mock_llm import MockLlm, MockLlmConfig

MAX_TOKENS = 4_000_000  # the long stream's token count is chosen per request with max_tokens
UPSTREAMS = ("fast", "paced", "idle")


async def serve(
    *, paced_ms: float, idle_ms: float, base_port: int, tls: ssl.SSLContext | None = None
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    delays = {"fast": 0.0, "paced": paced_ms, "idle": idle_ms}
    async with AsyncExitStack() as stack:
        ports: dict[str, object] = {}
        tls_ports: dict[str, int] = {}
        for i, name in enumerate(UPSTREAMS):
            mock = MockLlm(MockLlmConfig(tokens=MAX_TOKENS, token_delay_ms=delays[name]))
            await mock.start("127.0.0.1", base_port + i if base_port else 0)
            stack.push_async_callback(mock.close)
            ports[name] = mock.port
            if tls is not None:
                # TLS on PORT+3.. with a fixed base port, so that an --against proxy can reach them too.
                secure = MockLlm(MockLlmConfig(tokens=MAX_TOKENS, token_delay_ms=delays[name]))
                await secure.start("127.0.0.1", base_port + len(UPSTREAMS) + i if base_port else 0, ssl=tls)
                stack.push_async_callback(secure.close)
                tls_ports[name] = secure.port
        if tls_ports:
            ports["tls"] = tls_ports
        print(json.dumps(ports), flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.upstream", description=__doc__)
    parser.add_argument("--paced-ms", type=float, default=2.0)
    parser.add_argument("--idle-ms", type=float, default=4000.0)
    parser.add_argument(
        "--base-port", type=int, default=0, help="fast on PORT, paced PORT+1, idle PORT+2 (TLS: PORT+3..5)"
    )
    parser.add_argument("--tls-cert", help="PEM certificate chain: also serve each upstream over TLS")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    args = parser.parse_args(argv)
    raise_nofile_limit()
    tls = server_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    uvloop.run(serve(paced_ms=args.paced_ms, idle_ms=args.idle_ms, base_port=args.base_port, tls=tls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
