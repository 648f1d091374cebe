"""Runs the scenarios: starts the processes, interleaves the targets round by round, proves the recording.

Owns every child process of a run and its temporary directory. Measures; does not format (report.py
does). Each target's CPU time is read around each measured round, after the target has gone quiet, so
deferred work (log writes, fsync, indexing) counts against the work that caused it.
"""

from __future__ import annotations

import base64
import json
import random
import re
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from benchmarks.loadgen import raise_nofile_limit
from benchmarks.procs import (
    BenchError,
    Child,
    CpuPlan,
    JsonChannel,
    cpu_seconds,
    pin,
    plan_cpus,
    reset_peak_rss,
    spawn,
    wait_quiet,
)
from benchmarks.scenarios import PACED_MS, Scenario, chat_request, prompt, select
from benchmarks.upstream import UPSTREAMS
from parsers.events import ExchangeEnded
from storage.reader import iter_frames

MAX_CONNECTIONS = 8192  # the gateway's default (1024) would refuse the idle-streams scenario
IDLE_MS = 4000.0
_LISTENING = re.compile(r"listening on http://\S+?:(\d+) ->")


@dataclass
class Options:
    quick: bool = False
    scenarios: list[str] | None = None
    durability: str = "batched"  # strict | batched | off (off: the gateway column is the byte relay)
    seed: int = 1
    against: str | None = None  # http://HOST:PORT of another proxy: PORT -> fast, PORT+1 paced, PORT+2 idle
    against_pids: list[int] = field(default_factory=list)
    mock_port: int = 0  # fixed mock ports (fast, +1 paced, +2 idle), for --against


@dataclass
class Target:
    """Something the generator sends traffic to: direct, the floor, a gateway, another proxy."""

    name: str
    host: str
    ports: dict[str, int]
    child: Child | None = None  # the process whose CPU and memory are measured
    pids: list[int] = field(default_factory=list)  # --against-pid: measured by pid alone
    data_dir: Path | None = None  # a recording gateway's data dir: what the proof reads
    sent: int = 0  # complete exchanges the generator saw through this target

    def cpu_s(self) -> float | None:
        if self.child is not None:
            return self.child.cpu_s()
        if self.pids:
            return sum(cpu_seconds(pid) for pid in self.pids)
        return None


