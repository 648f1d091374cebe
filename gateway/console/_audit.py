"""The audit of the auditors: every look at recorded traffic through the API is itself a recorded frame.

The frame goes through the gateway's recorder like any other (appending to its queue never blocks a
connection) and the answer waits until it is fsync'd: if the log cannot record the access, nothing is
shown (503), the same fail-closed rule the data plane follows.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request

from gateway.recorder import Recorder, RecordingFailed
from parsers.events import ConsoleAccess, Identity


class AuditTrail:
    """Records ``ConsoleAccess`` frames through the gateway's recorder."""

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    async def record(
        self,
        request: Request,
        identity: Identity,
        action: str,
        *,
        target: str = "",
        query: Mapping[str, object] | None = None,
    ) -> None:
        """Record that ``identity`` did ``action`` and wait until it is on disk.

        Raises:
            HTTPException: 503 when the log cannot be written.
        """
        client = request.client
        event = ConsoleAccess(
            action=action,
            identity=identity,
            target=target,
            query=msgspec.json.encode(dict(query)).decode() if query else "",
            client_addr=f"{client.host}:{client.port}" if client else "",
        )
        try:
            self._recorder.record_gateway_event(event)
            await self._recorder.durable()
        except RecordingFailed as exc:
            raise HTTPException(503, f"the audit record cannot be written, nothing is shown: {exc}") from None


__all__ = ["AuditTrail"]
