"""Held tool calls across processes: each worker serves its ``HoldRegistry`` on a unix socket in its series
directory; the supervisor's console asks every worker (``WorkerHolds``).

One question per connection, as one msgspec JSON line; the answer is JSON until the worker closes. The
socket is mode 0600 in the data directory, so only the gateway's own user can ask. The approver's identity
travels with a decision and the worker's registry checks it again (approver groups, self-approval,
digest): the supervisor is not trusted to have done so. A worker that does not answer in time is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import assert_never

import msgspec

from gateway.approvals.registry import DecisionRefused, PendingHold
from gateway.config import ConfigError
from gateway.hold_source import Registry
from parsers.events import Identity
from storage.series import series_root

logger = logging.getLogger("wardgate.approvals")

SOCKET_NAME = "approvals.sock"
MAX_SOCKET_PATH_BYTES = 107  # sun_path is 108 bytes on Linux, NUL included
ASK_TIMEOUT_S = 2.0
MAX_QUESTION_BYTES = 64 * 1024
MAX_ANSWER_BYTES = 64 * 1024 * 1024  # every pending hold of a worker, each with its conversation


class _Pending(msgspec.Struct, tag="pending"):
    pass


class _Get(msgspec.Struct, tag="get"):
    hold_id: str


class _Decide(msgspec.Struct, tag="decide", kw_only=True):
    hold_id: str
    approve: bool
    approver: Identity
    comment: str
    arguments_sha256: str


_Question = _Pending | _Get | _Decide


class _Answer(msgspec.Struct, kw_only=True, omit_defaults=True):
    holds: list[PendingHold] = msgspec.field(default_factory=list)
    refused: int = 0  # a DecisionRefused status, 0 when the question was answered
    reason: str = ""


_questions = msgspec.json.Decoder(_Question)
_answers = msgspec.json.Decoder(_Answer)
_encoder = msgspec.json.Encoder()


def socket_path(data_dir: Path, series: int) -> Path:
    """Where worker ``series`` serves its holds: beside its segments."""
    return series_root(data_dir, series) / SOCKET_NAME


def _answer(registry: Registry, question: _Question) -> _Answer:
    match question:
        case _Pending():
            return _Answer(holds=registry.pending())
        case _Get(hold_id=hold_id):
            hold = registry.get(hold_id)
            return _Answer(holds=[hold] if hold is not None else [])
        case _Decide():
            try:
                hold = registry.decide(
                    question.hold_id,
                    approve=question.approve,
                    approver=question.approver,
                    comment=question.comment,
                    arguments_sha256=question.arguments_sha256,
                )
            except DecisionRefused as exc:
                return _Answer(refused=exc.status, reason=str(exc))
            return _Answer(holds=[hold])
        case _:
            assert_never(question)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _bind(path: Path) -> socket.socket:
    """A unix socket bound at ``path``, private to this user, not yet listening.

    Raises:
        ConfigError: ``path`` is too long for a unix socket.
        OSError: it cannot be bound.
    """
    if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
        raise ConfigError(
            f"storage.data_dir: the approvals socket {path} is longer than a unix socket path may be "
            f"({MAX_SOCKET_PATH_BYTES} bytes): use a shorter data directory"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove(path)  # a dead predecessor's
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)  # before listen(): nobody can connect until it is private
    except BaseException:
        sock.close()
        raise
    return sock


class HoldChannel:
    """A worker's registry, served on its unix socket until ``close``."""

    def __init__(self, server: asyncio.Server, path: Path) -> None:
        self._server = server
        self.path = path

    @classmethod
    async def open(cls, path: Path, registry: Registry) -> HoldChannel:
        """Bind ``path`` (a stale socket of a dead predecessor is replaced) and serve.

        Raises:
            ConfigError: the path is too long for a unix socket.
            OSError: the socket cannot be bound.
        """
        sock = _bind(path)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                async with asyncio.timeout(ASK_TIMEOUT_S):
                    line = await reader.readuntil(b"\n")
                    answer = _answer(registry, _questions.decode(line))
                    writer.write(_encoder.encode(answer))
                    await writer.drain()
            except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                pass  # a peer that went away, stalled or sent too much: nothing to answer
            except msgspec.DecodeError as exc:
                logger.warning("a malformed question on %s: %s", path, exc)
            except Exception:  # the one catch per connection
                logger.exception("answering a question about held calls failed")
            finally:
                writer.transport.abort()

        server = await asyncio.start_unix_server(handle, sock=sock, limit=MAX_QUESTION_BYTES)
        return cls(server, path)

    async def close(self) -> None:
        self._server.close()
        await self._server.wait_closed()
        _remove(self.path)


async def _ask(path: Path, question: _Question, timeout_s: float) -> _Answer:
    """One question to one worker.

    Raises:
        OSError, TimeoutError, msgspec.DecodeError: no (whole, valid) answer in time.
    """
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_unix_connection(str(path))
        try:
            writer.write(_encoder.encode(question) + b"\n")
            await writer.drain()
            data = await reader.read(MAX_ANSWER_BYTES + 1)
            answer = bytearray(data)
            while data and len(answer) <= MAX_ANSWER_BYTES:
                data = await reader.read(MAX_ANSWER_BYTES + 1 - len(answer))
                answer += data
        finally:
            writer.transport.abort()
    if len(answer) > MAX_ANSWER_BYTES:
        raise msgspec.DecodeError(f"the answer of {path} exceeds {MAX_ANSWER_BYTES} bytes")
    return _answers.decode(answer)


class WorkerHolds:
    """Every worker's holds as one ``HoldSource``: each question goes to all of them at once."""

    def __init__(self, paths: Callable[[], Iterable[Path]], *, timeout_s: float = ASK_TIMEOUT_S) -> None:
        self._paths = paths  # the sockets of the workers running now
        self._timeout_s = timeout_s

    async def _ask_all(self, question: _Question) -> list[_Answer]:
        paths = list(self._paths())
        results = await asyncio.gather(
            *(_ask(path, question, self._timeout_s) for path in paths), return_exceptions=True
        )
        answers = []
        for path, result in zip(paths, results, strict=True):
            if isinstance(result, _Answer):
                answers.append(result)
            elif isinstance(result, OSError | TimeoutError | msgspec.DecodeError):
                logger.warning(
                    "worker holds at %s did not answer: %s", path, str(result) or type(result).__name__
                )
            else:
                raise result
        return answers

    async def pending(self) -> list[PendingHold]:
        holds = [hold for answer in await self._ask_all(_Pending()) for hold in answer.holds]
        return sorted(holds, key=lambda hold: hold.created_at_ns)

    async def get(self, hold_id: str) -> PendingHold | None:
        return next((h for a in await self._ask_all(_Get(hold_id)) for h in a.holds), None)

    async def decide(
        self, hold_id: str, *, approve: bool, approver: Identity, comment: str, arguments_sha256: str
    ) -> PendingHold:
        question = _Decide(
            hold_id=hold_id,
            approve=approve,
            approver=approver,
            comment=comment,
            arguments_sha256=arguments_sha256,
        )
        # The hold lives in one worker at most: every other one answers 404.
        answers = await self._ask_all(question)
        for answer in answers:
            if not answer.refused and answer.holds:
                return answer.holds[0]
        refusals = sorted((a for a in answers if a.refused), key=lambda a: a.refused == 404)
        if refusals:
            raise DecisionRefused(refusals[0].refused, refusals[0].reason)
        raise DecisionRefused(404, f"no pending hold {hold_id!r}")


__all__ = ["ASK_TIMEOUT_S", "SOCKET_NAME", "HoldChannel", "WorkerHolds", "socket_path"]