class Progress:
    """One status line on stderr, rewritten in place on a terminal; plain lines otherwise."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.started = time.monotonic()

    def status(self, text: str) -> None:
        line = f"[{time.monotonic() - self.started:5.0f}s] {text}"
        if self.tty:
            self.stream.write(f"\r\x1b[2K{line[:160]}")
            self.stream.flush()

    def log(self, text: str) -> None:
        line = f"[{time.monotonic() - self.started:5.0f}s] {text}"
        self.stream.write(f"\r\x1b[2K{line}\n" if self.tty else f"{line}\n")
        self.stream.flush()


def count_recorded(data_dir: Path) -> tuple[Counter[str], int]:
    """Outcomes of the ``exchangeended`` frames in a data dir, and how many frames it holds."""
    outcomes: Counter[str] = Counter()
    frames = 0
    for stored in iter_frames(data_dir):
        frames += 1
        event = stored.frame.event
        if isinstance(event, ExchangeEnded):
            outcomes[event.outcome] += 1
    return outcomes, frames


def _median_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = [k for k in rows[0] if all(k in r for r in rows)] if rows else []
    return {k: statistics.median(r[k] for r in rows) for k in keys}


class Run:
    """One ``wardgate bench`` run: ``with Run(options) as run: results = run.all()``."""

    def __init__(self, options: Options, progress: Progress) -> None:
        self.options = options
        self.progress = progress
        self.rng = random.Random(options.seed)
        self.prompt = prompt(options.seed)
        self.cpus: CpuPlan = plan_cpus()
        self.workdir = Path(tempfile.mkdtemp(prefix="wardgate-bench-"))
        self.upstream: Child | None = None
        self.loadgen: JsonChannel | None = None
        self.mock_ports: dict[str, int] = {}
        self.against: Target | None = None
        self.failures: list[str] = []
        self._children: list[Child] = []
        self._serial = 0

    # --- processes -------------------------------------------------------------------------------

    def __enter__(self) -> Run:
        raise_nofile_limit()  # inherited by every child
        try:
            self._start_shared()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _python(self, module: str, *args: str) -> list[str]:
        return [sys.executable, "-m", module, *args]

    def _spawn(self, name: str, argv: list[str], cpus: set[int] | None, *, stdin: bool = False) -> Child:
        child = spawn(name, argv, self.workdir, cpus, stdin=stdin)
        self._children.append(child)
        return child

    def _start_shared(self) -> None:
        base = self.options.mock_port
        args = ["--paced-ms", str(PACED_MS), "--idle-ms", str(IDLE_MS), "--base-port", str(base)]
        self.upstream = self._spawn(
            "mock-upstream", self._python("benchmarks.upstream", *args), self.cpus.upstream
        )
        self.mock_ports = {k: int(v) for k, v in _json_line(self.upstream, 30).items()}
        loadgen = self._spawn("loadgen", self._python("benchmarks.loadgen"), self.cpus.loadgen, stdin=True)
        self.loadgen = JsonChannel(loadgen)
        self.loadgen.receive(30)  # hello: it is up and has raised its fd limit
        if self.options.against:
            self.against = self._against_target(self.options.against)

    def _against_target(self, url: str) -> Target:
        match = re.fullmatch(r"http://([^/:]+|\[[^\]]+\]):(\d+)/?", url)
        if match is None:
            raise BenchError(f"--against: expected http://HOST:PORT, got {url!r}")
        host, port = match.group(1).strip("[]"), int(match.group(2))
        ports = {}
        for i, name in enumerate(UPSTREAMS):
            with socket.socket() as sock:
                sock.settimeout(1.0)
                if sock.connect_ex((host, port + i)) == 0:
                    ports[name] = port + i
        if "fast" not in ports:
            raise BenchError(f"--against: nothing listening on {host}:{port}")
        return Target("against", host, ports, pids=self.options.against_pids)

    def _start_gateway(self, label: str, durability: str) -> Target:
        self._serial += 1
        data_dir = self.workdir / f"data-{self._serial:02d}-{label}"
        config = self.workdir / f"gateway-{self._serial:02d}.toml"
        listeners = "".join(
            f'[[listeners]]\nname = "{name}"\nlisten = "127.0.0.1:0"\n'
            f'upstream = "http://127.0.0.1:{self.mock_ports[name]}"\n\n'
            for name in UPSTREAMS
        )
        config.write_text(
            f"{listeners}[limits]\nmax_connections = {MAX_CONNECTIONS}\n\n"
            f'[storage]\ndata_dir = "{data_dir}"\ndurability = "{durability}"\n'
        )
        argv = self._python("gateway.cli", "serve", "--config", str(config), "--log-level", "warning")
        child = self._spawn(f"gateway-{self._serial:02d}-{label}", argv, self.cpus.target)
        ports = {}
        for name in UPSTREAMS:
            line = child.reader.line(60)
            found = _LISTENING.search(line)
            if found is None:
                raise BenchError(f"{child.name}: unexpected output {line!r}")
            ports[name] = int(found.group(1))
        pin(child.pid, self.cpus.target)  # again: its threads exist now
        return Target(label, "127.0.0.1", ports, child=child, data_dir=data_dir)

    def _start_relay(self, label: str) -> Target:
        self._serial += 1
        upstreams = [f"127.0.0.1:{self.mock_ports[name]}" for name in UPSTREAMS]
        child = self._spawn(
            f"relay-{self._serial:02d}-{label}",
            self._python("benchmarks.relay", *upstreams),
            self.cpus.target,
        )
        ports = _json_list(child, 30)
        return Target(label, "127.0.0.1", dict(zip(UPSTREAMS, ports, strict=True)), child=child)

    def _start_targets(self, scenario: Scenario) -> list[Target]:
        direct = Target("direct", "127.0.0.1", dict(self.mock_ports))
        if scenario.durability:
            targets = [direct, self._start_relay("off"), self._start_gateway("batched", "batched")]
            return [*targets, self._start_gateway("strict", "strict")]
        floor = self._start_relay("floor")
        if self.options.durability == "off":
            gateway = self._start_relay("wardgate")  # no recording-off mode yet: the byte relay stands in
        else:
            gateway = self._start_gateway("wardgate", self.options.durability)
        targets = [floor, gateway]
        if scenario.kind != "hold":
            targets.insert(0, direct)  # idle streams measure the processes' memory: direct has none
        if self.against is not None and scenario.upstream in self.against.ports:
            targets.append(self.against)
        return targets

    def _stop_targets(self, targets: list[Target], proof: dict[str, dict[str, Any]]) -> None:
        for target in targets:
            if target.child is None:
                continue
            code = target.child.stop()
            self._children.remove(target.child)
            if code != 0:
                self.failures.append(f"{target.child.name} exited with code {code}")
            if target.data_dir is not None:
                outcomes, frames = count_recorded(target.data_dir)
                entry = proof.setdefault(target.name, {"sent": 0, "recorded": 0, "other": 0, "frames": 0})
                entry["sent"] += target.sent
                entry["recorded"] += outcomes.pop("complete", 0)
                entry["other"] += sum(outcomes.values())
                entry["frames"] += frames
                entry["log_bytes"] = entry.get("log_bytes", 0) + _dir_bytes(target.data_dir / "segments")
                shutil.rmtree(target.data_dir, ignore_errors=True)

    def close(self) -> None:
        if self.loadgen is not None:
            try:
                self.loadgen.stdin.write(b'{"op": "quit"}\n')
                self.loadgen.stdin.flush()
            except OSError:
                pass  # it is gone already; stop() below reaps it
        for child in reversed(self._children):
            child.stop(timeout_s=10)
        self._children.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # --- measuring -------------------------------------------------------------------------------

    def _request(self, target: Target, scenario: Scenario, tokens: int) -> str:
        port = target.ports[scenario.upstream]
        raw = chat_request(
            f"{target.host}:{port}", stream=scenario.stream, max_tokens=tokens, prompt_text=self.prompt
        )
        return base64.b64encode(raw).decode()

    def _loadgen(self) -> JsonChannel:
        if self.loadgen is None:
            raise BenchError("the load generator is not running")
        return self.loadgen

    def _calibrate_long(self, scenario: Scenario) -> int:
        """Tokens for ``body_bytes`` of stream: the mock's token size, measured directly."""
        direct = Target("direct", "127.0.0.1", self.mock_ports)
        probe = 2000
        cmd = self._run_cmd(direct, scenario, probe, concurrency=1, duration_s=None, requests=1)
        result = self._loadgen().request(cmd, timeout_s=60)
        return max(1, int(scenario.body_bytes / (result["body_bytes"] / probe)))

    def _run_cmd(
        self,
        target: Target,
        scenario: Scenario,
        tokens: int,
        *,
        concurrency: int,
        duration_s: float | None,
        requests: int | None,
    ) -> dict[str, Any]:
        return {
            "op": "run",
            "host": target.host,
            "port": target.ports[scenario.upstream],
            "request": self._request(target, scenario, tokens),
            "concurrency": concurrency,
            "duration_s": duration_s,
            "max_requests": requests,
        }

    def _warmup(self, target: Target, scenario: Scenario) -> None:
        if scenario.warmup <= 0:
            return
        tokens = scenario.tokens or 64
        cmd = self._run_cmd(
            target,
            scenario,
            tokens,
            concurrency=min(scenario.concurrency, 32, scenario.warmup),
            duration_s=None,
            requests=scenario.warmup,
        )
        result = self._loadgen().request(cmd, timeout_s=120)
        target.sent += result["completed"]
        if result["errors"]:
            self.failures.append(f"{scenario.name} warm-up via {target.name}: {result['error_samples']}")

    def _measure(self, target: Target, scenario: Scenario, tokens: int, label: str) -> dict[str, float]:
        child = target.child
        memory: dict[str, float] = {}
        samples: list[tuple[int, int]] = []
        if child is not None:
            memory["rss_before_kib"] = child.memory_kib()["VmRSS"]
            memory["peak_reset"] = float(reset_peak_rss(child.pid))

        def on_message(message: dict[str, Any]) -> None:
            if "progress" in message:
                done = message["progress"]
                self.progress.status(f"{label}  {done['completed']} done, {done['body_bytes'] / 1e6:.1f} MB")
                if child is not None:
                    samples.append((done["body_bytes"], child.memory_kib()["VmRSS"]))
            elif "ready" in message:
                ready = message["ready"]
                memory["open_streams"] = ready["open"]
                memory["ramp_s"] = ready["ramp_s"]
                if child is not None:
                    memory["rss_ready_kib"] = child.memory_kib()["VmRSS"]

        if scenario.kind == "hold":
            cmd: dict[str, Any] = {
                "op": "hold",
                "host": target.host,
                "port": target.ports[scenario.upstream],
                "request": self._request(target, scenario, tokens),
                "streams": scenario.concurrency,
            }
        else:
            cmd = self._run_cmd(
                target,
                scenario,
                tokens,
                concurrency=scenario.concurrency,
                duration_s=scenario.duration_s,
                requests=scenario.requests,
            )
        timeout_s = 900.0 if scenario.body_bytes else 120.0 + (scenario.duration_s or 0)
        cpu0 = target.cpu_s()
        result = self._loadgen().request(cmd, timeout_s=timeout_s, on_message=on_message)
        if child is not None:
            cpu1: float | None = wait_quiet(child)
        elif target.pids:
            time.sleep(0.2)
            cpu1 = target.cpu_s()
        else:
            cpu1 = None
        target.sent += result["completed"]
        if result["errors"]:
            self.failures.append(f"{label}: {result['errors']} errors, e.g. {result['error_samples']}")
        row = _row(scenario, result)
        if cpu0 is not None and cpu1 is not None:
            row.update(_cpu_figures(cpu1 - cpu0, result))
        if child is not None:
            row.update(_memory_figures(memory, samples, child.memory_kib(), result))
        return row

    def scenario(self, scenario: Scenario, index: int, total: int) -> dict[str, Any]:
        tokens = self._calibrate_long(scenario) if scenario.body_bytes else scenario.tokens
        rounds: list[dict[str, dict[str, float]]] = [{} for _ in range(scenario.rounds)]
        proof: dict[str, dict[str, Any]] = {}
        groups = (
            [[r] for r in range(scenario.rounds)]
            if scenario.fresh_per_round
            else [list(range(scenario.rounds))]
        )
        columns: list[str] = []
        for group in groups:
            targets = self._start_targets(scenario)
            columns = [t.name for t in targets]
            try:
                for target in targets:
                    self.progress.status(f"[{index}/{total}] {scenario.name}  warm-up {target.name}")
                    self._warmup(target, scenario)
                for r in group:
                    order = list(targets)
                    self.rng.shuffle(order)
                    for target in order:
                        where = f"round {r + 1}/{scenario.rounds}  {target.name}"
                        label = f"[{index}/{total}] {scenario.name}  {where}"
                        self.progress.status(label)
                        rounds[r][target.name] = self._measure(target, scenario, tokens, label)
            finally:
                self._stop_targets(targets, proof)
        for name, entry in proof.items():
            entry["ok"] = entry["sent"] == entry["recorded"] and entry["other"] == 0
            if not entry["ok"]:
                self.failures.append(
                    f"{scenario.name}: {name} recorded {entry['recorded']} complete exchanges "
                    f"(+{entry['other']} other) but the generator completed {entry['sent']}"
                )
        medians = {name: _median_rows([r[name] for r in rounds if name in r]) for name in columns}
        return {
            "name": scenario.name,
            "title": scenario.title,
            "unit": scenario.unit,
            "tokens": tokens,
            "concurrency": scenario.concurrency,
            "rounds": scenario.rounds,
            "duration_s": scenario.duration_s,
            "columns": columns,
            "median": medians,
            "per_round": rounds,
            "proof": proof,
        }

    def all(self) -> list[dict[str, Any]]:
        chosen = select(self.options.scenarios, quick_mode=self.options.quick)
        results = []
        for i, scenario in enumerate(chosen, 1):
            started = time.monotonic()
            result = self.scenario(scenario, i, len(chosen))
            result["wall_s"] = time.monotonic() - started
            results.append(result)
            proofs = ", ".join(f"{n} {p['recorded']}/{p['sent']}" for n, p in result["proof"].items())
            self.progress.log(
                f"[{i}/{len(chosen)}] {scenario.name} done in {result['wall_s']:.0f} s"
                + (f"; recorded/sent: {proofs}" if proofs else "")
            )
        return results


