"""Storage: the frame codec, the append-only segment log, its readers, and the searchable index.

Does file and SQLite I/O through objects the gateway builds; starts no tasks or threads of its own
(aiosqlite's one connection thread aside). Imports ``parsers`` only.
"""

from storage.assemble import ExchangeAssembler, ExchangeRecord
from storage.checkpoints import CheckpointFile, read_checkpoint_file
from storage.codec import FORMAT_VERSION, Frame, decode_frame, encode_frame
from storage.errors import CorruptLog, DataDirBusy, LogWriteFailed, StorageError
from storage.holds import Hold, load_holds, place_hold, release_hold
from storage.index import INDEX_NAME, SqliteIndex, index_path
from storage.lock import DataDirLock
from storage.query import ExchangeQuery, IndexBackend, SessionQuery, SessionRow
from storage.reader import SegmentCursor, StoredFrame, iter_frames, recent_start
from storage.redact import load_or_create_key, redact_headers
from storage.retention import RetentionPlan, RetentionPolicy, plan_retention, remove_segments
from storage.segments import FileOps, Position, Recovery, SealedTail, SegmentLog
from storage.signing import PublicKey, SigningKey, load_or_create_signing_key, load_public_key
from storage.verify import Anchored, Unanchored, VerifyProblem, VerifyReport, verify

__all__ = [
    "FORMAT_VERSION",
    "INDEX_NAME",
    "Anchored",
    "CheckpointFile",
    "CorruptLog",
    "DataDirBusy",
    "DataDirLock",
    "ExchangeAssembler",
    "ExchangeQuery",
    "ExchangeRecord",
    "FileOps",
    "Frame",
    "Hold",
    "IndexBackend",
    "LogWriteFailed",
    "Position",
    "PublicKey",
    "Recovery",
    "RetentionPlan",
    "RetentionPolicy",
    "SealedTail",
    "SegmentCursor",
    "SegmentLog",
    "SessionQuery",
    "SessionRow",
    "SigningKey",
    "SqliteIndex",
    "StorageError",
    "StoredFrame",
    "Unanchored",
    "VerifyProblem",
    "VerifyReport",
    "decode_frame",
    "encode_frame",
    "index_path",
    "iter_frames",
    "load_holds",
    "load_or_create_key",
    "load_or_create_signing_key",
    "load_public_key",
    "place_hold",
    "plan_retention",
    "read_checkpoint_file",
    "recent_start",
    "redact_headers",
    "release_hold",
    "remove_segments",
    "verify",
]
