"""Writes a signed log on real files the way the recorder does: frames, checkpoints every few frames (into
the log, fsync'd, then into the checkpoint file), a checkpoint opening every new segment.

Also small tools to tamper with the result: read and rewrite records of a segment file.
"""

from __future__ import annotations

import zlib
from pathlib import Path

from parsers.events import BodyChunk, Direction, RecordedEvent
from storage._format import HEADER_BYTES, RECORD_HEAD, next_chain, segment_path, unpack_header
from storage.checkpoints import CheckpointFile, sign_checkpoint
from storage.codec import Frame, encode_frame
from storage.segments import Position, SegmentLog
from storage.signing import SigningKey

TS = 1_767_625_746_000_000_000


def chunk(i: int, size: int = 40) -> Frame:
    return Frame(
        conn_id="c_1",
        seq=i,
        ts_ns=TS + i,
        direction=Direction.FROM_UPSTREAM,
        event=BodyChunk(data=bytes([i % 256]) * size),
        exchange_id="x_1",
    )


def gateway_frame(event: RecordedEvent, ts_ns: int = TS) -> Frame:
    return Frame(conn_id="", seq=0, ts_ns=ts_ns, direction=Direction.FROM_CLIENT, event=event)


class SignedLog:
    """A log writer that checkpoints like the recorder. ``positions[i]`` is where frame ``i`` landed."""

    def __init__(self, data_dir: Path, key: SigningKey, *, max_segment_bytes: int = 64 << 20) -> None:
        self.data_dir = data_dir
        self.key = key
        self.log = SegmentLog.open(data_dir, max_segment_bytes=max_segment_bytes)
        self.file = CheckpointFile.open(data_dir)
        self.positions: list[Position] = []
        self.checkpoints: list[Position] = []

    def write(self, count: int, *, every: int = 5, start: int = 0) -> SignedLog:
        for i in range(start, start + count):
            self.positions.append(self.log.append(encode_frame(chunk(i))))
            if (i + 1) % every == 0:
                self.checkpoint()
            if self.log.needs_rotation:
                self.rotate()
        return self

    def checkpoint(self, reason: str = "interval") -> Position:
        position = self.log.position
        payload = encode_frame(gateway_frame(sign_checkpoint(self.key, self.log.anchor, TS, reason)))
        self.log.append(payload)
        self.log.flush()
        self.log.sync()
        self.file.append(payload)
        self.checkpoints.append(position)
        return position

    def rotate(self) -> None:
        anchor = self.log.next_anchor
        payload = encode_frame(gateway_frame(sign_checkpoint(self.key, anchor, TS, "rotation")))
        self.log.rotate(payload)
        self.file.append(payload)
        self.checkpoints.append(anchor.position)

    def close(self) -> None:
        self.log.close()
        self.file.close()


def records(data_dir: Path, number: int) -> list[tuple[int, bytes]]:
    """``(offset, payload)`` of every record of a segment file, read without checking anything."""
    data = segment_path(data_dir, number).read_bytes()
    out = []
    offset = HEADER_BYTES
    while offset + RECORD_HEAD.size <= len(data):
        length, _ = RECORD_HEAD.unpack_from(data, offset)
        out.append((offset, data[offset + RECORD_HEAD.size : offset + RECORD_HEAD.size + length]))
        offset += RECORD_HEAD.size + length + 32
    return out


def rewrite(data_dir: Path, number: int, payloads: list[bytes]) -> list[int]:
    """Rewrite a segment from its header's chain with these payloads, valid CRCs and a recomputed chain
    (what a forger does). Returns the new record offsets."""
    path = segment_path(data_dir, number)
    head = path.read_bytes()[:HEADER_BYTES]
    chain = unpack_header(head, number).chain
    data = bytearray(head)
    offsets = []
    for payload in payloads:
        offsets.append(len(data))
        chain = next_chain(chain, payload)
        data += RECORD_HEAD.pack(len(payload), zlib.crc32(payload)) + payload + chain
    path.write_bytes(data)
    return offsets


__all__ = ["TS", "SignedLog", "chunk", "gateway_frame", "records", "rewrite"]
