"""Turns a run's results into the readable tables: header, one per scenario, targets, recording proof.

Pure formatting and arithmetic over the runner's dicts, plus reading what describes the machine
(versions, cores, CPU model, commit). Measures nothing.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple

from benchmarks import targets

Compare = Literal["ratio", "added", "floor", ""]
GATEWAY = "wardgate"
_ROOT = Path(__file__).resolve().parents[1]


class Metric(NamedTuple):
    key: str
    label: str
    fmt: Callable[[float], str]
    compare: Compare  # ratio: x/direct; added: x - direct; floor: x - floor


def _n(v: float) -> str:
    return f"{v:,.0f}"


def _ms(v: float) -> str:
    return f"{v:.3f}"


def _us(v: float) -> str:
    return f"{v:.1f}"


def _pct(v: float) -> str:
    return f"{v:.0f}%"


def _mib(v: float) -> str:
    return f"{v / 1024:.1f}"


def _kib(v: float) -> str:
    return f"{v:.1f}"


def _f2(v: float) -> str:
    return f"{v:.2f}"


EXCHANGE_METRICS = [
    Metric("rate_per_s", "requests/s", _n, "ratio"),
    Metric("latency_p50_ms", "latency p50 ms", _ms, "added"),
    Metric("latency_p99_ms", "latency p99 ms", _ms, "added"),
    Metric("cpu_us_per_exchange", "CPU µs/exchange", _us, "floor"),
    Metric("relay_cpu_us_per_exchange", "  without indexer", _us, "floor"),
    Metric("steady_cpu_us_per_exchange", "  once connected", _us, "floor"),
    Metric("setup_cpu_us_per_connection", "CPU µs/connection opened", _us, "floor"),
    Metric("loadgen_cpu_pct", "generator CPU", _pct, ""),
    Metric("other_cpu_pct", "other processes CPU", _pct, ""),
]
STREAM_METRICS = [
    Metric("rate_per_s", "streams/s", _n, "ratio"),
    Metric("chunks_per_s", "chunks/s", _n, "ratio"),
    Metric("ttft_p50_ms", "TTFT p50 ms", _ms, "added"),
    Metric("ttft_p99_ms", "TTFT p99 ms", _ms, "added"),
    Metric("gap_mean_ms", "inter-chunk mean ms", _ms, "added"),
    Metric("gap_p99_ms", "inter-chunk p99 ms", _ms, "added"),
    Metric("latency_p50_ms", "stream p50 ms", _ms, "added"),
    Metric("cpu_us_per_chunk", "CPU µs/chunk", _us, "floor"),
    Metric("relay_cpu_us_per_chunk", "  without indexer", _us, "floor"),
    Metric("steady_cpu_us_per_chunk", "  once connected", _us, "floor"),
    Metric("cpu_us_per_exchange", "CPU µs/stream", _us, "floor"),
    Metric("setup_cpu_us_per_connection", "CPU µs/connection opened", _us, "floor"),
    Metric("loadgen_cpu_pct", "generator CPU", _pct, ""),
    Metric("other_cpu_pct", "other processes CPU", _pct, ""),
]
LONG_METRICS = [
    Metric("mb_per_s", "MB/s", _n, "ratio"),
    Metric("body_mb", "body MB", _n, ""),
    Metric("chunks", "chunks", _n, ""),
    Metric("cpu_s_per_100mb", "CPU s/100 MB", _f2, "floor"),
    Metric("cpu_us_per_chunk", "CPU µs/chunk", _us, "floor"),
    Metric("rss_before_kib", "RSS before MiB", _mib, ""),
    Metric("rss_at_10pct_kib", "RSS at 10% MiB", _mib, ""),
    Metric("rss_peak_kib", "peak RSS MiB", _mib, ""),
    Metric("rss_growth_pct", "RSS growth 10%→peak", _pct, ""),
    Metric("loadgen_cpu_pct", "generator CPU", _pct, ""),
    Metric("other_cpu_pct", "other processes CPU", _pct, ""),
]
HOLD_METRICS = [
    Metric("open_streams", "streams open at once", _n, ""),
    Metric("ramp_s", "ramp-up s", _f2, ""),
    Metric("rss_before_kib", "RSS before MiB", _mib, ""),
    Metric("rss_ready_kib", "RSS all open MiB", _mib, ""),
    Metric("rss_per_stream_kib", "RSS KiB/stream", _kib, "floor"),
    Metric("other_cpu_pct", "other processes CPU", _pct, ""),
]


def metrics_for(scenario: dict[str, Any]) -> list[Metric]:
    if scenario["name"].startswith("idle"):
        return HOLD_METRICS
    if scenario["name"].startswith("long"):
        return LONG_METRICS
    return STREAM_METRICS if scenario["unit"] == "chunk" else EXCHANGE_METRICS


def _compare(metric: Metric, med: dict[str, dict[str, float]], subject: str, base: str, floor: str) -> str:
    value = med.get(subject, {}).get(metric.key)
    if value is None:
        return ""
    if metric.compare == "ratio":
        ref = med.get(base, {}).get(metric.key)
        return f"{value / ref:.2f}x" if ref else ""
    if metric.compare == "added":
        ref = med.get(base, {}).get(metric.key)
        return f"{value - ref:+.3f} ms" if ref is not None else ""
    if metric.compare == "floor":
        ref = med.get(floor, {}).get(metric.key)
        if ref is None:
            return ""
        unit = " µs" if "µs" in metric.label or "cpu_us" in metric.key else ""
        return f"{floor} {value - ref:+.1f}{unit}".replace(" +", " + ").replace(" -", " - ")
    return ""


def render_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for n, row in enumerate([header, *rows]):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  " + "  ".join(cells).rstrip())
        if n == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def scenario_table(scenario: dict[str, Any]) -> str:
    med: dict[str, dict[str, float]] = scenario["median"]
    columns: list[str] = scenario["columns"]
    # Each comparison column: subject against a base for rates and latencies and a floor for CPU and
    # memory (wardgate against direct and the relay floor; strict against batched; TLS on against off).
    compare: list[list[str]] = scenario.get("compare") or [
        ["strict", "batched", "batched", "strict vs batched"]
        if "strict" in columns
        else [GATEWAY, "direct", "floor", "wardgate vs direct/floor"]
    ]
    rows = []
    for metric in metrics_for(scenario):
        values = [med.get(c, {}).get(metric.key) for c in columns]
        if all(v is None for v in values):
            continue
        cells = ["—" if v is None else metric.fmt(v) for v in values]
        rows.append(
            [
                metric.label,
                *cells,
                *(_compare(metric, med, subject, base, floor) for subject, base, floor, _ in compare),
            ]
        )
    title = f"{scenario['name']}: {scenario['title']}  (median of {scenario['rounds']} rounds)"
    if scenario.get("note"):
        title += f"\n  note: {scenario['note']}"
    return title + "\n" + render_table(["", *columns, *(label for *_, label in compare)], rows)


def proof_table(results: list[dict[str, Any]]) -> str:
    rows = []
    for s in results:
        for name, p in s["proof"].items():
            verdict = "ok" if p["ok"] else "MISMATCH"
            rows.append(
                [
                    s["name"],
                    name,
                    f"{p['recorded']:,}",
                    f"{p['sent']:,}",
                    f"{p['other']:,}",
                    ", ".join(f"{k} {v:,}" for k, v in p.get("expect", {}).items()) or "—",
                    f"{p['frames']:,}",
                    f"{p['log_bytes'] / 1e6:,.1f}",
                    verdict,
                ]
            )
    header = [
        "scenario",
        "gateway",
        "recorded complete",
        "generator completed",
        "other outcomes",
        "shown as claimed",
        "frames",
        "log MB",
        "",
    ]
    return render_table(header, rows)


# --- the machine ----------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return 0.0


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty else "")


def machine() -> dict[str, Any]:
    versions = {}
    for package in ("wardgate", "uvloop", "h11", "msgspec", "aiosqlite"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "memory_gib": round(_mem_total_gib(), 1),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": versions,
        "commit": _commit(),
    }


def header_text(meta: dict[str, Any]) -> str:
    m = meta["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    c = meta["config"]
    return "\n".join(
        [
            f"wardgate bench ({'quick' if c['quick'] else 'full'})  seed {c['seed']}  commit {m['commit']}",
            f"machine: {m['usable_cores']} of {m['cores']} cores, {m['cpu_model']}, {m['memory_gib']} GiB, "
            f"{m['kernel']}, Python {m['python']}",
            f"versions: {versions}",
            f"config: wardgate durability {c['durability']}, max_connections {c['max_connections']}, "
            f"other limits default; mock: fast, paced {c['paced_ms']:g} ms/token, idle {c['idle_ms']:g} ms; "
            "HTTP/1.1, keep-alive, plain TCP, no auth unless the scenario says so (tls-…, h2-…, auth-…)",
            f"pinning: {meta['pinning']}",
            "CPU: the target process's CPU clock (all threads, and its children such as the index follower) "
            "per round until it is idle again; "
            "floor = byte relay in the same run; medians over rounds",
        ]
    )


def text_report(document: dict[str, Any]) -> str:
    parts = [header_text(document["meta"]), ""]
    for scenario in document["scenarios"]:
        parts += [scenario_table(scenario), ""]
    if document["targets"]:
        mode = document["meta"]["config"]["durability"]
        header = [f"target (wardgate {mode}, full recording)", "scenario", "measured", "target", ""]
        parts += ["Targets (issues 6 and 9)", render_table(header, targets.rows(document["targets"])), ""]
    if any(s["proof"] for s in document["scenarios"]):
        parts += [
            "Recording proof (exchangeended frames with outcome complete, read back from the log; shown as "
            "claimed: exchangestarted frames recorded with TLS, over h2, with the caller's identity method)"
        ]
        parts += [proof_table(document["scenarios"]), ""]
    for failure in document["failures"]:
        parts.append(f"FAILED: {failure}")
    parts.append(f"total {document['wall_s']:.0f} s")
    return "\n".join(parts)
