"""The schema registry's tables in PostgreSQL (``store.backend: postgres``): the same queries as
``schema.store.Store`` (its static methods run unchanged on the connection this store yields),
the same invariants enforced by the database (partial unique indexes, triggers; migration 3).

``write()`` holds one advisory lock for the transaction, the counterpart of SQLite's ``BEGIN
IMMEDIATE``: two replicas approving the same version are serialized, so the second sees the
first's decision and gets the registry's own answer (not proposed any more), never a lost
update. ``read()`` is a read-only REPEATABLE READ transaction: one snapshot for its SELECTs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import psycopg

from eventward._internal.store.migrations import REGISTRY_SCHEMA
from eventward._internal.store.pg import Database
from eventward.errors import ConflictError

WRITE_LOCK = 0x65777267  # pg_advisory_xact_lock key of the registry's write lock ("ewrg")


@cache
def _sql(sql: str) -> str:
    """Store's SQLite statements in PostgreSQL's dialect: placeholders and INSERT OR IGNORE."""
    sql = sql.replace("?", "%s")
    if sql.startswith("INSERT OR IGNORE INTO "):
        sql = "INSERT INTO " + sql[len("INSERT OR IGNORE INTO "):] + " ON CONFLICT DO NOTHING"
    return sql


class _Conn:
    """What Store's static methods call (``execute(sql, params)`` returning a cursor)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> psycopg.Cursor:
        return self._conn.execute(_sql(sql), params)


class PgRegistryStore:
    """Implements the Store interface the registry uses (``write``, ``read``, ``close``, ``path``)."""

    def __init__(self, db: Database, *, owns_db: bool = False) -> None:
        self.db = db
        self.path = db.where
        self._owns_db = owns_db

    def close(self) -> None:
        if self._owns_db:
            self.db.close()

    @contextmanager
    def _txn(self, op: str, *first: str) -> Iterator[_Conn]:
        with self.db.connection(op) as conn:
            try:
                with conn.transaction():
                    for stmt in first:
                        conn.execute(stmt)
                    conn.execute(f"SET LOCAL search_path = {REGISTRY_SCHEMA}")
                    yield _Conn(conn)
            except (psycopg.errors.IntegrityError, psycopg.errors.RaiseException) as e:
                raise ConflictError(f"registry update refused by the database: {(e.diag.message_primary or '')}") \
                    from None

    @contextmanager
    def write(self) -> Iterator[_Conn]:
        """A write transaction holding the registry's lock, taken before reading."""
        with self._txn("registry write", f"SELECT pg_advisory_xact_lock({WRITE_LOCK})") as c:
            yield c

    @contextmanager
    def read(self) -> Iterator[_Conn]:
        """A read transaction: several SELECTs see one consistent snapshot."""
        with self._txn("registry read", "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY") as c:
            yield c


def open_pg_registry_store(home: object) -> PgRegistryStore:
    """The registry store of a home with ``store.backend: postgres`` (its database checked: schema
    version and deployment id)."""
    from eventward._internal.config import Config
    from eventward._internal.home import Home
    from eventward._internal.keys.stores import home_deployment_id

    assert isinstance(home, Home)
    cfg = Config.load(home.config).store
    return PgRegistryStore(Database.from_config(cfg, home.root, deployment_id=home_deployment_id(home)), owns_db=True)
