"""One PostgreSQL database for the control-plane stores: a pool, a schema version, typed errors.

A replica opens it with :meth:`Database.open`, which refuses, before anything is served, a
database it cannot reach (``StoreUnavailable``), one with no or an older eventward schema
(``StoreNotReady``: run ``eventward db migrate``), a newer one (upgrade eventward) and one
that belongs to another deployment (``StoreForeignDeployment``). Driver errors never leave
this module: they become ``StoreUnavailable`` naming the database (never the DSN, which can
hold a password) and the operation.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import psycopg_pool

from eventward._internal.config import StoreConfig
from eventward._internal.store.dsn import describe, resolve_dsn, scrub
from eventward._internal.store.migrations import MIGRATIONS, SCHEMA, TARGET_VERSION, Migration
from eventward.errors import StoreForeignDeployment, StoreNotReady, StoreUnavailable

T = TypeVar("T")
MIGRATE_LOCK = 0x65776D69  # pg_advisory_xact_lock key: one migration at a time, across replicas
IDLE_CHECK_S = 1.0  # a pool idle longer than this has its idle connections pinged before the next checkout
_budget = threading.local()  # .until: a deadline (monotonic) shared by every wait of one checkout


class DatabaseHung(psycopg.OperationalError):
    """The server accepted the connection but did not answer within the bound (frozen, partitioned)."""


class _BoundedConnection(psycopg.Connection):
    """A connection whose every wait on the server is bounded (``statement_timeout_s``).

    PostgreSQL's own ``statement_timeout`` cannot fire on a frozen server, and TCP keepalives are
    answered by the kernel of a SIGSTOPped (or overloaded) host, so the bound has to be on this side.
    On expiry the connection is mid-protocol, so it is closed (the pool drops it) and the caller
    gets ``DatabaseHung``, which ``Database.errors`` turns into ``StoreUnavailable``."""

    statement_timeout_s: float = 5.0

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        bound = self.statement_timeout_s if timeout is None else min(timeout, self.statement_timeout_s)
        until = getattr(_budget, "until", None)
        if until is not None:
            bound = min(bound, max(until - time.monotonic(), 0.001))
        try:
            return super().wait(gen, interval=interval, timeout=bound)
        except psycopg.errors._WaitTimeout:
            self.pgconn.finish()  # mid-query: unusable; broken, so the pool discards it
            raise DatabaseHung(f"no answer from the server within {self.statement_timeout_s:g}s") from None


def bounded_connection_class(statement_timeout_s: float) -> type[psycopg.Connection]:
    """A connection class whose every wait for the server is bounded by ``statement_timeout_s``."""
    return type("BoundedConnection", (_BoundedConnection,), {"statement_timeout_s": statement_timeout_s})


def libpq_timeouts(connect_timeout: float, statement_timeout_s: float) -> dict[str, int]:
    """libpq's own bounds: on connecting, and TCP keepalives / user timeout so a partitioned
    peer (no RST ever comes) is noticed by the kernel too, not only by the wait bound."""
    return {
        "connect_timeout": max(1, math.ceil(connect_timeout)),
        "keepalives": 1,
        "keepalives_idle": max(1, math.ceil(statement_timeout_s)),
        "keepalives_interval": 1,
        "keepalives_count": 3,
        "tcp_user_timeout": max(1000, math.ceil(statement_timeout_s * 1000)),
    }


@dataclass(frozen=True)
class SchemaStatus:
    """What ``eventward db status`` shows: where, which version, whose."""

    where: str
    version: int  # 0: no eventward schema yet
    target: int
    deployment_id: str | None
    pending: tuple[Migration, ...]

    @property
    def current(self) -> bool:
        return self.version == self.target


def _status(conn: psycopg.Connection, where: str) -> SchemaStatus:
    found = conn.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.meta",)).fetchone()
    if found is None or found[0] is None:
        return SchemaStatus(where, 0, TARGET_VERSION, None, MIGRATIONS)
    rows = dict(conn.execute(
        f"SELECT key, value FROM {SCHEMA}.meta WHERE key IN ('schema_version', 'deployment_id')"
    ).fetchall())
    version = int(rows.get("schema_version", 0))
    pending = tuple(m for m in MIGRATIONS if m.version > version)
    return SchemaStatus(where, version, TARGET_VERSION, rows.get("deployment_id"), pending)


class Database:
    """A pool of connections to one database (autocommit; ``transaction()`` for atomic work)."""

    def __init__(self, dsn: str, *, pool_min: int = 1, pool_max: int = 8, connect_timeout: float = 5.0,
                 statement_timeout: float = 5.0) -> None:
        self.dsn = dsn
        self.where = describe(dsn)
        self.connect_timeout = connect_timeout
        self.statement_timeout = statement_timeout
        self._conn_class = bounded_connection_class(statement_timeout)
        self._pool_min, self._pool_max = pool_min, pool_max
        self._pool: psycopg_pool.ConnectionPool | None = None
        self._last_used = time.monotonic()
        self._suspect = False

    def __repr__(self) -> str:
        return f"Database({self.where!r})"

    # --- opening ---------------------------------------------------------------------------
    @classmethod
    def open(
        cls, dsn: str, *, deployment_id: str, pool_min: int = 1, pool_max: int = 8, connect_timeout: float = 5.0,
        statement_timeout: float = 5.0,
    ) -> Database:
        """Connect, check the schema version and the deployment id, then start the pool."""
        db = cls(dsn, pool_min=pool_min, pool_max=pool_max, connect_timeout=connect_timeout,
                 statement_timeout=statement_timeout)
        db.require(db.status(), deployment_id)
        db._start_pool()
        return db

    @classmethod
    def from_config(cls, cfg: StoreConfig, home_root: Path, *, deployment_id: str) -> Database:
        return cls.open(resolve_dsn(cfg, home_root), deployment_id=deployment_id, pool_min=cfg.pool_min,
                        pool_max=cfg.pool_max, connect_timeout=cfg.connect_timeout_s,
                        statement_timeout=cfg.statement_timeout_s)

    def require(self, st: SchemaStatus, deployment_id: str) -> None:
        """Refuse a database this eventward must not serve from; the message says what to run."""
        if st.version == 0:
            raise StoreNotReady(f"{self.where} has no eventward schema: run 'eventward db migrate'")
        if st.version < st.target:
            raise StoreNotReady(
                f"{self.where} is at schema version {st.version}, this eventward needs {st.target}: "
                "run 'eventward db migrate'"
            )
        if st.version > st.target:
            raise StoreNotReady(
                f"{self.where} is at schema version {st.version}, newer than this eventward ({st.target}): "
                "upgrade eventward on this host"
            )
        if st.deployment_id != deployment_id:
            raise StoreForeignDeployment(
                f"{self.where} belongs to deployment {st.deployment_id}, not {deployment_id}: point "
                "store.dsn_env (or store.dsn_file) at this deployment's database",
                found=st.deployment_id,
                expected=deployment_id,
            )

    def _connect(self, *, bounded: bool = True) -> psycopg.Connection:
        """A connection outside the pool; ``bounded=False`` for migrations, whose DDL may run long."""
        cls = self._conn_class if bounded else psycopg.Connection
        return cls.connect(self.dsn, autocommit=True, application_name="eventward",
                           **libpq_timeouts(self.connect_timeout, self.statement_timeout))

    def _start_pool(self) -> None:
        pool = psycopg_pool.ConnectionPool(
            self.dsn,
            min_size=self._pool_min,
            max_size=self._pool_max,
            open=False,
            timeout=self.connect_timeout,
            connection_class=self._conn_class,
            kwargs={"autocommit": True, "application_name": "eventward",
                    **libpq_timeouts(self.connect_timeout, self.statement_timeout)},
            name="eventward",
        )
        with self.errors("open the connection pool"):
            pool.open(wait=False)
        self._pool = pool

    # --- errors ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def errors(self, op: str) -> Iterator[None]:
        """Driver and pool failures become StoreUnavailable naming the database and operation."""
        try:
            yield
        except psycopg_pool.PoolTimeout:
            raise StoreUnavailable(f"{self.where}: {op} failed: no connection within "
                                   f"{self.connect_timeout:g}s (database down or pool exhausted)") from None
        except psycopg_pool.PoolClosed:
            raise StoreUnavailable(f"{self.where}: {op} failed: the store is closed") from None
        except psycopg.Error as e:
            state = f" [{e.sqlstate}]" if getattr(e, "sqlstate", None) else ""
            raise StoreUnavailable(f"{self.where}: {op} failed{state}: {scrub(str(e), self.dsn)}") from None

    # --- schema ----------------------------------------------------------------------------
    def status(self) -> SchemaStatus:
        with self.errors("read the schema version"), self._connect() as conn:
            return _status(conn, self.where)

    def migrate(self, deployment_id: str) -> list[Migration]:
        """Apply pending migrations in one transaction and record the deployment id; idempotent.
        Refuses another deployment's database and one newer than this eventward."""
        with self.errors("migrate"), self._connect(bounded=False) as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
            st = _status(conn, self.where)
            if st.deployment_id is not None and st.deployment_id != deployment_id:
                self.require(st, deployment_id)
            if st.version > st.target:
                self.require(st, deployment_id)
            for m in st.pending:
                for stmt in m.statements:
                    conn.execute(stmt)
                conn.execute(f"INSERT INTO {SCHEMA}.migrations (version, name) VALUES (%s, %s)", (m.version, m.name))
            upsert = (f"INSERT INTO {SCHEMA}.meta (key, value) VALUES (%s, %s) "
                      "ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            conn.execute(upsert, ("schema_version", str(TARGET_VERSION)))
            conn.execute(f"INSERT INTO {SCHEMA}.meta (key, value) VALUES ('deployment_id', %s) "
                         "ON CONFLICT (key) DO NOTHING", (deployment_id,))
            return list(st.pending)

    # --- work ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def connection(self, op: str = "query") -> Iterator[psycopg.Connection]:
        """A pooled connection (autocommit), returned to the pool afterwards."""
        if self._pool is None:
            raise StoreUnavailable(f"{self.where}: {op} failed: the store is not open")
        now = time.monotonic()
        # One budget for the pings below: on a hung server each would otherwise wait its own bound.
        _budget.until = now + self.statement_timeout
        try:
            if self._suspect or now - self._last_used > IDLE_CHECK_S:
                # The pool sat idle (or just lost a connection): the server may have restarted since,
                # leaving every idle connection dead. Ping them and drop the dead ones first, so a
                # write transaction (which cannot be retried here) does not fail on one.
                self._suspect = False
                with self.errors(op):
                    self._pool.check()
        finally:
            _budget.until = None
        self._last_used = now
        with self.errors(op), self._pool.connection(timeout=self.connect_timeout) as conn:
            try:
                yield conn
            finally:
                if conn.broken:  # the next checkout cleans the others that died with it
                    self._suspect = True

    def run(self, op: str, fn: Callable[[psycopg.Connection], T]) -> T:
        """``fn`` on a pooled connection, run once more on a fresh one if the server had dropped
        the first (restart, failover, idle timeout): for reads and single-statement writes that
        are safe to repeat. Costs nothing on the hot path (no per-checkout ping)."""
        for attempt in (1, 2):
            with self.connection(op) as conn:
                try:
                    return fn(conn)
                except psycopg.OperationalError as e:
                    if attempt == 2 or not conn.broken or isinstance(e, DatabaseHung):
                        raise  # a hung server is not asked twice: the bound is per call
            if self._pool is not None:  # the other idle connections died with it: drop them too
                with self.errors(op):
                    self._pool.check()
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        if self._pool is not None:
            with contextlib.suppress(Exception):
                self._pool.close(timeout=2.0)
            self._pool = None
