"""Which protocol a new client connection speaks: ALPN first, then a sniff of its first bytes for the
HTTP/2 connection preface (h2c with prior knowledge), as hypercorn's ProtocolWrapper does.

The sniff reads no further than the bytes stop matching the preface (one read for any HTTP/1.1 request)
and hands every byte it read to the chosen handler. It serves nothing itself.
"""

from __future__ import annotations

import asyncio

from gateway.h2_connection import H2ClientConnection
from gateway.proxy import ClientConnection, ProxyContext
from gateway.tls import ALPN_H2, ALPN_HTTP1
from parsers.http2 import PREFACE

READ_SIZE = 64 * 1024

AnyConnection = ClientConnection | H2ClientConnection


async def accept(
    ctx: ProxyContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> AnyConnection | None:
    """The handler for a new connection, or None when it closed or stayed silent before choosing."""
    ssl_object = writer.get_extra_info("ssl_object")
    alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
    if alpn == ALPN_H2:
        return H2ClientConnection(ctx, reader, writer)
    if alpn == ALPN_HTTP1:
        return ClientConnection(ctx, reader, writer)
    data = b""
    try:
        async with asyncio.timeout(ctx.limits.header_timeout_s):
            while len(data) < len(PREFACE) and PREFACE.startswith(data):
                chunk = await reader.read(READ_SIZE)
                if not chunk:
                    break
                data += chunk
    except TimeoutError:
        if not data:
            return None  # silent since it connected: nothing to answer
    except ConnectionError:
        return None
    if not data or ctx.closing:
        return None
    if data.startswith(PREFACE):
        return H2ClientConnection(ctx, reader, writer, initial=data)
    return ClientConnection(ctx, reader, writer, initial=data)


__all__ = ["AnyConnection", "accept"]
