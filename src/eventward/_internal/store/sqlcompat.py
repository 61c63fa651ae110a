"""SQLite-shaped access to PostgreSQL tables, for small stores whose SQL is shared by both backends.

The trust registry and the control plane's seal grants are a few short statements written for
SQLite (``?`` placeholders, ``INSERT OR REPLACE``/``OR IGNORE``, unqualified table names). :class:`PgTables`
runs the same statements on PostgreSQL, so one class keeps one set of queries and the backends
cannot drift: reads run on a pooled autocommit connection (retried once on a connection the
server dropped), writes in one transaction holding the store's advisory lock (SQLite's ``BEGIN
IMMEDIATE`` across replicas). A unique or check violation (two replicas enrolling one key, two
active keys for one principal) becomes a ConflictError; an unreachable database StoreUnavailable.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from eventward._internal.log.sqlite import write_txn
from eventward.errors import ConflictError

if TYPE_CHECKING:  # psycopg loads only on a PostgreSQL home (PgTables): SQLite homes never pay for it
    import psycopg

    from eventward._internal.store.pg import Database

_OR_REPLACE = re.compile(r"INSERT OR REPLACE INTO (\w+)\s*\(([^)]*)\)(.*)\Z", re.S)


class Rows:
    """What a read returns: every row already fetched (the connection is back in the pool)."""

    def __init__(self, rows: Sequence[tuple[Any, ...]]) -> None:
        self._rows = list(rows)

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(self._rows)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self._rows)


class _Txn:
    def __init__(self, conn: psycopg.Connection, tables: PgTables) -> None:
        self._conn, self._tables = conn, tables

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor:
        return self._conn.execute(self._tables.sql(sql), tuple(params))


class PgTables:
    """SQLite statements over ``tables`` (SQLite name -> (qualified PostgreSQL name, key column))."""

    def __init__(self, db: Database, tables: Mapping[str, tuple[str, str]], lock: int, *, owns_db: bool = True) -> None:
        self.db = db
        self._tables = dict(tables)
        self._lock = lock
        self._owns_db = owns_db
        names = "|".join(map(re.escape, self._tables))
        self._name = re.compile(rf"\b(FROM|INTO|UPDATE|JOIN)\s+({names})\b")
        self._cache: dict[str, str] = {}

    def sql(self, sql: str) -> str:
        """``sql`` in PostgreSQL's dialect (cached: the statements are constants)."""
        out = self._cache.get(sql)
        if out is None:
            out = sql.replace("?", "%s")
            if out.startswith("INSERT OR IGNORE INTO "):
                out = "INSERT INTO " + out[len("INSERT OR IGNORE INTO "):] + " ON CONFLICT DO NOTHING"
            m = _OR_REPLACE.match(out.strip())
            if m:
                table, cols, rest = m.group(1), [c.strip() for c in m.group(2).split(",")], m.group(3)
                key = self._tables[table][1]
                sets = ", ".join(f"{c} = excluded.{c}" for c in cols if c != key)
                out = f"INSERT INTO {table}({', '.join(cols)}){rest} ON CONFLICT ({key}) DO UPDATE SET {sets}"
            out = self._name.sub(lambda n: f"{n.group(1)} {self._tables[n.group(2)][0]}", out)
            self._cache[sql] = out
        return out

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        """A read (or a single-statement write that is safe to repeat), rows fetched."""
        pg = self.sql(sql)
        return self.db.run("read " + next(iter(self._tables)), lambda c: Rows(c.execute(pg, tuple(params)).fetchall()))

    @contextmanager
    def write(self, what: str) -> Iterator[_Txn]:
        """One transaction holding the store's advisory lock; rolled back on any exception."""
        import psycopg

        with self.db.connection(what) as conn:
            try:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock,))
                    yield _Txn(conn, self)
            except (psycopg.errors.IntegrityError, psycopg.errors.RaiseException) as e:
                raise ConflictError(f"{what}: refused by the database ({e.sqlstate}): another writer got "
                                    "there first") from None

    def close(self) -> None:
        if self._owns_db:
            self.db.close()


def write(db: sqlite3.Connection | PgTables, what: str) -> AbstractContextManager[Any]:
    """A write transaction on either backend: ``write_txn`` on SQLite, the locked one on PostgreSQL."""
    return db.write(what) if isinstance(db, PgTables) else write_txn(db, what)


def open_pg_tables(home: object, tables: Mapping[str, tuple[str, str]], lock: int) -> PgTables:
    """``tables`` in the database of a home with ``store.backend: postgres`` (its schema version
    and deployment id checked, as every store's open)."""
    from eventward._internal.config import Config
    from eventward._internal.home import Home
    from eventward._internal.keys.stores import home_deployment_id
    from eventward._internal.store.pg import Database

    assert isinstance(home, Home)
    cfg = Config.load(home.config).store
    db = Database.from_config(cfg, home.root, deployment_id=home_deployment_id(home))
    return PgTables(db, tables, lock)
