"""A whole request body masked before it is forwarded (the upstream scope). Pure: bytes in, bytes out.

The body is decoded first if gzip/deflate, masked JSON-aware (only inside string values, so JSON stays
JSON) or as text, and the head's fields are made to match: a new ``Content-Length``, no
``Content-Encoding`` for a body that was decoded. A body with nothing to mask is left as it arrived, byte
for byte, head included. A coding that cannot be decoded is refused, never forwarded unmasked.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import NamedTuple

from parsers.events import Headers
from parsers.masking.bodies import BodyMasker, Hit, JsonMasker, TextMasker, mask_body
from parsers.masking.engine import Rules

_WBITS = {b"gzip": 31, b"x-gzip": 31, b"deflate": 15}  # zlib wbits per content coding (RFC 9110 §8.4.1)
_FRAMING = (b"content-length", b"transfer-encoding")
# A JSON string (escapes skipped) or one structural character: enough to know where each string sits.
_JSON_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},:]', re.DOTALL)


class UnmaskableBody(ValueError):
    """The body cannot be masked, so it must not be forwarded: answer ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class MaskedBody(NamedTuple):
    data: bytes
    headers: Headers  # the head's fields for ``data`` (the same list when nothing changed)
    hits: list[tuple[Hit, str]]  # each replacement, with its JSON field ("messages[1].content") or ""


def mask_request_body(
    headers: Headers, body: bytes, rules: Rules, *, max_hold_chars: int, max_body_bytes: int, chunked: bool
) -> MaskedBody:
    """``body`` masked whole; ``chunked``: keep chunked framing (the request has trailers to forward).

    Raises:
        UnmaskableBody: a content coding other than gzip/deflate (415), a body that is not what its
            coding says (400), a decoded body over ``max_body_bytes`` (413).
    """
    content_type = b""
    codings: list[bytes] = []
    for name, value in headers:
        lower = name.lower()
        if lower == b"content-type":
            content_type = value
        elif lower == b"content-encoding":
            codings += [
                c.strip().lower() for c in value.split(b",") if c.strip().lower() not in (b"", b"identity")
            ]
    plain = _decoded(body, codings, max_body_bytes)
    masker = _masker(rules, content_type, plain, max_hold_chars)
    data = mask_body(masker, plain)
    hits = masker.take_hits()
    if not hits:
        return MaskedBody(body, headers, [])
    fields = json_fields(plain, [hit.position for hit in hits]) if isinstance(masker, JsonMasker) else {}
    out = [
        (name, value)
        for name, value in headers
        if name.lower() not in _FRAMING and not (codings and name.lower() == b"content-encoding")
    ]
    out.append((b"Transfer-Encoding", b"chunked") if chunked else (b"Content-Length", b"%d" % len(data)))
    return MaskedBody(data, out, [(hit, fields.get(hit.position, "")) for hit in hits])


def _decoded(body: bytes, codings: list[bytes], max_body_bytes: int) -> bytes:
    if not codings:
        return body
    if len(codings) > 1 or codings[0] not in _WBITS:
        name = b", ".join(codings).decode("latin-1")
        raise UnmaskableBody(415, f"a request body in content-encoding {name!r} cannot be masked")
    inflate = zlib.decompressobj(_WBITS[codings[0]])
    try:
        plain = inflate.decompress(body, max_body_bytes + 1)
        if len(plain) <= max_body_bytes and not inflate.unconsumed_tail:
            plain += inflate.flush()
    except zlib.error:
        raise UnmaskableBody(400, f"the request body is not valid {codings[0].decode()}") from None
    if len(plain) > max_body_bytes or inflate.unconsumed_tail:
        raise UnmaskableBody(413, f"the decoded request body exceeds {max_body_bytes} bytes")
    return plain


def _masker(rules: Rules, content_type: bytes, body: bytes, max_hold_chars: int) -> BodyMasker:
    kind = content_type.split(b";", 1)[0].strip().lower()
    looks_json = not kind and body.lstrip()[:1] in (b"{", b"[")
    if kind.endswith(b"json") or looks_json:
        return JsonMasker(rules, max_hold_chars=max_hold_chars)
    return TextMasker(rules, max_hold_chars=max_hold_chars)


class _Container:
    __slots__ = ("at_key", "is_object", "key")

    def __init__(self, *, is_object: bool) -> None:
        self.is_object = is_object
        self.key: str | int = "" if is_object else 0  # the member's key, or the element's index
        self.at_key = is_object  # the next string in this object is a key


def json_fields(body: bytes, positions: Sequence[int]) -> dict[int, str]:
    """The field path (``messages[1].content``) of the string holding each body offset; "" outside one.

    One pass over the body. Offsets in a key get its object's path.
    """
    wanted = sorted(set(positions))
    found: dict[int, str] = {}
    stack: list[_Container] = []
    at = 0
    for token in _JSON_TOKEN.finditer(body):
        if at == len(wanted):
            break
        start, end = token.span()
        while at < len(wanted) and wanted[at] < start:
            found[wanted[at]] = ""
            at += 1
        char = body[start]
        top = stack[-1] if stack else None
        if char == 0x22:  # '"': a string
            is_key = top is not None and top.at_key
            path = _path(stack[:-1] if is_key else stack)
            while at < len(wanted) and wanted[at] < end:
                found[wanted[at]] = path
                at += 1
            if top is not None and is_key:
                top.key = body[start + 1 : end - 1].decode("utf-8", "replace")
        elif char in b"{[":
            stack.append(_Container(is_object=char == 0x7B))
        elif char in b"}]":
            if stack:
                stack.pop()
        elif top is not None and char == 0x3A:  # ':'
            top.at_key = False
        elif top is not None:  # ','
            if top.is_object:
                top.at_key = True
            elif isinstance(top.key, int):
                top.key += 1
    for offset in wanted[at:]:
        found[offset] = ""
    return found


def _path(stack: list[_Container]) -> str:
    out: list[str] = []
    for container in stack:
        if container.is_object:
            out.append(f".{container.key}" if out else str(container.key))
        else:
            out.append(f"[{container.key}]")
    return "".join(out)


__all__ = ["MaskedBody", "UnmaskableBody", "json_fields", "mask_request_body"]
