"""Where the gateway spends its CPU under one scenario's load: py-spy samples grouped by component.

``python -m benchmarks.profile paced-c32 --seconds 10`` starts the same processes as ``wardgate bench``,
runs the scenario against the gateway only, samples it with py-spy (``pip install py-spy``; not a
dependency of wardgate) and prints CPU per thread and the main thread's samples by component.
Samples are taken only while a thread holds the GIL (``--gil``): time spent waiting for it, e.g. after
``os.urandom`` released it to the SQLite thread, would otherwise look like work of the call before.
The gateway gets a core of its own: a sampled thread that was preempted would look busy too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

from benchmarks.procs import BenchError, isolate_target
from benchmarks.runner import Options, Progress, Run
from benchmarks.scenarios import select

_TICK = os.sysconf("SC_CLK_TCK")

# First match from the innermost frame outwards decides a sample's component.
COMPONENTS = (
    ("ids: new_id (os.urandom per id)", ("gateway/ids.py",)),
    (
        "index follower on the loop: re-read log, CRC, sha256, decode, assemble, SSE/OpenAI parse",
        (
            "storage/reader",
            "storage/_format",
            "decode_frame",
            "storage/assemble",
            "storage/index",
            "_follow_index",
            "parsers/openai",
            "parsers/_openai",
            "parsers/sse",
        ),
    ),
    ("record masking: detectors, body and SSE maskers", ("parsers/masking/", "gateway/masking")),
    ("recorder: frames, redaction, encode, chain, write, fsync", ("storage/", "Recorder.", "encode_frame")),
    ("h11 through parsers.http1: parse and re-serialize", ("h11/", "parsers/http1")),
    ("socket writes (StreamWriter.write)", ("StreamWriter.write", "StreamWriter.drain")),
    ("socket reads (StreamReader)", ("StreamReader",)),
    ("asyncio.timeout per read", ("asyncio/timeouts",)),
    ("proxy logic: proxy, sessions, upstream pool, metrics", ("gateway/",)),
    ("event loop: uvloop poll, callbacks, task steps", ("Runner.run", "uvloop/")),
)


def thread_cpu_s(pid: int) -> dict[int, float]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / _TICK
    return out


def components(raw: Path) -> tuple[Counter[str], Counter[str], int]:
    """Main-thread samples by component and by innermost frame, from py-spy's raw (collapsed) output."""
    by_component: Counter[str] = Counter()
    by_frame: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not stack or any("aiosqlite" in f or "concurrent/futures" in f for f in frames):
            continue  # worker threads: their CPU comes from /proc per thread (py-spy counts their waits)
        n = int(count)
        total += n
        by_frame[frames[-1]] += n
        found = "other"
        for frame in reversed(frames):
            found = next((name for name, keys in COMPONENTS if any(k in frame for k in keys)), "")
            if found:
                break
        by_component[found or "other"] += n
    return by_component, by_frame, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    parser.add_argument("scenario", help="a scenario name, e.g. chat-c32 or paced-c32")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--durability", choices=["strict", "batched"], default="batched")
    parser.add_argument("--out", type=Path, default=Path("py-spy-gateway.txt"), help="raw py-spy output")
    parser.add_argument("--top", type=int, default=25, help="innermost frames to list")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        print("benchmarks.profile: py-spy not found; pip install py-spy", file=sys.stderr)
        return 2
    scenario = select([args.scenario], quick_mode=False)[0]
    if scenario.duration_s is not None:
        scenario = replace(scenario, duration_s=args.seconds + 2, rounds=1)
    try:
        with Run(Options(durability=args.durability), Progress(), isolate_target()) as run:
            gateway = run.fleet.gateway("wardgate", args.durability)
            run.warmup(gateway, scenario)
            if gateway.child is None:
                raise BenchError("the gateway did not start")
            pid = gateway.child.pid
            before = thread_cpu_s(pid)
            spy = subprocess.Popen(
                [
                    py_spy,
                    "record",
                    "-p",
                    str(pid),
                    "-d",
                    str(int(args.seconds)),
                    "-r",
                    "200",
                    "-f",
                    "raw",
                    "-o",
                    str(args.out),
                    "--nonblocking",
                    "--gil",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            row = run.measure(gateway, scenario, scenario.tokens or 64, f"profile {scenario.name}")
            spy.wait()
            after = thread_cpu_s(pid)
            run.fleet.stop([gateway], {}, run.failures)
    except BenchError as exc:
        print(f"benchmarks.profile: {exc}", file=sys.stderr)
        return 1
    units = [
        f"{row[k]:.1f} µs/{k.split('_')[-1]}" for k in ("cpu_us_per_exchange", "cpu_us_per_chunk") if k in row
    ]
    print(f"{scenario.name}: {row.get('completed', 0):.0f} exchanges, {', '.join(units)}")
    for tid, cpu in sorted(after.items()):
        spent = cpu - before.get(tid, 0.0)
        if spent >= 0.01:
            print(f"  thread {tid}{' (event loop)' if tid == pid else ''}: {spent:.2f} s CPU")
    by_component, by_frame, total = components(args.out)
    print(f"event-loop thread, {total} samples:")
    for name, n in by_component.most_common():
        print(f"  {100 * n / total:5.1f}%  {name}")
    print("innermost frames:")
    for frame, n in by_frame.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
