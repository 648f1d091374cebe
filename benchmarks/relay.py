"""The floor: a byte pass-through TCP relay on uvloop that parses nothing and records nothing.

Runs as its own process (``python -m benchmarks.relay UPSTREAM...``) so its CPU is measured the way the
gateway's is. Every read from one side is one write to the other: the cost of waking up, reading and
writing, which any proxy pays. It must stay that minimal; it is what wardgate's figures are compared to.
With ``--tls-cert/--tls-key/--upstream-ca`` it terminates TLS on both sides, as the gateway does: the floor
for TLS-on scenarios then includes decrypting and re-encrypting every byte.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import ssl
import sys

import uvloop

from benchmarks.certs import client_context, server_context
from benchmarks.loadjob import raise_nofile_limit

BACKLOG = 4096


class _Side(asyncio.Protocol):
    """One end of a relayed connection; ``peer`` is the other end, once it exists."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.pending: list[bytes] = []  # client bytes that arrived before the upstream connected
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.pending.append(data)

    def eof_received(self) -> bool:
        peer = self.peer
        if peer is not None and peer.transport is not None and peer.transport.can_write_eof():
            peer.transport.write_eof()
        self.eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.close()

    # A slow reader on one side stops reads on the other: no unbounded buffering.
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class Relay:
    """Listens on 127.0.0.1:0 and relays every accepted connection to one upstream."""

    def __init__(self, upstream_host: str, upstream_port: int, tls: ssl.SSLContext | None = None) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.tls = tls  # a client context: TLS to the upstream
        self._connecting: set[asyncio.Task[None]] = set()  # the one owner of the connect tasks

    def accept(self) -> _Side:
        client = _Side()
        task = asyncio.get_running_loop().create_task(self._connect(client), name="relay-connect")
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)
        return client

    async def _connect(self, client: _Side) -> None:
        loop = asyncio.get_running_loop()
        upstream = _Side()
        try:
            await loop.create_connection(
                lambda: upstream,
                *self.upstream,
                ssl=self.tls,
                server_hostname=self.upstream[0] if self.tls else None,
            )
        except OSError:
            if client.transport is not None:
                client.transport.abort()
            return
        client.peer, upstream.peer = upstream, client
        if upstream.transport is None or client.transport is None:
            return
        if client.transport.is_closing():
            upstream.transport.close()
            return
        for data in client.pending:
            upstream.transport.write(data)
        client.pending.clear()
        if client.eof and upstream.transport.can_write_eof():
            upstream.transport.write_eof()


def parse_address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


async def serve(
    upstreams: list[tuple[str, int]],
    base_port: int = 0,
    *,
    tls: ssl.SSLContext | None = None,
    upstream_tls: ssl.SSLContext | None = None,
) -> None:
    """Print the listening ports as one JSON list (in the order of ``upstreams``), relay until SIGTERM.

    With ``base_port`` the i-th upstream is relayed from ``base_port + i`` (to stand in for ``--against``).
    ``tls`` (a server context) and ``upstream_tls`` (a client context) turn TLS on for either side.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    servers = []
    for i, (host, port) in enumerate(upstreams):
        relay = Relay(host, port, upstream_tls)
        listen_port = base_port + i if base_port else 0
        servers.append(
            await loop.create_server(relay.accept, "127.0.0.1", listen_port, backlog=BACKLOG, ssl=tls)
        )
    print(json.dumps([s.sockets[0].getsockname()[1] for s in servers]), flush=True)
    await stop.wait()
    for server in servers:
        server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.relay", description=__doc__)
    parser.add_argument("upstream", nargs="+", type=parse_address, help="HOST:PORT to relay to")
    parser.add_argument("--base-port", type=int, default=0, help="listen on PORT, PORT+1, ... (default: any)")
    parser.add_argument("--tls-cert", help="PEM certificate chain: accept clients over TLS")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument("--upstream-ca", help="PEM CA bundle: connect to the upstreams over TLS, verifying")
    args = parser.parse_args(argv)
    raise_nofile_limit()
    tls = server_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    upstream_tls = client_context(args.upstream_ca) if args.upstream_ca else None
    uvloop.run(serve(args.upstream, args.base_port, tls=tls, upstream_tls=upstream_tls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
