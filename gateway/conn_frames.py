"""One client connection's stream of frames: its sequence numbers and the recorder's back-pressure.

Both the HTTP/1.1 connection (`gateway.proxy`) and the HTTP/2 one (`gateway.h2_connection`) stamp their
events the same way; this is that one way.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from parsers.events import Direction, Event
from storage.codec import Frame

if TYPE_CHECKING:
    from gateway.recorder import Recorder


class ConnectionFrames:
    """Stamps a connection's events (time, sequence) and hands them to the recorder without waiting."""

    __slots__ = ("_recorder", "_seq", "behind", "conn_id")

    def __init__(self, conn_id: str, recorder: Recorder) -> None:
        self.conn_id = conn_id
        self._recorder = recorder
        self._seq = 0
        self.behind = False  # the recorder's queue is full: wait in keep_pace() before reading more

    def emit(self, direction: Direction, event: Event, exchange_id: str) -> None:
        frame = Frame(
            conn_id=self.conn_id,
            seq=self._seq,
            ts_ns=time.time_ns(),
            direction=direction,
            event=event,  # type: ignore[arg-type]
            exchange_id=exchange_id,
        )
        self._seq += 1
        if not self._recorder.record(frame):
            self.behind = True

    async def keep_pace(self) -> None:
        """Let the log writer catch up when it fell behind (back-pressure, counted by the recorder)."""
        if self.behind:
            self.behind = False
            await self._recorder.room()
