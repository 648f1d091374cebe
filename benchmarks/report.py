"""Turns a run's results into the readable table, the target check and the JSON document.

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
    Metric("loadgen_cpu_pct", "generator CPU", _pct, ""),
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
    Metric("cpu_us_per_exchange", "CPU µs/stream", _us, "floor"),
    Metric("loadgen_cpu_pct", "generator CPU", _pct, ""),
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
]
HOLD_METRICS = [
    Metric("open_streams", "streams open at once", _n, ""),
    Metric("ramp_s", "ramp-up s", _f2, ""),
    Metric("rss_before_kib", "RSS before MiB", _mib, ""),
    Metric("rss_ready_kib", "RSS all open MiB", _mib, ""),
    Metric("rss_per_stream_kib", "RSS KiB/stream", _kib, "floor"),
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
        return f"floor {value - ref:+.1f}" if ref is not None else ""
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
    durability = "strict" in columns
    subject, base, floor = ("strict", "batched", "off") if durability else (GATEWAY, "direct", "floor")
    if "direct" not in columns and not durability:
        base = ""
    compare_label = "strict vs batched" if durability else "wardgate vs direct/floor"
    rows = []
    for metric in metrics_for(scenario):
        values = [med.get(c, {}).get(metric.key) for c in columns]
        if all(v is None for v in values):
            continue
        cells = ["—" if v is None else metric.fmt(v) for v in values]
        rows.append([metric.label, *cells, _compare(metric, med, subject, base, floor)])
    title = f"{scenario['name']}: {scenario['title']}  (median of {scenario['rounds']} rounds)"
    return title + "\n" + render_table(["", *columns, compare_label], rows)


# --- the targets ------------------------------------------------------------------------


def _value(scenarios: dict[str, dict[str, Any]], name: str, column: str, key: str) -> float | None:
    value: float | None = scenarios.get(name, {}).get("median", {}).get(column, {}).get(key)
    return value


def check_targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issues' targets next to the measured figures; a target whose scenario did not run is left out."""
    by_name = {s["name"]: s for s in results}

    def get(name: str, column: str, key: str) -> float | None:
        return _value(by_name, name, column, key)

    def diff(name: str, key: str, a: str, b: str) -> float | None:
        x, y = get(name, a, key), get(name, b, key)
        return None if x is None or y is None else x - y

    long_name = next((s["name"] for s in results if s["name"].startswith("long")), "long")
    idle_name = next((s["name"] for s in results if s["name"].startswith("idle")), "idle")
    strict_rate, batched_rate = (
        get("durability-sse", "strict", "rate_per_s"),
        get("durability-sse", "batched", "rate_per_s"),
    )
    checks: list[tuple[str, str, float | None, float, str]] = [
        (
            "CPU per non-streamed exchange, c=32",
            "chat-c32",
            get("chat-c32", GATEWAY, "cpu_us_per_exchange"),
            200,
            "µs",
        ),
        ("CPU per SSE chunk, 16 streams", "sse-c16", get("sse-c16", GATEWAY, "cpu_us_per_chunk"), 15, "µs"),
        (
            "CPU per SSE chunk, 256 streams",
            "sse-c256",
            get("sse-c256", GATEWAY, "cpu_us_per_chunk"),
            15,
            "µs",
        ),
        (
            "CPU per paced token over the floor, 32 streams",
            "paced-c32",
            diff("paced-c32", "cpu_us_per_chunk", GATEWAY, "floor"),
            5,
            "µs",
        ),
        (
            "CPU per paced token over the floor, 256 streams",
            "paced-c256",
            diff("paced-c256", "cpu_us_per_chunk", GATEWAY, "floor"),
            5,
            "µs",
        ),
        (
            "added latency p50, c=1",
            "chat-c1",
            diff("chat-c1", "latency_p50_ms", GATEWAY, "direct"),
            0.25,
            "ms",
        ),
        (
            "added TTFT p50, 16 streams",
            "sse-c16",
            diff("sse-c16", "ttft_p50_ms", GATEWAY, "direct"),
            1.0,
            "ms",
        ),
        ("RSS per idle open stream", idle_name, get(idle_name, GATEWAY, "rss_per_stream_kib"), 50, "KiB"),
        ("RSS growth over the long stream", long_name, get(long_name, GATEWAY, "rss_growth_pct"), 10, "%"),
        (
            "strict streams/s below batched",
            "durability-sse",
            None if not strict_rate or not batched_rate else 100 * (1 - strict_rate / batched_rate),
            20,
            "%",
        ),
    ]
    out = []
    for label, scenario, value, limit, unit in checks:
        if value is None:
            continue
        met = value <= limit
        note = "met" if met else f"missed by {value - limit:.3g} {unit}"
        out.append(
            {
                "target": label,
                "scenario": scenario,
                "value": value,
                "limit": limit,
                "unit": unit,
                "met": met,
                "note": note,
            }
        )
    return out


def targets_table(checks: list[dict[str, Any]]) -> str:
    rows = [
        [
            c["target"],
            c["scenario"],
            f"{c['value']:.3g} {c['unit']}",
            f"≤ {c['limit']:g} {c['unit']}",
            c["note"],
        ]
        for c in checks
    ]
    return render_table(["target (wardgate, full recording)", "scenario", "measured", "target", ""], rows)


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
            "HTTP/1.1, keep-alive",
            f"pinning: {meta['pinning']}",
            "CPU: the target process's CPU clock (all threads) per round until it is idle again; "
            "floor = byte relay in the same run; medians over rounds",
        ]
    )


def text_report(document: dict[str, Any]) -> str:
    parts = [header_text(document["meta"]), ""]
    for scenario in document["scenarios"]:
        parts += [scenario_table(scenario), ""]
    if document["targets"]:
        parts += ["Targets (issues 6 and 9)", targets_table(document["targets"]), ""]
    if any(s["proof"] for s in document["scenarios"]):
        parts += ["Recording proof (exchangeended frames with outcome complete, read back from the log)"]
        parts += [proof_table(document["scenarios"]), ""]
    for failure in document["failures"]:
        parts.append(f"FAILED: {failure}")
    parts.append(f"total {document['wall_s']:.0f} s")
    return "\n".join(parts)
