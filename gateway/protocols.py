"""Which protocol parsers this gateway can put on a listener: the built-ins plus installed plugins."""

from __future__ import annotations

from importlib.metadata import entry_points

from parsers.registry import BUILTIN

ENTRY_POINT_GROUP = "wardgate.parsers"
# The connection handler in gateway.proxy speaks HTTP; a parser for another protocol (pgwire, MCP)
# needs its own handler before a listener can carry it.
PROXIED = frozenset({"http1"})


class DuplicateParser(ValueError):
    """A plugin reuses a built-in's or another plugin's protocol name."""


def available_parsers() -> dict[str, type[object]]:
    """BUILTIN merged with the ``wardgate.parsers`` entry points, read once at startup.

    Raises:
        DuplicateParser: two parsers claim one name.
    """
    parsers = dict(BUILTIN)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in parsers:
            raise DuplicateParser(f"parser plugin {entry.value!r} reuses the protocol name {entry.name!r}")
        parsers[entry.name] = entry.load()
    return parsers


def protocol_problem(name: str, parsers: dict[str, type[object]]) -> str:
    """Why a listener cannot carry ``name`` today, or "" when it can."""
    if name not in parsers:
        return f"unknown protocol {name!r} (known: {', '.join(sorted(parsers))})"
    if name not in PROXIED:
        return f"protocol {name!r} has a parser but no connection handler yet"
    return ""


__all__ = ["ENTRY_POINT_GROUP", "DuplicateParser", "available_parsers", "protocol_problem"]
