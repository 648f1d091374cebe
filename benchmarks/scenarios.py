"""What each benchmark scenario sends, how long, how often, and which figures it is about.

Plain data and the request bytes the load generator replays; no processes, no sockets, no clock.
The full run stays under 10 minutes on 2 cores; ``--quick`` runs a reduced set (``QUICK``), each scenario
shrunk to a CI smoke test.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from typing import Literal

Upstream = Literal["fast", "paced", "idle"]
Kind = Literal["run", "hold"]

MODEL = "mock-gpt"
BENCH_BEARER = "sk-bench-0000000000000000000000000000"  # what a client sends when the gateway has no auth
SSE_TOKENS = 64
PACED_MS = 2.0
# The idle streams' one token comes this late: longer than opening them all takes through the gateway.
IDLE_MS = 10_000.0
QUICK_IDLE_MS = 3_000.0
LONG_STREAM_BYTES = 100_000_000
QUICK_LONG_STREAM_BYTES = 10_000_000
H2_NOTE = (
    "no direct column: the mock upstream speaks HTTP/1.1 only; HTTP/2 is compared with the gateway's own "
    "HTTP/1.1 path (wardgate-h1, one connection per request in flight; wardgate-h2 speaks HTTP/1.1 upstream)"
)
TLS_NOTE = (
    "every -tls column is TLS from the generator and TLS to the mock (ECDSA P-256, TLS 1.3, keep-alive: "
    "handshakes once per connection per round); wardgate is the same gateway without TLS on either side"
)
AUTH_NOTE = (
    "apikey: [[auth.api_keys]]; oidc: an ES256 JWT checked against a local JWKS file (one token reused, "
    "as a client does: the verifier's cache answers after the first request); both with one allow rule "
    "and [upstream_credential] swapped in; wardgate: the same gateway without auth"
)
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
    tls: bool = False  # every column over TLS (client to target, target to mock), beside the gateway without
    h2_connections: int = 0  # HTTP/2: ``concurrency`` streams over this many connections, beside HTTP/1.1
    auth: bool = False  # the gateway with an API key and with an OIDC JWT, beside the gateway without auth
    note: str = ""  # printed under the scenario's table

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


FULL += (
    Scenario(
        "tls-chat-c1",
        "TLS: non-streamed chat, 1 connection: added latency",
        "fast",
        False,
        64,
        1,
        3,
        tls=True,
        note=TLS_NOTE,
    ),
    Scenario(
        "tls-chat-c32",
        "TLS: non-streamed chat, 32 connections: CPU/exchange",
        "fast",
        False,
        64,
        32,
        3,
        tls=True,
        note=TLS_NOTE,
    ),
    Scenario(
        "tls-sse-c16",
        "TLS: SSE 64 tokens back to back, 16 streams",
        "fast",
        True,
        SSE_TOKENS,
        16,
        3,
        tls=True,
        note=TLS_NOTE,
    ),
    Scenario(
        "h2-chat-c32",
        "HTTP/2: non-streamed chat, 32 streams on 4 connections",
        "fast",
        False,
        64,
        32,
        3,
        h2_connections=4,
        note=H2_NOTE,
    ),
    Scenario(
        "h2-sse-c16",
        "HTTP/2: SSE 64 tokens back to back, 16 streams on 2 connections",
        "fast",
        True,
        SSE_TOKENS,
        16,
        3,
        h2_connections=2,
        note=H2_NOTE,
    ),
    Scenario(
        "auth-chat-c32",
        "auth on: API key, OIDC JWT; non-streamed chat, 32 connections",
        "fast",
        False,
        64,
        32,
        3,
        auth=True,
        note=AUTH_NOTE,
    ),
)
# What --quick runs when no scenario is named: one of each shape, at least one TLS, HTTP/2 and auth
# scenario, within a minute on an idle 2-core machine.
QUICK = frozenset(
    {
        "chat-c1",
        "chat-c32",
        "sse-c1",
        "sse-c16",
        "paced-c32",
        "long-100mb",
        "idle-2000",
        "durability-sse",
        "tls-chat-c32",
        "h2-sse-c16",
        "auth-chat-c32",
    }
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
    """The scenarios to run: all (in quick mode the ``QUICK`` set), or those named (a name or a prefix:
    ``sse`` is every sse-… scenario, ``tls`` every TLS one).

    Raises:
        ValueError: a name that matches no scenario.
    """
    chosen = [s for s in FULL if s.name in QUICK] if quick_mode else list(FULL)
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


def chat_request(
    authority: str, *, stream: bool, max_tokens: int, prompt_text: str, bearer: str = BENCH_BEARER
) -> bytes:
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
        f"Authorization: Bearer {bearer}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body
