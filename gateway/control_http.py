"""One request per connection, answered and closed: the small control endpoints (admin, dev IdP).

Not the data plane: no keep-alive, bounded head and body, one timeout for the whole exchange.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from http import HTTPStatus
from ipaddress import ip_address

from parsers.events import BodyChunk, MessageEnd, RequestHead
from parsers.http1 import Http1Connection, Role, render_response

MAX_HEAD_BYTES = 16 * 1024

# (request head, or None if the bytes were not a request; body; whether the peer is on loopback)
# -> (status, content type, body)
Answer = Callable[[RequestHead | None, bytes, bool], tuple[int, bytes, bytes]]


async def read_request(
    reader: asyncio.StreamReader, *, max_body_bytes: int
) -> tuple[RequestHead | None, bytes]:
    """The request head and body, or (None, b"") for anything that is not one small, whole request."""
    http = Http1Connection(Role.SERVER, max_head_bytes=MAX_HEAD_BYTES)
    head: RequestHead | None = None
    body = bytearray()
    while True:
        data = await reader.read(MAX_HEAD_BYTES)
        for event in http.feed(data) if data else http.feed_eof():
            match event:
                case RequestHead():
                    head = event
                case BodyChunk():
                    body += event.data
                    if len(body) > max_body_bytes:
                        return None, b""
                case MessageEnd() if head is not None:
                    return head, bytes(body)
                case _:
                    return None, b""
        if not data:
            return None, b""


def peer_is_loopback(writer: asyncio.StreamWriter) -> bool:
    peer = writer.get_extra_info("peername")
    try:
        address = ip_address(peer[0]) if isinstance(peer, tuple) else None
    except ValueError:
        return False
    if address is not None and address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 on a dual-stack socket
    return address is not None and address.is_loopback


async def serve_one(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    answer: Answer,
    *,
    logger: logging.Logger,
    timeout_s: float = 10.0,
    max_body_bytes: int = 64 * 1024,
) -> None:
    """Read one request, answer it, close. Never raises: a control endpoint outlives any bug."""
    try:
        async with asyncio.timeout(timeout_s):
            head, body = await read_request(reader, max_body_bytes=max_body_bytes)
            status, content_type, payload = answer(head, body, peer_is_loopback(writer))
            headers = [
                (b"Content-Type", content_type),
                (b"Content-Length", str(len(payload)).encode()),
                (b"Cache-Control", b"no-store"),
                (b"Connection", b"close"),
            ]
            writer.write(render_response(status, HTTPStatus(status).phrase.encode(), headers, payload))
            await writer.drain()
    except (TimeoutError, ConnectionError):
        pass  # a peer that went away or stalled: nothing to answer
    except Exception:  # the one catch per connection
        logger.exception("control request failed")
    finally:
        writer.transport.abort()


__all__ = ["Answer", "peer_is_loopback", "read_request", "serve_one"]
