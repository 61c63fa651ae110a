"""The registry's SQLite file: subjects, immutable numbered versions, approvals, a change counter.

WAL mode; every change runs in a ``BEGIN IMMEDIATE`` transaction so several processes can
share one file without lost updates. The database itself enforces the invariants the
registry relies on, so a bug (or a hand-edited file) cannot break them silently: at most one
active and one proposed version per subject (partial unique indexes), version content is
immutable and rows are never deleted (triggers), rejected and superseded are final states.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from eventward._internal.home import private_file
from eventward.errors import ConfigError, ConflictError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS subjects (
    type TEXT PRIMARY KEY,
    mode TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    type TEXT NOT NULL,
    version INTEGER NOT NULL CHECK (version >= 1),
    fmt TEXT NOT NULL CHECK (fmt IN ('json', 'avro')),
    document BLOB NOT NULL,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('proposed', 'active', 'rejected', 'superseded')),
    proposer TEXT NOT NULL,
    report TEXT NOT NULL,
    created_at REAL NOT NULL,
    decided_at REAL,
    decided_by TEXT,
    PRIMARY KEY (type, version)
);
CREATE UNIQUE INDEX IF NOT EXISTS one_active ON versions(type) WHERE state = 'active';
CREATE UNIQUE INDEX IF NOT EXISTS one_proposed ON versions(type) WHERE state = 'proposed';
CREATE TABLE IF NOT EXISTS approvals (
    type TEXT NOT NULL,
    version INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('schema', 'security')),
    principal TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (type, version, kind)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta(key, value) VALUES ('generation', 0);
CREATE TRIGGER IF NOT EXISTS versions_immutable BEFORE UPDATE OF type, version, fmt, document, fingerprint,
    proposer, report, created_at ON versions
BEGIN SELECT RAISE(ABORT, 'schema versions are immutable'); END;
CREATE TRIGGER IF NOT EXISTS versions_final BEFORE UPDATE OF state ON versions
    WHEN OLD.state IN ('rejected', 'superseded') OR NEW.state = 'proposed'
BEGIN SELECT RAISE(ABORT, 'rejected and superseded versions are final'); END;
CREATE TRIGGER IF NOT EXISTS versions_kept BEFORE DELETE ON versions
BEGIN SELECT RAISE(ABORT, 'schema versions are never deleted'); END;
CREATE TRIGGER IF NOT EXISTS approvals_kept BEFORE DELETE ON approvals
BEGIN SELECT RAISE(ABORT, 'approvals are never deleted'); END;
"""


@dataclass(frozen=True)
class Row:
    type: str
    version: int
    fmt: str
    document: bytes
    fingerprint: str
    state: str
    proposer: str
    report: str
    created_at: float


_ROW_COLS = "type, version, fmt, document, fingerprint, state, proposer, report, created_at"


class Store:
    """One connection per Store, serialised by a lock (sqlite3 connections are not thread-safe)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        private_file(self.path)  # 0600 before SQLite opens it; -wal/-shm inherit the mode
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout = 30000")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")  # control plane: rare writes, each must survive
            self._db.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")
        except sqlite3.Error as e:
            raise ConfigError(f"schema registry {self.path} cannot be opened: {e}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, taken before reading so checks and writes see one state."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as e:
                raise ConflictError(f"schema registry is busy, retry ({e})") from None
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as e:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    raise _typed(e) from None
                raise

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: several SELECTs see one consistent snapshot."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            except sqlite3.Error as e:
                raise _typed(e) from None
            finally:
                self._db.execute("ROLLBACK")

    # --- queries (call inside read() or write()) ---------------------------------------------

    @staticmethod
    def generation(db: sqlite3.Connection) -> int:
        return int(db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])

    @staticmethod
    def bump(db: sqlite3.Connection) -> None:
        db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")

    @staticmethod
    def mode(db: sqlite3.Connection, type_: str) -> str | None:
        row = db.execute("SELECT mode FROM subjects WHERE type = ?", (type_,)).fetchone()
        return None if row is None else str(row[0])

    @staticmethod
    def set_mode(db: sqlite3.Connection, type_: str, mode: str) -> None:
        db.execute(
            "INSERT INTO subjects(type, mode, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT(type) DO UPDATE SET mode = excluded.mode",
            (type_, mode, time.time()),
        )

    @staticmethod
    def versions(db: sqlite3.Connection, type_: str) -> list[Row]:
        cur = db.execute(f"SELECT {_ROW_COLS} FROM versions WHERE type = ? ORDER BY version", (type_,))
        return [Row(*r) for r in cur.fetchall()]

    @staticmethod
    def row(
        db: sqlite3.Connection, type_: str, version: int | None = None, state: str | None = None
    ) -> Row | None:
        if version is not None:
            cur = db.execute(
                f"SELECT {_ROW_COLS} FROM versions WHERE type = ? AND version = ?", (type_, version)
            )
        else:
            cur = db.execute(f"SELECT {_ROW_COLS} FROM versions WHERE type = ? AND state = ?", (type_, state))
        r = cur.fetchone()
        return None if r is None else Row(*r)

    @staticmethod
    def insert(db: sqlite3.Connection, row: Row) -> None:
        db.execute(
            f"INSERT INTO versions({_ROW_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.type,
                row.version,
                row.fmt,
                row.document,
                row.fingerprint,
                row.state,
                row.proposer,
                row.report,
                row.created_at,
            ),
        )

    @staticmethod
    def set_state(db: sqlite3.Connection, type_: str, version: int, state: str, by: str) -> None:
        db.execute(
            "UPDATE versions SET state = ?, decided_at = ?, decided_by = ? WHERE type = ? AND version = ?",
            (state, time.time(), by, type_, version),
        )

    @staticmethod
    def approvals(db: sqlite3.Connection, type_: str, version: int) -> list[tuple[str, str]]:
        cur = db.execute(
            "SELECT kind, principal FROM approvals WHERE type = ? AND version = ? ORDER BY kind",
            (type_, version),
        )
        return [(str(k), str(p)) for k, p in cur.fetchall()]

    @staticmethod
    def approve(db: sqlite3.Connection, type_: str, version: int, kind: str, principal: str) -> None:
        db.execute(
            "INSERT OR IGNORE INTO approvals(type, version, kind, principal, at) VALUES (?, ?, ?, ?, ?)",
            (type_, version, kind, principal, time.time()),
        )

    @staticmethod
    def subjects(db: sqlite3.Connection) -> list[tuple[str, str]]:
        """(type, mode) of every subject with a mode row or a version."""
        cur = db.execute(
            "SELECT type, COALESCE((SELECT mode FROM subjects s WHERE s.type = t.type), '') FROM "
            "(SELECT type FROM subjects UNION SELECT type FROM versions) t ORDER BY type"
        )
        return [(str(t), str(m)) for t, m in cur.fetchall()]


def _typed(e: sqlite3.Error) -> ConflictError | ConfigError:
    if isinstance(e, sqlite3.IntegrityError):
        return ConflictError(f"registry update refused by the database: {e}")
    if isinstance(e, sqlite3.OperationalError):
        return ConflictError(f"schema registry is busy or unavailable, retry ({e})")
    return ConfigError(f"schema registry database error: {e}")
