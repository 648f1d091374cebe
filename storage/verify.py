"""Full integrity check of a data directory's segment log: headers, every CRC, every chain link, decoding.

Read-only; safe while a gateway appends (a half-written tail is reported as a torn tail, not an error).
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from storage._format import HEADER_BYTES, ZERO_CHAIN, SegmentScan, list_segments, segment_path, unpack_header
from storage.codec import decode_frame
from storage.errors import CorruptLog, StorageError


class VerifyProblem(msgspec.Struct, frozen=True, kw_only=True):
    segment: int
    offset: int
    reason: str


class VerifyReport(msgspec.Struct, frozen=True, kw_only=True):
    """``ok`` is False only for corruption. A torn tail (a crash or a write in progress) is not corruption."""

    ok: bool
    segments: int
    frames: int
    bytes: int
    first_error: VerifyProblem | None = None
    torn_tail: VerifyProblem | None = None


_FIRST_SEGMENT = 1


def verify(data_dir: Path) -> VerifyReport:
    """Check the whole log; stops at the first error and reports where it is."""
    numbers = list_segments(data_dir)
    frames = 0
    total_bytes = 0
    chain = ZERO_CHAIN
    torn: VerifyProblem | None = None

    def report(error: VerifyProblem | None) -> VerifyReport:
        return VerifyReport(
            ok=error is None,
            segments=len(numbers),
            frames=frames,
            bytes=total_bytes,
            first_error=error,
            torn_tail=torn,
        )

    expected = _FIRST_SEGMENT
    last = numbers[-1] if numbers else 0
    for number in numbers:
        if number != expected:
            return report(VerifyProblem(segment=expected, offset=0, reason="segment file is missing"))
        expected += 1
        path = segment_path(data_dir, number)
        total_bytes += path.stat().st_size
        try:
            with path.open("rb") as f:
                header = unpack_header(f.read(HEADER_BYTES), number)
        except CorruptLog as exc:
            return report(VerifyProblem(segment=exc.segment, offset=exc.offset, reason=exc.reason))
        except StorageError as exc:
            return report(VerifyProblem(segment=number, offset=0, reason=str(exc)))
        if header.chain != chain:
            reason = "header chain differs from the previous segment's last hash"
            return report(VerifyProblem(segment=number, offset=0, reason=reason))
        scan = SegmentScan(path, number)
        try:
            for offset, payload in scan:
                if (problem := _decode_problem(number, offset, payload)) is not None:
                    return report(problem)
                frames += 1
        except CorruptLog as exc:
            return report(VerifyProblem(segment=exc.segment, offset=exc.offset, reason=exc.reason))
        chain = scan.chain
        if scan.tail_bytes:
            if number != last:
                reason = f"{scan.tail_reason} in a sealed segment"
                return report(VerifyProblem(segment=number, offset=scan.end, reason=reason))
            torn = VerifyProblem(segment=number, offset=scan.end, reason=scan.tail_reason)
    return report(None)


def _decode_problem(segment: int, offset: int, payload: bytes) -> VerifyProblem | None:
    try:
        decode_frame(payload)
    except msgspec.DecodeError as exc:
        return VerifyProblem(
            segment=segment, offset=offset, reason=f"record does not decode as a frame: {exc}"
        )
    return None


__all__ = ["VerifyProblem", "VerifyReport", "verify"]
