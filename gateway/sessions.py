"""Grouping exchanges into sessions: by the client's ``X-Wardgate-Session`` header, else by who is calling.

Without the header, exchanges from one identity (for anonymous clients, one IP address) form a session
until it has been idle for ``idle_timeout_s``.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import NamedTuple

from gateway.ids import new_id
from parsers.events import Identity

SESSION_HEADER = b"x-wardgate-session"  # lowercased, for lookups
# The client's own session names end up in terminals, file names and SQL parameters: keep them plain.
_VALID_SESSION = re.compile(rb"[A-Za-z0-9._:@-]{1,128}")


class BadSessionHeader(ValueError):
    """The client's X-Wardgate-Session value is not acceptable."""


class SessionRef(NamedTuple):
    session_id: str
    source: str  # "header" | "assigned"
    is_new: bool


class SessionTracker:
    """Maps each request to a session id. Bounded: the least recently used entries are forgotten first."""

    def __init__(self, *, idle_timeout_s: float, max_tracked: int) -> None:
        self._idle_ns = int(idle_timeout_s * 1e9)
        self._max = max_tracked
        self._assigned: OrderedDict[str, tuple[str, int]] = OrderedDict()  # key -> (session id, last seen)
        self._named: OrderedDict[str, None] = OrderedDict()

    def resolve(
        self, header_value: bytes | None, identity: Identity, client_ip: str, now_ns: int
    ) -> SessionRef:
        """Raises:
        BadSessionHeader: the header is present but malformed.
        """
        if header_value is not None:
            if not _VALID_SESSION.fullmatch(header_value):
                raise BadSessionHeader("X-Wardgate-Session must be 1-128 characters of A-Z a-z 0-9 . _ : @ -")
            session_id = header_value.decode("ascii")
            is_new = session_id not in self._named
            self._named[session_id] = None
            self._named.move_to_end(session_id)
            if len(self._named) > self._max:
                self._named.popitem(last=False)
            return SessionRef(session_id, "header", is_new)
        key = identity.subject if identity.method != "none" else f"ip:{client_ip}"
        entry = self._assigned.get(key)
        if entry is not None and now_ns - entry[1] <= self._idle_ns:
            self._assigned[key] = (entry[0], now_ns)
            self._assigned.move_to_end(key)
            return SessionRef(entry[0], "assigned", False)
        session_id = new_id("s_")
        self._assigned[key] = (session_id, now_ns)
        self._assigned.move_to_end(key)
        if len(self._assigned) > self._max:
            self._assigned.popitem(last=False)
        return SessionRef(session_id, "assigned", True)


__all__ = ["SESSION_HEADER", "BadSessionHeader", "SessionRef", "SessionTracker"]
