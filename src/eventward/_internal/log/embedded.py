"""The embedded event log: sealed batches in one SQLite file, shared by any number of processes.

Durability: WAL with ``synchronous=FULL``, so ``append`` returns only after the batch's WAL
frames are fsynced: an acknowledged batch survives kill -9 of any process and power loss.
A batch is one BEGIN IMMEDIATE transaction (its events, its seal and the stream's next
offset together), so no reader ever sees part of a batch. Offsets are dense per stream and
assigned under the write lock.

A consumer group's committed offset is fsynced at least once per ``OFFSET_SYNC_S`` of commits
(a commit within that time of the last fsynced one is written with ``synchronous=NORMAL``:
it survives kill -9, and the next fsync of the file, e.g. any append, makes it durable).
An fsync per read batch cost a consumer 5-8 us per event, a tenth of its work. Power loss can
then move a group back by at most that much consumption: events are redelivered (the replay
guard, or the handler's idempotence, takes them), never skipped and never lost.

Partition streams (``T.p<n>``, log/partitions.py) live in files of their own
(``log.parts/<stream>.db``), so processes appending to different partitions of one topic do
not queue for one write lock and one fsync. Partition 0 is the topic's stream in ``log.db``, as
an unpartitioned topic's (no migration); a stream of that shape already in ``log.db`` stays there.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from itertools import repeat
from pathlib import Path

from eventward._internal.home import Home
from eventward._internal.log.base import Record
from eventward._internal.log.names import check_stream_name
from eventward._internal.log.partitions import split_stream
from eventward._internal.log.sqlite import connect, read_txn, write_txn
from eventward.errors import InputError, NotFoundError, TransportError, TransportUnavailable

_MAX_BATCH_ID = 200
OFFSET_SYNC_S = 1.0  # a group offset commit is fsynced at least this often (seconds of commits)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS streams(
    name TEXT PRIMARY KEY, next_offset INTEGER NOT NULL, replicas INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS batches(
    id INTEGER PRIMARY KEY, stream TEXT NOT NULL, batch_id TEXT NOT NULL, first_offset INTEGER NOT NULL,
    count INTEGER NOT NULL, seal BLOB NOT NULL, UNIQUE(stream, batch_id));
CREATE TABLE IF NOT EXISTS events(
    stream TEXT NOT NULL, offset INTEGER NOT NULL, batch INTEGER NOT NULL, idx INTEGER NOT NULL,
    data BLOB NOT NULL, UNIQUE(stream, offset));
CREATE TABLE IF NOT EXISTS offsets(
    grp TEXT NOT NULL, stream TEXT NOT NULL, offset INTEGER NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY(grp, stream));
"""


_Db = tuple[threading.Lock, sqlite3.Connection]


def _open_db(path: Path) -> _Db:
    lock = threading.Lock()
    conn = connect(path, synchronous="FULL")
    with lock, write_txn(conn, "create log schema") as db:
        for stmt in _SCHEMA.split(";"):
            if stmt.strip():
                db.execute(stmt)
    return lock, conn


