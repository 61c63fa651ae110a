"""PostgreSQL key store: the keys.store_base.KeyStore contract on one database every replica shares.

Semantics match the SQLite store so the key service cannot tell them apart (the same contract
tests run on both): every write transaction holds one advisory lock (the store's write lock,
across replicas, as SQLite's ``BEGIN IMMEDIATE`` is across processes), so a KMS call the
service makes inside ``transaction()`` is serialized with every other writer; concurrent first
use of a (subject, class) converges through the UNIQUE constraint (``ON CONFLICT DO NOTHING``,
the loser re-reads). ``erase_subject`` deletes the wrapped DEKs and the pseudonym, writes the
tombstones and the ledger row and bumps the epoch in one transaction.

Residual copies: a DELETE leaves a dead tuple until VACUUM, and plain VACUUM compacts a page
without zeroing its free space (measured: the last tuple's bytes stay), so ``purge`` runs
``VACUUM (FULL)`` on the partitions (of 16, by subject hash) that held erased DEKs or
pseudonyms, rewriting them into new files while the other partitions stay readable. WAL
segments, archives, replicas and base backups still hold the old bytes: those are bounded by
KEK-epoch rotation (docs/DESIGN.md), as for SQLite.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterable, Iterator

import orjson
import psycopg

from eventward._internal.keys.dek import WRAPPED_COLUMNS, WrappedRow
from eventward._internal.keys.store_base import ClassCounts, DekRecord, Erasure
from eventward._internal.store.dsn import scrub
from eventward._internal.store.migrations import SCHEMA
from eventward._internal.store.pg import Database
from eventward.errors import InputError, KeyStoreUnavailable, LegalHoldError, StoreUnavailable

_PARTITION = re.compile(rf"{SCHEMA}\.(deks|pseudonyms)_p[0-9]{{1,3}}")  # names VACUUM may be given
WRITE_LOCK = 0x65776B73  # pg_advisory_xact_lock key of the key store's write lock ("ewks")
_S = SCHEMA
_DEK_COLUMNS = "kid, subject_hash, class, version, kek_id, wrapped, created, uses, fmt, uses_tag"
_SELECT_DEK = f"SELECT {_DEK_COLUMNS} FROM {_S}.deks"
_SELECT_WRAPPED = f"SELECT {', '.join(WRAPPED_COLUMNS)} FROM {_S}.deks"
_INSERT_DEK = (f"INSERT INTO {_S}.deks ({_DEK_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
               "ON CONFLICT DO NOTHING")


def _params(r: DekRecord) -> tuple:
    return (r.kid, r.subject_hash, r.cls, r.version, r.kek_id, r.wrapped, r.created, r.uses, r.fmt, r.uses_tag)


def _dek(row: tuple) -> DekRecord:
    return DekRecord(row[0], row[1], row[2], row[3], row[4], bytes(row[5]), float(row[6]), int(row[7]), row[8],
                     bytes(row[9]))


def _check_subject_hash(subject_hash: str) -> None:
    # The class-DEK sentinel ("") and anything that is not a keyed hash can never be erased or held.
    if len(subject_hash) != 32 or any(c not in "0123456789abcdef" for c in subject_hash):
        raise InputError("not a subject hash (32 lowercase hex characters)")


class PgKeyStore:
    """Implements keys.store_base.KeyStore on PostgreSQL; safe across threads and replicas."""

    def __init__(self, db: Database, *, owns_db: bool = False) -> None:
        """``db`` must be open (``Database.open`` checked its schema version and deployment id)."""
        self.db = db
        self.path = db.where  # what messages name (never the DSN)
        self._owns_db = owns_db
        self._local = threading.local()
        self._dirty: set[str] = set()  # partitions that held erased rows, rewritten by purge()
        self._dirty_lock = threading.Lock()
        self._id = self._require_meta("store_id")

    def __repr__(self) -> str:
        return f"PgKeyStore({self.db.where!r})"

    # --- plumbing ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _errors(self, op: str) -> Iterator[None]:
        """Database failures become KeyStoreUnavailable naming the database and the operation."""
        try:
            yield
        except StoreUnavailable as e:
            raise KeyStoreUnavailable(f"key store: {e.message}") from None
        except psycopg.Error as e:  # a statement failed inside a transaction we hold
            state = getattr(e, "sqlstate", None) or "driver"
            raise KeyStoreUnavailable(
                f"key store {self.db.where}: {op} failed [{state}]: {scrub(str(e), self.db.dsn)}"
            ) from None

    @contextlib.contextmanager
    def _conn(self, op: str) -> Iterator[psycopg.Connection]:
        """The thread's transaction connection if one is open, else a pooled autocommit one."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            with self._errors(op):
                yield conn
            return
        with self._errors(op), self.db.connection(op) as conn:
            yield conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        if getattr(self._local, "conn", None) is not None:
            yield  # re-entrant: the outer transaction commits
            return
        with self._errors("transaction"), self.db.connection("transaction") as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            self._local.conn = conn
            try:
                yield
            finally:
                self._local.conn = None

    def _one(self, op: str, sql: str, params: tuple = ()) -> tuple | None:
        if getattr(self._local, "conn", None) is None:  # a read on its own: retried on a dropped connection
            with self._errors(op):
                return self.db.run(op, lambda c: c.execute(sql, params).fetchone())
        with self._conn(op) as c:
            return c.execute(sql, params).fetchone()

    def _all(self, op: str, sql: str, params: tuple = ()) -> list[tuple]:
        if getattr(self._local, "conn", None) is None:
            with self._errors(op):
                return self.db.run(op, lambda c: c.execute(sql, params).fetchall())
        with self._conn(op) as c:
            return c.execute(sql, params).fetchall()

    def _write(self, op: str, sql: str, params: tuple = ()) -> psycopg.Cursor:
        with self.transaction(), self._conn(op) as c:
            return c.execute(sql, params)

    def _require_meta(self, key: str) -> str:
        value = self.meta_text(key)
        if value is None:
            raise KeyStoreUnavailable(f"key store {self.db.where} has no {key}: run 'eventward db migrate'")
        return value

    # --- DEKs -------------------------------------------------------------------------------
    def insert_dek(self, rec: DekRecord) -> bool:
        return self._write("insert key", _INSERT_DEK, _params(rec)).rowcount == 1

    def insert_many(self, recs: Iterable[DekRecord]) -> int:
        """Bulk load (benchmarks, imports): one transaction, duplicates ignored."""
        with self.transaction(), self._conn("bulk insert keys") as c, c.cursor() as cur:
            n = 0
            for r in recs:
                n += cur.execute(_INSERT_DEK, _params(r)).rowcount
            return n

    def get_dek(self, kid: str) -> DekRecord | None:
        row = self._one("read key", f"{_SELECT_DEK} WHERE kid = %s", (kid,))
        return _dek(row) if row else None

    def get_deks(self, kids: Iterable[str]) -> dict[str, DekRecord]:
        """The rows of many kids in one query (``kid = ANY(...)``); missing kids are absent."""
        todo = list(dict.fromkeys(kids))
        if not todo:
            return {}
        rows = self._all("read keys", f"{_SELECT_DEK} WHERE kid = ANY(%s)", (todo,))
        return {r[0]: _dek(r) for r in rows}

    def wrapped_deks(self, kids: Iterable[str]) -> dict[str, WrappedRow]:
        """``get_deks`` for decryption: of each kid's row only what its unwrap needs
        (dek.WRAPPED_COLUMNS), as plain tuples, in one query."""
        todo = list(dict.fromkeys(kids))
        if not todo:
            return {}
        rows = self._all("read keys", f"{_SELECT_WRAPPED} WHERE kid = ANY(%s)", (todo,))
        return {r[0]: (r[0], r[1], r[2], r[3], r[4], bytes(r[5]), float(r[6]), r[7]) for r in rows}

    def current_dek(self, subject_hash: str, cls: str) -> DekRecord | None:
        row = self._one(
            "read current key",
            f"{_SELECT_DEK} WHERE subject_hash = %s AND class = %s ORDER BY version DESC LIMIT 1",
            (subject_hash, cls),
        )
        return _dek(row) if row else None

    def current_deks(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], DekRecord]:
        """The highest version of each (subject hash, class) wanted, in one query
        (``subject_hash = ANY(...)``); pairs with no key are absent."""
        wanted = set(pairs)
        if not wanted:
            return {}
        subjects = sorted({h for h, _ in wanted})
        classes = sorted({c for _, c in wanted})
        sql = (f"SELECT DISTINCT ON (subject_hash, class) {_DEK_COLUMNS} FROM {_S}.deks "
               "WHERE subject_hash = ANY(%s) AND class = ANY(%s) ORDER BY subject_hash, class, version DESC")
        out: dict[tuple[str, str], DekRecord] = {}
        for row in self._all("read current keys", sql, (subjects, classes)):
            if (row[1], row[2]) in wanted:
                out[row[1], row[2]] = _dek(row)
        return out

    def insert_deks(self, recs: Iterable[DekRecord]) -> set[str]:
        """Insert many new DEK rows with one multi-row ``INSERT ... ON CONFLICT DO NOTHING
        RETURNING kid`` per 500 (one transaction); returns the kids inserted. A row whose
        (subject, class, version) exists is skipped: its creator lost the race."""
        todo = list(recs)
        done: set[str] = set()
        with self.transaction(), self._conn("insert keys") as c:
            for i in range(0, len(todo), 500):
                chunk = todo[i : i + 500]
                values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(chunk))
                sql = (f"INSERT INTO {_S}.deks ({_DEK_COLUMNS}) VALUES {values} "
                       "ON CONFLICT DO NOTHING RETURNING kid")
                params = [v for r in chunk for v in _params(r)]
                done.update(str(r[0]) for r in c.execute(sql, params).fetchall())
        return done

    def tombstone(self, kid: str) -> tuple[str, float] | None:
        row = self._one("read tombstone", f"SELECT class, destroyed_at FROM {_S}.tombstones WHERE kid = %s", (kid,))
        return (row[0], row[1]) if row else None

    def deks_to_rewrap(self, cls: str, keep_kek: str, after_kid: str, limit: int) -> list[DekRecord]:
        rows = self._all(
            "scan keys",
            f"{_SELECT_DEK} WHERE class = %s AND kek_id != %s AND kid > %s ORDER BY kid LIMIT %s",
            (cls, keep_kek, after_kid, limit),
        )
        return [_dek(r) for r in rows]

    def rewrap(self, kid: str, old_kek: str, new_kek: str, wrapped: bytes, fmt: int = 1) -> bool:
        cur = self._write("re-wrap key", f"UPDATE {_S}.deks SET kek_id = %s, wrapped = %s, fmt = %s "
                          "WHERE kid = %s AND kek_id = %s", (new_kek, wrapped, fmt, kid, old_kek))
        return cur.rowcount == 1

    def kek_usage(self, cls: str) -> dict[str, int]:
        rows = self._all("count keys", f"SELECT kek_id, count(*) FROM {_S}.deks WHERE class = %s GROUP BY kek_id",
                         (cls,))
        return {k: int(n) for k, n in rows}

    def add_uses(self, kid: str, n: int) -> int:
        with self.transaction(), self._conn("count key uses") as c:
            row = c.execute(f"UPDATE {_S}.deks SET uses = uses + %s WHERE kid = %s RETURNING uses", (n, kid)).fetchone()
            return int(row[0]) if row else 0

    def set_uses(self, kid: str, expect: int, uses: int, tag: bytes) -> bool:
        cur = self._write("count key uses",
                          f"UPDATE {_S}.deks SET uses = %s, uses_tag = %s WHERE kid = %s AND uses = %s",
                          (uses, tag, kid, expect))
        return cur.rowcount == 1

    # --- identity ---------------------------------------------------------------------------
    def store_id(self) -> str:
        return self._id

    def meta_text(self, key: str) -> str | None:
        row = self._one("read meta", f"SELECT value FROM {_S}.key_meta WHERE key = %s", (key,))
        return None if row is None else str(row[0])

    def set_meta_text(self, key: str, value: str) -> None:
        self._write("write meta", f"INSERT INTO {_S}.key_meta (key, value) VALUES (%s, %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    def intact(self) -> bool:
        """The database still holds this store's id (not dropped, restored over or replaced)."""
        try:
            return self.meta_text("store_id") == self._id
        except KeyStoreUnavailable:
            return False

    # --- erasure ----------------------------------------------------------------------------
    def _delete_keys(self, c: psycopg.Connection, subject_hash: str, at: float,
                     before: float | None) -> list[tuple[str, str]]:
        """Delete then tombstone the subject's DEKs (created at or before ``before`` if given)."""
        cond, params = "subject_hash = %s", (subject_hash,)
        if before is not None:
            cond, params = "subject_hash = %s AND created <= %s", (subject_hash, before)
        rows = c.execute(f"DELETE FROM {_S}.deks WHERE {cond} RETURNING kid, class, tableoid::regclass::text",
                         params).fetchall()
        self._mark_dirty(r[2] for r in rows)
        if rows:
            with c.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO {_S}.tombstones (kid, class, destroyed_at) VALUES (%s, %s, %s) "
                    "ON CONFLICT DO NOTHING",
                    [(kid, cls, at) for kid, cls, _ in rows],
                )
        return [(str(k), str(cl)) for k, cl, _ in rows]

    def _record(self, c: psycopg.Connection, e: Erasure, replace: bool) -> bool:
        action = "UPDATE SET classes = excluded.classes, destroyed = excluded.destroyed" if replace else "NOTHING"
        cur = c.execute(
            f"INSERT INTO {_S}.erasures (subject_hash, time, classes, destroyed) VALUES (%s, %s, %s, %s) "
            f"ON CONFLICT (subject_hash, time) DO {action}",
            (e.subject_hash, e.time, orjson.dumps(list(e.classes)).decode(), e.destroyed),
        )
        return cur.rowcount == 1

    def erase_subject(self, subject_hash: str, at: float) -> Erasure:
        _check_subject_hash(subject_hash)
        with self.transaction(), self._conn("erase subject") as c:
            row = c.execute(f"SELECT since, reason, placed_by FROM {_S}.holds WHERE subject_hash = %s",
                            (subject_hash,)).fetchone()
            if row:
                since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row[0]))
                by = f" placed by {row[2]}" if row[2] else ""
                raise LegalHoldError(
                    f"subject {subject_hash} is under legal hold {row[1]}{by} since {since}; "
                    "release the hold before forgetting",
                    subject_hash=subject_hash,
                    hold_code=row[1],
                    held_by=row[2],
                )
            rows = self._delete_keys(c, subject_hash, at, None)
            # The only link from the person to the pseudonym goes with the keys, in this transaction.
            gone = c.execute(f"DELETE FROM {_S}.pseudonyms WHERE pseudonym = %s RETURNING tableoid::regclass::text",
                             (subject_hash,)).fetchall()
            self._mark_dirty(r[0] for r in gone)
            e = Erasure(subject_hash, at, tuple(sorted({cls for _, cls in rows})), len(rows))
            self._record(c, e, replace=True)
            self._bump(c)
            return e

    def apply_erasure(self, erasure: Erasure) -> int:
        _check_subject_hash(erasure.subject_hash)
        with self.transaction(), self._conn("re-apply erasure") as c:
            if not self._record(c, erasure, replace=False):
                return 0
            rows = self._delete_keys(c, erasure.subject_hash, erasure.time, erasure.time)
            gone = c.execute(f"DELETE FROM {_S}.pseudonyms WHERE pseudonym = %s AND created <= %s "
                             "RETURNING tableoid::regclass::text", (erasure.subject_hash, erasure.time)).fetchall()
            self._mark_dirty(r[0] for r in gone)
            if rows:
                self._bump(c)
            return len(rows)

    def erased(self, subject_hash: str) -> bool:
        row = self._one("read erasures", f"SELECT 1 FROM {_S}.erasures WHERE subject_hash = %s LIMIT 1",
                        (subject_hash,))
        return row is not None

    def erasures(self) -> list[Erasure]:
        rows = self._all("read erasures", f"SELECT subject_hash, time, classes, destroyed FROM {_S}.erasures "
                         "ORDER BY time, subject_hash")
        return [Erasure(s, float(t), tuple(orjson.loads(cl)), int(n)) for s, t, cl, n in rows]

    # --- pseudonyms -------------------------------------------------------------------------
    def pseudonym(self, lookup: str) -> str | None:
        row = self._one("read pseudonym", f"SELECT pseudonym FROM {_S}.pseudonyms WHERE lookup = %s", (lookup,))
        return None if row is None else str(row[0])

    def add_pseudonym(self, lookup: str, pseudonym: str, at: float, kind: int = 2) -> str:
        """Record ``pseudonym`` for ``lookup`` unless another replica did first; returns the winner."""
        _check_subject_hash(pseudonym)
        with self.transaction(), self._conn("record pseudonym") as c:  # the write lock: one per lookup
            row = c.execute(f"SELECT pseudonym FROM {_S}.pseudonyms WHERE lookup = %s", (lookup,)).fetchone()
            if row is None:
                c.execute(f"INSERT INTO {_S}.pseudonyms (lookup, pseudonym, created, kind) VALUES (%s, %s, %s, %s)",
                          (lookup, pseudonym, at, kind))
                return pseudonym
            return str(row[0])

    def pseudonyms(self, lookups: Iterable[str]) -> dict[str, str]:
        """``pseudonym`` for many lookups in one query (lookup -> pseudonym; unknown ones absent)."""
        todo = sorted(set(lookups))
        if not todo:
            return {}
        rows = self._all("read pseudonyms", f"SELECT lookup, pseudonym FROM {_S}.pseudonyms WHERE lookup = ANY(%s)",
                         (todo,))
        return {str(a): str(b) for a, b in rows}

    def add_pseudonyms(self, rows: Iterable[tuple[str, str, int]], at: float) -> dict[str, str]:
        """``add_pseudonym`` for many (lookup, pseudonym, kind) in one transaction under the write
        lock; returns the pseudonym recorded for each lookup (another replica's where it was first)."""
        todo = list(rows)
        for _, p, _ in todo:
            _check_subject_hash(p)
        with self.transaction(), self._conn("record pseudonyms") as c:  # the write lock: one per lookup
            found = self.pseudonyms(lk for lk, _, _ in todo)
            todo = list({lk: (lk, p, k) for lk, p, k in todo if lk not in found}.values())
            for i in range(0, len(todo), 500):
                chunk = todo[i : i + 500]
                values = ", ".join(["(%s, %s, %s, %s)"] * len(chunk))
                c.execute(f"INSERT INTO {_S}.pseudonyms (lookup, pseudonym, created, kind) VALUES {values} "
                          "ON CONFLICT DO NOTHING", [v for lk, p, k in chunk for v in (lk, p, at, k)])
            found.update((lk, p) for lk, p, _ in todo)
            return found

    def live_pseudonyms(self, pseudonyms: Iterable[str]) -> set[str]:
        """Those of ``pseudonyms`` a subject still maps to (``pseudonym_live`` for many)."""
        todo = sorted(set(pseudonyms))
        if not todo:
            return set()
        rows = self._all("read pseudonyms", f"SELECT pseudonym FROM {_S}.pseudonyms WHERE pseudonym = ANY(%s)",
                         (todo,))
        return {str(r[0]) for r in rows}

    def legacy_subjects(self, subject_hashes: Iterable[str]) -> set[str]:
        """Those of ``subject_hashes`` that key DEKs or holds (``legacy_subject`` for many)."""
        todo = sorted(set(subject_hashes))
        if not todo:
            return set()
        sql = (f"SELECT subject_hash FROM {_S}.deks WHERE subject_hash = ANY(%s) "
               f"UNION SELECT subject_hash FROM {_S}.holds WHERE subject_hash = ANY(%s)")
        return {str(r[0]) for r in self._all("read subjects", sql, (todo, todo))}

    def pseudonym_live(self, pseudonym: str) -> bool:
        row = self._one("read pseudonym", f"SELECT 1 FROM {_S}.pseudonyms WHERE pseudonym = %s", (pseudonym,))
        return row is not None

    def legacy_subject(self, subject_hash: str) -> bool:
        for table in ("deks", "holds"):
            if self._one("read subject", f"SELECT 1 FROM {_S}.{table} WHERE subject_hash = %s LIMIT 1",
                         (subject_hash,)) is not None:
                return True
        return False

    # --- legal holds ------------------------------------------------------------------------
    def hold(self, subject_hash: str, reason: str, since: float, by: str = "") -> None:
        _check_subject_hash(subject_hash)
        self._write("place hold", f"INSERT INTO {_S}.holds (subject_hash, reason, since, placed_by) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (subject_hash) DO UPDATE SET reason = excluded.reason, "
                    "since = excluded.since, placed_by = excluded.placed_by", (subject_hash, reason, since, by))

    def release(self, subject_hash: str) -> bool:
        return self._write("release hold", f"DELETE FROM {_S}.holds WHERE subject_hash = %s",
                           (subject_hash,)).rowcount == 1

    def held(self, subject_hash: str) -> str | None:
        row = self._one("read hold", f"SELECT reason FROM {_S}.holds WHERE subject_hash = %s", (subject_hash,))
        return row[0] if row else None

    def hold_info(self, subject_hash: str) -> tuple[str, float, str] | None:
        row = self._one("read hold", f"SELECT reason, since, placed_by FROM {_S}.holds WHERE subject_hash = %s",
                        (subject_hash,))
        return (str(row[0]), float(row[1]), str(row[2])) if row else None

    def holds_count(self) -> int:
        row = self._one("count holds", f"SELECT count(*) FROM {_S}.holds")
        return int(row[0]) if row else 0

    # --- revocation epoch, stats, purge -----------------------------------------------------
    def epoch(self) -> int:
        row = self._one("read epoch", f"SELECT value FROM {_S}.key_meta WHERE key = 'epoch'")
        return int(row[0]) if row else 0

    def _bump(self, c: psycopg.Connection) -> int:
        row = c.execute(f"UPDATE {_S}.key_meta SET value = (value::bigint + 1)::text WHERE key = 'epoch' "
                        "RETURNING value").fetchone()
        return int(row[0])

    def bump_epoch(self) -> int:
        with self.transaction(), self._conn("bump epoch") as c:
            return self._bump(c)

    def counts(self) -> list[ClassCounts]:
        deks = self._all("count keys",
                         f"SELECT class, count(*), count(DISTINCT subject_hash) FROM {_S}.deks GROUP BY class")
        tombs = {c: int(n) for c, n in self._all("count tombstones",
                                                 f"SELECT class, count(*) FROM {_S}.tombstones GROUP BY class")}
        out = {c: ClassCounts(c, int(n), int(s), tombs.get(c, 0)) for c, n, s in deks}
        for c, t in tombs.items():
            out.setdefault(c, ClassCounts(c, 0, 0, t))
        return [out[c] for c in sorted(out)]

    def _mark_dirty(self, partitions: Iterable[str]) -> None:
        with self._dirty_lock:
            self._dirty.update(p for p in partitions if _PARTITION.fullmatch(p))

    def purge(self, lock_timeout_s: float = 2.0) -> bool:
        """Rewrite (``VACUUM (FULL)``) the partitions this store erased rows from, so deleted
        wrapped keys and pseudonyms leave the table files; only those partitions are locked.
        False when another session held one past ``lock_timeout_s`` (the rows are deleted either
        way; the partitions stay marked and the next purge rewrites them)."""
        if getattr(self._local, "conn", None) is not None:
            return False  # VACUUM cannot run inside a transaction; the caller purges after it
        with self._dirty_lock:
            todo, self._dirty = sorted(self._dirty), set()
        if not todo:
            return True
        try:
            with self.db.connection("purge") as c:
                c.execute(f"SET lock_timeout = '{int(lock_timeout_s * 1000)}ms'")
                try:
                    c.execute(f"VACUUM (FULL) {', '.join(todo)}")
                finally:
                    with contextlib.suppress(psycopg.Error):
                        c.execute("RESET lock_timeout")
            return True
        except StoreUnavailable:
            self._mark_dirty(todo)
            return False

    def close(self) -> None:
        if self._owns_db:
            self.db.close()
