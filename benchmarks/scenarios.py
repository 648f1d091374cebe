"""What each benchmark scenario sends, how long, how often, and which figures it is about.

Plain data and the request bytes the load generator replays; no processes, no sockets, no clock.
The full run stays under 10 minutes on 2 cores; ``--quick`` shrinks every scenario to a CI smoke test.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from typing import Literal

Upstream = Literal["fast", "paced", "idle"]
Kind = Literal["run", "hold"]

MODEL = "mock-gpt"
SSE_TOKENS = 64
PACED_MS = 2.0
# The idle streams' one token comes this late: longer than opening them all takes through the gateway.
IDLE_MS = 10_000.0
QUICK_IDLE_MS = 3_000.0
LONG_STREAM_BYTES = 100_000_000
QUICK_LONG_STREAM_BYTES = 10_000_000
_PROMPT_TEXT = (
    "the gateway records every exchange between agents and models so an auditor can replay what was "
    "asked and answered tokens arrive one by one and must never wait for the disk latency matters"
)


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    upstream: Upstream
    stream: bool
    tokens: int  # max_tokens of every request (the long stream's is calibrated at run time)
    concurrency: int
    rounds: int
    duration_s: float | None = 1.5  # per target per round; None: ``requests`` decides
    requests: int | None = None  # per target per round
    kind: Kind = "run"  # "hold": open ``concurrency`` streams at once and keep them open
    warmup: int = 64  # requests per target before the first round (not measured)
    body_bytes: int = 0  # the long stream: response body size to aim at
    fresh_per_round: bool = False  # new gateway and floor processes every round (memory figures)
    durability: bool = False  # compare recording off (the floor), batched and strict

    @property
    def unit(self) -> str:
        return "chunk" if self.stream else "exchange"


FULL: tuple[Scenario, ...] = (
    Scenario("chat-c1", "non-streamed chat, 1 connection: added latency", "fast", False, 64, 1, 5),
    Scenario(
        "chat-c32", "non-streamed chat, 32 connections: throughput, CPU/exchange", "fast", False, 64, 32, 5
    ),
    Scenario("sse-c1", "SSE 64 tokens back to back, 1 stream: added TTFT", "fast", True, SSE_TOKENS, 1, 5),
    Scenario("sse-c16", "SSE 64 tokens back to back, 16 streams", "fast", True, SSE_TOKENS, 16, 5),
    Scenario(
        "sse-c256",
        "SSE 64 tokens back to back, 256 streams",
        "fast",
        True,
        SSE_TOKENS,
        256,
        5,
        duration_s=1.0,
    ),
    Scenario(
        "paced-c32", f"SSE 64 tokens {PACED_MS:g} ms apart, 32 streams", "paced", True, SSE_TOKENS, 32, 5
    ),
    Scenario(
        "paced-c256",
        f"SSE 64 tokens {PACED_MS:g} ms apart, 256 streams",
        "paced",
        True,
        SSE_TOKENS,
        256,
        5,
        duration_s=1.0,
    ),
    Scenario(
        "long-100mb",
        "one 100 MB SSE stream: throughput and peak RSS",
        "fast",
        True,
        0,
        1,
        2,
        duration_s=None,
        requests=1,
        warmup=8,
        body_bytes=LONG_STREAM_BYTES,
    ),
    Scenario(
        "idle-2000",
        "2,000 open, silent streams: RSS per stream",
        "idle",
        True,
        1,
        2000,
        2,
        duration_s=None,
        kind="hold",
        warmup=0,
        fresh_per_round=True,
    ),
    Scenario(
        "durability-chat",
        "recording off / batched / strict: non-streamed chat, 32 connections",
        "fast",
        False,
        64,
        32,
        5,
        durability=True,
    ),
    Scenario(
        "durability-sse",
        "recording off / batched / strict: SSE 64 tokens, 16 streams",
        "fast",
        True,
        SSE_TOKENS,
        16,
        5,
        durability=True,
    ),
)


def quick(scenario: Scenario) -> Scenario:
    """The CI smoke version: same shape, a fraction of the work."""
    if scenario.kind == "hold":
        return replace(scenario, name="idle-500", title="500 open, silent streams", concurrency=500, rounds=1)
    if scenario.body_bytes:
        return replace(
            scenario,
            name="long-10mb",
            title="one 10 MB SSE stream (quick)",
            rounds=1,
            warmup=2,
            body_bytes=QUICK_LONG_STREAM_BYTES,
        )
    return replace(scenario, rounds=1, duration_s=0.5, warmup=min(scenario.warmup, 16))


def select(names: list[str] | None, *, quick_mode: bool) -> list[Scenario]:
    """The scenarios to run: all, or those named (a name or a prefix: ``sse`` is both SSE scenarios).

    Raises:
        ValueError: a name that matches no scenario.
    """
    chosen = list(FULL)
    if names:
        picked = []
        for name in names:
            matches = [s for s in FULL if s.name == name or s.name.startswith(name)]
            if not matches:
                known = ", ".join(s.name for s in FULL)
                raise ValueError(f"--scenarios: no scenario {name!r} (known: {known})")
            picked += [s for s in matches if s not in picked]
        chosen = [s for s in FULL if s in picked]
    return [quick(s) for s in chosen] if quick_mode else chosen


def prompt(seed: int, n_words: int = 48) -> str:
    """The user message every request carries: ``n_words`` words drawn with ``seed``."""
    rng = random.Random(seed)
    vocabulary = _PROMPT_TEXT.split()
    return " ".join(rng.choice(vocabulary) for _ in range(n_words))


def chat_request(authority: str, *, stream: bool, max_tokens: int, prompt_text: str) -> bytes:
    """A complete HTTP/1.1 request as an OpenAI SDK would send it (keep-alive, bearer credential)."""
    body = json.dumps(
        {
            "model": MODEL,
            "messages": [
                {"role": "system", "content": "You are a concise assistant."},
                {"role": "user", "content": prompt_text},
            ],
            "max_tokens": max_tokens,
            "stream": stream,
        },
        separators=(",", ":"),
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\n"
        f"Host: {authority}\r\n"
        f"Accept: {'text/event-stream' if stream else 'application/json'}\r\n"
        f"Content-Type: application/json\r\n"
        f"User-Agent: wardgate-bench/1\r\n"
        f"Authorization: Bearer sk-bench-0000000000000000000000000000\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body
