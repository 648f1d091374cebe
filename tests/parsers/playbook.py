"""Transcript-style parser tests (mitmproxy's Playbook, h11's ConnectionPair), synchronous.

``>>`` feeds input, ``<<`` states the event expected from the feed before it, and ``assert playbook``
replays the whole script and compares transcripts, so a failure shows where the two diverge.
Works with byte parsers (``feed(data)``) and direction-aware ones (``feed(direction, data)``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Protocol, cast

from parsers.events import Direction


class ByteParser(Protocol):
    def feed(self, data: bytes, /) -> Sequence[object]: ...
    def feed_eof(self) -> Sequence[object]: ...


class DirectedParser(Protocol):
    def feed(self, direction: Direction, data: bytes, /) -> Sequence[object]: ...
    def feed_eof(self, direction: Direction, /) -> Sequence[object]: ...


@dataclasses.dataclass(frozen=True)
class Feed:
    """Input for the parser. ``direction`` is ``None`` for a byte parser."""

    data: bytes
    direction: Direction | None = None

    def __repr__(self) -> str:
        where = "" if self.direction is None else f"{self.direction.name} "
        return f"{where}{self.data!r}"


@dataclasses.dataclass(frozen=True)
class Eof:
    direction: Direction | None = None

    def __repr__(self) -> str:
        return "EOF" if self.direction is None else f"{self.direction.name} EOF"


Step = Feed | Eof


def client(data: bytes) -> Feed:
    return Feed(data, Direction.FROM_CLIENT)


def upstream(data: bytes) -> Feed:
    return Feed(data, Direction.FROM_UPSTREAM)


def eof(direction: Direction | None = None) -> Eof:
    return Eof(direction)


Normalize = Callable[[list[object]], list[object]]


class Playbook:
    """A scripted conversation with one parser: ``Playbook(p) >> b"..." << Event(...)``."""

    def __init__(self, parser: ByteParser | DirectedParser, *, normalize: Normalize | None = None) -> None:
        self._parser = parser
        self._normalize = normalize or (lambda events: events)
        self._script: list[tuple[Step, list[object]]] = []

    def __rshift__(self, step: Step | bytes) -> Playbook:
        self._script.append((Feed(step) if isinstance(step, bytes) else step, []))
        return self

    def __lshift__(self, expected: object) -> Playbook:
        if not self._script:
            raise TypeError("Playbook: `<<` needs a `>>` before it")
        self._script[-1][1].append(expected)
        return self

    def __bool__(self) -> bool:
        want: list[str] = []
        got: list[str] = []
        for step, expected in self._script:
            want.append(f">> {step!r}")
            got.append(f">> {step!r}")
            want.extend(f"<< {event!r}" for event in expected)
            got.extend(f"<< {event!r}" for event in self._normalize(list(self._run(step))))
            if want != got:
                raise AssertionError("Playbook transcript differs:\n" + _side_by_side(want, got))
        return True

    def _run(self, step: Step) -> Sequence[object]:
        if step.direction is None:
            byte_parser = cast(ByteParser, self._parser)
            return byte_parser.feed(step.data) if isinstance(step, Feed) else byte_parser.feed_eof()
        directed = cast(DirectedParser, self._parser)
        if isinstance(step, Feed):
            return directed.feed(step.direction, step.data)
        return directed.feed_eof(step.direction)


def _side_by_side(want: list[str], got: list[str]) -> str:
    lines = []
    for i in range(max(len(want), len(got))):
        w = want[i] if i < len(want) else ""
        g = got[i] if i < len(got) else ""
        lines.append(f"{'  ' if w == g else '!!'} expected: {w}\n   actual:   {g}")
    return "\n".join(lines)


__all__ = ["Eof", "Feed", "Playbook", "client", "eof", "upstream"]
