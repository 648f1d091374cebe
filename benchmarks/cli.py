"""``wardgate bench``: flags in, a table (or JSON) out; exit 1 when a figure cannot be trusted.

The only module of the package that reads flags or writes the final output.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from benchmarks import targets
from benchmarks.fleet import MAX_CONNECTIONS
from benchmarks.procs import BenchError
from benchmarks.report import machine, text_report
from benchmarks.runner import Options, Progress, Run
from benchmarks.scenarios import FULL, PACED_MS, QUICK, select

_EPILOG = f"""\
scenarios: {", ".join(s.name for s in FULL)} (a prefix selects several: sse, paced, durability, tls, h2)
--quick without --scenarios runs: {", ".join(s.name for s in FULL if s.name in QUICK)}

--against URL compares another proxy that is already listening (e.g. nginx): it must forward URL's
port to the mock's fast port, PORT+1 to paced and PORT+2 to idle; give the mock fixed ports with
--mock-port (default 18001 with --against) and the proxy's worker pids with --against-pid for CPU.
An https:// URL is a TLS proxy: it joins the tls-… scenarios (verified with --against-ca, else the
system store) and should forward to the mock's TLS ports, MOCK_PORT+3 (fast) to +5 (idle), whose
certificate is the run's own throwaway CA.
"""


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``bench`` on the wardgate subparsers; it sets ``func(args) -> int``."""
    p = sub.add_parser(
        "bench",
        help="measure what the gateway costs: CPU per exchange and per chunk, added latency, memory",
        description="Start the mock upstream, the gateway under test, a byte relay (the floor) and a load "
        "generator as separate processes, and measure every scenario direct and through each, interleaved.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="a smoke run in under a minute (CI)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the tables")
    p.add_argument(
        "--against", metavar="URL", help="also measure another proxy listening at http[s]://HOST:PORT"
    )
    p.add_argument("--against-ca", metavar="PEM", help="CA bundle for an https:// --against proxy")
    p.add_argument("--against-pid", type=int, action="append", default=[], metavar="PID")
    p.add_argument("--mock-port", type=int, default=None, metavar="PORT")
    p.add_argument(
        "--durability",
        choices=["strict", "batched", "off"],
        default="batched",
        help="the gateway under test (default batched; off: no gateway has that mode yet, the byte relay "
        "stands in)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes of the gateway under test (default 1; they share the gateway's cores)",
    )
    p.add_argument("--scenarios", metavar="A,B", help="comma-separated scenario names or prefixes")
    p.add_argument("--seed", type=int, default=1, help="orders the rounds and writes the prompts (default 1)")
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    mock_port = args.mock_port if args.mock_port is not None else (18001 if args.against else 0)
    options = Options(
        quick=args.quick,
        scenarios=[s.strip() for s in args.scenarios.split(",") if s.strip()] if args.scenarios else None,
        durability=args.durability,
        seed=args.seed,
        against=args.against,
        against_pids=args.against_pid,
        against_ca=args.against_ca,
        mock_port=mock_port,
        workers=args.workers,
    )
    try:
        select(options.scenarios, quick_mode=options.quick)
    except ValueError as exc:
        print(f"wardgate bench: {exc}", file=sys.stderr)
        return 2
    progress = Progress()
    started = time.monotonic()
    try:
        with Run(options, progress) as run:
            meta = {
                "machine": machine(),
                "pinning": run.cpus.note,
                "config": {
                    "quick": options.quick,
                    "seed": options.seed,
                    "durability": options.durability,
                    "workers": options.workers,
                    "max_connections": MAX_CONNECTIONS,
                    "paced_ms": PACED_MS,
                    "idle_ms": run.idle_ms,
                    "against": options.against,
                    "mock_ports": run.mock_ports,
                },
            }
            progress.log(f"wardgate bench: {run.cpus.note}; temp dir {run.workdir}")
            scenarios = run.all()
            failures = run.failures
    except BenchError as exc:
        print(f"wardgate bench: {exc}", file=sys.stderr)
        return 1
    document: dict[str, Any] = {
        "meta": meta,
        "scenarios": scenarios,
        "targets": targets.check(scenarios),
        "failures": failures,
        "ok": not failures,
        "wall_s": time.monotonic() - started,
    }
    if args.json:
        print(json.dumps(document, indent=1))
    else:
        print(text_report(document))
    if failures:
        for failure in failures:
            print(f"wardgate bench: FAILED: {failure}", file=sys.stderr)
        return 1
    return 0
