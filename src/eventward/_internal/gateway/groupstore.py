"""Where the gateway's consumer groups keep their state: the home's SQLite, or the shared PostgreSQL.

A gateway group (``groups.ConsumerGroups``) is served by whichever ``serve`` replica a request
reaches, so nothing about it may live in one replica's memory or files. Per group (``gid``):

* ``gw_offsets``: the committed offset per stream (one per partition stream of a topic);
* ``gw_seen`` / ``gw_seqs``: the durable replay state (ids settled, highest sequence per producer
  instance and stream), each row stamped with the group's ``version`` at the ack that wrote it,
  so a replica catches up by reading only the rows newer than the version it last saw;
* ``gw_fetches``: per (group, topic), the last fetch's staged replay entries and how far it read
  per stream (what an ack on any replica may commit), and the fetch lease (holder, expiry).

Every write runs in one transaction holding the group's lock (PostgreSQL: an advisory lock keyed
by the group, so different groups never wait for each other; SQLite: ``BEGIN IMMEDIATE``), and
checks what it depends on inside it: an ack commits only what a fetch delivered and never moves
an offset back; a fetch records its batch only if no ack moved the offsets it read from. The
statements are written once, in the dialect both backends share (``store.sqlcompat`` qualifies
the table names and placeholders for PostgreSQL).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from eventward._internal.log.sqlite import connect, write_txn
from eventward.errors import ConflictError

# (producer, stream, offset, event_id, instance, seq, status, mode): one staged replay entry
Entry = list[Any]
GROUP_LOCK = 0x65774777  # pg_advisory_xact_lock(GROUP_LOCK, hashtext(gid)): one writer per group
_PRUNE_EVERY = 64  # acks of a group between two prunes of its replay window

SQLITE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS gw_groups(gid TEXT PRIMARY KEY, version INTEGER NOT NULL DEFAULT 0, "
    "acks INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS gw_offsets(gid TEXT NOT NULL, stream TEXT NOT NULL, committed INTEGER NOT NULL, "
    "PRIMARY KEY(gid, stream))",
    "CREATE TABLE IF NOT EXISTS gw_seen(gid TEXT NOT NULL, producer TEXT NOT NULL, id TEXT NOT NULL, "
    "stream TEXT NOT NULL, off INTEGER NOT NULL, status TEXT NOT NULL, at REAL NOT NULL, "
    "version INTEGER NOT NULL, PRIMARY KEY(gid, producer, id))",
    "CREATE INDEX IF NOT EXISTS gw_seen_version ON gw_seen(gid, version)",
    "CREATE INDEX IF NOT EXISTS gw_seen_at ON gw_seen(gid, at)",
    "CREATE TABLE IF NOT EXISTS gw_seqs(gid TEXT NOT NULL, producer TEXT NOT NULL, instance TEXT NOT NULL, "
    "stream TEXT NOT NULL, seq INTEGER NOT NULL, version INTEGER NOT NULL, "
    "PRIMARY KEY(gid, producer, instance, stream))",
    "CREATE INDEX IF NOT EXISTS gw_seqs_version ON gw_seqs(gid, version)",
    "CREATE TABLE IF NOT EXISTS gw_fetches(gid TEXT NOT NULL, topic TEXT NOT NULL, holder TEXT, "
    "lease_until REAL NOT NULL DEFAULT 0, upto BLOB NOT NULL, entries BLOB NOT NULL, PRIMARY KEY(gid, topic))",
)
# SQLite name -> (PostgreSQL name, key column) for store.sqlcompat (migration 7 creates them)
PG_TABLES = {
    name: (f"eventward_control.{name}", "gid")
    for name in ("gw_groups", "gw_offsets", "gw_seen", "gw_seqs", "gw_fetches")
}


class Cursor(Protocol):
    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Txn(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...


@dataclass(frozen=True)
class Changes:
    """Replay rows of a group written after ``since`` (every one, when ``since`` is None)."""

    version: int
    seen: list[tuple[str, str, str, int, str, float]]  # producer, id, stream, offset, status, at
    seqs: list[tuple[str, str, str, int]]  # producer, instance, stream, seq


class _Backend(Protocol):
    def read(self, sql: str, params: Sequence[Any]) -> list[Any]: ...

    def txn(self, gid: str, what: str) -> Any: ...

    def close(self) -> None: ...


class _Sqlite:
    """The home's ``consumers/gateway.db``: one connection, one writer (BEGIN IMMEDIATE)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = connect(path, synchronous="NORMAL")
        self._lock = threading.Lock()
        with self._lock, write_txn(self._db, "create gateway group tables") as db:
            for stmt in SQLITE_SCHEMA:
                db.execute(stmt)

    def read(self, sql: str, params: Sequence[Any]) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    @contextmanager
    def txn(self, gid: str, what: str) -> Iterator[sqlite3.Connection]:
        with self._lock, write_txn(self._db, what) as db:
            yield db

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _Pg:
    """The shared database (migration 7): reads on the pool, writes under the group's advisory lock."""

    def __init__(self, tables: Any) -> None:
        self._tables = tables  # store.sqlcompat.PgTables over PG_TABLES
        self.database = tables.db

    def read(self, sql: str, params: Sequence[Any]) -> list[Any]:
        return self._tables.execute(sql, params).fetchall()

    @contextmanager
    def txn(self, gid: str, what: str) -> Iterator[Txn]:
        tables = self._tables

        class _Exec:
            def __init__(self, conn: Any) -> None:
                self._conn = conn

            def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
                out: Cursor = self._conn.execute(tables.sql(sql), tuple(params))
                return out

        with tables.db.connection(what) as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (GROUP_LOCK, gid))
            yield _Exec(conn)

    def close(self) -> None:
        self._tables.close()


