"""The tamper-evident audit log: an append-only RFC 6962 Merkle tree in SQLite.

Every component writes here through the ``AuditSink`` seam. ``record()`` validates at once
(a careless caller gets a typed error at the call site) and buffers; the buffer is written
in one transaction every ``flush_every`` records, after ``flush_ms``, on ``flush()``/close
and before any read. Each append runs under ``BEGIN IMMEDIATE`` and assigns leaf indexes
inside it, so several processes can append to one home and still build a single tree.

Alongside each record the log stores its leaf hash and the hash of every complete aligned
subtree it completes (see ``audit.tree``), so inclusion and consistency proofs read
O(log n) rows. Triggers refuse UPDATE/DELETE as a guard against accidents; tampering by
someone who drops them is what ``audit.verify`` and signed checkpoints detect.

Durability: a flushed batch survives a process crash (WAL, ``synchronous=NORMAL``); it
survives power loss once the next checkpoint commits, which is synced (``FULL``) and so
makes everything before it durable. Records still buffered (up to ``flush_ms``) are lost
with the process either way, so syncing each batch would cost an fsync per batch for
little; what gets published, a signed checkpoint, is never ahead of the disk. A producer
killed with its Publish records still buffered leaves stored batches without one: the
``published`` index and per-stream watermarks let ``audit.reconcile`` add them from the log.

Reads can be gated: pass ``authorizer`` and ``principal`` and every read is checked for
``ReadAudit`` on ``Audit::log`` (a denial is itself recorded). Without them the caller
(gateway, CLI) is responsible for that check.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType

from eventward._internal.audit.base import DENIED, OK, AuditEvent, MetaValue
from eventward._internal.audit.checkpoint import Checkpoint, sign_checkpoint
from eventward._internal.audit.records import AuditRecord, Entry, decode, encode, format_time, make_entry
from eventward._internal.audit.signing import AuditSigner, AuditVerifier, ensure_key, load_signer, statement
from eventward._internal.audit.tree import (
    ConsistencyProof,
    Frontier,
    InclusionProof,
    consistency_path,
    inclusion_path,
    load_frontier,
    push_leaf,
    range_root,
)
from eventward._internal.config import Config
from eventward._internal.crypto.merkle import leaf_hash
from eventward._internal.home import Home, private_file
from eventward._internal.policy.base import READ_AUDIT, Authorizer, check
from eventward.errors import (
    AccessDenied,
    AuditIntegrityError,
    AuditUnavailable,
    ConfigError,
    InputError,
    NotFoundError,
)

AUDIT_RESOURCE = ("Audit", "log")
PUBLISHED_ACTION = "Publish"
_MAPPING_FIELDS = frozenset({"action", "principal", "resource", "outcome", "reason", "meta"})
_FLUSHER_IDLE_S = 5.0  # the flusher thread ends after this long with nothing buffered
# Called with (action, resource, outcome, reason, meta) of every recorded event, never the principal:
# eventward._internal.monitor counts security signal here instead of hooking every hot path. Must not raise.
OBSERVERS: list[Callable[[str, str, str, str, Mapping[str, MetaValue]], None]] = []


class ObservedAudit:
    """An AuditSink that keeps nothing and only feeds ``OBSERVERS``: a client-mode service has no
    audit log (the home's is the record) but its metrics come from the same records as at home."""

    def record(
        self, action: str, *, principal: str, resource: str, outcome: str = OK, reason: str = "", **meta: MetaValue
    ) -> None:
        for observe in OBSERVERS:
            observe(action, resource, outcome, reason, meta)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (idx INTEGER PRIMARY KEY, leaf BLOB NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL, PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (size INTEGER NOT NULL, root BLOB NOT NULL, time TEXT NOT NULL,
    text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS attachments (kind TEXT NOT NULL, key TEXT NOT NULL, idx INTEGER NOT NULL,
    doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS attachments_by_key ON attachments (kind, key);
CREATE TABLE IF NOT EXISTS watermarks (source TEXT NOT NULL, stream TEXT NOT NULL, offset INTEGER NOT NULL,
    PRIMARY KEY (source, stream)) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS records_append_only_u BEFORE UPDATE ON records
    BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS records_append_only_d BEFORE DELETE ON records
    BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS nodes_append_only_u BEFORE UPDATE ON nodes
    BEGIN SELECT RAISE(ABORT, 'audit nodes are append-only'); END;
CREATE TRIGGER IF NOT EXISTS nodes_append_only_d BEFORE DELETE ON nodes
    BEGIN SELECT RAISE(ABORT, 'audit nodes are append-only'); END;
"""


# Which (stream, batch) has a Publish record: lets ``reconcile`` find stored batches whose record
# died with its producer. Filled in the same transaction as the records; backfilled once.
_PUBLISHED = """CREATE TABLE published (stream TEXT NOT NULL, batch TEXT NOT NULL, idx INTEGER NOT NULL,
    PRIMARY KEY (stream, batch)) WITHOUT ROWID"""


def _published_row(index: int, entry: Entry) -> tuple[str, str, int] | None:
    """(stream, batch, index) of a Publish record that names its batch, else None."""
    if entry.action != PUBLISHED_ACTION:
        return None
    stream, batch = entry.meta.get("stream"), entry.meta.get("batch")
    if isinstance(stream, str) and isinstance(batch, str):
        return stream, batch, index
    return None


def _unavailable(path: Path, e: sqlite3.Error) -> AuditUnavailable:
    name = getattr(e, "sqlite_errorname", type(e).__name__)
    return AuditUnavailable(f"audit log {path} unavailable ({name})", path=str(path))


class AuditLog:
    """Open with ``AuditLog.open(home)``; use as a context manager or call ``close()``."""

    # A watermark only moves forward (the PostgreSQL log spells max() as greatest()).
    _RAISE_WATERMARK = ('INSERT INTO watermarks (source, stream, "offset") VALUES (?, ?, ?) '
                        'ON CONFLICT (source, stream) DO UPDATE '
                        'SET "offset" = max(watermarks."offset", excluded."offset")')

    def __init__(
        self,
        db_path: Path,
        signer: AuditSigner | None,
        *,
        flush_every: int = 512,
        flush_ms: int = 200,
        authorizer: Authorizer | None = None,
        principal: str | None = None,
        readonly: bool = False,
    ) -> None:
        if flush_every < 1 or flush_ms < 1:
            raise ConfigError("audit flush_every and flush_ms must be positive")
        if authorizer is not None and not principal:
            raise ConfigError("an audit authorizer needs the reading principal")
        self.path = db_path
        self._signer = signer
        self._flush_every = flush_every
        self._flush_s = flush_ms / 1000
        self._authorizer = authorizer
        self._principal = principal
        self._lock = threading.RLock()
        self._buffer: list[Entry] = []
        # One flusher thread per open log, started at the first buffered record and woken when a
        # buffer starts (its deadline ``_due``): a Timer per flush window cost a thread start each
        # time, and Thread.start waits until the new thread runs (0.02-0.16 s per run under load).
        self._wake = threading.Condition(self._lock)
        self._due: float | None = None
        self._flusher: threading.Thread | None = None
        self._pending: Exception | None = None
        self._frontier: Frontier = []
        self._frontier_size = -1
        self._closed = False
        self.node_reads = 0  # stored hashes read for proofs/roots: lets tests see proofs stay O(log n)
        try:
            self._conn = self._connect(readonly)
        except sqlite3.Error as e:
            raise _unavailable(db_path, e) from None
        if not readonly:
            atexit.register(self.close)

    # --- opening -----------------------------------------------------------------------
    @classmethod
    def init(cls, home: Home) -> str:
        """Create the audit key (0600) and database; return the exportable verifier key."""
        with cls.open(home) as log:
            return log.verifier.vkey()

    @classmethod
    def open(
        cls,
        home: Home,
        *,
        flush_every: int = 512,
        flush_ms: int = 200,
        authorizer: Authorizer | None = None,
        principal: str | None = None,
    ) -> AuditLog:
        """Open the home's audit log, creating key and database on first use."""
        home.ensure()
        ensure_key(home)
        if Config.load(home.config).store.backend == "postgres":  # one tree in the shared database
            from eventward._internal.audit.pg_log import PgAuditLog

            return PgAuditLog.open_home(
                home, flush_every=flush_every, flush_ms=flush_ms, authorizer=authorizer, principal=principal
            )
        return cls(
            home.audit_db,
            load_signer(home.audit_key),
            flush_every=flush_every,
            flush_ms=flush_ms,
            authorizer=authorizer,
            principal=principal,
        )

    @classmethod
    def open_readonly(cls, db_path: str | os.PathLike[str]) -> AuditLog:
        """Open a database file for verification only: no key, no writes."""
        path = Path(db_path)
        if not path.is_file():
            raise NotFoundError(f"no audit database at {path}", path=str(path))
        return cls(path, None, readonly=True)

    def _connect(self, readonly: bool) -> sqlite3.Connection:
        if readonly:
            conn = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA busy_timeout = 30000")
            try:
                conn.execute("SELECT 1 FROM sqlite_master LIMIT 1")  # WAL mode needs a -shm file here
            except sqlite3.OperationalError as e:
                conn.close()
                if e.sqlite_errorname != "SQLITE_READONLY_DIRECTORY" or Path(f"{self.path}-wal").exists():
                    raise
                # A read-only copy (a mounted backup, an auditor's copy) closed cleanly: with no WAL
                # file and a directory nobody can create one in, no writer can exist, so the file
                # is read as immutable.
                conn = sqlite3.connect(
                    f"file:{self.path}?mode=ro&immutable=1", uri=True, isolation_level=None, check_same_thread=False
                )
            return conn
        private_file(self.path)  # 0600 before SQLite opens it: WAL/shm inherit the mode
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")
        self._ensure_published(conn)
        if self._signer is not None:
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('origin', ?)", (self._signer.name,))
            (origin,) = conn.execute("SELECT value FROM meta WHERE key = 'origin'").fetchone()
            if origin != self._signer.name:
                conn.close()
                raise ConfigError(f"audit key {self._signer.name} does not belong to audit log {origin}")
        return conn

    @staticmethod
    def _ensure_published(conn: sqlite3.Connection) -> None:
        """Create the published-batch index; a log written before it existed is indexed once."""
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'published'").fetchone():
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'published'").fetchone():
                conn.execute(_PUBLISHED)
                rows = conn.execute(
                    "SELECT idx, body FROM records WHERE instr(body, ?) > 0", (b'"action":"Publish"',)
                )
                index = []
                for idx, body in rows:
                    r = decode(bytes(body), int(idx))
                    entry = Entry(r.time, r.principal, r.action, r.resource, r.outcome, r.reason, dict(r.meta))
                    if (row := _published_row(int(idx), entry)) is not None:
                        index.append(row)
                conn.executemany("INSERT OR IGNORE INTO published (stream, batch, idx) VALUES (?, ?, ?)", index)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @property
    def verifier(self) -> AuditVerifier:
        if self._signer is None:
            raise ConfigError("this audit log was opened without its key (read-only)")
        return self._signer.verifier

    # --- writing -----------------------------------------------------------------------
    def record(
        self,
        action: str,
        *,
        principal: str,
        resource: str,
        outcome: str = OK,
        reason: str = "",
        **meta: MetaValue,
    ) -> None:
        """AuditSink.record: validate now, append within ``flush_ms`` (or at ``flush_every``)."""
        entry = make_entry(
            action, principal=principal, resource=resource, outcome=outcome, reason=reason, meta=meta
        )
        for observe in OBSERVERS:
            observe(action, resource, outcome, reason, meta)
        with self._lock:
            self._writable()
            if self._pending is not None:
                self._flush_locked()
            self._buffer.append(entry)
            if len(self._buffer) >= self._flush_every:
                self._flush_locked()
            elif self._due is None:
                self._due = time.monotonic() + self._flush_s
                if self._flusher is None:
                    self._flusher = threading.Thread(target=self._flush_loop, name="audit-flush", daemon=True)
                    self._flusher.start()
                else:
                    self._wake.notify()

    def append_many(self, events: Iterable[AuditEvent | Mapping[str, object]]) -> range:
        """Append records now, in one transaction after anything buffered; return their indexes."""
        entries = [self._entry(e) for e in events]
        with self._lock:
            self._writable()
            self._flush_locked()
            return self._append(entries)

    @staticmethod
    def _entry(e: AuditEvent | Mapping[str, object]) -> Entry:
        if isinstance(e, AuditEvent):
            return make_entry(
                e.action,
                principal=e.principal,
                resource=e.resource,
                outcome=e.outcome,
                reason=e.reason,
                meta=e.meta,
            )
        if not isinstance(e, Mapping):
            raise InputError("append_many takes AuditEvent objects or mappings")
        if not e.keys() <= _MAPPING_FIELDS:
            extra = sorted(str(k) for k in e.keys() - _MAPPING_FIELDS)
            raise InputError("audit record has unknown fields: " + ", ".join(extra))
        try:
            action, principal, resource = e["action"], e["principal"], e["resource"]
        except KeyError:
            raise InputError("audit record needs action, principal and resource") from None
        return make_entry(
            action,  # type: ignore[arg-type]
            principal=principal,  # type: ignore[arg-type]
            resource=resource,  # type: ignore[arg-type]
            outcome=e.get("outcome", OK),  # type: ignore[arg-type]
            reason=e.get("reason", ""),  # type: ignore[arg-type]
            meta=e.get("meta"),  # type: ignore[arg-type]
        )

    def flush(self) -> None:
        with self._lock:
            if not self._closed:
                self._flush_locked()

    def _flush_loop(self) -> None:
        """The flusher: appends what is buffered once its deadline passes; ends when the log closes
        or after ``_FLUSHER_IDLE_S`` with nothing buffered (a log left open keeps no thread)."""
        with self._lock:
            while not self._closed:
                due = self._due
                if due is None:
                    if not self._wake.wait(_FLUSHER_IDLE_S) and self._due is None:
                        self._flusher = None  # the next buffered record starts another
                        return
                    continue
                left = due - time.monotonic()
                if left > 0:
                    self._wake.wait(left)
                    continue
                try:
                    self._flush_locked()
                except Exception as e:  # kept and re-raised on the next call: this thread has no caller
                    self._pending = e
                    self._due = None

    def _flush_locked(self) -> None:
        self._due = None
        if self._buffer:
            self._append(self._buffer)  # the buffer is dropped only after the commit
            self._buffer = []
        self._pending = None

    def _append(self, entries: list[Entry]) -> range:
        with self._write_txn():
            appended, frontier = self._append_in_txn(entries)
        self._frontier, self._frontier_size = frontier, appended.stop  # cached only once committed
        return appended

    def _append_in_txn(self, entries: list[Entry]) -> tuple[range, Frontier]:
        start = n = self._size_now()
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
        self._conn.executemany("INSERT INTO records (idx, leaf, body) VALUES (?, ?, ?)", rec_rows)
        self._conn.executemany("INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)", node_rows)
        if published:  # a late producer record after a reconciled one keeps the first index
            self._conn.executemany(
                "INSERT OR IGNORE INTO published (stream, batch, idx) VALUES (?, ?, ?)", published
            )
        return range(start, n), frontier

    @contextlib.contextmanager
    def _write_txn(self) -> Iterator[None]:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise _unavailable(self.path, e) from None
        try:
            yield
            self._conn.execute("COMMIT")
        except BaseException as e:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise _unavailable(self.path, e) from None
            raise

    # --- reconciling with the event log (see audit.reconcile) -----------------------------
    def unpublished(self, stream: str, batches: Iterable[str]) -> list[str]:
        """Those of ``batches`` (ids stored in ``stream``) that have no Publish record yet."""
        with self._lock:
            self._writable()
            self._flush_locked()  # this process's own buffered records count
            wanted = list(dict.fromkeys(batches))
            have: set[str] = set()
            for lo in range(0, len(wanted), 500):
                chunk = wanted[lo : lo + 500]
                q = f"SELECT batch FROM published WHERE stream = ? AND batch IN ({','.join('?' * len(chunk))})"
                have.update(str(b) for (b,) in self._q(q, (stream, *chunk)))
            return [b for b in wanted if b not in have]

    def watermark(self, source: str, stream: str) -> int:
        """Offset of ``stream`` (in the log ``source``) below which every batch has its record."""
        with self._lock:
            self._writable()
            rows = self._q("SELECT offset FROM watermarks WHERE source = ? AND stream = ?", (source, stream))
        return int(rows[0][0]) if rows else 0  # type: ignore[call-overload]

    def reconcile(self, source: str, stream: str, upto: int, events: Iterable[AuditEvent]) -> int:
        """Append the Publish records among ``events`` whose batch still has none, and move the
        watermark of (``source``, ``stream``) to ``upto``, in one transaction; return how many
        were appended. Concurrent reconcilers cannot both add a record for one batch."""
        entries = [self._entry(e) for e in events]
        with self._lock:
            self._writable()
            self._flush_locked()
            appended: tuple[range, Frontier] | None = None
            with self._write_txn():
                fresh: list[Entry] = []
                taken: set[tuple[str, str]] = set()
                for entry in entries:
                    row = _published_row(0, entry)
                    if row is None:
                        raise InputError("reconciled records are Publish records naming stream and batch")
                    key = row[:2]
                    seen = self._q("SELECT 1 FROM published WHERE stream = ? AND batch = ?", key)
                    if not seen and key not in taken:
                        taken.add(key)
                        fresh.append(entry)
                if fresh:
                    appended = self._append_in_txn(fresh)
                self._q(self._RAISE_WATERMARK, (source, stream, upto))
            if appended is not None:
                self._frontier, self._frontier_size = appended[1], appended[0].stop
        return len(fresh)

    def checkpoint(self) -> Checkpoint:
        """Sign (size, root, time) of the current tree and keep it in the checkpoint table."""
        signer = self._signer
        if signer is None:
            raise ConfigError("checkpoints need the audit key; this log is read-only")
        with self._lock:
            self._writable()
            self._flush_locked()
            self._q("PRAGMA synchronous = FULL")  # this commit syncs the WAL: all before it is durable
            try:
                with self._write_txn():
                    size = self._size_now()
                    cp = sign_checkpoint(signer, size, range_root(self._node, 0, size), format_time())
                    self._conn.execute(
                        "INSERT INTO checkpoints (size, root, time, text) VALUES (?, ?, ?, ?)",
                        (cp.size, cp.root, cp.time, cp.text),
                    )
            finally:
                self._q("PRAGMA synchronous = NORMAL")
        return cp

    def sign_statement(self, kind: str, body: bytes) -> bytes:
        """Sign ``statement(kind, body)`` with the audit key (domain-separated from checkpoints)."""
        if self._signer is None:
            raise ConfigError("signing needs the audit key; this log is read-only")
        return self._signer.sign(statement(kind, body))

    def attach(self, kind: str, key: str, index: int, document: str) -> None:
        """Keep a document tied to a record (e.g. the erasure certificate it announced).

        Attachments are not part of the tree: their authenticity comes from their own
        signatures and proofs, never from being stored here.
        """
        with self._lock:
            self._writable()
            with self._write_txn():
                self._conn.execute(
                    "INSERT INTO attachments (kind, key, idx, doc) VALUES (?, ?, ?, ?)",
                    (kind, key, index, document),
                )

    # --- reading -----------------------------------------------------------------------
    def _read(self) -> None:
        """Flush, check the log is open, and apply the ReadAudit gate if one was configured."""
        with self._lock:
            if self._closed:
                raise ConfigError("audit log is closed")
            if self._signer is not None:
                self._flush_locked()
        if self._authorizer is not None and self._principal is not None:
            try:
                check(self._authorizer, self._principal, READ_AUDIT, AUDIT_RESOURCE)
            except AccessDenied:
                if self._signer is not None:
                    self.record(
                        "audit.read",
                        principal=self._principal,
                        resource="Audit::log",
                        outcome=DENIED,
                        reason="ReadAudit not granted",
                    )
                    self.flush()
                raise

    def _q(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise _unavailable(self.path, e) from None

    def _size_now(self) -> int:
        (size,) = self._q("SELECT coalesce(max(idx) + 1, 0) FROM records")[0]
        return int(size)  # type: ignore[call-overload]

    def _node(self, level: int, index: int) -> bytes:
        self.node_reads += 1
        if level == 0:
            rows = self._q("SELECT leaf FROM records WHERE idx = ?", (index,))
        else:
            rows = self._q("SELECT hash FROM nodes WHERE level = ? AND idx = ?", (level, index))
        if not rows:
            raise AuditIntegrityError(
                f"audit tree node (level {level}, index {index}) is missing",
                index=index << level,
                level=level,
            )
        return bytes(rows[0][0])  # type: ignore[arg-type]

    def size(self) -> int:
        self._read()
        return self._size_now()

    def root(self, size: int | None = None) -> bytes:
        """Root hash of the tree of ``size`` leaves (default: now), from O(log n) stored nodes."""
        self._read()
        size = self._check_size(size)
        return range_root(self._node, 0, size)

    def _check_size(self, size: int | None) -> int:
        now = self._size_now()
        if size is None:
            return now
        if not 0 <= size <= now:
            raise NotFoundError(f"audit tree size {size} is outside 0..{now}")
        return size

    def get(self, index: int) -> AuditRecord:
        self._read()
        rows = self._q("SELECT body FROM records WHERE idx = ?", (index,))
        if not rows:
            raise NotFoundError(f"audit record {index} does not exist", index=index)
        return decode(bytes(rows[0][0]), index)  # type: ignore[arg-type]

    def tail(self, n: int = 20) -> list[AuditRecord]:
        self._read()
        rows = self._q("SELECT idx, body FROM records ORDER BY idx DESC LIMIT ?", (max(n, 0),))
        return [decode(bytes(body), int(idx)) for idx, body in reversed(rows)]  # type: ignore[arg-type]

    def since(self, start: int, limit: int = 4096) -> list[AuditRecord]:
        """Records from index ``start`` on, at most ``limit``: for followers (eventward._internal.monitor)."""
        self._read()
        sql = "SELECT idx, body FROM records WHERE idx >= ? ORDER BY idx LIMIT ?"
        rows = self._q(sql, (max(start, 0), max(limit, 0)))
        return [decode(bytes(body), int(idx)) for idx, body in rows]  # type: ignore[arg-type]

    def prove(self, index: int, size: int | None = None) -> InclusionProof:
        """Inclusion proof of record ``index`` in the tree of ``size`` leaves (default: now)."""
        self._read()
        size = self._check_size(size)
        if not 0 <= index < size:
            raise NotFoundError(f"audit record {index} is not in the tree of size {size}", index=index)
        leaf = self._node(0, index)
        return InclusionProof(index, size, leaf, tuple(inclusion_path(self._node, index, size)))

    def consistency(self, old_size: int, new_size: int | None = None) -> ConsistencyProof:
        """Proof that the tree of ``new_size`` (default: now) extends the tree of ``old_size``."""
        self._read()
        new_size = self._check_size(new_size)
        if not 0 <= old_size <= new_size:
            raise NotFoundError(f"audit tree size {old_size} is outside 0..{new_size}")
        return ConsistencyProof(old_size, new_size, tuple(consistency_path(self._node, old_size, new_size)))

    def checkpoints(self) -> list[str]:
        """Texts of the checkpoints this log issued, oldest first (verify before trusting)."""
        self._read()
        return [str(t) for (t,) in self._q("SELECT text FROM checkpoints ORDER BY rowid")]

    def attachments(self, kind: str, key: str) -> list[tuple[int, str]]:
        self._read()
        rows = self._q(
            "SELECT idx, doc FROM attachments WHERE kind = ? AND key = ? ORDER BY rowid", (kind, key)
        )
        return [(int(i), str(d)) for i, d in rows]  # type: ignore[call-overload]

    def reader(self) -> AuditLog:
        """A separate read-only handle on the same file (after a flush and the ReadAudit check).

        Long reads such as full verification use it so they see one snapshot and never hold
        up writers of this handle.
        """
        self._read()
        return AuditLog.open_readonly(self.path)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Run reads on one consistent snapshot (read-only handles only)."""
        if self._signer is not None:
            raise ConfigError("snapshot() is for read-only handles; use reader()")
        self._q("BEGIN")
        try:
            yield
        finally:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("COMMIT")

    def scan(self) -> Iterator[tuple[int, bytes, bytes]]:
        """(index, stored leaf hash, stored bytes) in index order, streamed: for verifiers."""
        self._read()
        yield from self._stream("SELECT idx, leaf, body FROM records ORDER BY idx")

    def scan_nodes(self, level: int) -> Iterator[tuple[int, bytes]]:
        """(index, stored hash) of one level of stored subtrees, in index order."""
        self._read()
        yield from self._stream("SELECT idx, hash FROM nodes WHERE level = ? ORDER BY idx", (level,))

    def node_count(self) -> int:
        self._read()
        (n,) = self._q("SELECT count(*) FROM nodes")[0]
        return int(n)  # type: ignore[call-overload]

    def _stream(self, sql: str, args: tuple[object, ...] = ()) -> Iterator[tuple]:  # type: ignore[type-arg]
        try:
            cur = self._conn.execute(sql, args)
            while rows := cur.fetchmany(4096):
                yield from rows
        except sqlite3.Error as e:
            raise _unavailable(self.path, e) from None

    # --- lifecycle ---------------------------------------------------------------------
    def _writable(self) -> None:
        if self._closed:
            raise ConfigError("audit log is closed")
        if self._signer is None:
            raise ConfigError("this audit log was opened read-only")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                if self._signer is not None:
                    self._flush_locked()
            finally:
                self._closed = True
                self._wake.notify_all()  # the flusher sees the log closed and ends
                self._conn.close()
                atexit.unregister(self.close)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AuditLog({self.path})"
