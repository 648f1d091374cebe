"""Prometheus text exposition of the gateway's counters, without a client library.

Only formatting and a histogram live here; the numbers belong to the components that count them.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping

# Seconds; spans fast page-cache writes up to a slow disk's fsync.
LATENCY_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Histogram:
    """Cumulative-bucket histogram in Prometheus's sense."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS_S) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: str = "") -> Iterable[str]:
        running = 0
        sep = "," if labels else ""
        for bound, count in zip((*self.buckets, math.inf), self.counts, strict=True):
            running += count
            le = "+Inf" if bound == math.inf else repr(bound)
            yield f'{name}_bucket{{{labels}{sep}le="{le}"}} {running}'
        braces = f"{{{labels}}}" if labels else ""
        yield f"{name}_sum{braces} {self.sum}"
        yield f"{name}_count{braces} {self.count}"


class Exposition:
    """Builds one scrape's text: ``HELP``/``TYPE`` once per metric, then its samples."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def metric(self, name: str, kind: str, help_text: str, value: float | None = None) -> None:
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")
        if value is not None:
            self._lines.append(f"{name} {_number(value)}")

    def labelled(self, name: str, label: str, values: Mapping[str, float]) -> None:
        for key, value in sorted(values.items()):
            self._lines.append(f'{name}{{{label}="{_escape(key)}"}} {_number(value)}')

    def histogram(self, name: str, help_text: str, histogram: Histogram) -> None:
        self.metric(name, "histogram", help_text)
        self._lines.extend(histogram.lines(name))

    def merged(self, texts: Iterable[str], *, minimum: frozenset[str] = frozenset()) -> None:
        """Add the metrics of several scrapes (of worker processes) as one: equal samples are summed, or
        for the families in ``minimum`` (health gauges) the smallest value is kept."""
        families: dict[str, tuple[list[str], dict[str, float]]] = {}
        for text in texts:
            family = ""
            for line in text.splitlines():
                if line.startswith("# "):
                    words = line.split(" ", 3)
                    if len(words) >= 3 and words[1] in ("HELP", "TYPE"):
                        family = words[2]
                        head = families.setdefault(family, ([], {}))[0]
                        if line not in head:
                            head.append(line)
                    continue
                key, _, value = line.rpartition(" ")
                if not key:
                    continue
                samples = families.setdefault(family, ([], {}))[1]
                number = float(value)
                if key not in samples:
                    samples[key] = number
                elif family in minimum:
                    samples[key] = min(samples[key], number)
                else:
                    samples[key] += number
        for head, samples in families.values():
            self._lines += head
            self._lines += [f"{key} {_number(value)}" for key, value in samples.items()]

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


__all__ = ["LATENCY_BUCKETS_S", "Exposition", "Histogram"]
