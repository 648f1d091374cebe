"""The upstream scope: a request body masked before it is forwarded, so the model never gets the secret.

Both proxies (HTTP/1.1 and HTTP/2 clients) ask ``upstream_rules`` whether a caller's requests have
upstream-scope rules; if so they read the whole body (bounded by ``max_body_bytes``) instead of relaying
it as it arrives, and call ``mask_forwarded`` before anything goes upstream. What is recorded: the body
as the client sent it (record-masked like every frame), the ``to_upstream`` head as forwarded (its new
``Content-Length``), and after it one ``maskingapplied`` frame (scope ``upstream``) per rule and field.
Heads are not masked in this scope: they carry the credentials and routing the upstream needs.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from gateway.masking import UPSTREAM, MaskingPlan
from parsers.events import BodyChunk, Event, Identity, MaskingApplied, MessageEnd, RequestHead
from parsers.masking import Rule
from parsers.masking.request import UnmaskableBody, mask_request_body


class MaskedRequest(NamedTuple):
    forwarded: RequestHead  # the head to send
    recorded: RequestHead  # the head to record as sent (credential placeholder kept)
    body: list[Event]  # the body events to send
    applied: list[MaskingApplied]  # to record after ``recorded``, in direction to_upstream


class UpstreamRules(NamedTuple):
    rules: tuple[Rule, ...]
    max_hold_chars: int


def upstream_rules(plan: MaskingPlan | None, identity: Identity) -> UpstreamRules | None:
    """What masks the request body this caller sends the model (None: the body is relayed as it comes)."""
    if plan is None:
        return None
    rules = plan.for_identity(identity).upstream
    return UpstreamRules(rules, plan.max_hold_chars) if rules else None


def mask_forwarded(
    forwarded: RequestHead,
    recorded: RequestHead,
    body: list[Event],
    masking: UpstreamRules,
    *,
    max_body_bytes: int,
) -> MaskedRequest:
    """The request as the upstream must get it, with the record of what masking changed.

    Raises:
        UnmaskableBody: the body's coding cannot be masked (415, 400) or it decodes too large (413).
    """
    data = b"".join(event.data for event in body if isinstance(event, BodyChunk))
    end = next((event for event in body if isinstance(event, MessageEnd)), MessageEnd())
    stream_id = body[0].stream_id if body else 0
    if not data:
        return MaskedRequest(forwarded, recorded, body, [])
    masked = mask_request_body(
        forwarded.headers,
        data,
        masking.rules,
        max_hold_chars=masking.max_hold_chars,
        max_body_bytes=max_body_bytes,
        chunked=bool(end.trailers),
    )
    if not masked.hits:
        return MaskedRequest(forwarded, recorded, body, [])
    grouped: dict[tuple[str, str], MaskingApplied] = {}
    for hit, field in masked.hits:
        seen = grouped.get((hit.rule, field))
        grouped[(hit.rule, field)] = MaskingApplied(
            stream_id=stream_id,
            rule=hit.rule,
            scope=UPSTREAM,
            count=1 if seen is None else seen.count + 1,
            position=hit.position if seen is None else seen.position,
            field=field,
        )
    return MaskedRequest(
        forwarded=msgspec.structs.replace(forwarded, headers=masked.headers),
        recorded=msgspec.structs.replace(recorded, headers=_same_framing(recorded.headers, masked.headers)),
        body=[BodyChunk(stream_id=stream_id, data=masked.data), end],
        applied=list(grouped.values()),
    )


def _same_framing(
    recorded: list[tuple[bytes, bytes]], sent: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """The recorded head with the sent head's framing and coding fields (it differs only in a credential)."""
    changed = {b"content-length", b"transfer-encoding", b"content-encoding"}
    kept = [(name, value) for name, value in recorded if name.lower() not in changed]
    return kept + [(name, value) for name, value in sent if name.lower() in changed]


__all__ = ["MaskedRequest", "UnmaskableBody", "UpstreamRules", "mask_forwarded", "upstream_rules"]
