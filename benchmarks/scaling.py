"""Throughput of ``wardgate serve --workers N``: ``python -m benchmarks.scaling [--workers 1,2] ...``.

``wardgate bench`` pins the gateway to one core to measure CPU per unit of work; this measures the other
thing: how many exchanges per second the gateway completes when its workers may use every core. Nothing is
pinned, so the load generator and the mock share the cores with the workers (say so when reporting).
Closed loop, ``--concurrency`` kept-alive connections (the kernel spreads them over the workers), rounds
interleaved so that a machine's drift hits every worker count alike.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.procs import BenchError, Child, JsonChannel, spawn

_LISTENING = re.compile(r"listening on http://\S+?:(\d+) ->")


def _request(stream: bool, tokens: int) -> bytes:
    body = json.dumps(
        {
            "model": "m",
            "max_tokens": tokens,
            "stream": stream,
            "messages": [{"role": "user", "content": "hi"}],
        }
    ).encode()
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def _gateway(workdir: Path, workers: int, upstream: int, serial: int) -> tuple[Child, int]:
    argv = [
        sys.executable,
        "-m",
        "gateway.cli",
        "serve",
        "--workers",
        str(workers),
        "--listen",
        "127.0.0.1:0",
    ]
    argv += ["--upstream", f"http://127.0.0.1:{upstream}", "--data-dir", str(workdir / f"data-{serial}")]
    argv += ["--durability", "batched", "--admin-listen", "", "--log-level", "warning"]
    child = spawn(f"gateway-{serial}-w{workers}", argv, workdir, None)
    while (found := _LISTENING.search(child.line(60))) is None:
        pass
    return child, int(found.group(1))


def measure(args: argparse.Namespace, workdir: Path) -> dict[int, list[tuple[float, float]]]:
    """Per worker count: (exchanges per second, gateway CPU seconds per exchange) of every round."""
    upstream = spawn("upstream", [sys.executable, "-m", "benchmarks.upstream"], workdir, None)
    loadgen = spawn("loadgen", [sys.executable, "-m", "benchmarks.loadgen"], workdir, None, stdin=True)
    channel = JsonChannel(loadgen)
    channel.receive(30)  # hello
    fast = int(json.loads(upstream.line(30))["fast"])
    request = base64.b64encode(_request(args.stream, args.tokens)).decode()
    results: dict[int, list[tuple[float, float]]] = {n: [] for n in args.workers}
    try:
        for round_no in range(args.rounds):
            for workers in args.workers:
                gateway, port = _gateway(workdir, workers, fast, round_no * 100 + workers)
                command = {"op": "run", "request": request, "host": "127.0.0.1", "port": port}
                command["concurrency"] = args.concurrency
                try:
                    channel.request({**command, "duration_s": 1.0}, timeout_s=60)  # warm up
                    cpu0 = gateway.cpu_s()
                    result = channel.request({**command, "duration_s": args.duration_s}, timeout_s=120)
                    cpu = gateway.cpu_s() - cpu0
                finally:
                    gateway.stop()
                done = int(result["completed"])
                if result["errors"] or not done:
                    raise BenchError(
                        f"{workers} workers: {result['errors']} errors {result['error_samples']}"
                    )
                results[workers].append((done / float(result["elapsed_s"]), cpu / done))
                print(
                    f"round {round_no + 1}: {workers} workers: {results[workers][-1][0]:,.0f}/s",
                    file=sys.stderr,
                )
    finally:
        loadgen.stop()
        upstream.stop()
    return results


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__)
    p.add_argument("--workers", default="1,2", help="worker counts to compare (default 1,2)")
    p.add_argument("--concurrency", type=int, default=64, help="kept-alive connections (default 64)")
    p.add_argument("--stream", action="store_true", help="SSE responses instead of JSON ones")
    p.add_argument("--tokens", type=int, default=64, help="tokens per response (default 64)")
    p.add_argument("--duration-s", type=float, default=6.0, help="per round (default 6)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    args = p.parse_args()
    args.workers = [int(n) for n in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="wardgate-scaling-") as tmp:
        try:
            results = measure(args, Path(tmp))
        except BenchError as exc:
            print(f"scaling: {exc}", file=sys.stderr)
            return 1
    kind = "SSE" if args.stream else "JSON"
    print(
        f"{kind} chat, {args.tokens} tokens, {args.concurrency} connections, median of {args.rounds} rounds"
    )
    base = statistics.median(rate for rate, _ in results[args.workers[0]])
    for workers, rounds in results.items():
        rate = statistics.median(r for r, _ in rounds)
        cpu_us = statistics.median(c for _, c in rounds) * 1e6
        print(
            f"  {workers} workers: {rate:8,.0f} exchanges/s ({rate / base:.2f}x)"
            f"  {cpu_us:6,.0f} µs CPU/exchange"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
