"""Identifiers for connections, sessions and exchanges: sortable by time, unique without coordination."""

from __future__ import annotations

import os
import random
import time

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
# Ids must be unique, not secret: one seed from the OS per process, then a fast generator. (os.urandom
# per id releases the GIL on every request, which cost the event loop dearly next to SQLite's thread.)
_random = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(32)))  # forked workers must not repeat


def new_id(prefix: str) -> str:
    """``prefix`` + 26 characters: 48 bits of milliseconds then 80 random bits (ULID layout), base32."""
    value = (time.time_ns() // 1_000_000) << 80 | _random.getrandbits(80)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return prefix + "".join(reversed(chars))


__all__ = ["new_id"]
