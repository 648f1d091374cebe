"""How heads change between an HTTP/2 client and an HTTP/1.1 upstream: pure functions, no I/O.

RFC 9113 §8.2-8.3 against RFC 9112: pseudo-headers become the request line and ``Host``, cookie crumbs
are joined again, connection-specific fields never cross into HTTP/2. The proxy rules both protocols
share (forwarding fields, session ids) stay in ``gateway.forwarding``.
"""

from __future__ import annotations

from parsers.events import Headers, RequestHead, ResponseHead
from parsers.http1 import end_to_end
from parsers.http2 import pseudo_header


def h1_request_head(head: RequestHead, *, has_body: bool) -> RequestHead:
    """An HTTP/2 request head as the HTTP/1.1 request it stands for (before proxy rewriting).

    ``:authority`` becomes ``Host`` unless the client sent one (RFC 9113 §8.3.1); ``te: trailers`` is
    hop-by-hop in HTTP/1.1 and dropped; a body of unknown length goes chunked.
    """
    headers: Headers = []
    cookies: list[bytes] = []
    has_host = has_length = False
    for name, value in head.headers:
        if name.startswith(b":"):
            continue
        lower = name.lower()
        if lower == b"cookie":
            cookies.append(value)  # RFC 9113 §8.2.3: crumbs are joined with "; " for HTTP/1.1
            continue
        has_host = has_host or lower == b"host"
        has_length = has_length or lower == b"content-length"
        headers.append((name, value))
    authority = pseudo_header(head.headers, b":authority")
    if authority and not has_host:
        headers.insert(0, (b"host", authority))
    if cookies:
        headers.append((b"cookie", b"; ".join(cookies)))
    if has_body and not has_length:
        headers.append((b"transfer-encoding", b"chunked"))
    return RequestHead(method=head.method, target=head.target, headers=headers)


def h2_response_head(head: ResponseHead, stream_id: int) -> ResponseHead:
    """An HTTP/1.1 response head as an HTTP/2 stream carries it: lowercase names, no connection-specific
    fields (RFC 9113 §8.2.2), no reason phrase."""
    headers = [(name.lower(), value) for name, value in end_to_end(head.headers)]
    return ResponseHead(stream_id=stream_id, status=head.status, headers=headers, http_version=b"2")


__all__ = ["h1_request_head", "h2_response_head"]
