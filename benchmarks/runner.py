"""Runs the scenarios: interleaves the targets round by round, reads their CPU and memory, checks the proof.

Measures; does not format (report.py does) and does not own processes (fleet.py does). Each target's
CPU time is read around each measured round, after the target has gone quiet again, so deferred work
(log writes, fsync, indexing) counts against the work that caused it.
"""

from __future__ import annotations

import base64
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from benchmarks.fleet import Fleet, Target
from benchmarks.procs import CpuPlan, machine_busy_s, plan_cpus, reset_peak_rss, wait_quiet
from benchmarks.scenarios import IDLE_MS, QUICK_IDLE_MS, Scenario, chat_request, prompt, select


@dataclass
class Options:
    quick: bool = False
    scenarios: list[str] | None = None
    durability: str = "batched"  # strict | batched | off (off: the gateway column is the byte relay)
    seed: int = 1
    against: str | None = None  # http[s]://HOST:PORT of another proxy: PORT -> fast, +1 paced, +2 idle
    against_pids: list[int] = field(default_factory=list)
    against_ca: str | None = None  # the CA an https:// --against proxy's certificate is verified with
    mock_port: int = 0  # fixed mock ports (fast, +1 paced, +2 idle), for --against
    workers: int = 1  # ``serve --workers`` of the gateway under test


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


def _median_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = [k for k in rows[0] if all(k in r for r in rows)] if rows else []
    return {k: statistics.median(r[k] for r in rows) for k in keys}


