"""The audit log on PostgreSQL: ONE Merkle tree however many replicas append.

Same tree, records, proofs and verifier as the SQLite log (this is a subclass: only the storage
differs). Every append transaction first takes one advisory lock, then reads the tree size and
assigns leaf indexes, so appends from all replicas are serialized into one sequence (the
PostgreSQL counterpart of ``BEGIN IMMEDIATE`` across processes); the primary key on the leaf
index would refuse a fork even without it. A replica whose cached frontier is stale (another
replica appended) reloads it from the stored subtree hashes. Records and node hashes are
written with COPY, so batched appends are cheap.

Tables live in the ``eventward_audit`` schema under their SQLite names (migration 2), reached
through the connection's ``search_path``. A broken connection (server restart) is replaced on
the next call; meanwhile every write fails closed with ``AuditUnavailable``.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator
from functools import cache
from typing import TypeVar

import psycopg

from eventward._internal.audit.checkpoint import Checkpoint, sign_checkpoint
from eventward._internal.audit.log import PUBLISHED_ACTION, AuditLog, _published_row
from eventward._internal.audit.records import Entry, encode, format_time
from eventward._internal.audit.signing import AuditSigner, ensure_key, load_signer
from eventward._internal.audit.tree import Frontier, load_frontier, push_leaf, range_root
from eventward._internal.config import Config
from eventward._internal.crypto.merkle import leaf_hash
from eventward._internal.home import Home
from eventward._internal.policy.base import Authorizer
from eventward._internal.store.dsn import describe, resolve_dsn, scrub
from eventward._internal.store.migrations import AUDIT_SCHEMA
from eventward._internal.store.pg import Database, DatabaseHung, bounded_connection_class, libpq_timeouts
from eventward.errors import AuditUnavailable, ConfigError

T = TypeVar("T")
APPEND_LOCK = 0x65776175  # pg_advisory_xact_lock key serializing appends across replicas ("ewau")


@cache
def _sql(sql: str) -> str:
    """The base class's SQLite statements in PostgreSQL's dialect (placeholders, row order, a
    reserved column name); every statement the base still runs through ``_q``/``_stream``."""
    return sql.replace("?", "%s").replace("ORDER BY rowid", "ORDER BY id").replace(
        "SELECT offset FROM", 'SELECT "offset" FROM'
    )


def _begin(conn: psycopg.Connection) -> psycopg.Connection:
    conn.execute("BEGIN")
    return conn


class PgAuditLog(AuditLog):
    """Open with ``PgAuditLog.open_home(home)`` (``AuditLog.open`` does when the store is postgres)."""

    _RAISE_WATERMARK = ('INSERT INTO watermarks (source, stream, "offset") VALUES (?, ?, ?) '
                        'ON CONFLICT (source, stream) DO UPDATE '
                        'SET "offset" = greatest(watermarks."offset", excluded."offset")')

    def __init__(
        self,
        dsn: str,
        signer: AuditSigner | None,
        *,
        flush_every: int = 512,
        flush_ms: int = 200,
        authorizer: Authorizer | None = None,
        principal: str | None = None,
        readonly: bool = False,
        connect_timeout: float = 5.0,
        statement_timeout: float = 5.0,
    ) -> None:
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._statement_timeout = statement_timeout
        self._conn_class = bounded_connection_class(statement_timeout)  # a hung server: AuditUnavailable, no hang
        self._readonly = readonly
        # A COMMIT that failed (timeout, connection lost) may still land once the server resumes:
        # (first index, leaf hashes) of that append, settled under the append lock before the next.
        self._attempt: tuple[int, list[bytes]] | None = None
        self._doubt: tuple[int, list[bytes]] | None = None
        self._at_commit = False
        super().__init__(describe(dsn), signer, flush_every=flush_every, flush_ms=flush_ms,  # type: ignore[arg-type]
                         authorizer=authorizer, principal=principal, readonly=readonly)

    @classmethod
    def open_home(
        cls,
        home: Home,
        *,
        flush_every: int = 512,
        flush_ms: int = 200,
        authorizer: Authorizer | None = None,
        principal: str | None = None,
    ) -> PgAuditLog:
        """The home's audit log in its configured database; refused (StoreNotReady/-Foreign) when
        the database is not at this eventward's schema or belongs to another deployment."""
        home.ensure()
        ensure_key(home)
        signer = load_signer(home.audit_key)
        cfg = Config.load(home.config).store
        dsn = resolve_dsn(cfg, home.root)
        db = Database(dsn, connect_timeout=cfg.connect_timeout_s, statement_timeout=cfg.statement_timeout_s)
        db.require(db.status(), signer.name)  # the deployment id is the audit key's name
        return cls(dsn, signer, flush_every=flush_every, flush_ms=flush_ms, authorizer=authorizer,
                   principal=principal, connect_timeout=cfg.connect_timeout_s,
                   statement_timeout=cfg.statement_timeout_s)

    # --- connection -----------------------------------------------------------------------
    def _unavailable(self, e: psycopg.Error) -> AuditUnavailable:
        state = getattr(e, "sqlstate", None) or type(e).__name__
        return AuditUnavailable(f"audit log {self.path} unavailable ({state}: {scrub(str(e), self._dsn)})",
                                path=str(self.path))

    @contextlib.contextmanager
    def _pg(self) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as e:
            raise self._unavailable(e) from None

    def _connect(self, readonly: bool) -> psycopg.Connection:  # type: ignore[override]
        try:
            conn = self._conn_class.connect(
                self._dsn, autocommit=True, application_name="eventward-audit",
                options=f"-c search_path={AUDIT_SCHEMA}",
                **libpq_timeouts(self._connect_timeout, self._statement_timeout),
            )
        except psycopg.Error as e:
            raise self._unavailable(e) from None
        if self._signer is not None and not readonly:
            with self._pg():
                conn.execute("INSERT INTO meta (key, value) VALUES ('origin', %s) ON CONFLICT DO NOTHING",
                             (self._signer.name,))
                (origin,) = conn.execute("SELECT value FROM meta WHERE key = 'origin'").fetchone()  # type: ignore[misc]
            if origin != self._signer.name:
                conn.close()
                raise ConfigError(f"audit key {self._signer.name} does not belong to audit log {origin}")
        return conn

    def _fresh(self) -> psycopg.Connection:
        """The connection, replaced first if the server dropped it (restart, failover)."""
        conn: psycopg.Connection = self._conn  # type: ignore[assignment]
        if conn.closed or conn.broken:
            self._conn = self._connect(self._readonly)  # type: ignore[assignment]
            conn = self._conn  # type: ignore[assignment]
        return conn

    # --- writing --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _write_txn(self) -> Iterator[None]:
        with self._pg():
            conn = self._idle_retry(_begin)
            try:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))
            except BaseException:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
                raise
        try:
            yield
            self._at_commit = True
            with self._pg():
                conn.execute("COMMIT")
            self._at_commit = False
        except BaseException as e:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")
            if isinstance(e, psycopg.Error):
                raise self._unavailable(e) from None
            raise

    def _append(self, entries: list[Entry]) -> range:
        """The base append, made safe to retry after an ambiguous COMMIT: the buffered records are
        appended again by the next flush, so when the last COMMIT failed (the server may have
        committed it after the client gave up) the next append first settles it under the append
        lock; records that did land are dropped from ``entries`` (the buffer) instead of being
        appended twice. A record's leaf hash covers its index, time and every field, so equal leaves
        at the same indexes are the same records."""
        landed = self._settle(entries)
        if landed is not None and not entries:
            return landed
        self._at_commit = False
        try:
            return super()._append(entries)
        except AuditUnavailable:
            if self._at_commit and self._attempt is not None:
                self._doubt = self._attempt  # outcome unknown until the next append settles it
            raise
        finally:
            self._attempt = None

    def _settle(self, entries: list[Entry]) -> range | None:
        """Resolve an in-doubt append: the range it landed at (its records removed from the front
        of ``entries``), or None when it did not land or ``entries`` are other records."""
        doubt = self._doubt
        if doubt is None:
            return None
        start, leaves = doubt
        with self._write_txn():  # the in-doubt transaction held this lock: it has ended by now
            stored = [bytes(r[1]) for r in self._q(  # type: ignore[arg-type]
                "SELECT idx, leaf FROM records WHERE idx >= ? AND idx < ? ORDER BY idx", (start, start + len(leaves)))]
        self._doubt = None
        if stored != leaves or len(entries) < len(leaves):
            return None
        mine = zip(entries[:len(leaves)], leaves, strict=True)
        if any(leaf_hash(encode(start + i, e)) != leaf for i, (e, leaf) in enumerate(mine)):
            return None
        del entries[:len(leaves)]  # the buffer: these landed, the rest is appended now
        return range(start, start + len(leaves))

    def _append_in_txn(self, entries: list[Entry]) -> tuple[range, Frontier]:
        start = n = self._size_now()  # read under the append lock: every replica sees the last commit
        frontier = list(self._frontier) if self._frontier_size == n else load_frontier(self._node, n)
        rec_rows, node_rows, published = [], [], []
        for entry in entries:
            body = encode(n, entry)
            leaf = leaf_hash(body)
            rec_rows.append((n, leaf, body))
            node_rows.extend(push_leaf(frontier, n, leaf))
            if entry.action == PUBLISHED_ACTION and (row := _published_row(n, entry)) is not None:
                published.append(row)
            n += 1
        with self._pg(), self._fresh().cursor() as cur:
            # COPY text built here (bytea as \\x hex): a third of the cost of write_row per row
            with cur.copy("COPY records (idx, leaf, body) FROM STDIN") as cp:
                cp.write("".join(f"{i}\t\\\\x{leaf.hex()}\t\\\\x{body.hex()}\n" for i, leaf, body in rec_rows))
            if node_rows:
                with cur.copy("COPY nodes (level, idx, hash) FROM STDIN") as cp:
                    cp.write("".join(f"{lv}\t{i}\t\\\\x{h.hex()}\n" for lv, i, h in node_rows))
            if published:  # a late producer record after a reconciled one keeps the first index
                cur.executemany("INSERT INTO published (stream, batch, idx) VALUES (%s, %s, %s) "
                                "ON CONFLICT DO NOTHING", published)
        self._attempt = (start, [leaf for _, leaf, _ in rec_rows])
        return range(start, n), frontier

    def checkpoint(self) -> Checkpoint:
        """Sign (size, root, time) of the tree and keep it; the commit makes everything before it
        durable (PostgreSQL commits are synchronous unless the server was told otherwise)."""
        signer = self._signer
        if signer is None:
            raise ConfigError("checkpoints need the audit key; this log is read-only")
        with self._lock:
            self._writable()
            self._flush_locked()
            with self._write_txn():
                size = self._size_now()
                cp = sign_checkpoint(signer, size, range_root(self._node, 0, size), format_time())
                self._q("INSERT INTO checkpoints (size, root, time, text) VALUES (?, ?, ?, ?) RETURNING id",
                        (cp.size, cp.root, cp.time, cp.text))
        return cp

    def attach(self, kind: str, key: str, index: int, document: str) -> None:
        with self._lock:
            self._writable()
            with self._write_txn():
                self._q("INSERT INTO attachments (kind, key, idx, doc) VALUES (?, ?, ?, ?) RETURNING id",
                        (kind, key, index, document))

    # --- reading --------------------------------------------------------------------------
    def _idle_retry(self, op: Callable[[psycopg.Connection], T]) -> T:
        """Run ``op``; outside a transaction, a connection the server dropped since the last call
        (restart, failover, idle kill) is replaced and ``op`` run once more. Inside one, the
        transaction is lost with the connection, so the error stands (fail closed)."""
        conn = self._fresh()
        idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        try:
            return op(conn)
        except psycopg.OperationalError as e:
            if not (idle and (conn.closed or conn.broken)) or isinstance(e, DatabaseHung):
                raise  # a hung server is not asked twice: the bound is per call
            return op(self._fresh())

    def _q(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        def run(conn: psycopg.Connection) -> list[tuple[object, ...]]:
            cur = conn.execute(_sql(sql), args)
            return cur.fetchall() if cur.description is not None else []

        with self._pg():
            return self._idle_retry(run)

    def _stream(self, sql: str, args: tuple[object, ...] = ()) -> Iterator[tuple]:  # type: ignore[type-arg]
        with self._pg():
            conn = self._fresh()
            in_txn = conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
            # Inside snapshot() a server-side cursor streams; otherwise the rows come at once.
            with conn.cursor(name=f"scan_{secrets.token_hex(4)}") if in_txn else conn.cursor() as cur:
                if in_txn:
                    cur.itersize = 4096  # type: ignore[attr-defined]
                cur.execute(_sql(sql), args)
                while rows := cur.fetchmany(4096):
                    yield from rows

    def reader(self) -> AuditLog:
        """A separate read-only handle (its own connection) after a flush and the ReadAudit check."""
        self._read()
        return PgAuditLog(self._dsn, None, readonly=True, connect_timeout=self._connect_timeout,
                          statement_timeout=self._statement_timeout)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Run reads on one consistent snapshot (read-only handles only)."""
        if self._signer is not None:
            raise ConfigError("snapshot() is for read-only handles; use reader()")
        with self._pg():
            self._fresh().execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            yield
        finally:
            with contextlib.suppress(psycopg.Error):
                self._conn.execute("COMMIT")
