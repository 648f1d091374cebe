"""Frames and their msgpack codec: the unit the session log stores.

Pure: no file or database I/O here. Encoder and decoder are built once and reused (msgspec perf tips).
"""

from __future__ import annotations

import msgspec

from parsers.events import Direction, RecordedEvent

FORMAT_VERSION = 1


class Frame(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """One recorded event with where and when the gateway saw it."""

    conn_id: str
    seq: int  # per connection, from 0, in the order the gateway saw events
    ts_ns: int  # wall clock (time.time_ns) when the bytes arrived or the gateway acted
    direction: Direction
    event: RecordedEvent
    exchange_id: str = ""  # empty for frames that belong to no exchange (a connection-level error)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Frame)


def encode_frame(frame: Frame) -> bytes:
    return _encoder.encode(frame)


def decode_frame(payload: bytes | memoryview) -> Frame:
    """Raises:
    msgspec.DecodeError: the payload is not a frame of this format version.
    """
    return _decoder.decode(payload)


__all__ = ["FORMAT_VERSION", "Frame", "decode_frame", "encode_frame"]