class Run:
    """One ``wardgate bench`` run: ``with Run(options, progress) as run: results = run.all()``."""

    def __init__(self, options: Options, progress: Progress, cpus: CpuPlan | None = None) -> None:
        self.options = options
        self.progress = progress
        self.rng = random.Random(options.seed)
        self.prompt = prompt(options.seed)
        self.cpus: CpuPlan = cpus or plan_cpus()
        self.idle_ms = QUICK_IDLE_MS if options.quick else IDLE_MS
        self.fleet = Fleet(self.cpus, idle_ms=self.idle_ms, mock_port=options.mock_port)
        self.against: Target | None = None
        self.failures: list[str] = []

    def __enter__(self) -> Run:
        self.fleet.__enter__()
        try:
            if self.options.against:
                self.against = self.fleet.against(
                    self.options.against, self.options.against_pids, self.options.against_ca
                )
        except BaseException:
            self.fleet.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.fleet.close()

    @property
    def mock_ports(self) -> dict[str, int]:
        return self.fleet.mock_ports

    @property
    def workdir(self) -> str:
        return str(self.fleet.workdir)

    def _start_targets(self, scenario: Scenario) -> list[Target]:
        fleet = self.fleet
        mode = self.options.durability if self.options.durability != "off" else "batched"
        if scenario.h2_connections:
            # No direct column: the mock speaks HTTP/1.1 only (see H2_NOTE).
            return [
                fleet.gateway("wardgate-h1", mode, wait=False),
                fleet.gateway("wardgate-h2", mode, http="h2", wait=False),
            ]
        if scenario.auth:
            return [
                fleet.direct(),
                fleet.gateway("wardgate", mode, wait=False),
                fleet.gateway("apikey", mode, auth="apikey", wait=False),
                fleet.gateway("oidc", mode, auth="oidc", wait=False),
            ]
        if scenario.tls:
            targets = [
                fleet.direct(tls=True),
                fleet.relay("floor-tls", tls=True, wait=False),
                fleet.gateway("wardgate-tls", mode, tls=True, wait=False),
                fleet.gateway("wardgate", mode, wait=False),
            ]
            if self.against is not None and self.against.tls and scenario.upstream in self.against.ports:
                targets.append(self.against)
            return targets
        if scenario.durability:
            off = fleet.relay("off", wait=False)  # no recording-off mode yet: the byte relay stands in
            return [
                fleet.direct(),
                off,
                fleet.gateway("batched", "batched", wait=False),
                fleet.gateway("strict", "strict", wait=False),
            ]
        floor = fleet.relay("floor", wait=False)
        if self.options.durability == "off":
            gateway = fleet.relay("wardgate", wait=False)
        else:
            gateway = fleet.gateway(
                "wardgate", self.options.durability, workers=self.options.workers, wait=False
            )
        targets = [floor, gateway]
        if scenario.kind != "hold":
            targets.insert(0, fleet.direct())  # idle streams measure the processes' memory: direct has none
        against = self.against
        if against is not None and not against.tls and scenario.upstream in against.ports:
            targets.append(against)
        return targets

    # --- measuring -------------------------------------------------------------------------------

    def _request(self, target: Target, scenario: Scenario, tokens: int) -> str:
        port = target.ports[scenario.upstream]
        raw = chat_request(
            f"{target.host}:{port}",
            stream=scenario.stream,
            max_tokens=tokens,
            prompt_text=self.prompt,
            bearer=target.bearer,
        )
        return base64.b64encode(raw).decode()

    def _dial(self, target: Target, scenario: Scenario) -> dict[str, Any]:
        """Where and how the generator connects: host, port, TLS (trusting the target's CA)."""
        cmd: dict[str, Any] = {"host": target.host, "port": target.ports[scenario.upstream]}
        if target.tls:
            cmd["tls"] = {"ca": target.ca}
        if target.http == "h2":
            cmd["http"] = "h2"
            cmd["connections"] = scenario.h2_connections or 1
        return cmd

    def _calibrate_long(self, scenario: Scenario) -> int:
        """Tokens for ``body_bytes`` of stream: the mock's token size, measured directly."""
        direct = self.fleet.direct()
        probe = 2000
        cmd = self._run_cmd(direct, scenario, probe, concurrency=1, duration_s=None, requests=1)
        result = self.fleet.loadgen.request(cmd, timeout_s=60)
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
            **self._dial(target, scenario),
            "request": self._request(target, scenario, tokens),
            "concurrency": concurrency,
            "duration_s": duration_s,
            "max_requests": requests,
        }

    def warmup(self, target: Target, scenario: Scenario) -> None:
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
        result = self.fleet.loadgen.request(cmd, timeout_s=120)
        target.sent += result["completed"]
        if result["errors"]:
            self.failures.append(f"{scenario.name} warm-up via {target.name}: {result['error_samples']}")
        if target.child is not None:
            wait_quiet(target.child)  # its deferred work (indexing) must not count against the first round

    def measure(self, target: Target, scenario: Scenario, tokens: int, label: str) -> dict[str, float]:
        child = target.child
        memory: dict[str, float] = {}
        samples: list[tuple[int, int]] = []
        connected: dict[str, float] = {}
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
            elif "connected" in message:
                # Every connection is up: the CPU so far is connection setup (TLS handshakes).
                if child is not None:
                    connected["cpu_s"], _ = wait_quiet(child)
                    connected["indexer_s"] = child.indexer_cpu_s()
                connected["connections"] = message["connected"]["connections"]
                self.fleet.loadgen.send({"op": "go"})

        if scenario.kind == "hold":
            cmd: dict[str, Any] = {
                "op": "hold",
                **self._dial(target, scenario),
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
            cmd["connect_first"] = scenario.tls
        timeout_s = 900.0 if scenario.body_bytes else 120.0 + (scenario.duration_s or 0)
        cpu0 = target.cpu_s()
        indexer0 = child.indexer_cpu_s() if child is not None else 0.0
        machine0, own0, wall0 = machine_busy_s(), self._own_cpu_s(target), time.monotonic()
        result = self.fleet.loadgen.request(cmd, timeout_s=timeout_s, on_message=on_message)
        cpu1: float | None = None
        if child is not None:
            cpu1, settled = wait_quiet(child)
            if not settled:
                self.failures.append(f"{label}: {child.name} was still busy long after the load ended")
        elif target.pids:
            time.sleep(0.2)
            cpu1 = target.cpu_s()
        # Other processes on the machine (a test suite, a build) disturb every figure: say how much.
        foreign_s = machine_busy_s() - machine0 - (self._own_cpu_s(target) - own0)
        target.sent += result["completed"]
        if result["errors"]:
            self.failures.append(f"{label}: {result['errors']} errors, e.g. {result['error_samples']}")
        row = _row(scenario, result)
        row["other_cpu_pct"] = max(0.0, 100 * foreign_s / (time.monotonic() - wall0))
        if cpu0 is not None and cpu1 is not None:
            row.update(_cpu_figures(cpu1 - cpu0, result, scenario))
            if child is not None:
                # The same figures without the index follower: what the relay itself costs.
                indexer_s = max(0.0, child.indexer_cpu_s() - indexer0)
                relay = _cpu_figures(cpu1 - cpu0 - indexer_s, result, scenario)
                row.update({f"relay_{k}": v for k, v in relay.items() if k.startswith("cpu_us")})
            if "cpu_s" in connected:
                # Without the index follower: it may still be indexing the warm-up, and opens no connection.
                setup_s = connected["cpu_s"] - cpu0 - max(0.0, connected.get("indexer_s", 0.0) - indexer0)
                row["setup_cpu_us_per_connection"] = setup_s / max(1.0, connected["connections"]) * 1e6
                steady = _cpu_figures(cpu1 - connected["cpu_s"], result, scenario)
                row.update({f"steady_{k}": v for k, v in steady.items() if k.startswith("cpu_us")})
        if child is not None:
            row.update(_memory_figures(memory, samples, child.memory_kib(), result, scenario))
        return row

    def _own_cpu_s(self, target: Target) -> float:
        external = target.cpu_s() if target.pids else 0.0
        return self.fleet.own_cpu_s() + (external or 0.0)

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
                self.fleet.ready(targets)  # they started side by side
                for target in targets:
                    self.progress.status(f"[{index}/{total}] {scenario.name}  warm-up {target.name}")
                    self.warmup(target, scenario)
                for r in group:
                    order = list(targets)
                    self.rng.shuffle(order)
                    for target in order:
                        where = f"round {r + 1}/{scenario.rounds}  {target.name}"
                        label = f"[{index}/{total}] {scenario.name}  {where}"
                        self.progress.status(label)
                        rounds[r][target.name] = self.measure(target, scenario, tokens, label)
            finally:
                self.fleet.stop(targets, proof, self.failures)
        for name, entry in proof.items():
            shown = all(n == entry["recorded"] for n in entry["expect"].values())
            entry["ok"] = entry["sent"] == entry["recorded"] and entry["other"] == 0 and shown
            if entry["sent"] != entry["recorded"] or entry["other"]:
                self.failures.append(
                    f"{scenario.name}: {name} recorded {entry['recorded']} complete exchanges "
                    f"(+{entry['other']} other) but the generator completed {entry['sent']}"
                )
            if not shown:
                self.failures.append(
                    f"{scenario.name}: of {entry['recorded']} exchanges {name} recorded, these many show "
                    f"what the scenario is about: {entry['expect']}"
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
            "compare": comparisons(scenario),
            "note": scenario.note,
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


def comparisons(scenario: Scenario) -> list[list[str]]:
    """The table's comparison columns: [subject, base for rates and latencies, base for CPU and memory,
    label]."""
    if scenario.durability:
        return [["strict", "batched", "batched", "strict vs batched"]]
    if scenario.h2_connections:
        return [["wardgate-h2", "wardgate-h1", "wardgate-h1", "h2 vs h1 (gateway)"]]
    if scenario.auth:
        return [
            ["apikey", "wardgate", "wardgate", "API key vs no auth"],
            ["oidc", "wardgate", "wardgate", "OIDC vs no auth"],
        ]
    if scenario.tls:
        return [
            ["wardgate-tls", "direct-tls", "floor-tls", "wardgate-tls vs direct-tls/floor-tls"],
            ["wardgate-tls", "wardgate", "wardgate", "gateway TLS on vs off"],
        ]
    return [["wardgate", "direct", "floor", "wardgate vs direct/floor"]]


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


def _cpu_figures(cpu_s: float, result: dict[str, Any], scenario: Scenario) -> dict[str, float]:
    out = {"cpu_s": cpu_s}
    if result["completed"]:
        out["cpu_us_per_exchange"] = cpu_s / result["completed"] * 1e6
    if result["events"]:
        out["cpu_us_per_chunk"] = cpu_s / result["events"] * 1e6
    if scenario.body_bytes and result["body_bytes"]:
        out["cpu_s_per_100mb"] = cpu_s / result["body_bytes"] * 1e8
    return out


def _memory_figures(
    memory: dict[str, float],
    samples: list[tuple[int, int]],
    after: dict[str, int],
    result: dict[str, Any],
    scenario: Scenario,
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
    if scenario.body_bytes and early:
        out["rss_at_10pct_kib"] = float(early[0])
        out["rss_growth_pct"] = 100 * (out["rss_peak_kib"] - early[0]) / early[0]
    return out