class GroupStore:
    """The state of every gateway group, on SQLite or PostgreSQL (``open_sqlite`` / ``open_pg``)."""

    def __init__(self, backend: _Backend, *, clock: Callable[[], float] = time.time) -> None:
        self._b = backend
        self._clock = clock
        # (seconds, ids) of replay state kept per group: the groups' guard window (ConsumerGroups sets it)
        self.window: tuple[float, int] = (48 * 3600.0, 100_000)

    @classmethod
    def open_sqlite(cls, path: Path) -> GroupStore:
        return cls(_Sqlite(path))

    @classmethod
    def open_pg(cls, tables: Any) -> GroupStore:
        """Over a ``store.sqlcompat.PgTables`` of ``PG_TABLES`` (closed with this store)."""
        return cls(_Pg(tables))

    def close(self) -> None:
        self._b.close()

    @property
    def database(self) -> Any:
        """The shared ``store.pg.Database`` (None on SQLite): the gateway's quota buckets use it too."""
        return self._b.database if isinstance(self._b, _Pg) else None

    # --- reads -------------------------------------------------------------------------------
    def exists(self, gid: str) -> bool:
        return bool(self._b.read("SELECT 1 FROM gw_groups WHERE gid = ?", (gid,)))

    def committed(self, gid: str, streams: Sequence[str]) -> dict[str, int | None]:
        """The committed offset per stream (None: never committed here)."""
        rows = dict(self._b.read("SELECT stream, committed FROM gw_offsets WHERE gid = ?", (gid,)))
        return {s: rows.get(s) for s in streams}

    def changes(self, gid: str, since: int | None, *, horizon: float = 0.0, limit: int = 100_000) -> Changes:
        """What a replica's copy of the group's replay state lacks. The version is read first, so
        rows committed meanwhile are read now or next time (applying one twice changes nothing)."""
        row = self._b.read("SELECT version FROM gw_groups WHERE gid = ?", (gid,))
        version = int(row[0][0]) if row else 0
        if since is not None and version == since:
            return Changes(version, [], [])
        after = -1 if since is None else since
        seen = self._b.read(
            "SELECT producer, id, stream, off, status, at FROM gw_seen WHERE gid = ? AND version > ? AND at >= ? "
            "ORDER BY at DESC LIMIT ?",
            (gid, after, horizon, limit),
        )
        seqs = self._b.read(
            "SELECT producer, instance, stream, seq FROM gw_seqs WHERE gid = ? AND version > ?", (gid, after)
        )
        return Changes(version, [tuple(r) for r in reversed(seen)], [tuple(r) for r in seqs])

    # --- the fetch lease ---------------------------------------------------------------------
    def try_lease(self, gid: str, topic: str, holder: str, ttl: float) -> bool:
        """Take the fetch lease of (group, topic) if it is free, expired or ``holder``'s."""
        now = self._clock()
        with self._b.txn(gid, "lease a gateway group") as db:
            db.execute("INSERT INTO gw_groups(gid) VALUES (?) ON CONFLICT(gid) DO NOTHING", (gid,))
            row = db.execute(
                "SELECT holder, lease_until FROM gw_fetches WHERE gid = ? AND topic = ?", (gid, topic)
            ).fetchone()
            if row is not None and row[0] not in (None, holder) and row[1] > now:
                return False
            db.execute(
                "INSERT INTO gw_fetches(gid, topic, holder, lease_until, upto, entries) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(gid, topic) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until",
                (gid, topic, holder, now + ttl, b"{}", b"[]"),
            )
            return True

    def release(self, gid: str, topic: str, holder: str) -> None:
        with self._b.txn(gid, "release a gateway group lease") as db:
            db.execute(
                "UPDATE gw_fetches SET holder = NULL, lease_until = 0 WHERE gid = ? AND topic = ? AND holder = ?",
                (gid, topic, holder),
            )

    # --- writes ------------------------------------------------------------------------------
    def finish_fetch(
        self,
        gid: str,
        topic: str,
        holder: str,
        *,
        expected: Mapping[str, int | None],
        commit: Mapping[str, int],
        settled: Sequence[Entry],
        pending: Sequence[Entry],
        upto: Mapping[str, int],
        mirror: Callable[[str, int], None],
    ) -> bool:
        """Record a fetch: commit its leading refused run (``commit``, ``settled``), keep what it
        delivered as ``pending`` up to ``upto``, release the lease. False, with nothing written, if
        an ack moved any offset in ``expected`` meanwhile (the fetch read a stale position)."""
        with self._b.txn(gid, "record a gateway fetch") as db:
            current = dict(db.execute("SELECT stream, committed FROM gw_offsets WHERE gid = ?", (gid,)).fetchall())
            if any(current.get(s) != v for s, v in expected.items()):
                return False
            if commit:
                version = self._bump(db, gid)
                self._settle(db, gid, settled, version)
                for stream, pos in commit.items():
                    self._set_offset(db, gid, stream, pos)
                    mirror(stream, pos)
            db.execute(
                "INSERT INTO gw_fetches(gid, topic, holder, lease_until, upto, entries) VALUES (?, ?, NULL, 0, ?, ?) "
                "ON CONFLICT(gid, topic) DO UPDATE SET upto = excluded.upto, entries = excluded.entries",
                (gid, topic, orjson.dumps(dict(upto)), orjson.dumps(list(pending))),
            )
            db.execute(
                "UPDATE gw_fetches SET holder = NULL, lease_until = 0 WHERE gid = ? AND topic = ? AND holder = ?",
                (gid, topic, holder),
            )
            return True

    def ack(
        self, gid: str, topic: str, stream: str, offset: int, *, initial: int | None,
        mirror: Callable[[str, int], None], group: str,
    ) -> int:
        """Commit ``offset`` on ``stream`` (everything before it processed): the fetched replay
        entries below it become durable in the same transaction. Idempotent, never backwards;
        ConflictError past what the group's last fetch delivered. ``initial`` is the offset to
        assume where the store has none (the transport's, from before this store)."""
        with self._b.txn(gid, "commit a gateway group offset") as db:
            row = db.execute("SELECT committed FROM gw_offsets WHERE gid = ? AND stream = ?", (gid, stream)).fetchone()
            committed = int(row[0]) if row is not None else (initial or 0)
            if offset <= committed:
                return committed
            fetched = db.execute(
                "SELECT upto, entries FROM gw_fetches WHERE gid = ? AND topic = ?", (gid, topic)
            ).fetchone()
            upto_map: dict[str, int] = orjson.loads(fetched[0]) if fetched else {}
            upto = upto_map.get(stream, committed)
            if offset > upto:
                raise ConflictError(
                    f"offset {offset} was not delivered to group {group!r} since its last commit "
                    f"(committed {committed}, delivered up to {upto}); consume first",
                    path="offset",
                )
            entries: list[Entry] = orjson.loads(fetched[1])
            done = [e for e in entries if e[1] == stream and e[2] < offset]
            version = self._bump(db, gid)
            self._settle(db, gid, done, version)
            self._set_offset(db, gid, stream, offset)
            keep = [e for e in entries if not (e[1] == stream and e[2] < offset)]
            db.execute(
                "UPDATE gw_fetches SET entries = ? WHERE gid = ? AND topic = ?", (orjson.dumps(keep), gid, topic)
            )
            if version % _PRUNE_EVERY == 1:
                self._prune(db, gid)
            mirror(stream, offset)  # inside the lock: mirrors never land out of order
            return offset

    def import_state(
        self, gid: str, seen: Sequence[tuple[str, str, str, int, str, float]], seqs: Sequence[tuple[str, str, str, int]]
    ) -> None:
        """Adopt a group's replay state from before this store (its home file), once: only if
        the store has nothing for the group yet."""
        with self._b.txn(gid, "import a gateway group") as db:
            if db.execute("SELECT 1 FROM gw_groups WHERE gid = ?", (gid,)).fetchone():
                return
            db.execute("INSERT INTO gw_groups(gid, version) VALUES (?, 1)", (gid,))
            for producer, event_id, stream, off, status, at in seen:
                db.execute(
                    "INSERT INTO gw_seen(gid, producer, id, stream, off, status, at, version) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, 1) ON CONFLICT(gid, producer, id) DO NOTHING",
                    (gid, producer, event_id, stream, off, status, at),
                )
            for producer, instance, stream, seq in seqs:
                db.execute(
                    "INSERT INTO gw_seqs(gid, producer, instance, stream, seq, version) VALUES (?, ?, ?, ?, ?, 1) "
                    "ON CONFLICT(gid, producer, instance, stream) DO NOTHING",
                    (gid, producer, instance, stream, seq),
                )

    # --- internals ---------------------------------------------------------------------------
    def _bump(self, db: Txn, gid: str) -> int:
        db.execute("INSERT INTO gw_groups(gid) VALUES (?) ON CONFLICT(gid) DO NOTHING", (gid,))
        db.execute("UPDATE gw_groups SET version = version + 1 WHERE gid = ?", (gid,))
        return int(db.execute("SELECT version FROM gw_groups WHERE gid = ?", (gid,)).fetchone()[0])

    def _set_offset(self, db: Txn, gid: str, stream: str, pos: int) -> None:
        db.execute(
            "INSERT INTO gw_offsets(gid, stream, committed) VALUES (?, ?, ?) "
            "ON CONFLICT(gid, stream) DO UPDATE SET committed = excluded.committed",
            (gid, stream, pos),
        )

    def _settle(self, db: Txn, gid: str, entries: Sequence[Entry], version: int) -> None:
        now = self._clock()
        for producer, stream, off, event_id, instance, seq, status, mode in entries:
            db.execute(
                "INSERT INTO gw_seen(gid, producer, id, stream, off, status, at, version) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(gid, producer, id) DO UPDATE SET "
                "stream = excluded.stream, off = excluded.off, status = excluded.status, at = excluded.at, "
                "version = excluded.version",
                (gid, producer, event_id, stream, off, status, now, version),
            )
            if mode == "live" and instance:
                db.execute(
                    "INSERT INTO gw_seqs(gid, producer, instance, stream, seq, version) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT(gid, producer, instance, stream) DO UPDATE SET seq = excluded.seq, "
                    "version = excluded.version WHERE gw_seqs.seq < excluded.seq",
                    (gid, producer, instance, stream, seq, version),
                )

    def _prune(self, db: Txn, gid: str) -> None:
        window_seconds, window_ids = self.window
        db.execute("DELETE FROM gw_seen WHERE gid = ? AND at < ?", (gid, self._clock() - window_seconds))
        db.execute(
            "DELETE FROM gw_seen WHERE gid = ? AND at < (SELECT at FROM gw_seen WHERE gid = ? ORDER BY at DESC "
            "LIMIT 1 OFFSET ?)",
            (gid, gid, window_ids),
        )
