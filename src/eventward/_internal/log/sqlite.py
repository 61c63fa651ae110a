"""Opening SQLite files the same way everywhere: WAL, a busy timeout, explicit transactions.

Several processes share a deployment home, so every connection waits for the write lock
instead of failing, and every write is an explicit BEGIN IMMEDIATE ... COMMIT so a batch is
either wholly visible or not at all.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from eventward._internal.home import private_file
from eventward.errors import ConfigError, TransportError, TransportUnavailable

BUSY_TIMEOUT_MS = 10_000


def connect(path: Path, *, synchronous: str = "FULL") -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) usable from any thread.
    The file is created 0600 first (home.private_file), so its -wal/-shm files are private too."""
    try:
        private_file(path)
    except ConfigError:
        raise TransportUnavailable(f"cannot open database {path.name}: not a private regular file") from None
    try:
        conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
        )
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.Error as e:
        raise TransportUnavailable(f"cannot open database {path.name}: {type(e).__name__}") from None
    return conn


@contextmanager
def write_txn(conn: sqlite3.Connection, what: str) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT; rolls back on any exception, maps SQLite failures to a typed error."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as e:
        raise TransportUnavailable(
            f"{what}: database is busy or unavailable ({e.sqlite_errorname})"
        ) from None
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException as e:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if isinstance(e, sqlite3.OperationalError):
            raise TransportUnavailable(f"{what}: {e.sqlite_errorname}") from None
        if isinstance(e, sqlite3.Error):  # e.g. a constraint broken by rows written behind our back
            raise TransportError(f"{what}: {getattr(e, 'sqlite_errorname', type(e).__name__)}") from None
        raise


@contextmanager
def read_txn(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A read snapshot, so multi-statement reads see one consistent state."""
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")
