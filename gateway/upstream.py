"""Connections to the upstream model server: HTTP/1.1 over TCP or TLS, kept alive in a small pool."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque

from parsers.events import Event
from parsers.http1 import Http1Connection, Role

READ_SIZE = 64 * 1024


class UpstreamUnavailable(Exception):
    """Could not connect to the upstream (refused, unreachable)."""


class UpstreamTlsError(UpstreamUnavailable):
    """Connected, but the TLS handshake failed (certificate not trusted, no common version or cipher)."""


class UpstreamConnection:
    """One TCP connection to the upstream and its HTTP/1.1 state."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_head_bytes: int
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.http = Http1Connection(Role.CLIENT, max_head_bytes=max_head_bytes, relay_bodies=True)
        self.idle_since = 0.0
        self.eof = False  # the upstream closed its side

    def send(self, event: Event) -> None:
        data = self.http.send(event)
        if data:
            self.writer.write(data)

    async def drain(self) -> None:
        if self.writer.transport.get_write_buffer_size() > READ_SIZE:
            await self.writer.drain()

    async def receive(self, timeout_s: float) -> list[Event]:
        """Read and parse what the upstream sends next. Raises TimeoutError after ``timeout_s`` of silence."""
        async with asyncio.timeout(timeout_s):
            data = await self.reader.read(READ_SIZE)
        if data:
            return self.http.feed(data)
        self.eof = True
        return self.http.feed_eof()

    async def read(self, timeout_s: float) -> bytes:
        """The next bytes of a relayed body; ``b""`` when the upstream closed.

        Raises TimeoutError after ``timeout_s`` of silence.
        """
        async with asyncio.timeout(timeout_s):
            return await self.read_body()

    async def read_body(self) -> bytes:
        """The next bytes of a relayed body as they arrive; ``b""`` when the upstream closed.

        No timeout of its own: the caller keeps one watchdog for all the reads of a body.
        """
        data = await self.reader.read(READ_SIZE)
        if not data:
            self.eof = True
        return data

    def write(self, data: bytes) -> None:
        """Raw bytes of a relayed request body, framed as the sent head announced."""
        self.writer.write(data)

    @property
    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def abort(self) -> None:
        self.writer.transport.abort()


class UpstreamPool:
    """Idle kept-alive connections to one upstream, reused most recent first."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout_s: float,
        max_idle: int,
        max_head_bytes: int,
        idle_ttl_s: float = 4.0,  # below common server keep-alive timeouts (uvicorn: 5 s)
        tls: ssl.SSLContext | None = None,  # https:// upstream: verify with this, SNI = host
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self._connect_timeout_s = connect_timeout_s
        self._max_idle = max_idle
        self._max_head_bytes = max_head_bytes
        self._idle_ttl_s = idle_ttl_s
        self._idle: deque[UpstreamConnection] = deque()
        self.connects = 0
        self.reuses = 0

    async def acquire(self) -> UpstreamConnection:
        """A fresh or idle connection.

        Raises:
            UpstreamTlsError: the TLS handshake failed.
            UpstreamUnavailable: connection refused or unreachable.
            TimeoutError: no connection (TLS handshake included) within ``connect_timeout_s``.
        """
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.usable and now - conn.idle_since < self._idle_ttl_s:
                self.reuses += 1
                return conn
            conn.abort()
        reader, writer = await open_upstream(self.host, self.port, self.tls, self._connect_timeout_s)
        self.connects += 1
        return UpstreamConnection(reader, writer, self._max_head_bytes)

    def release(self, conn: UpstreamConnection, *, reusable: bool) -> None:
        """Return a connection after an exchange; it is kept only if both sides may continue."""
        if reusable and conn.http.reusable and conn.usable and len(self._idle) < self._max_idle:
            conn.http.next_cycle()
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.abort()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().abort()


__all__ = ["UpstreamConnection", "UpstreamPool", "UpstreamTlsError", "UpstreamUnavailable"]


async def open_upstream(
    host: str, port: int, tls: ssl.SSLContext | None, timeout_s: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the upstream (TLS handshake included), with failures named for the client's 502.

    Raises:
        UpstreamTlsError: the TLS handshake failed.
        UpstreamUnavailable: connection refused or unreachable.
        TimeoutError: not connected within ``timeout_s``.
    """
    try:
        async with asyncio.timeout(timeout_s):
            return await asyncio.open_connection(
                host,
                port,
                limit=READ_SIZE,
                ssl=tls,
                server_hostname=host if tls else None,
                ssl_handshake_timeout=timeout_s if tls else None,
            )
    except ssl.SSLCertVerificationError as exc:  # before SSLError and OSError, its bases
        untrusted = exc.verify_message
        raise UpstreamTlsError(f"upstream {host}:{port} certificate not trusted: {untrusted}") from exc
    except ssl.SSLError as exc:
        reason = exc.reason or exc
        raise UpstreamTlsError(f"TLS handshake with upstream {host}:{port} failed: {reason}") from exc
    except OSError as exc:
        raise UpstreamUnavailable(f"cannot connect to upstream {host}:{port}: {exc}") from exc
