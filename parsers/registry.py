"""The built-in protocol parsers, by the name a listener's ``protocol`` setting uses.

An explicit table, like h11's READERS: importing a module never registers anything. Third-party
parsers come from the ``wardgate.parsers`` entry-point group, merged in by the gateway at startup.
"""

from __future__ import annotations

from parsers.http1 import Http1Connection
from parsers.http2 import Http2Connection

BUILTIN: dict[str, type[object]] = {
    "http1": Http1Connection,
    "h2": Http2Connection,
}

__all__ = ["BUILTIN"]
