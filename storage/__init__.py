"""Storage: the frame codec, the append-only segment log, its readers, and the searchable index.

Does file and SQLite I/O through objects the gateway builds; starts no tasks or threads of its own
(aiosqlite's one connection thread aside). Imports ``parsers`` only.
"""

from storage.assemble import ExchangeAssembler, ExchangeRecord
from storage.codec import FORMAT_VERSION, Frame, decode_frame, encode_frame
from storage.errors import CorruptLog, DataDirBusy, StorageError
from storage.index import INDEX_NAME, SqliteIndex, index_path
from storage.lock import DataDirLock
from storage.query import ExchangeQuery, IndexBackend, SessionQuery, SessionRow
from storage.reader import SegmentCursor, StoredFrame, iter_frames, recent_start
from storage.redact import load_or_create_key, redact_headers
from storage.segments import Position, SegmentLog
from storage.verify import VerifyProblem, VerifyReport, verify

__all__ = [
    "FORMAT_VERSION",
    "INDEX_NAME",
    "CorruptLog",
    "DataDirBusy",
    "DataDirLock",
    "ExchangeAssembler",
    "ExchangeQuery",
    "ExchangeRecord",
    "Frame",
    "IndexBackend",
    "Position",
    "SegmentCursor",
    "SegmentLog",
    "SessionQuery",
    "SessionRow",
    "SqliteIndex",
    "StorageError",
    "StoredFrame",
    "VerifyProblem",
    "VerifyReport",
    "decode_frame",
    "encode_frame",
    "index_path",
    "iter_frames",
    "load_or_create_key",
    "recent_start",
    "redact_headers",
    "verify",
]
