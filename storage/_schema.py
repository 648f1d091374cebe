"""The SQLite index schema and the row <-> ExchangeRecord mapping (derived data: a version change simply
drops and rebuilds it from the log)."""

from __future__ import annotations

from typing import Any

import msgspec

from parsers.events import ConsoleAccess, Identity
from parsers.openai import ToolCall
from storage._format import Position
from storage.assemble import ExchangeRecord
from storage.query import AccessRow
from storage.reader import StoredFrame

_identity_decoder = msgspec.json.Decoder(Identity)
_tool_calls_decoder = msgspec.json.Decoder(list[ToolCall])
_json = msgspec.json.Encoder()

SCHEMA_VERSION = 6  # 6: console_access

# Record fields stored as plain columns, in ExchangeRecord order (identity and tool_calls go as JSON).
EXCHANGE_COLUMNS = (
    "exchange_id",
    "session_id",
    "conn_id",
    "subject",
    "email",
    "identity",
    "client_addr",
    "listener",
    "protocol",
    "upstream",
    "method",
    "path",
    "status",
    "outcome",
    "error",
    "started_ns",
    "ttfb_ns",
    "duration_ns",
    "request_bytes",
    "response_bytes",
    "stream",
    "api",
    "model",
    "prompt_text",
    "response_text",
    "tool_calls",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "chunks",
    "parse_error",
    "start_segment",
    "start_offset",
    "end_segment",
    "end_offset",
    "tls_version",
    "alpn",
    "series",
    "policy",
    "policy_rule",
)

_PLACEHOLDERS = ", ".join("?" for _ in EXCHANGE_COLUMNS)
_UPDATES = ", ".join(f"{c} = excluded.{c}" for c in EXCHANGE_COLUMNS if c != "exchange_id")

# An upsert, not INSERT OR REPLACE: REPLACE deletes the old row without firing delete triggers (unless
# recursive_triggers is on), which would leave stale FTS entries. An UPDATE keeps the rowid and the triggers.
UPSERT_EXCHANGE = (
    f"INSERT INTO exchanges ({', '.join(EXCHANGE_COLUMNS)}) VALUES ({_PLACEHOLDERS}) "
    f"ON CONFLICT(exchange_id) DO UPDATE SET {_UPDATES}"
)

SELECT_EXCHANGE = f"SELECT {', '.join('x.' + c for c in EXCHANGE_COLUMNS)} FROM exchanges AS x"

# Sessions are recomputed from their exchanges, so re-applying frames can never double-count.
REFRESH_SESSION = """
INSERT INTO sessions (id, subject, email, client_addr, first_ns, last_ns, exchanges, errors, models)
SELECT
    session_id,
    (SELECT subject FROM exchanges WHERE session_id = :id ORDER BY started_ns LIMIT 1),
    (SELECT email FROM exchanges WHERE session_id = :id ORDER BY started_ns LIMIT 1),
    (SELECT client_addr FROM exchanges WHERE session_id = :id ORDER BY started_ns LIMIT 1),
    MIN(started_ns),
    MAX(started_ns + duration_ns),
    COUNT(*),
    SUM(outcome != 'complete' OR status >= 400 OR error != ''),
    COALESCE((SELECT group_concat(model, ',') FROM
        (SELECT DISTINCT model FROM exchanges WHERE session_id = :id AND model != '' ORDER BY model)), '')
FROM exchanges WHERE session_id = :id GROUP BY session_id
ON CONFLICT(id) DO UPDATE SET
    subject = excluded.subject, email = excluded.email, client_addr = excluded.client_addr,
    first_ns = excluded.first_ns, last_ns = excluded.last_ns, exchanges = excluded.exchanges,
    errors = excluded.errors, models = excluded.models
"""

