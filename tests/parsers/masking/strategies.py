"""Hypothesis strategies: text woven from secrets, near misses and noise, and ways to split it."""

from __future__ import annotations

import itertools
from typing import TypeVar

from hypothesis import strategies as st

from tests.parsers.masking.fixtures import NEAR_MISSES, TRUE_POSITIVES

_PIECES = [text for _, text, _ in TRUE_POSITIVES] + NEAR_MISSES + [" ", "\n", ".", "@", "-", "é", "\\", '"']

texts = st.lists(
    st.one_of(st.sampled_from(_PIECES), st.text(alphabet='aA0 .@:/-_=+\n"\\é', max_size=12)), max_size=12
).map("".join)


def cuts(length: int) -> st.SearchStrategy[list[int]]:
    """Sorted cut points splitting a sequence of ``length`` into pieces (some possibly empty)."""
    return st.lists(st.integers(0, length), max_size=12).map(sorted)


T = TypeVar("T", str, bytes)


def split(value: T, points: list[int]) -> list[T]:
    bounds = [0, *points, len(value)]
    return [value[a:b] for a, b in itertools.pairwise(bounds)]
