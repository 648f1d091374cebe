"""The issues' targets (6 and 9) beside the figures a run measured; a target whose scenario did not run
is left out. Pure arithmetic over the runner's medians: measures nothing, asserts nothing.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

GATEWAY = "wardgate"


class Target(NamedTuple):
    label: str
    scenario: str  # a scenario name, or the prefix of one (long-…, idle-… are sized by --quick)
    key: str
    limit: float
    unit: str
    over: Literal["", "floor", "direct"]  # compared as is, or as the excess over that column


TARGETS = (
    Target("CPU per non-streamed exchange, 32 conns", "chat-c32", "cpu_us_per_exchange", 200, "µs", ""),
    Target("CPU per SSE chunk, 16 streams", "sse-c16", "cpu_us_per_chunk", 15, "µs", ""),
    Target("CPU per SSE chunk, 256 streams", "sse-c256", "cpu_us_per_chunk", 15, "µs", ""),
    Target("CPU per paced token, 32 streams", "paced-c32", "cpu_us_per_chunk", 5, "µs", "floor"),
    Target("CPU per paced token, 256 streams", "paced-c256", "cpu_us_per_chunk", 5, "µs", "floor"),
    Target("  the same without the indexer", "paced-c32", "relay_cpu_us_per_chunk", 5, "µs", "floor"),
    Target("  the same without the indexer", "paced-c256", "relay_cpu_us_per_chunk", 5, "µs", "floor"),
    Target("added latency p50, 1 connection", "chat-c1", "latency_p50_ms", 0.25, "ms", "direct"),
    Target("added TTFT p50, 1 stream", "sse-c1", "ttft_p50_ms", 1.0, "ms", "direct"),
    Target("RSS per idle open stream", "idle", "rss_per_stream_kib", 50, "KiB", ""),
    Target("RSS growth over the long stream", "long", "rss_growth_pct", 10, "%", ""),
)


def _num(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _find(results: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((s for s in results if s["name"] == name or s["name"].startswith(name + "-")), None)


def check(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per target: the measured value, the reference it was taken over, the verdict."""
    out = []
    for t in TARGETS:
        scenario = _find(results, t.scenario)
        if scenario is None:
            continue
        med: dict[str, dict[str, float]] = scenario["median"]
        value = med.get(GATEWAY, {}).get(t.key)
        reference = med.get(t.over, {}).get(t.key) if t.over else None
        if value is None or (t.over and reference is None):
            continue
        shown = f"{_num(value)} {t.unit}"
        if reference is not None:
            shown += f" ({t.over} {_num(reference)})"
            value -= reference
        out.append(_entry(t.label, scenario["name"], value, t.limit, t.unit, shown, over=t.over))
    durability = _find(results, "durability-sse")
    if durability is not None:
        strict = durability["median"].get("strict", {}).get("rate_per_s")
        batched = durability["median"].get("batched", {}).get("rate_per_s")
        if strict and batched:
            shown = f"{strict:.0f} vs {batched:.0f} streams/s"
            value = 100 * (1 - strict / batched)
            out.append(_entry("strict below batched, streams/s", "durability-sse", value, 20, "%", shown))
    return out


def _entry(
    label: str, scenario: str, value: float, limit: float, unit: str, shown: str, *, over: str = ""
) -> dict[str, Any]:
    met = value <= limit
    verdict = "met" if met else f"missed by {_num(value - limit)} {unit} ({value / limit:.1f}x the target)"
    return {
        "target": label,
        "scenario": scenario,
        "value": value,
        "limit": limit,
        "unit": unit,
        "over": over,
        "measured": shown,
        "met": met,
        "verdict": verdict,
    }


def rows(checks: list[dict[str, Any]]) -> list[list[str]]:
    """Table rows: target, scenario, measured (with its reference), the target, the verdict."""
    return [
        [
            c["target"],
            c["scenario"],
            c["measured"],
            f"{c['over'] + ' + ' if c['over'] else ''}{c['limit']:g} {c['unit']}",
            c["verdict"],
        ]
        for c in checks
    ]