def _row(scenario: Scenario, result: dict[str, Any]) -> dict[str, float]:
    elapsed = result["elapsed_s"] or 1e-9
    row: dict[str, float] = {
        "completed": result["completed"],
        "errors": result["errors"],
        "rate_per_s": result["completed"] / elapsed,
        "latency_p50_ms": result["latency_ms"]["p50"],
        "latency_p99_ms": result["latency_ms"]["p99"],
        "loadgen_cpu_pct": 100 * result["cpu_s"] / max(result["wall_s"], 1e-9),
    }
    if scenario.stream:
        row.update(
            {
                "chunks": result["events"],
                "chunks_per_s": result["events"] / elapsed,
                "mb_per_s": result["body_bytes"] / elapsed / 1e6,
                "body_mb": result["body_bytes"] / 1e6,
                "ttft_p50_ms": result["ttft_ms"]["p50"],
                "ttft_p99_ms": result["ttft_ms"]["p99"],
                "gap_p50_ms": result["gap_ms"]["p50"],
                "gap_p99_ms": result["gap_ms"]["p99"],
                "gap_mean_ms": result["gap_ms"]["mean"],
            }
        )
    return row


def _cpu_figures(cpu_s: float, result: dict[str, Any]) -> dict[str, float]:
    out = {"cpu_s": cpu_s}
    if result["completed"]:
        out["cpu_us_per_exchange"] = cpu_s / result["completed"] * 1e6
    if result["events"]:
        out["cpu_us_per_chunk"] = cpu_s / result["events"] * 1e6
    if result["body_bytes"] > 1e6:
        out["cpu_s_per_100mb"] = cpu_s / result["body_bytes"] * 1e8
    return out


