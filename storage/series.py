"""Segment series: one per gateway worker process, each with its own hash chain, checkpoints and tails.

Series 0 is the data directory itself (``<data>/segments``: the layout of a single-process gateway, so
every older data dir reads as series 0). Worker k > 0 writes ``<data>/workers/<k>/segments`` (and its
``checkpoints/`` and ``recovered/`` beside them). The supervisor of several workers records only who used
the console (``ConsoleAccess``), in its own series ``SUPERVISOR_SERIES`` under ``<data>/supervisor``: a
number no worker can have, so its chain never meets a worker's. Paths and directory listings only.
"""

from __future__ import annotations

from pathlib import Path

WORKERS_DIR = "workers"
SUPERVISOR_DIR = "supervisor"
SUPERVISOR_SERIES = -1


def series_root(data_dir: Path, series: int) -> Path:
    """The directory whose ``segments/`` holds series ``series`` (what ``SegmentLog.open`` is given)."""
    if series == SUPERVISOR_SERIES:
        return data_dir / SUPERVISOR_DIR
    if series < 0:
        raise ValueError(f"series number must be >= 0, got {series}")
    return data_dir if series == 0 else data_dir / WORKERS_DIR / str(series)


def list_series(data_dir: Path) -> list[int]:
    """Every series of ``data_dir``: series 0 always (it may be empty), the workers' ascending, then the
    supervisor's if it exists."""
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
    if (data_dir / SUPERVISOR_DIR / "segments").is_dir():
        found.append(SUPERVISOR_SERIES)
    return found


__all__ = ["SUPERVISOR_DIR", "SUPERVISOR_SERIES", "WORKERS_DIR", "list_series", "series_root"]
