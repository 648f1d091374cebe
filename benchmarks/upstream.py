"""The upstream process: the mock LLM servers every scenario talks to, in one uvloop process.

``python -m benchmarks.upstream`` starts three `MockLlm` servers and prints their ports as one JSON
object: ``fast`` (tokens back to back), ``paced`` (one write per token, ``--paced-ms`` apart) and ``idle``
(one token after ``--idle-ms``: streams that stay open and silent). Requests pick their token count with
``max_tokens``. It measures nothing; the orchestrator only starts and stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from contextlib import AsyncExitStack

import uvloop

from benchmarks.loadgen import raise_nofile_limit
from gateway.mock_llm import MockLlm, MockLlmConfig

MAX_TOKENS = 4_000_000  # the long stream's token count is chosen per request with max_tokens
UPSTREAMS = ("fast", "paced", "idle")


async def serve(*, paced_ms: float, idle_ms: float, base_port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    delays = {"fast": 0.0, "paced": paced_ms, "idle": idle_ms}
    async with AsyncExitStack() as stack:
        ports = {}
        for i, name in enumerate(UPSTREAMS):
            mock = MockLlm(MockLlmConfig(tokens=MAX_TOKENS, token_delay_ms=delays[name]))
            await mock.start("127.0.0.1", base_port + i if base_port else 0)
            stack.push_async_callback(mock.close)
            ports[name] = mock.port
        print(json.dumps(ports), flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.upstream", description=__doc__)
    parser.add_argument("--paced-ms", type=float, default=2.0)
    parser.add_argument("--idle-ms", type=float, default=4000.0)
    parser.add_argument("--base-port", type=int, default=0, help="fast on PORT, paced PORT+1, idle PORT+2")
    args = parser.parse_args(argv)
    raise_nofile_limit()
    uvloop.run(serve(paced_ms=args.paced_ms, idle_ms=args.idle_ms, base_port=args.base_port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