def _memory_figures(
    memory: dict[str, float], samples: list[tuple[int, int]], after: dict[str, int], result: dict[str, Any]
) -> dict[str, float]:
    out = dict(memory)
    peak_sampled = max((rss for _, rss in samples), default=after["VmRSS"])
    out["rss_peak_kib"] = float(after["VmHWM"]) if memory.get("peak_reset") else float(peak_sampled)
    if "rss_ready_kib" in memory and memory.get("open_streams"):
        out["rss_per_stream_kib"] = (memory["rss_ready_kib"] - memory["rss_before_kib"]) / memory[
            "open_streams"
        ]
    total = result["body_bytes"]
    early = [rss for done, rss in samples if done >= 0.1 * total]
    if total > 1e6 and early:
        out["rss_at_10pct_kib"] = float(early[0])
        out["rss_growth_pct"] = 100 * (out["rss_peak_kib"] - early[0]) / early[0]
    return out


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.glob("*") if p.is_file()) if path.is_dir() else 0


def _json_line(child: Child, timeout_s: float) -> dict[str, Any]:
    value = json.loads(child.reader.line(timeout_s))
    if not isinstance(value, dict):
        raise BenchError(f"{child.name}: expected a JSON object, got {value!r}")
    return value


def _json_list(child: Child, timeout_s: float) -> list[int]:
    value = json.loads(child.reader.line(timeout_s))
    if not isinstance(value, list):
        raise BenchError(f"{child.name}: expected a JSON list, got {value!r}")
    return [int(v) for v in value]
