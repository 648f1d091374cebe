"""The mock LLM's connection: an asyncio Protocol that feeds `RequestReader` and plays replies.

Why a raw Protocol and loop timers instead of streams and a task per response: the mock must cost far
less CPU than the gateway it benchmarks. A complete reply is one `transport.write` straight from
`data_received`; a streamed reply is a script advanced by `call_later`, so pacing 256+ streams needs
neither tasks nor sleeping coroutines. Requests on one connection are answered strictly in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Final, assert_never, cast

from gateway.mock_llm._app import MockApp
from gateway.mock_llm._http import (
    CONTINUE,
    ContinueExpected,
    HttpError,
    Request,
    RequestReader,
    response_head,
)
from gateway.mock_llm._requests import ApiError
from gateway.mock_llm._script import Abort, Close, Delay, Item
from gateway.mock_llm._wire import error_body

logger = logging.getLogger("gateway.mock_llm")

# Stop reading from a client that pipelines this much while a streamed reply is still playing.
_PIPELINE_LIMIT_BYTES: Final = 1024 * 1024


class Connection(asyncio.Protocol):
    """One client connection; registers itself in `live` so the server can close it on shutdown."""

    def __init__(self, app: MockApp, live: set[Connection]) -> None:
        self._app = app
        self._live = live
        self._reader = RequestReader()
        self._transport: asyncio.Transport | None = None
        self._script: Iterator[Item] | None = None
        self._keep_alive = True
        self._timer: asyncio.TimerHandle | None = None
        self._write_paused = False
        self._waiting_drain = False
        self._reading_paused = False
        self._eof = False
        self._closing = False

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # create_server only makes stream transports
        self._live.add(self)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._reader.feed(data)
        if self._script is None:
            self._serve()
        elif self._reader.buffered > _PIPELINE_LIMIT_BYTES and not self._reading_paused:
            self._reading_paused = True
            self._transport_or_raise().pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        # Keep the write side open to finish the reply in flight (and any pipelined behind it).
        return self._script is not None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._script = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._live.discard(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._waiting_drain:
            self._waiting_drain = False
            self._continue()

    # -- serving -------------------------------------------------------------------------------

    def abort(self) -> None:
        """Drop the connection now (server shutdown)."""
        if self._transport is not None:
            self._transport.abort()

    def _serve(self) -> None:
        """Answer the complete requests in the buffer, in order, until one needs a script to wait."""
        transport = self._transport_or_raise()
        while self._script is None and not self._closing:
            try:
                event = self._reader.next_event()
            except HttpError as exc:
                self._reject(exc)
                return
            if event is None:
                break
            if isinstance(event, ContinueExpected):
                transport.write(CONTINUE)
                continue
            reply = self._handle(event)
            if isinstance(reply, bytes):
                transport.write(reply)
                if not event.keep_alive:
                    self._close()
                continue
            self._script, self._keep_alive = reply, event.keep_alive
            if not self._play():
                return
        if self._closing:
            return
        if self._eof:
            self._close()
        elif self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()

    def _handle(self, request: Request) -> bytes | Iterator[Item]:
        try:
            return self._app.handle(request)
        except Exception:  # one broad catch per request: a mock bug answers 500, the listener lives on
            logger.exception("mock-llm: handler failed for %r %r", request.method, request.path)
            error = ApiError(500, "The server had an error while processing your request.", "server_error")
            return self._app.error_reply(request, error)

    def _continue(self) -> None:
        """Timer or drain callback: resume the script, then serve what is queued behind it."""
        self._timer = None
        if self._script is not None and self._play():
            self._serve()

    def _play(self) -> bool:
        """Advance the script; True when it ran to its end, False when it waits or the connection ended."""
        transport = self._transport_or_raise()
        script = self._script
        if script is None:
            return False
        try:
            for item in script:
                if transport.is_closing():  # the client went away; drop the rest of the reply
                    self._script = None
                    return False
                match item:
                    case bytes():
                        transport.write(item)
                        if self._write_paused:
                            self._waiting_drain = True
                            return False
                    case Delay(seconds):
                        self._timer = asyncio.get_running_loop().call_later(seconds, self._continue)
                        return False
                    case Abort():
                        self._script = None
                        self._closing = True
                        transport.abort()
                        return False
                    case Close():
                        self._script = None
                        self._close()
                        return False
                    case _:
                        assert_never(item)
        except Exception:  # one broad catch per script step: log it and drop only this connection
            logger.exception("mock-llm: reply script failed")
            self._script = None
            self._closing = True
            transport.abort()
            return False
        self._script = None
        if not self._keep_alive:
            self._close()
        return True

    def _reject(self, exc: HttpError) -> None:
        body = error_body(exc.message)
        head = response_head(
            exc.status,
            [
                (b"content-type", b"application/json; charset=utf-8"),
                (b"content-length", b"%d" % len(body)),
                (b"connection", b"close"),
            ],
        )
        self._transport_or_raise().write(head + body)
        self._close()

    def _close(self) -> None:
        self._closing = True
        self._transport_or_raise().close()

    def _transport_or_raise(self) -> asyncio.Transport:
        if self._transport is None:  # pragma: no cover - asyncio calls connection_made first
            raise RuntimeError("mock-llm connection used before connection_made")
        return self._transport
