"""Full integrity check of a data directory's log: headers, CRCs, chain links, decoding, signed checkpoints.

Read-only and safe while a gateway appends: a half-written tail is a torn tail, not an error, and the
checkpoint file is read *before* the log, so it never names a checkpoint the log had no time to show.
Segments retention removed are accepted only where a Retention record anchored by a later signed
checkpoint names them and the next kept segment opens with a checkpoint of its header chain. Each segment
series (one per gateway worker, ``storage.series``) is its own chain with its own checkpoint file, so
``verify_all`` checks them one by one.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from parsers.events import (
    ApprovalDecided,
    ApprovalRequested,
    Checkpoint,
    GatewayStarted,
    Recovered,
    Retention,
)
from storage._anchors import read_opening
from storage._format import HEADER_BYTES, ZERO_CHAIN, Position, SegmentHeader, SegmentScan, list_segments
from storage._format import segment_path as _segment_path
from storage.checkpoints import CheckpointFileContents, read_checkpoint_file, signature_valid
from storage.codec import decode_frame
from storage.errors import CorruptLog, StorageError
from storage.segments import SEALED
from storage.series import list_series, series_root
from storage.signing import PublicKey

CHECKPOINT_FILE_SEGMENT = 0  # VerifyProblem.segment of a problem inside the checkpoint file itself
NO_KEY_NOTE = "no public key: checkpoint signatures not checked"


class VerifyProblem(msgspec.Struct, frozen=True, kw_only=True):
    segment: int
    offset: int
    reason: str


class Anchored(msgspec.Struct, frozen=True, kw_only=True):
    """The last checkpoint whose signature verified: everything before it is as it was signed."""

    segment: int
    offset: int
    frames: int
    ts_ns: int


class Unanchored(msgspec.Struct, frozen=True, kw_only=True):
    """The part of the log after the last valid checkpoint: intact as far as CRCs and chain go, but
    nothing signed vouches for it (it could have been cut or rewritten without a trace)."""

    segment: int
    offset: int
    frames: int
    bytes: int


class VerifyReport(msgspec.Struct, frozen=True, kw_only=True):
    """``ok`` is False for corruption or tampering. A torn tail (a crash, a write in progress) is neither."""

    ok: bool
    segments: int
    frames: int
    bytes: int
    first_error: VerifyProblem | None = None
    torn_tail: VerifyProblem | None = None
    checkpoints: int = 0  # checkpoint records consistent with the log (and signed, when a key was given)
    checkpoint_file_entries: int = 0  # entries of the checkpoint file found identical in the log
    key_fingerprint: str = ""  # the key signatures were checked with; "" = not checked
    anchored: Anchored | None = None
    unanchored: Unanchored | None = None
    removed_segments: list[int] = []  # removed by retention, as the log records
    notes: list[VerifyProblem] = []  # recoveries, superseded tails, retention: legitimate, worth knowing
    series: int = 0  # which segment series (gateway worker) this report is about


def _hold_name(held: ApprovalRequested) -> str:
    return f"hold {held.hold_id} (tool {held.tool_name!r}, rule {held.rule!r}, call {held.call_id})"


def verify(data_dir: Path, *, public_key: PublicKey | None = None, series: int = 0) -> VerifyReport:
    """Check one series of the log; stops at the first error and reports where it is.

    Without ``public_key`` checkpoints are checked for consistency only and nothing counts as anchored.
    """
    report = _Verifier(series_root(data_dir, series), public_key).run()
    return msgspec.structs.replace(report, series=series) if series else report


def verify_all(data_dir: Path, *, public_key: PublicKey | None = None) -> list[VerifyReport]:
    """``verify`` every series of the data directory (series 0 first)."""
    return [verify(data_dir, public_key=public_key, series=n) for n in list_series(data_dir)]


class _Stop(Exception):
    def __init__(self, segment: int, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.problem = VerifyProblem(segment=segment, offset=offset, reason=reason)


class _Verifier:
    def __init__(self, data_dir: Path, key: PublicKey | None) -> None:
        self.data_dir = data_dir
        self.key = key
        self.numbers = list_segments(data_dir)
        self.sizes: dict[int, int] = {}
        self.chain = ZERO_CHAIN
        self.frames = 0  # records in the whole log so far (removed segments included, when known)
        self.seen = 0  # records read by this run
        self.end = Position(self.numbers[0] if self.numbers else 1, HEADER_BYTES)
        self.torn: VerifyProblem | None = None
        self.checkpoints = 0
        self.anchored: Anchored | None = None
        self.anchor_end: Position | None = None
        self.seen_at_anchor = 0
        self.log_checkpoints: dict[Position, bytes] = {}
        self.missing: list[int] = []
        self.pending_removed: set[int] = set()
        self.removed: set[int] = set()
        self.notes: list[VerifyProblem] = []
        self.open_holds: dict[str, tuple[Position, ApprovalRequested]] = {}  # held tool calls not yet decided
        self.previous_anchor = "the start of the log"
        self._file_matches = 0

    def run(self) -> VerifyReport:
        file: CheckpointFileContents | None = None
        error: VerifyProblem | None = None
        try:
            file = read_checkpoint_file(self.data_dir)  # before the log: see the module docstring
        except StorageError as exc:
            error = VerifyProblem(segment=CHECKPOINT_FILE_SEGMENT, offset=0, reason=f"checkpoint file: {exc}")
        if error is None:
            try:
                self._walk()
            except _Stop as stop:
                error = stop.problem
            error = self._unremoved_gap(error) or error
        if error is None and file is not None:
            error = self._check_file(file)
        for at, held in self.open_holds.values():
            reason = f"{_hold_name(held)} has no decision yet (pending, or the gateway stopped since)"
            self.notes.append(VerifyProblem(segment=at.segment, offset=at.offset, reason=reason))
        if self.key is None:
            self.notes.append(VerifyProblem(segment=CHECKPOINT_FILE_SEGMENT, offset=0, reason=NO_KEY_NOTE))
        return VerifyReport(
            ok=error is None,
            segments=len(self.numbers),
            frames=self.seen,
            bytes=sum(self.sizes.values()),
            first_error=error,
            torn_tail=self.torn,
            checkpoints=self.checkpoints,
            checkpoint_file_entries=self._file_matches,
            key_fingerprint=self.key.fingerprint if self.key is not None else "",
            anchored=self.anchored,
            unanchored=self._unanchored(),
            removed_segments=sorted(m for m in self.missing if m in self.removed),
            notes=self.notes,
        )

    # --- the log ---------------------------------------------------------------------------------

    def _walk(self) -> None:
        expected = 1
        for i, number in enumerate(self.numbers):
            path = _segment_path(self.data_dir, number)
            self.sizes[number] = path.stat().st_size
            header = self._header(number)
            if number != expected:
                self.missing.extend(range(expected, number))
                self._resume_after_gap(expected, number, header)
            elif header.chain != self.chain:
                reason = "header chain differs from the previous segment's last hash"
                if number > 1:
                    reason += f" (segment {number - 1:012d} was cut short or changed, or this one replaced)"
                raise _Stop(number, 0, reason)
            expected = number + 1
            following = self.numbers[i + 1] if i + 1 < len(self.numbers) else None
            sealed_at = self._declared_seal(number) if following == number + 1 else None
            self._scan(path, number, header, sealed_at, last=following is None)

    def _header(self, number: int) -> SegmentHeader:
        try:
            header, _ = read_opening(self.data_dir, number)
        except CorruptLog as exc:
            raise _Stop(exc.segment, exc.offset, exc.reason) from exc
        except StorageError as exc:
            raise _Stop(number, 0, str(exc)) from exc
        return header

    def _resume_after_gap(self, first_missing: int, number: int, header: SegmentHeader) -> None:
        """After missing segments the log can only go on from a checkpoint of the next header's chain."""
        _, opening = read_opening(self.data_dir, number)
        if opening is None or (self.key is not None and not signature_valid(opening, self.key)):
            raise _Stop(first_missing, 0, "segment file is missing")
        self.chain = header.chain
        self.frames = opening.frames
        self.previous_anchor = f"segment {number:012d} (after removed segments)"

    def _declared_seal(self, number: int) -> int | None:
        """Where a Recovered record at the start of the next segment says this one was sealed, if any."""
        scan = SegmentScan(_segment_path(self.data_dir, number + 1), number + 1)
        try:
            for i, (_, payload) in enumerate(scan):
                if i >= 2:
                    break
                event = decode_frame(payload).event
                if isinstance(event, Recovered) and event.kind == SEALED and event.segment == number:
                    return event.offset
        except (StorageError, msgspec.DecodeError, OSError):
            return None  # the walk reaches that segment and reports what is wrong with it
        return None

    def _scan(
        self, path: Path, number: int, header: SegmentHeader, sealed_at: int | None, last: bool
    ) -> None:
        scan = SegmentScan(path, number)
        chain = header.chain
        end = HEADER_BYTES
        try:
            for offset, payload in scan:
                if sealed_at is not None and offset >= sealed_at:
                    break
                self._record(number, offset, payload, chain, scan.end)
                chain, end = scan.chain, scan.end
        except CorruptLog as exc:
            if sealed_at is None or exc.offset < sealed_at:
                raise _Stop(exc.segment, exc.offset, exc.reason) from exc
        self.chain = chain
        self.end = Position(number, end)
        if sealed_at is not None:
            if end != sealed_at:
                reason = (
                    f"the next segment says this one was sealed at offset {sealed_at}, its records end here"
                )
                raise _Stop(number, end, reason)
            if (superseded := self.sizes[number] - sealed_at) > 0:
                reason = f"{superseded} bytes after a failed write are superseded (written again later)"
                self.notes.append(VerifyProblem(segment=number, offset=sealed_at, reason=reason))
        elif scan.tail_bytes:
            if not last:
                raise _Stop(number, scan.end, f"{scan.tail_reason} in a sealed segment")
            self.torn = VerifyProblem(segment=number, offset=scan.end, reason=scan.tail_reason)

    def _record(self, number: int, offset: int, payload: bytes, chain: bytes, end: int) -> None:
        try:
            event = decode_frame(payload).event
        except msgspec.DecodeError as exc:
            raise _Stop(number, offset, f"record does not decode as a frame: {exc}") from exc
        if isinstance(event, Checkpoint):
            self._checkpoint(number, offset, event, chain, end, payload)
        elif isinstance(event, Retention):
            self.pending_removed.update(event.removed)
            if self.key is None:
                self.removed.update(event.removed)
        elif isinstance(event, Recovered):
            what = "a torn tail cut at startup" if event.kind != SEALED else "sealed after a failed write"
            reason = (
                f"recovery: segment {event.segment:012d} offset {event.offset}: {what}, "
                f"{event.bytes_cut} bytes cut ({event.reason})"
            )
            self.notes.append(VerifyProblem(segment=number, offset=offset, reason=reason))
        elif isinstance(event, ApprovalRequested):
            self.open_holds[event.hold_id] = (Position(number, offset), event)
        elif isinstance(event, ApprovalDecided):
            self.open_holds.pop(event.hold_id, None)
        elif isinstance(event, GatewayStarted):
            # A new process: a hold its predecessor left open was never answered (a crash loses holds).
            for at, held in self.open_holds.values():
                reason = f"{_hold_name(held)} undecided (gateway stopped): its request was never answered"
                self.notes.append(VerifyProblem(segment=at.segment, offset=at.offset, reason=reason))
            self.open_holds.clear()
        self.frames += 1
        self.seen += 1

    def _checkpoint(
        self, number: int, offset: int, cp: Checkpoint, chain: bytes, end: int, payload: bytes
    ) -> None:
        wrong: list[str] = []
        if (cp.segment, cp.offset) != (number, offset):
            wrong.append(f"it names segment {cp.segment:012d} offset {cp.offset}")
        if cp.chain != chain:
            wrong.append(
                f"the chain differs from the signed one: records since {self.previous_anchor} were changed, "
                "removed or reordered and the chain rewritten"
            )
        if cp.frames != self.frames:
            wrong.append(f"it counts {cp.frames} records before it, the log has {self.frames}")
        if wrong:
            raise _Stop(number, offset, "checkpoint does not match the log: " + "; ".join(wrong))
        if self.key is not None:
            if cp.key_id != self.key.key_id:
                reason = (
                    f"checkpoint signed by another key (key id {cp.key_id.hex()}), not {self.key.fingerprint}"
                )
                raise _Stop(number, offset, reason)
            if not signature_valid(cp, self.key):
                raise _Stop(number, offset, "checkpoint signature is invalid: a forged checkpoint")
            self.anchored = Anchored(segment=number, offset=offset, frames=cp.frames, ts_ns=cp.ts_ns)
            self.anchor_end = Position(number, end)
            self.seen_at_anchor = self.seen + 1
            self.removed |= self.pending_removed
            self.pending_removed = set()
        self.checkpoints += 1
        self.previous_anchor = f"the checkpoint at segment {number:012d} offset {offset}"
        self.log_checkpoints[Position(number, offset)] = payload

    def _unremoved_gap(self, error: VerifyProblem | None) -> VerifyProblem | None:
        for missing in self.missing:
            if error is not None and missing > error.segment:
                return None
            if missing not in self.removed:
                return VerifyProblem(segment=missing, offset=0, reason="segment file is missing")
        return None

    def _unanchored(self) -> Unanchored | None:
        start = self.anchor_end
        if start is None:
            if not self.numbers:
                return None
            start = Position(self.numbers[0], HEADER_BYTES)
        frames = self.seen - self.seen_at_anchor
        size = sum(size for number, size in self.sizes.items() if number > start.segment)
        size += self.sizes.get(start.segment, start.offset) - start.offset
        if frames == 0 and size == 0:
            return None
        return Unanchored(segment=start.segment, offset=start.offset, frames=frames, bytes=size)

    # --- the checkpoint file ---------------------------------------------------------------------

    def _check_file(self, file: CheckpointFileContents) -> VerifyProblem | None:
        matches = 0
        for index, payload in enumerate(file.payloads):
            try:
                event = decode_frame(payload).event
            except msgspec.DecodeError:
                event = None
            if not isinstance(event, Checkpoint):
                reason = f"checkpoint file: entry {index} is not a checkpoint"
                return VerifyProblem(segment=CHECKPOINT_FILE_SEGMENT, offset=0, reason=reason)
            position = Position(event.segment, event.offset)
            if self.key is not None and not signature_valid(event, self.key):
                reason = "the checkpoint file's checkpoint for this place has an invalid signature (forged)"
                return VerifyProblem(segment=event.segment, offset=event.offset, reason=reason)
            if event.segment in self.removed:
                continue
            if (logged := self.log_checkpoints.get(position)) is not None:
                if logged != payload:
                    reason = "the log's checkpoint differs from the checkpoint file's copy"
                    return VerifyProblem(segment=event.segment, offset=event.offset, reason=reason)
                matches += 1
                continue
            if position >= self.end:
                reason = (
                    f"the log ends at segment {self.end.segment:012d} offset {self.end.offset}, but the "
                    f"checkpoint file has a checkpoint here ({event.frames} records before it): "
                    "the log was cut short"
                )
            else:
                reason = "the checkpoint file has a checkpoint here that the log does not"
            return VerifyProblem(segment=event.segment, offset=event.offset, reason=reason)
        self._file_matches = matches
        if file.torn_bytes:
            reason = f"checkpoint file: {file.torn_bytes} bytes of an incomplete last entry"
            self.notes.append(VerifyProblem(segment=CHECKPOINT_FILE_SEGMENT, offset=file.end, reason=reason))
        return None


__all__ = [
    "CHECKPOINT_FILE_SEGMENT",
    "NO_KEY_NOTE",
    "Anchored",
    "Unanchored",
    "VerifyProblem",
    "VerifyReport",
    "verify",
    "verify_all",
]