class EmbeddedLog:
    """Transport over ``Home.log_db`` (and ``log.parts/`` beside it for partition streams).
    Thread-safe; one connection per file and instance."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock, self._db = _open_db(path)
        self._parts = path.parent / "log.parts"
        self._shards: dict[str, _Db] = {}
        self._shards_lock = threading.Lock()
        self._closed = False
        self._synced: dict[sqlite3.Connection, float] = {}  # when an offset commit on it last fsynced
        self._clock = time.monotonic

    def _where(self, stream: str, *, create: bool = False) -> _Db | None:
        """The file holding ``stream``: ``log.db``, or its partition file (None: it has none yet)."""
        if split_stream(stream) is None:
            return self._lock, self._db
        hit = self._shards.get(stream)
        if hit is not None:
            return hit
        check_stream_name(stream)  # it names a file
        with self._lock:
            legacy = self._db.execute("SELECT 1 FROM streams WHERE name = ?", (stream,)).fetchone()
        if legacy is not None:
            return self._lock, self._db
        path = self._parts / f"{stream}.db"
        with self._shards_lock:
            hit = self._shards.get(stream)
            if hit is None:
                if self._closed:
                    raise TransportError("the embedded log is closed")
                if not create and not path.exists():
                    return None
                self._parts.mkdir(mode=0o700, exist_ok=True)
                hit = self._shards[stream] = _open_db(path)
        return hit

    def _all(self) -> list[_Db]:
        """log.db and every partition file."""
        if self._parts.is_dir():
            for f in sorted(self._parts.glob("*.db")):
                if split_stream(f.stem) is not None:
                    self._where(f.stem)
        with self._shards_lock:
            return [(self._lock, self._db), *self._shards.values()]

    @classmethod
    def open(cls, home: Home) -> EmbeddedLog:
        return cls(home.ensure().log_db)

    # --- stream admin ----------------------------------------------------------------------
    def create_stream(self, stream: str, *, replicas: int = 1) -> None:
        """Idempotent: creating an existing stream is a no-op (producers call it lazily)."""
        check_stream_name(stream)
        if replicas != 1:
            raise InputError("the embedded log keeps one replica; use NATS or Kafka for replication")
        lock, conn = self._where(stream, create=True) or (self._lock, self._db)
        with lock, write_txn(conn, f"create stream {stream}") as db:
            db.execute(
                "INSERT OR IGNORE INTO streams(name, next_offset, replicas, created) VALUES (?, 0, 1, ?)",
                (stream, time.time()),
            )

    def streams(self) -> list[str]:
        names: set[str] = set()
        for lock, conn in self._all():
            with lock:
                names.update(r[0] for r in conn.execute("SELECT name FROM streams"))
        return sorted(names)

    def has_stream(self, stream: str) -> bool:
        where = self._where(stream)
        if where is None:
            return False
        with where[0]:
            return where[1].execute("SELECT 1 FROM streams WHERE name = ?", (stream,)).fetchone() is not None

    def end_offset(self, stream: str) -> int:
        where = self._where(stream)
        if where is None:
            return 0
        with where[0]:
            row = where[1].execute("SELECT next_offset FROM streams WHERE name = ?", (stream,)).fetchone()
        return row[0] if row else 0

    # --- data ------------------------------------------------------------------------------
    def append(self, stream: str, batch_id: str, events: Sequence[bytes], seal: bytes) -> int:
        if not isinstance(batch_id, str) or not 0 < len(batch_id) <= _MAX_BATCH_ID:
            raise InputError(f"batch id must be 1..{_MAX_BATCH_ID} characters")
        if not events or not seal:
            raise InputError("a batch needs at least one event and a seal")
        if not all(type(e) is bytes for e in events):  # a producer's batch: stored as given
            if not all(isinstance(e, bytes | bytearray | memoryview) for e in events):
                raise InputError("batch events must be bytes (the exact bytes the seal covers)")
            events = [bytes(e) for e in events]
        where = self._where(stream)
        if where is None:
            raise NotFoundError(f"stream {stream!r} does not exist")
        with where[0], write_txn(where[1], f"append to {stream}") as db:
            row = db.execute(
                "SELECT first_offset FROM batches WHERE stream = ? AND batch_id = ?", (stream, batch_id)
            ).fetchone()
            if row:  # a retry of an acknowledged batch: store nothing
                return int(row[0])
            row = db.execute("SELECT next_offset FROM streams WHERE name = ?", (stream,)).fetchone()
            if row is None:
                raise NotFoundError(f"stream {stream!r} does not exist")
            first = int(row[0])
            cur = db.execute(
                "INSERT INTO batches(stream, batch_id, first_offset, count, seal) VALUES (?, ?, ?, ?, ?)",
                (stream, batch_id, first, len(events), bytes(seal)),
            )
            bid = cur.lastrowid
            n = len(events)
            db.executemany(  # the rows zipped in C: (stream, offset, batch, index, bytes)
                "INSERT INTO events(stream, offset, batch, idx, data) VALUES (?, ?, ?, ?, ?)",
                zip(repeat(stream, n), range(first, first + n), repeat(bid, n), range(n), events, strict=True),
            )
            db.execute("UPDATE streams SET next_offset = ? WHERE name = ?", (first + len(events), stream))
            return first

    def read(self, stream: str, offset: int, max_records: int) -> list[Record]:
        """Records from ``offset`` on. An event row without a stored batch comes back with an
        empty seal, so an injected event is refused by verification instead of vanishing."""
        if max_records <= 0:
            return []
        where = self._where(stream)
        if where is None:
            return []
        try:
            with where[0], read_txn(where[1]) as db:
                rows = db.execute(
                    "SELECT offset, batch, idx, data FROM events WHERE stream = ? AND offset >= ? "
                    "ORDER BY offset LIMIT ?",
                    (stream, max(0, offset), max_records),
                ).fetchall()
                ids = sorted({r[1] for r in rows if type(r[1]) is int})  # others match no batch
                seals: dict[int, tuple[str, bytes]] = {}
                for i in range(0, len(ids), 500):
                    chunk = ids[i : i + 500]
                    q = f"SELECT id, batch_id, seal FROM batches WHERE id IN ({','.join('?' * len(chunk))})"
                    seals.update((r[0], (r[1], r[2])) for r in db.execute(q, chunk))
        except sqlite3.OperationalError as e:
            raise TransportUnavailable(f"read from {stream}: {e.sqlite_errorname}") from None
        out = []
        new, none = tuple.__new__, ("", b"")  # Record's fields in one allocation (its __new__ is Python code)
        for off, bid, idx, data in rows:
            if type(off) is not int:  # a row written behind our back, which no offset can name
                raise TransportError(f"read from {stream}: a stored event has no integer offset (corrupted log)")
            batch_id, seal = seals.get(bid, none) if type(bid) is int else none
            # a non-integer index is in no seal: verification refuses the event instead of crashing
            out.append(new(Record, (stream, off, data if type(data) is bytes else _blob(data),
                                    batch_id if type(batch_id) is str else str(batch_id),
                                    idx if type(idx) is int else -1, seal if type(seal) is bytes else _blob(seal))))
        return out

    # --- consumer groups -------------------------------------------------------------------
    def commit(self, group: str, stream: str, offset: int) -> None:
        if not group or len(group) > 200:
            raise InputError("consumer group name must be 1..200 characters")
        lock, conn = self._where(stream, create=True) or (self._lock, self._db)
        with lock:
            now = self._clock()
            durable = now - self._synced.get(conn, -OFFSET_SYNC_S) >= OFFSET_SYNC_S
            if not durable:  # see the module docstring: bounded, never past what was handled
                conn.execute("PRAGMA synchronous=NORMAL")
            try:
                with write_txn(conn, f"commit offset for {stream}") as db:
                    db.execute(
                        "INSERT INTO offsets(grp, stream, offset, updated) VALUES (?, ?, ?, ?) ON CONFLICT(grp, "
                        "stream) DO UPDATE SET offset = excluded.offset, updated = excluded.updated",
                        (group, stream, int(offset), time.time()),
                    )
            finally:
                if not durable:  # appends on this connection keep their fsync
                    conn.execute("PRAGMA synchronous=FULL")
            if durable:
                self._synced[conn] = now

    def committed(self, group: str, stream: str) -> int | None:
        where = self._where(stream)
        if where is None:
            return None
        with where[0]:
            row = where[1].execute(
                "SELECT offset FROM offsets WHERE grp = ? AND stream = ?", (group, stream)
            ).fetchone()
        return int(row[0]) if row else None

    def groups(self) -> list[tuple[str, str, int]]:
        """(group, stream, committed offset) for every consumer group, for the CLI."""
        out: list[tuple[str, str, int]] = []
        for lock, conn in self._all():
            with lock:
                out += [(r[0], r[1], int(r[2])) for r in conn.execute("SELECT grp, stream, offset FROM offsets")]
        return sorted(out)

    def close(self) -> None:
        with self._shards_lock:
            self._closed = True
            shards, self._shards = list(self._shards.values()), {}
        for lock, conn in [(self._lock, self._db), *shards]:
            with lock:
                conn.close()


def _blob(value: object) -> bytes:
    """Column values as bytes even if someone stored another SQLite type behind our back:
    verification then refuses them instead of crashing on a str or an int."""
    if type(value) is bytes:
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return b"" if value is None else str(value).encode()
