"""Segment series: one per gateway worker process, each with its own hash chain, checkpoints and tails.

Series 0 is the data directory itself (``<data>/segments``: the layout of a single-process gateway, so
every older data dir reads as series 0). Worker k > 0 writes ``<data>/workers/<k>/segments`` (and its
``checkpoints/`` and ``recovered/`` beside them). Paths and directory listings only; no file contents.
"""

from __future__ import annotations

from pathlib import Path

WORKERS_DIR = "workers"


def series_root(data_dir: Path, series: int) -> Path:
    """The directory whose ``segments/`` holds series ``series`` (what ``SegmentLog.open`` is given)."""
    if series < 0:
        raise ValueError(f"series number must be >= 0, got {series}")
    return data_dir if series == 0 else data_dir / WORKERS_DIR / str(series)


def list_series(data_dir: Path) -> list[int]:
    """Every series of ``data_dir``, ascending; series 0 always (it may be empty)."""
    found = [0]
    directory = data_dir / WORKERS_DIR
    if directory.is_dir():
        found += sorted(
            int(p.name)
            for p in directory.iterdir()
            if p.name.isdigit()
            and p.name == str(int(p.name))
            and int(p.name) > 0
            and (p / "segments").is_dir()
        )
    return found


__all__ = ["WORKERS_DIR", "list_series", "series_root"]