CREATE = """
CREATE TABLE IF NOT EXISTS exchanges (
    id INTEGER PRIMARY KEY,  -- explicit, so VACUUM cannot renumber the rowids the FTS table points at
    exchange_id TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL,
    conn_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    email TEXT NOT NULL,
    identity TEXT NOT NULL,
    client_addr TEXT NOT NULL,
    listener TEXT NOT NULL,
    protocol TEXT NOT NULL,
    upstream TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    status INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT NOT NULL,
    started_ns INTEGER NOT NULL,
    ttfb_ns INTEGER,
    duration_ns INTEGER NOT NULL,
    request_bytes INTEGER NOT NULL,
    response_bytes INTEGER NOT NULL,
    stream INTEGER NOT NULL,
    api TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_text TEXT NOT NULL,
    response_text TEXT NOT NULL,
    tool_calls TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    total_tokens INTEGER,
    chunks INTEGER NOT NULL,
    parse_error TEXT NOT NULL,
    start_segment INTEGER NOT NULL,
    start_offset INTEGER NOT NULL,
    end_segment INTEGER NOT NULL,
    end_offset INTEGER NOT NULL,
    tls_version TEXT NOT NULL DEFAULT '',
    alpn TEXT NOT NULL DEFAULT '',
    series INTEGER NOT NULL DEFAULT 0,  -- the segment series (gateway worker) its positions are in
    policy TEXT NOT NULL DEFAULT '',
    policy_rule TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS exchanges_started ON exchanges (started_ns);
CREATE INDEX IF NOT EXISTS exchanges_session ON exchanges (session_id, started_ns);
CREATE INDEX IF NOT EXISTS exchanges_subject ON exchanges (subject, started_ns);
CREATE INDEX IF NOT EXISTS exchanges_email ON exchanges (email, started_ns);
CREATE INDEX IF NOT EXISTS exchanges_model ON exchanges (model, started_ns);

CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    email TEXT NOT NULL,
    client_addr TEXT NOT NULL,
    first_ns INTEGER NOT NULL,
    last_ns INTEGER NOT NULL,
    exchanges INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    models TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS sessions_first ON sessions (first_ns);

CREATE VIRTUAL TABLE IF NOT EXISTS exchanges_fts USING fts5 (
    prompt_text, response_text,
    content = 'exchanges', content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS exchanges_fts_insert AFTER INSERT ON exchanges BEGIN
    INSERT INTO exchanges_fts (rowid, prompt_text, response_text)
    VALUES (new.id, new.prompt_text, new.response_text);
END;
CREATE TRIGGER IF NOT EXISTS exchanges_fts_delete AFTER DELETE ON exchanges BEGIN
    INSERT INTO exchanges_fts (exchanges_fts, rowid, prompt_text, response_text)
    VALUES ('delete', old.id, old.prompt_text, old.response_text);
END;
CREATE TRIGGER IF NOT EXISTS exchanges_fts_update AFTER UPDATE ON exchanges BEGIN
    INSERT INTO exchanges_fts (exchanges_fts, rowid, prompt_text, response_text)
    VALUES ('delete', old.id, old.prompt_text, old.response_text);
    INSERT INTO exchanges_fts (rowid, prompt_text, response_text)
    VALUES (new.id, new.prompt_text, new.response_text);
END;

-- The caller's groups, one row each, for --group: kept in step with exchanges.identity by triggers, so
-- every write path (upsert, retention's delete, a rebuild) maintains it without code of its own.
CREATE TABLE IF NOT EXISTS exchange_groups (
    exchange_rowid INTEGER NOT NULL,
    grp TEXT NOT NULL,
    PRIMARY KEY (grp, exchange_rowid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS exchange_groups_rowid ON exchange_groups (exchange_rowid);
CREATE TRIGGER IF NOT EXISTS exchange_groups_insert AFTER INSERT ON exchanges BEGIN
    INSERT OR IGNORE INTO exchange_groups (exchange_rowid, grp)
    SELECT new.id, value FROM json_each(new.identity, '$.groups') WHERE type = 'text';
END;
CREATE TRIGGER IF NOT EXISTS exchange_groups_delete AFTER DELETE ON exchanges BEGIN
    DELETE FROM exchange_groups WHERE exchange_rowid = old.id;
END;
CREATE TRIGGER IF NOT EXISTS exchange_groups_update AFTER UPDATE OF identity ON exchanges BEGIN
    DELETE FROM exchange_groups WHERE exchange_rowid = old.id;
    INSERT OR IGNORE INTO exchange_groups (exchange_rowid, grp)
    SELECT new.id, value FROM json_each(new.identity, '$.groups') WHERE type = 'text';
END;

-- Who used the admin API (ConsoleAccess frames), keyed by where each frame is in the log: re-reading a
-- stretch of the log re-inserts nothing, and retention drops the rows of the segments it removes.
CREATE TABLE IF NOT EXISTS console_access (
    series INTEGER NOT NULL,
    segment INTEGER NOT NULL,
    frame_offset INTEGER NOT NULL,
    ts_ns INTEGER NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    email TEXT NOT NULL,
    identity TEXT NOT NULL,
    target TEXT NOT NULL,
    query TEXT NOT NULL,
    client_addr TEXT NOT NULL,
    PRIMARY KEY (series, segment, frame_offset)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS console_access_ts ON console_access (ts_ns);
CREATE INDEX IF NOT EXISTS console_access_subject ON console_access (subject, ts_ns);
CREATE INDEX IF NOT EXISTS console_access_email ON console_access (email, ts_ns);
CREATE INDEX IF NOT EXISTS console_access_target ON console_access (target, ts_ns);

CREATE TABLE IF NOT EXISTS index_state (
    id INTEGER PRIMARY KEY,  -- the segment series (0: <data>/segments, k: <data>/workers/k)
    resume_segment INTEGER,  -- NULL: read the log from its first segment
    resume_offset INTEGER,
    resume_chain BLOB,  -- the log's chain hash at the resume position: detects a log that lost its tail
    frames INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO index_state (id, resume_segment, resume_offset, frames) VALUES (0, NULL, NULL, 0);
"""

