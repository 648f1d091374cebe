"""Which message bodies the relay may carry as raw bytes, and how h11 frames the bodies it sends.

Pure rules over message heads. A body is relayed raw only when its framing is unambiguous: HTTP/1.1,
exactly one framing header, a body that is there. Everything else (HEAD, 204/304, 1xx, HTTP/1.0,
close-delimited bodies, two framing headers) stays with h11. No I/O, no h11 import.
"""

from __future__ import annotations

from parsers.body_framing import Chunked, ContentLength, Framing, UntilClose
from parsers.events import Headers, RequestHead, ResponseHead

# RFC 9110 §6.4.1: these responses never carry content, whatever their headers say.
_BODYLESS_STATUS = frozenset({204, 304})
_MAX_LENGTH_DIGITS = 20  # h11's bound on a Content-Length value


def _framing_fields(headers: Headers) -> tuple[list[bytes], list[bytes]]:
    lengths: list[bytes] = []
    codings: list[bytes] = []
    for name, value in headers:
        lower = name.lower()
        if lower == b"content-length":
            lengths.append(value)
        elif lower == b"transfer-encoding":
            codings.append(value)
    return lengths, codings


def _declared(headers: Headers) -> Framing | None:
    """The one framing the headers declare, or None when they declare none, two, or something odd."""
    lengths, codings = _framing_fields(headers)
    if codings:
        if lengths or len(codings) > 1 or codings[0].lower() != b"chunked":
            return None
        return Chunked()
    if len(lengths) == 1 and lengths[0].isdigit() and len(lengths[0]) <= _MAX_LENGTH_DIGITS:
        length = int(lengths[0])
        return ContentLength(length) if length else None
    return None


def ambiguous_framing(headers: Headers) -> bool:
    """Framing headers the relay does not take on (two of them, or an odd value): h11 must decide."""
    lengths, codings = _framing_fields(headers)
    if not lengths and not codings:
        return False
    if not codings and lengths == [b"0"]:
        return False
    return _declared(headers) is None


def relayable_request_body(head: RequestHead) -> Framing | None:
    """The framing of a received request body the relay may take over, or None (h11 keeps it)."""
    if head.http_version != b"1.1":
        return None
    return _declared(head.headers)


def relayable_response_body(head: ResponseHead, request_method: bytes) -> Framing | None:
    """The framing of a received response body the relay may take over, or None (h11 keeps it)."""
    if head.http_version != b"1.1" or head.status < 200 or head.status in _BODYLESS_STATUS:
        return None
    if request_method in (b"HEAD", b"CONNECT"):
        return None
    return _declared(head.headers)


def sent_request_framing(head: RequestHead) -> Framing:
    """How h11 frames the body of a request it sends with these headers (RFC 9112 §6.3)."""
    lengths, codings = _framing_fields(head.headers)
    if codings:
        return Chunked()
    if lengths and lengths[0].isdigit():
        return ContentLength(int(lengths[0]))
    return ContentLength(0)


def sent_response_framing(head: ResponseHead, request_method: bytes, peer_version: bytes) -> Framing:
    """How h11 frames the body of a response it sends with these headers to this peer.

    As h11 does: no body after HEAD or for 204/304; Content-Length when given (and no
    Transfer-Encoding); otherwise chunked for an HTTP/1.1 peer, and until close for an older one.
    """
    if head.status in _BODYLESS_STATUS or request_method == b"HEAD":
        return ContentLength(0)
    if request_method == b"CONNECT" and 200 <= head.status < 300:
        return ContentLength(0)
    lengths, codings = _framing_fields(head.headers)
    if not codings and lengths and lengths[0].isdigit():
        return ContentLength(int(lengths[0]))
    return Chunked() if peer_version >= b"1.1" else UntilClose()


def persistent(headers: Headers, http_version: bytes) -> bool:
    """RFC 9112 §9.3, as h11 reads it: HTTP/1.1 without ``Connection: close`` keeps the connection."""
    if http_version < b"1.1":
        return False
    for name, value in headers:
        if name.lower() == b"connection" and any(t.strip().lower() == b"close" for t in value.split(b",")):
            return False
    return True


__all__ = [
    "ambiguous_framing",
    "persistent",
    "relayable_request_body",
    "relayable_response_body",
    "sent_request_framing",
    "sent_response_framing",
]
