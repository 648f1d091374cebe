"""The read-side commands: verify, reindex, sessions, search, tail, replay.

They read the segment log and the index, never write the log, and work beside a running gateway (the
index opens read-only; log readers stop at the last complete record). Only ``reindex`` writes, and only
while holding the data directory lock. Every recorded string goes through ``render.sanitize_text``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TextIO

import msgspec

from gateway import render
from parsers.events import BodyChunk, Direction, ResponseHead
from storage.assemble import OPEN, ExchangeAssembler, ExchangeRecord
from storage.codec import Frame
from storage.errors import DataDirBusy, StorageError
from storage.index import SqliteIndex, index_path
from storage.lock import DataDirLock
from storage.query import ExchangeQuery, SessionQuery, SessionRow
from storage.reader import LogCursor, StoredFrame, iter_frames, iter_log, recent_start
from storage.segments import Position
from storage.series import list_series, series_root
from storage.signing import load_public_key, read_public_key
from storage.verify import CHECKPOINT_FILE_SEGMENT, NO_KEY_NOTE, VerifyReport, verify_all

DEFAULT_DATA_DIR = Path("./wardgate-data")
TAIL_POLL_S = 0.2
_RESPONSE_SIDE = (Direction.FROM_UPSTREAM, Direction.TO_CLIENT)
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

Sleep = render.Sleep
Kind = Literal["exchange", "session"]


# --- argument parsing ------------------------------------------------------------------------------


def parse_time(value: str, *, now_ns: int | None = None) -> int:
    """``2h``/``30m``/``7d`` ago, or an ISO 8601 time (UTC when it names no offset), as ns since the epoch."""
    now = time.time_ns() if now_ns is None else now_ns
    if match := _RELATIVE.match(value.strip()):
        return now - int(float(match.group(1)) * _UNIT_S[match.group(2)] * 1_000_000_000)
    try:
        moment = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration like 2h or an ISO time, got {value!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1_000_000) * 1000


def _speed(value: str) -> float:
    try:
        speed = float(value)
    except ValueError:
        speed = -1.0
    if speed < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value!r}")
    return speed


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register verify, reindex, sessions, search, tail and replay; each sets ``func`` -> exit code."""

    def command(
        name: str, help_text: str, func: Callable[[argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="default ./wardgate-data")
        p.add_argument("--json", action="store_true", help="JSON Lines: one object per line")
        p.set_defaults(func=func)
        return p

    def filters(p: argparse.ArgumentParser, *, exchange: bool = True) -> None:
        p.add_argument("--user", default="", help="identity subject or email (exact)")
        p.add_argument("--group", default="", help="one of the caller's groups (exact)")
        if exchange:
            p.add_argument("--session", default="", help="session id")
            p.add_argument("--path", default="", help="request path prefix, or a glob with * ? [")
        p.add_argument("--status", type=int, help="HTTP status sent to the client")
        p.add_argument("--model", default="", help="model name, or a glob")
        p.add_argument("--since", type=parse_time, help="2h, 30m, 7d or an ISO time (UTC unless given)")
        p.add_argument("--until", type=parse_time, help="same forms as --since")

    p = command(
        "verify", "check every CRC, hash-chain link and signed checkpoint of the session log", cmd_verify
    )
    p.add_argument(
        "--pubkey",
        type=Path,
        help="check checkpoint signatures with this public key (from `signing-key show`) instead of the "
        "data dir's own: what an auditor should do",
    )
    command("reindex", "rebuild the search index from the session log (gateway must be stopped)", cmd_reindex)
    p = command("sessions", "list recorded sessions, most recent first", cmd_sessions)
    filters(p, exchange=False)
    p.add_argument("--limit", type=int, default=50)
    p = command("search", "find exchanges by text and filters, newest first", cmd_search)
    p.add_argument("text", nargs="?", default="", help="words that must all occur in prompt or response")
    filters(p)
    p.add_argument("--limit", type=int, default=50)
    p = command("tail", "show the latest finished exchanges from the log", cmd_tail)
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new exchanges (Ctrl-C stops)")
    p.add_argument("-n", "--lines", type=int, default=10, help="how many recent exchanges first (default 10)")
    filters(p)
    p = command("replay", "show a session's or an exchange's conversation as it happened", cmd_replay)
    p.add_argument("id", help="session or exchange id (or a unique start or end of one)")
    p.add_argument("--speed", type=_speed, default=1.0, help="2 = twice as fast, 0 = no pauses (default 1)")
    p.add_argument("--raw", action="store_true", help="write the response body bytes exactly as sent")
    p.add_argument("--head", action="store_true", help="with --raw: the status line and headers first")


# --- verify, reindex -------------------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir
    if (missing := _missing(data_dir)) is not None:
        return missing
    try:
        key = load_public_key(args.pubkey) if args.pubkey else read_public_key(data_dir)
    except (OSError, StorageError) as exc:
        print(f"wardgate: --pubkey: {exc}" if args.pubkey else f"wardgate: {exc}", file=sys.stderr)
        return 2
    key_source = (
        f"from --pubkey {args.pubkey}" if args.pubkey else "the data dir's own key; auditors pass --pubkey"
    )
    # One report per segment series (gateway worker); a single-series log prints as it always did.
    reports = verify_all(data_dir, public_key=key)
    code = 0
    for report in reports:
        prefix = f"series {report.series}: " if len(reports) > 1 else ""
        if args.json:
            _json_line(sys.stdout, report)
        else:
            if len(reports) > 1:
                print(f"series {report.series} ({series_root(data_dir, report.series)}):")
            _print_verify(report, key_source)
        if report.first_error is not None:
            bad = report.first_error
            where = (
                ""
                if bad.segment == CHECKPOINT_FILE_SEGMENT
                else f"segment {bad.segment:012d} offset {bad.offset}: "
            )
            print(f"wardgate: CORRUPT: {prefix}{where}{bad.reason}", file=sys.stderr)
            code = 1
            continue
        if not args.json:
            tail = report.unanchored
            if tail is None:
                print(
                    f"{prefix}OK: every CRC and chain link verified; all of it anchored by a signed", end=""
                )
                print(" checkpoint")
            else:
                print(
                    f"{prefix}OK: every CRC and chain link verified; UNANCHORED: {tail.frames:,} frames "
                    f"({tail.bytes:,} bytes) from segment {tail.segment:012d} offset {tail.offset} on are "
                    "covered by no signed checkpoint (nothing vouches they were not cut or rewritten)"
                )
    return code


def _print_verify(report: VerifyReport, key_source: str) -> None:
    size = f"{report.bytes / 1e6:,.1f} MB" if report.bytes >= 100_000 else f"{report.bytes:,} bytes"
    print(f"{report.segments} segments, {report.frames:,} frames, {size}")
    if report.removed_segments:
        removed = report.removed_segments
        print(
            f"removed by retention (as the log records): {len(removed)} segments, {removed[0]}..{removed[-1]}"
        )
    if report.key_fingerprint:
        print(f"checkpoints: {report.checkpoints} signed by key {report.key_fingerprint} ({key_source})")
        print(f"checkpoint file: {report.checkpoint_file_entries} entries match the log")
    else:
        print(f"checkpoints: {report.checkpoints} consistent, signatures NOT checked (no public key)")
    if (anchor := report.anchored) is not None:
        signed = dt.datetime.fromtimestamp(anchor.ts_ns / 1e9, dt.UTC).isoformat(timespec="seconds")
        print(
            f"anchored: up to segment {anchor.segment:012d} offset {anchor.offset} "
            f"({anchor.frames:,} frames, signed {signed})"
        )
    for note in report.notes:
        if note.segment != CHECKPOINT_FILE_SEGMENT:
            print(f"note: segment {note.segment:012d} offset {note.offset}: {note.reason}")
        elif note.reason != NO_KEY_NOTE:
            print(f"note: {note.reason}")
    if report.torn_tail is not None:
        torn = report.torn_tail
        print(
            f"torn tail: segment {torn.segment:012d} offset {torn.offset}: {torn.reason} "
            "(a crash or a write in progress; the gateway cuts it on start)"
        )


def cmd_reindex(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir
    if (missing := _missing(data_dir)) is not None:
        return missing
    try:
        with DataDirLock(data_dir):
            frames, exchanges = asyncio.run(_reindex(data_dir))
    except DataDirBusy as exc:
        print(f"wardgate: cannot reindex: {exc}; stop the gateway first", file=sys.stderr)
        return 2
    if args.json:
        _json_line(sys.stdout, {"frames": frames, "exchanges": exchanges})
    else:
        print(f"reindexed {frames:,} frames: {exchanges:,} exchanges in {index_path(data_dir)}")
    return 0


async def _reindex(data_dir: Path) -> tuple[int, int]:
    async with await SqliteIndex.open(index_path(data_dir)) as index:
        frames = await index.rebuild(data_dir)
        return frames, await index.count_exchanges()


# --- sessions, search ------------------------------------------------------------------------------


def cmd_sessions(args: argparse.Namespace) -> int:
    query = SessionQuery(
        user=args.user,
        group=args.group,
        since_ns=args.since,
        until_ns=args.until,
        model=args.model,
        status=args.status,
        limit=args.limit,
    )
    try:
        rows = asyncio.run(_sessions(args.data_dir, query))
    except StorageError as exc:
        return _fail(exc)
    if args.json:
        for row in rows:
            _json_line(sys.stdout, row)
        return 0
    print_sessions(rows, sys.stdout)
    return 0


async def _sessions(data_dir: Path, query: SessionQuery) -> list[SessionRow]:
    async with await SqliteIndex.open(index_path(data_dir), readonly=True) as index:
        return await index.sessions(query)


def print_sessions(rows: list[SessionRow], out: TextIO) -> None:
    if not rows:
        print("no sessions", file=out)
        return
    cells = [
        [
            render.sanitize_text(row.id),
            render.one_line(row.subject, 24),
            render.one_line(row.client_addr, 24),
            render.format_time(row.first_ns),
            render.format_ms(row.last_ns - row.first_ns),
            str(row.exchanges),
            str(row.errors),
            render.one_line(", ".join(row.models) or "-", 40),
        ]
        for row in rows
    ]
    headers = ["SESSION", "USER", "CLIENT", "STARTED (UTC)", "SPAN", "EXCHANGES", "ERRORS", "MODELS"]
    for line in render.table(headers, cells, right=frozenset({4, 5, 6})):
        print(line, file=out)


def cmd_search(args: argparse.Namespace) -> int:
    query = ExchangeQuery(
        user=args.user,
        group=args.group,
        session=args.session,
        path=args.path,
        status=args.status,
        model=args.model,
        since_ns=args.since,
        until_ns=args.until,
        text=args.text,
        limit=args.limit,
    )
    try:
        records = asyncio.run(_search(args.data_dir, query))
    except StorageError as exc:
        return _fail(exc)
    if args.json:
        for record in records:
            _json_line(sys.stdout, record)
        return 0
    if not records:
        print("no matching exchanges")
        return 0
    for line in render.table(
        render.EXCHANGE_HEADERS, [render.exchange_cells(r) for r in records], right=frozenset({4})
    ):
        print(line)
    return 0


async def _search(data_dir: Path, query: ExchangeQuery) -> list[ExchangeRecord]:
    async with await SqliteIndex.open(index_path(data_dir), readonly=True) as index:
        return await index.exchanges(query)


# --- tail ------------------------------------------------------------------------------------------


def cmd_tail(args: argparse.Namespace) -> int:
    return tail(args, sys.stdout, time.sleep)


def tail(args: argparse.Namespace, out: TextIO, sleep: Sleep) -> int:
    """Print finished exchanges from the log itself (not the index); with ``--follow`` poll for more.

    The last ``--lines`` come from reading back just enough segments (2, 4, 8, ...) to find them.
    """
    data_dir: Path = args.data_dir
    if (missing := _missing(data_dir)) is not None:
        return missing
    try:
        cursor, assembler = _print_recent(args, out)
        while args.follow:
            batch = cursor.read_new(10_000)
            if not batch:
                sleep(TAIL_POLL_S)
                continue
            for stored in batch:
                for record in assembler.feed(stored):
                    if _tail_match(record, args):
                        _emit(out, record, as_json=args.json)
            out.flush()
    except KeyboardInterrupt:
        return 0
    except StorageError as exc:
        return _fail(exc)
    return 0


def _print_recent(args: argparse.Namespace, out: TextIO) -> tuple[LogCursor, ExchangeAssembler]:
    segments = 2
    while True:
        starts = {
            n: recent_start(args.data_dir, segments=segments, series=n) for n in list_series(args.data_dir)
        }
        cursor = LogCursor(args.data_dir, starts)
        assembler = ExchangeAssembler()
        recent = [r for stored in _drain(cursor) for r in assembler.feed(stored) if _tail_match(r, args)]
        if len(starts) > 1:
            recent.sort(key=_finished_ns)  # series are merged per batch: order the whole lot once
        if len(recent) >= args.lines or all(start is None for start in starts.values()):
            break
        segments *= 2
    for record in recent[-args.lines :] if args.lines > 0 else []:
        _emit(out, record, as_json=args.json)
    out.flush()
    return cursor, assembler


def _drain(cursor: LogCursor) -> list[StoredFrame]:
    frames: list[StoredFrame] = []
    while batch := cursor.read_new(10_000):
        frames += batch
    return frames


def _finished_ns(record: ExchangeRecord) -> int:
    return record.started_ns + record.duration_ns


def _tail_match(record: ExchangeRecord, args: argparse.Namespace) -> bool:
    if args.user and args.user not in (record.subject, record.identity.email):
        return False
    if args.group and args.group not in record.identity.groups:
        return False
    if args.session and record.session_id != args.session:
        return False
    if args.path and not record.path.startswith(args.path):
        return False
    if args.status is not None and record.status != args.status:
        return False
    if args.model and record.model != args.model:
        return False
    if args.since is not None and record.started_ns < args.since:
        return False
    return not (args.until is not None and record.started_ns >= args.until)


def _emit(out: TextIO, record: ExchangeRecord, *, as_json: bool) -> None:
    if as_json:
        _json_line(out, record)
    else:
        print(render.exchange_line(record), file=out)


# --- replay ----------------------------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace) -> int:
    return replay(args, sys.stdout, time.sleep)


def replay(args: argparse.Namespace, out: TextIO, sleep: Sleep) -> int:
    data_dir: Path = args.data_dir
    if (missing := _missing(data_dir)) is not None:
        return missing
    try:
        kind, records = asyncio.run(_find(data_dir, args.id))
    except _Ambiguous as exc:
        print(f"wardgate: {exc}", file=sys.stderr)
        return 2
    except StorageError as exc:
        return _fail(exc)
    if not records:
        print(
            f"wardgate: no session or exchange {render.sanitize_text(args.id)!s} in {data_dir}",
            file=sys.stderr,
        )
        return 1
    if args.raw:
        if kind != "exchange":
            print("wardgate: --raw needs one exchange id, not a session", file=sys.stderr)
            return 2
        write_raw(exchange_frames(data_dir, records[0]), out, with_head=args.head)
        return 0
    for number, record in enumerate(records):
        frames = exchange_frames(data_dir, record)
        if args.json:
            _json_line(out, render.replayed(record, frames))
            continue
        if number:
            print(file=out)
        render.render_exchange(record, frames, out, speed=args.speed, sleep=sleep)
    return 0


class _Ambiguous(Exception):
    pass


async def _find(data_dir: Path, ident: str) -> tuple[Kind, list[ExchangeRecord]]:
    """What ``ident`` names and its records: from the index, else by scanning the log.

    Raises:
        _Ambiguous: ``ident`` is the start or end of several ids.
    """
    if index_path(data_dir).exists():
        async with await SqliteIndex.open(index_path(data_dir), readonly=True) as index:
            if (record := await index.exchange(ident)) is not None:
                return "exchange", [record]
            if found := await index.session_exchanges(ident):
                return "session", found
            matches = await index.match_ids(ident)
            if len(matches) > 1:
                names = ", ".join(f"{kind} {render.sanitize_text(full)}" for kind, full in matches)
                raise _Ambiguous(f"{render.sanitize_text(ident)} matches more than one id: {names}")
            if matches:
                kind, full = matches[0]
                if kind == "session":
                    return "session", await index.session_exchanges(full)
                return "exchange", [r for r in [await index.exchange(full)] if r is not None]
    return _scan_for(data_dir, ident)


def _scan_for(data_dir: Path, ident: str) -> tuple[Kind, list[ExchangeRecord]]:
    """Without the index (or before it caught up): assemble the whole log, keep what ``ident`` names."""
    assembler = ExchangeAssembler()
    found = [r for stored in iter_log(data_dir) for r in assembler.feed(stored) if _named(r, ident)]
    found += [r for r in assembler.pending() if _named(r, ident)]
    found.sort(key=lambda r: (r.started_ns, r.series, r.start))
    kind: Kind = "exchange" if any(r.exchange_id == ident for r in found) else "session"
    return kind, found


def _named(record: ExchangeRecord, ident: str) -> bool:
    return ident in (record.exchange_id, record.session_id)


def exchange_frames(data_dir: Path, record: ExchangeRecord) -> list[Frame]:
    """The frames of one exchange, read from its start position up to its last recorded frame."""
    end = Position(record.end_segment, record.end_offset)
    frames = []
    for stored in iter_frames(data_dir, record.start, series=record.series):
        if stored.frame.exchange_id == record.exchange_id:
            frames.append(stored.frame)
        if stored.position >= end and record.outcome != OPEN:
            break
    return frames


def response_parts(frames: list[Frame]) -> tuple[ResponseHead | None, list[bytes]]:
    """The final response head as the client got it, and the response body pieces as the client got them.

    The client's copy (TO_CLIENT) wins where the gateway recorded one; else the upstream's, relayed as is.
    """
    head: ResponseHead | None = None
    upstream: list[bytes] = []
    client: list[bytes] = []
    for frame in frames:
        event = frame.event
        if frame.direction not in _RESPONSE_SIDE:
            continue
        if isinstance(event, ResponseHead) and event.status >= 200:
            if head is None or frame.direction == Direction.TO_CLIENT:
                head = event
        elif isinstance(event, BodyChunk) and head is not None:
            (client if frame.direction == Direction.TO_CLIENT else upstream).append(event.data)
    return head, client or upstream


def write_raw(frames: list[Frame], out: TextIO, *, with_head: bool) -> None:
    head, body = response_parts(frames)
    sink = out.buffer
    out.flush()
    if with_head and head is not None:
        # The version the client got: "HTTP/2 200" (no reason phrase in HTTP/2), "HTTP/1.1 200 OK".
        status = b"HTTP/%s %d" % (head.http_version, head.status)
        sink.write(status + b" " + head.reason + b"\r\n" if head.reason else status + b"\r\n")
        for name, value in head.headers:
            sink.write(name + b": " + value + b"\r\n")
        sink.write(b"\r\n")
    for piece in body:
        sink.write(piece)
    sink.flush()


# --- shared ----------------------------------------------------------------------------------------


def _missing(data_dir: Path) -> int | None:
    if (data_dir / "segments").is_dir():
        return None
    print(f"wardgate: no session log in {data_dir} (wrong --data-dir?)", file=sys.stderr)
    return 1


def _fail(exc: StorageError) -> int:
    print(f"wardgate: {exc}", file=sys.stderr)
    return 1


def _json_line(out: TextIO, value: object) -> None:
    builtins = msgspec.to_builtins(value)
    if isinstance(value, ExchangeRecord):
        # Identity omits its defaults on the wire; JSON output keeps every field name present.
        builtins["identity"] = msgspec.to_builtins(msgspec.structs.asdict(value.identity))
    out.write(msgspec.json.encode(builtins).decode() + "\n")


__all__ = ["add_commands", "exchange_frames", "parse_time", "replay", "response_parts", "tail"]