DROP = """
DROP TRIGGER IF EXISTS exchange_groups_insert;
DROP TRIGGER IF EXISTS exchange_groups_delete;
DROP TRIGGER IF EXISTS exchange_groups_update;
DROP TABLE IF EXISTS exchange_groups;
DROP TRIGGER IF EXISTS exchanges_fts_insert;
DROP TRIGGER IF EXISTS exchanges_fts_delete;
DROP TRIGGER IF EXISTS exchanges_fts_update;
DROP TABLE IF EXISTS exchanges_fts;
DROP TABLE IF EXISTS exchanges;
DROP TABLE IF EXISTS sessions;
DROP TABLE IF EXISTS index_state;
DROP TABLE IF EXISTS console_access;
"""

INSERT_ACCESS = (
    "INSERT OR IGNORE INTO console_access (series, segment, frame_offset, ts_ns, action, subject, email,"
    " identity, target, query, client_addr) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
SELECT_ACCESS = (
    "SELECT series, segment, frame_offset, ts_ns, action, identity, target, query, client_addr"
    " FROM console_access"
)


def row_of(record: ExchangeRecord) -> tuple[Any, ...]:
    values = msgspec.structs.asdict(record)
    values["email"] = record.identity.email
    values["identity"] = _json.encode(record.identity).decode()
    values["tool_calls"] = _json.encode(record.tool_calls).decode()
    values["stream"] = int(record.stream)
    return tuple(values[column] for column in EXCHANGE_COLUMNS)


def access_row_of(stored: StoredFrame, event: ConsoleAccess) -> tuple[Any, ...]:
    identity = event.identity
    return (
        stored.series,
        stored.position.segment,
        stored.position.offset,
        stored.frame.ts_ns,
        event.action,
        identity.subject,
        identity.email,
        _json.encode(identity).decode(),
        event.target,
        event.query,
        event.client_addr,
    )


def access_of(row: Any) -> AccessRow:
    series, segment, offset, ts_ns, action, identity, target, query, client_addr = row
    event = ConsoleAccess(
        action=action,
        identity=_identity_decoder.decode(identity),
        target=target,
        query=query,
        client_addr=client_addr,
    )
    return AccessRow(series=series, position=Position(int(segment), int(offset)), ts_ns=ts_ns, event=event)


def record_of(row: Any) -> ExchangeRecord:
    values = dict(zip(EXCHANGE_COLUMNS, row, strict=True))
    del values["email"]
    values["identity"] = _identity_decoder.decode(values["identity"])
    values["tool_calls"] = _tool_calls_decoder.decode(values["tool_calls"])
    values["stream"] = bool(values["stream"])
    return ExchangeRecord(**values)


__all__ = [
    "CREATE",
    "DROP",
    "EXCHANGE_COLUMNS",
    "INSERT_ACCESS",
    "REFRESH_SESSION",
    "SCHEMA_VERSION",
    "SELECT_ACCESS",
    "SELECT_EXCHANGE",
    "UPSERT_EXCHANGE",
    "access_of",
    "access_row_of",
    "record_of",
    "row_of",
]
