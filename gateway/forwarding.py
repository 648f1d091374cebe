"""How heads change as they cross the gateway: pure functions, no I/O.

Requests lose hop-by-hop fields and gain proxy fields (RFC 9110 §7.6, RFC 7239); responses gain the
session and exchange ids; errors the gateway makes take OpenAI's error shape.
"""

from __future__ import annotations

from http import HTTPStatus

import msgspec

from parsers.events import Headers, RequestHead, ResponseHead
from parsers.http1 import end_to_end

SESSION_FIELD = b"X-Wardgate-Session"
EXCHANGE_FIELD = b"X-Wardgate-Exchange"


def first(headers: Headers, lower_name: bytes) -> bytes | None:
    """The first value of a field, by lowercased name."""
    for name, value in headers:
        if name.lower() == lower_name:
            return value
    return None


def _appended(headers: Headers, lower_name: bytes, value: bytes) -> bytes:
    existing = [v for n, v in headers if n.lower() == lower_name]
    return b", ".join([*existing, value])


def upstream_request_head(
    head: RequestHead, *, client_ip: str, authority: bytes, prefix: bytes, proto: bytes = b"http"
) -> RequestHead:
    """The request head as the upstream gets it. ``proto`` is the client's scheme: ``https`` over TLS."""
    headers: Headers = []
    original_host = b""
    for name, value in end_to_end(head.headers):
        lower = name.lower()
        if lower == b"host":
            original_host = value
        elif lower != b"expect":  # the gateway answers 100-continue itself
            headers.append((name, value))
    ip = client_ip.encode()
    headers.insert(0, (b"Host", authority))
    headers.append((b"X-Forwarded-For", _appended(head.headers, b"x-forwarded-for", ip)))
    if original_host:
        headers.append((b"X-Forwarded-Host", original_host))
    headers.append((b"X-Forwarded-Proto", proto))
    node = b'"[%s]"' % ip if b":" in ip else ip
    forwarded = b"for=%s;proto=%s" % (node, proto)
    if original_host:
        forwarded += b';host="%s"' % original_host.replace(b'"', b"")
    headers.append((b"Forwarded", _appended(head.headers, b"forwarded", forwarded)))
    if first(head.headers, b"transfer-encoding") is not None:
        headers.append((b"Transfer-Encoding", b"chunked"))
    return RequestHead(method=head.method, target=prefix + head.target, headers=headers)


def client_response_head(head: ResponseHead, *, session_id: str, exchange_id: str) -> ResponseHead:
    """The upstream's response head as the client gets it."""
    headers = [
        *end_to_end(head.headers),
        (SESSION_FIELD, session_id.encode()),
        (EXCHANGE_FIELD, exchange_id.encode()),
    ]
    return ResponseHead(status=head.status, reason=head.reason, headers=headers)


def error_response(
    status: int, kind: str, message: str, *, session_id: str, exchange_id: str
) -> tuple[ResponseHead, bytes]:
    """A response the gateway makes itself, in OpenAI's error shape, closing the connection."""
    body = msgspec.json.encode({"error": {"message": message, "type": "wardgate_error", "code": kind}})
    head = ResponseHead(
        status=status,
        reason=HTTPStatus(status).phrase.encode(),
        headers=[
            (b"Content-Type", b"application/json"),
            (b"Content-Length", str(len(body)).encode()),
            (b"Connection", b"close"),
            (SESSION_FIELD, session_id.encode()),
            (EXCHANGE_FIELD, exchange_id.encode()),
        ],
    )
    return head, body


__all__ = [
    "EXCHANGE_FIELD",
    "SESSION_FIELD",
    "client_response_head",
    "error_response",
    "first",
    "upstream_request_head",
]
