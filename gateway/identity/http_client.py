"""A tiny HTTP/1.1 client for the identity layer (discovery, JWKS, the dev IdP): one request per connection.

Built on ``parsers.http1`` and asyncio streams; bounded in time and size. Not a general client: no
redirects, no proxies, no keep-alive.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from parsers.events import BodyChunk, ConnectionClosed, MessageEnd, ParseFailed, RequestHead, ResponseHead
from parsers.http1 import Http1Connection, Role


class FetchError(Exception):
    """The request failed: unreachable, too slow, too large, not HTTP, or not 200 (for ``http_get``)."""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes


async def request(
    method: str,
    url: str,
    *,
    body: bytes = b"",
    content_type: bytes = b"application/json",
    timeout_s: float = 5.0,
    max_body_bytes: int = 1024 * 1024,
    ssl_context: ssl.SSLContext | None = None,
) -> Response:
    """One request and its complete response.

    Raises:
        FetchError: anything that kept a complete response from arriving.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"not an http(s) URL: {url}")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.netloc.rsplit("@", 1)[-1].encode()
    http = Http1Connection(Role.CLIENT)
    headers = [(b"Host", host_header), (b"Accept", b"application/json"), (b"Connection", b"close")]
    if method != "GET":
        headers += [(b"Content-Type", content_type), (b"Content-Length", str(len(body)).encode())]
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(
                parts.hostname, port, ssl=(ssl_context or ssl.create_default_context()) if tls else None
            )
            try:
                head = RequestHead(method=method.encode(), target=target.encode(), headers=headers)
                writer.write(http.send(head) + http.send(BodyChunk(data=body)) + http.send(MessageEnd()))
                await writer.drain()
                return await _read_response(reader, http, max_body_bytes, url)
            finally:
                writer.transport.abort()
    except TimeoutError:
        raise FetchError(f"{url}: no response within {timeout_s}s") from None
    except (OSError, ssl.SSLError) as exc:
        raise FetchError(f"{url}: {exc.__class__.__name__}: {exc}") from None


async def _read_response(
    reader: asyncio.StreamReader, http: Http1Connection, max_body_bytes: int, url: str
) -> Response:
    status = 0
    body = bytearray()
    while True:
        data = await reader.read(64 * 1024)
        for event in http.feed(data) if data else http.feed_eof():
            match event:
                case ResponseHead() if event.status >= 200:
                    status = event.status
                case BodyChunk():
                    body += event.data
                    if len(body) > max_body_bytes:
                        raise FetchError(f"{url}: response larger than {max_body_bytes} bytes")
                case MessageEnd() if status:
                    return Response(status, bytes(body))
                case ParseFailed() | ConnectionClosed():
                    raise FetchError(f"{url}: incomplete or malformed response")
                case _:
                    pass
        if not data:
            raise FetchError(f"{url}: connection closed before the response ended")


async def http_get(url: str) -> bytes:
    """The body of a 200 answer to ``GET url`` (the default ``Fetcher`` of the JWKS cache).

    Raises:
        FetchError: no 200 answer.
    """
    response = await request("GET", url)
    if response.status != 200:
        raise FetchError(f"{url}: HTTP {response.status}")
    return response.body


__all__ = ["FetchError", "Response", "http_get", "request"]
