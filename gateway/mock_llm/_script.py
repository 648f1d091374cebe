"""Reply scripts: what a connection writes, waits for and when it hangs up, as plain data.

A script is an iterator of items the connection plays with loop timers. `paced()` turns a renderer's
SSE events and `PACE` marks into a script, applying the token delay, the HTTP framing and the test
hooks (`mock:slow-first-token`, `mock:fail-midstream`). Nothing here touches a socket or a clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, NamedTuple

from gateway.mock_llm._http import LAST_CHUNK, chunk
from gateway.mock_llm._wire import Pace

SLOW_FIRST_TOKEN_S: Final = 2.0
FAIL_AFTER_TOKENS: Final = 3


class Delay(NamedTuple):
    seconds: float


class Abort:
    """Drop the connection at once: no more bytes, no terminating chunk."""


class Close:
    """Close the connection after the bytes written so far are flushed."""


ABORT: Final = Abort()
CLOSE: Final = Close()
Item = bytes | Delay | Abort | Close
Reply = bytes | Iterator[Item]


class Hooks(NamedTuple):
    slow: bool = False
    fail: bool = False


NO_HOOKS: Final = Hooks()


def hooks_in(body: bytes) -> Hooks:
    # A raw byte search: the markers contain nothing JSON would escape, and it costs nothing when absent.
    if b"mock:" not in body:
        return NO_HOOKS
    return Hooks(slow=b"mock:slow-first-token" in body, fail=b"mock:fail-midstream" in body)


def json_script(data: bytes, body_len: int, hooks: Hooks) -> Iterator[Item]:
    """A complete response (head and body in `data`) played with the hooks the request asked for."""
    if hooks.slow:
        yield Delay(SLOW_FIRST_TOKEN_S)
    if hooks.fail:
        # A non-streamed body cut in half is the closest analogue of a stream dying midway.
        yield data[: len(data) - body_len // 2]
        yield ABORT
    else:
        yield data


def paced(
    head: bytes,
    events: Iterator[bytes | Pace],
    chunked: bool,
    keep_alive: bool,
    delay: Delay | None,
    hooks: Hooks,
) -> Iterator[Item]:
    """A streamed response: the head, then each SSE event as its own write, `delay` per token."""
    if hooks.slow:
        yield Delay(SLOW_FIRST_TOKEN_S)
    yield head
    tokens = 0
    pending = b""
    for event in events:
        if isinstance(event, Pace):
            if pending:
                yield pending
                pending = b""
            if hooks.fail and tokens == FAIL_AFTER_TOKENS:
                yield ABORT
                return
            tokens += 1
            if delay:
                yield delay
        else:
            # Hold each event back until the next is known, so that the last one and the
            # terminating chunk leave in one write.
            if pending:
                yield pending
            pending = chunk(event) if chunked else event
    if chunked:
        yield pending + LAST_CHUNK
    else:
        yield pending
    if not keep_alive:
        yield CLOSE
