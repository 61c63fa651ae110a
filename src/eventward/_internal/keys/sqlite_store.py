"""SQLite key store: one WAL database file, ``secure_delete`` on, fully synchronous.

Losing a committed DEK loses every event encrypted with it, so commits are ``synchronous=FULL``.
Erasure zeroes freed pages (``secure_delete``) and then truncates the WAL so the wrapped bytes
leave every file. Concurrent first use of a (subject, class) by two processes converges on one
key through the UNIQUE constraint: the loser's INSERT is ignored and it re-reads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson

from eventward._internal.home import private_file
from eventward._internal.keys.dek import WRAPPED_COLUMNS, WrappedRow
from eventward._internal.keys.store_base import ClassCounts, DekRecord, Erasure
from eventward.errors import InputError, KeyStoreUnavailable, LegalHoldError

SCHEMA_VERSION = 2  # 2: deks.fmt (wrap AAD format) and deks.uses_tag (MAC over the use counter)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deks (
    kid TEXT PRIMARY KEY,
    subject_hash TEXT NOT NULL,
    class TEXT NOT NULL,
    version INTEGER NOT NULL,
    kek_id TEXT NOT NULL,
    wrapped BLOB NOT NULL,
    created REAL NOT NULL,
    uses INTEGER NOT NULL DEFAULT 0,
    fmt INTEGER NOT NULL DEFAULT 1,
    uses_tag BLOB NOT NULL DEFAULT x'',
    UNIQUE (subject_hash, class, version)
);
CREATE INDEX IF NOT EXISTS deks_class_kek ON deks (class, kek_id);
CREATE TABLE IF NOT EXISTS tombstones (
    kid TEXT PRIMARY KEY,
    class TEXT NOT NULL,
    destroyed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS holds (
    subject_hash TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    since REAL NOT NULL,
    placed_by TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS erasures (
    subject_hash TEXT NOT NULL,
    time REAL NOT NULL,
    classes TEXT NOT NULL,
    destroyed INTEGER NOT NULL,
    PRIMARY KEY (subject_hash, time)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS pseudonyms (
    lookup TEXT PRIMARY KEY,
    pseudonym TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    kind INTEGER NOT NULL DEFAULT 2
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch', 0);
"""

_DEK_COLUMNS = "kid, subject_hash, class, version, kek_id, wrapped, created, uses, fmt, uses_tag"
_INSERT_DEK = f"INSERT OR IGNORE INTO deks ({_DEK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_MIGRATE_1_TO_2 = (
    "ALTER TABLE deks ADD COLUMN fmt INTEGER NOT NULL DEFAULT 1",
    "ALTER TABLE deks ADD COLUMN uses_tag BLOB NOT NULL DEFAULT x''",
)
_SELECT_DEK = f"SELECT {_DEK_COLUMNS} FROM deks"
_SELECT_WRAPPED = f"SELECT {', '.join(WRAPPED_COLUMNS)} FROM deks"
# The same rows for kids given as one JSON array: one bound value and one index probe per kid,
# instead of ``kid IN (?, ?, ...)`` (500 bound values SQLite first sorts into a temporary index):
# 19.2k -> 16.9k instructions per key at a million keys. CROSS JOIN keeps json_each the outer loop.
_SELECT_WRAPPED_JSON = (
    f"SELECT {', '.join('d.' + c for c in WRAPPED_COLUMNS)} FROM json_each(?) AS j CROSS JOIN deks AS d "
    "ON d.kid = j.value"
)
_IN_CHUNK = 500  # kids per IN (...) query: far below SQLite's bound on host parameters


def _params(r: DekRecord) -> tuple:
    return (r.kid, r.subject_hash, r.cls, r.version, r.kek_id, r.wrapped, r.created, r.uses, r.fmt, r.uses_tag)


_DEK_FIELDS = tuple(f.name for f in dataclasses.fields(DekRecord))  # the order of _DEK_COLUMNS
_new = object.__new__


def _dek(row: tuple) -> DekRecord:
    """A DekRecord from a row of _DEK_COLUMNS. Built without the frozen dataclass's __init__ (a
    setattr per field): a consumer's read batch makes one per key, hundreds per batch."""
    rec = _new(DekRecord)
    rec.__dict__.update(zip(_DEK_FIELDS, row, strict=True))
    if type(row[5]) is not bytes or type(row[9]) is not bytes:  # sqlite3 gives bytes for BLOBs
        rec.__dict__.update(wrapped=bytes(row[5]), uses_tag=bytes(row[9]))
    return rec


def _has_json_each(db: sqlite3.Connection) -> bool:
    """Whether this SQLite has json_each (built in since 3.38; older builds may lack JSON1)."""
    try:
        return db.execute("SELECT count(*) FROM json_each('[1]')").fetchone()[0] == 1
    except sqlite3.Error:
        return False


def _utf8(text: str) -> bool:
    """Whether ``text`` can be bound as SQLite text (no lone surrogates)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _check_subject_hash(subject_hash: str) -> None:
    # The class-DEK sentinel ("") and anything that is not a keyed hash can never be erased or held.
    if len(subject_hash) != 32 or any(c not in "0123456789abcdef" for c in subject_hash):
        raise InputError("not a subject hash (32 lowercase hex characters)")


class SQLiteKeyStore:
    """Implements keys.store_base.KeyStore on one SQLite file; safe across threads and processes."""

    def __init__(self, path: Path, *, busy_timeout: float = 5.0, create: bool = False) -> None:
        """Open the store at ``path``. Only ``create=True`` (``init``) may make a new one: an
        existing deployment whose store is missing must stop, not start over with no keys,
        or every event it reads would look forged."""
        self.path = path
        self._lock = threading.RLock()
        self._depth = 0
        with self._errors("open"):
            if create:
                private_file(path)  # 0600 before SQLite opens it: the -wal/-shm files get its mode
            elif not path.is_file():
                raise KeyStoreUnavailable(
                    f"key store {path} is missing: restore it from a backup (only 'eventward init' creates "
                    "a key store; a new, empty one would make every stored event unreadable)",
                    path=str(path),
                )
            # mode=rw: never let SQLite create the file behind our back.
            uri = "file:" + urllib.parse.quote(str(path)) + "?mode=rw"
            self._db = sqlite3.connect(
                uri, uri=True, isolation_level=None, check_same_thread=False, timeout=busy_timeout
            )
            try:
                st = os.stat(path)
                self._file = (st.st_dev, st.st_ino)
                mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode != "wal":
                    raise KeyStoreUnavailable(f"key store {path} cannot use WAL mode (got {mode})")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.execute("PRAGMA secure_delete=ON")
                with self.transaction():
                    for stmt in filter(str.strip, _SCHEMA.split(";")):
                        self._db.execute(stmt)
                    fresh = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone() is None
                    self._db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)",
                                     (SCHEMA_VERSION if fresh else 1,))
                    found = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0]
                    if found == 1 and not fresh:
                        for stmt in _MIGRATE_1_TO_2:
                            self._db.execute(stmt)
                        self._db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (SCHEMA_VERSION,))
                        found = SCHEMA_VERSION
                    holds = {r[1] for r in self._db.execute("PRAGMA table_info(holds)").fetchall()}
                    if "placed_by" not in holds:  # stores made before holds named who placed them
                        self._db.execute("ALTER TABLE holds ADD COLUMN placed_by TEXT NOT NULL DEFAULT ''")
                    self._db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('store_id', ?)",
                                     ("s-" + secrets.token_hex(16),))
                    self._id = str(self._db.execute("SELECT value FROM meta WHERE key='store_id'").fetchone()[0])
                self._json = _has_json_each(self._db)
                if found != SCHEMA_VERSION:
                    raise KeyStoreUnavailable(
                        f"key store {path} has schema {found}, expected {SCHEMA_VERSION}"
                    )
            except BaseException:
                self._db.close()
                raise

    def __repr__(self) -> str:
        return f"SQLiteKeyStore({str(self.path)!r})"

    @contextlib.contextmanager
    def _errors(self, op: str) -> Iterator[None]:
        """Driver and OS failures become KeyStoreUnavailable naming the file and the operation."""
        try:
            yield
        except sqlite3.Error as e:
            raise KeyStoreUnavailable(f"key store {self.path}: {op} failed: {e}") from None
        except OSError as e:
            raise KeyStoreUnavailable(f"key store {self.path}: {op} failed: {e.strerror}") from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            with self._errors("begin"):
                self._db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
                with self._errors("commit"):
                    self._db.execute("COMMIT")
            finally:
                self._depth = 0
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")

    def _all(self, op: str, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock, self._errors(op):
            return self._db.execute(sql, params).fetchall()

    def _one(self, op: str, sql: str, params: tuple = ()) -> tuple | None:
        with self._lock, self._errors(op):
            return self._db.execute(sql, params).fetchone()

    # --- DEKs -------------------------------------------------------------------------------
    def insert_dek(self, rec: DekRecord) -> bool:
        with self.transaction(), self._errors("insert key"):
            return self._db.execute(_INSERT_DEK, _params(rec)).rowcount == 1

    def insert_many(self, recs: Iterable[DekRecord]) -> int:
        """Bulk load (benchmarks, imports): one transaction, duplicates ignored."""
        with self.transaction(), self._errors("bulk insert keys"):
            return self._db.executemany(_INSERT_DEK, (_params(r) for r in recs)).rowcount

    def get_dek(self, kid: str) -> DekRecord | None:
        row = self._one("read key", f"{_SELECT_DEK} WHERE kid = ?", (kid,))
        return _dek(row) if row else None

    def get_deks(self, kids: Iterable[str]) -> dict[str, DekRecord]:
        """The rows of many kids in one ``SELECT ... WHERE kid IN (...)`` per ``_IN_CHUNK`` of
        them (a consumer's read batch); kids the store lacks are simply absent."""
        todo = list(dict.fromkeys(kids))
        out: dict[str, DekRecord] = {}
        with self._lock, self._errors("read keys"):
            for i in range(0, len(todo), _IN_CHUNK):
                chunk = sorted(todo[i : i + _IN_CHUNK])  # primary-key order
                sql = f"{_SELECT_DEK} WHERE kid IN ({','.join('?' * len(chunk))})"
                for row in self._db.execute(sql, chunk).fetchall():
                    out[row[0]] = _dek(row)
        return out

    def wrapped_deks(self, kids: Iterable[str]) -> dict[str, WrappedRow]:
        """``get_deks`` for decryption: of each kid's row only what its unwrap needs
        (dek.WRAPPED_COLUMNS), as the tuple SQLite returns: no DekRecord, no use counter. A
        consumer of many subjects reads one row per event."""
        todo = sorted(set(kids))  # primary-key order
        out: dict[str, WrappedRow] = {}
        with self._lock, self._errors("read keys"):
            for i in range(0, len(todo), _IN_CHUNK):
                chunk = todo[i : i + _IN_CHUNK]
                found = None
                if self._json:  # not all text (orjson refuses lone surrogates too): bound values below
                    with contextlib.suppress(orjson.JSONEncodeError):
                        found = self._db.execute(_SELECT_WRAPPED_JSON, (orjson.dumps(chunk).decode(),)).fetchall()
                if found is None:  # no JSON1, or kids the JSON array cannot carry: bound values
                    chunk = [k for k in chunk if type(k) is not str or _utf8(k)]  # others name no row
                    sql = f"{_SELECT_WRAPPED} WHERE kid IN ({','.join('?' * len(chunk))})"
                    found = self._db.execute(sql, chunk).fetchall()
                out.update({row[0]: row for row in found})
        return out

    def current_dek(self, subject_hash: str, cls: str) -> DekRecord | None:
        row = self._one(
            "read current key",
            f"{_SELECT_DEK} WHERE subject_hash = ? AND class = ? ORDER BY version DESC LIMIT 1",
            (subject_hash, cls),
        )
        return _dek(row) if row else None

    def current_deks(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], DekRecord]:
        """The highest version of each (subject hash, class) wanted, read with one ``SELECT ...
        WHERE subject_hash IN (...)`` per ``_IN_CHUNK`` subjects (a producer's batch); pairs
        with no key are absent."""
        wanted = set(pairs)
        subjects = sorted({h for h, _ in wanted})
        out: dict[tuple[str, str], DekRecord] = {}
        with self._lock, self._errors("read current keys"):
            for i in range(0, len(subjects), _IN_CHUNK):
                chunk = subjects[i : i + _IN_CHUNK]
                sql = f"{_SELECT_DEK} WHERE subject_hash IN ({','.join('?' * len(chunk))})"
                for row in self._db.execute(sql, chunk).fetchall():
                    key = (row[1], row[2])
                    if key in wanted and (key not in out or out[key].version < row[3]):
                        out[key] = _dek(row)
        return out

    def insert_deks(self, recs: Iterable[DekRecord]) -> set[str]:
        """Insert many new DEK rows in one transaction (one fsync); returns the kids inserted. A
        row whose (subject, class, version) exists is ignored: its creator lost the race."""
        done: set[str] = set()
        with self.transaction(), self._errors("insert keys"):
            for r in recs:
                if self._db.execute(_INSERT_DEK, _params(r)).rowcount == 1:
                    done.add(r.kid)
        return done

    def tombstone(self, kid: str) -> tuple[str, float] | None:
        row = self._one("read tombstone", "SELECT class, destroyed_at FROM tombstones WHERE kid = ?", (kid,))
        return (row[0], row[1]) if row else None

    def deks_to_rewrap(self, cls: str, keep_kek: str, after_kid: str, limit: int) -> list[DekRecord]:
        rows = self._all(
            "scan keys",
            f"{_SELECT_DEK} WHERE class = ? AND kek_id != ? AND kid > ? ORDER BY kid LIMIT ?",
            (cls, keep_kek, after_kid, limit),
        )
        return [_dek(r) for r in rows]

    def rewrap(self, kid: str, old_kek: str, new_kek: str, wrapped: bytes, fmt: int = 1) -> bool:
        with self.transaction(), self._errors("re-wrap key"):
            cur = self._db.execute(
                "UPDATE deks SET kek_id = ?, wrapped = ?, fmt = ? WHERE kid = ? AND kek_id = ?",
                (new_kek, wrapped, fmt, kid, old_kek),
            )
            return cur.rowcount == 1

    def kek_usage(self, cls: str) -> dict[str, int]:
        sql = "SELECT kek_id, count(*) FROM deks WHERE class = ? GROUP BY kek_id"
        return dict(self._all("count keys", sql, (cls,)))

    def add_uses(self, kid: str, n: int) -> int:
        with self.transaction(), self._errors("count key uses"):
            row = self._db.execute(
                "UPDATE deks SET uses = uses + ? WHERE kid = ? RETURNING uses", (n, kid)
            ).fetchone()
            return row[0] if row else 0

    def set_uses(self, kid: str, expect: int, uses: int, tag: bytes) -> bool:
        with self.transaction(), self._errors("count key uses"):
            cur = self._db.execute(
                "UPDATE deks SET uses = ?, uses_tag = ? WHERE kid = ? AND uses = ?", (uses, tag, kid, expect)
            )
            return cur.rowcount == 1

    # --- identity ---------------------------------------------------------------------------
    def store_id(self) -> str:
        return self._id

    def meta_text(self, key: str) -> str | None:
        row = self._one("read meta", "SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else str(row[0])

    def set_meta_text(self, key: str, value: str) -> None:
        with self.transaction(), self._errors("write meta"):
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def intact(self) -> bool:
        """The file this store opened is still the one at its path (not deleted, moved or
        replaced under the running service) and still holds this store's id."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        if (st.st_dev, st.st_ino) != self._file:
            return False
        try:
            return self.meta_text("store_id") == self._id
        except KeyStoreUnavailable:
            return False

    # --- erasure ----------------------------------------------------------------------------
    def _delete_keys(self, subject_hash: str, at: float, before: float | None) -> list[tuple[str, str]]:
        """Tombstone then delete the subject's DEKs (created at or before ``before`` if given)."""
        cond, params = "subject_hash = ?", (subject_hash,)
        if before is not None:
            cond, params = "subject_hash = ? AND created <= ?", (subject_hash, before)
        rows = self._db.execute(f"SELECT kid, class FROM deks WHERE {cond}", params).fetchall()
        if rows:
            self._db.executemany(
                "INSERT OR IGNORE INTO tombstones (kid, class, destroyed_at) VALUES (?, ?, ?)",
                ((kid, cls, at) for kid, cls in rows),
            )
            self._db.execute(f"DELETE FROM deks WHERE {cond}", params)
        return rows

    def _record(self, e: Erasure, replace: bool) -> bool:
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        cur = self._db.execute(
            f"{verb} INTO erasures (subject_hash, time, classes, destroyed) VALUES (?, ?, ?, ?)",
            (e.subject_hash, e.time, orjson.dumps(list(e.classes)).decode(), e.destroyed),
        )
        return cur.rowcount == 1

    def erase_subject(self, subject_hash: str, at: float) -> Erasure:
        _check_subject_hash(subject_hash)
        with self.transaction(), self._errors("erase subject"):
            hold = self._db.execute(
                "SELECT since, reason, placed_by FROM holds WHERE subject_hash = ?", (subject_hash,)
            )
            row = hold.fetchone()
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
            rows = self._delete_keys(subject_hash, at, None)
            # The only link from the person (the keyed lookup) to the pseudonym events carry goes
            # with the keys, in the same transaction (secure_delete zeroes the page; purge the WAL).
            self._db.execute("DELETE FROM pseudonyms WHERE pseudonym = ?", (subject_hash,))
            e = Erasure(subject_hash, at, tuple(sorted({cls for _, cls in rows})), len(rows))
            self._record(e, replace=True)
            self._bump()
            return e

    def apply_erasure(self, erasure: Erasure) -> int:
        _check_subject_hash(erasure.subject_hash)
        with self.transaction(), self._errors("re-apply erasure"):
            if not self._record(erasure, replace=False):
                return 0
            rows = self._delete_keys(erasure.subject_hash, erasure.time, erasure.time)
            self._db.execute("DELETE FROM pseudonyms WHERE pseudonym = ? AND created <= ?",
                             (erasure.subject_hash, erasure.time))
            if rows:
                self._bump()
            return len(rows)

    def erased(self, subject_hash: str) -> bool:
        """Whether the erasure ledger records the subject as forgotten."""
        row = self._one("read erasures", "SELECT 1 FROM erasures WHERE subject_hash = ? LIMIT 1", (subject_hash,))
        return row is not None

    def erasures(self) -> list[Erasure]:
        rows = self._all(
            "read erasures", "SELECT subject_hash, time, classes, destroyed FROM erasures ORDER BY time"
        )
        return [Erasure(s, t, tuple(orjson.loads(c)), n) for s, t, c, n in rows]

    # --- pseudonyms ---------------------------------------------------------------------------
    def pseudonym(self, lookup: str) -> str | None:
        """The pseudonym recorded for a subject's keyed lookup, or None (never seen, or forgotten)."""
        row = self._one("read pseudonym", "SELECT pseudonym FROM pseudonyms WHERE lookup = ?", (lookup,))
        return None if row is None else str(row[0])

    def add_pseudonym(self, lookup: str, pseudonym: str, at: float, kind: int = 2) -> str:
        """Record ``pseudonym`` for ``lookup`` unless another process did first; returns the winner."""
        _check_subject_hash(pseudonym)
        with self.transaction(), self._errors("record pseudonym"):
            self._db.execute(
                "INSERT OR IGNORE INTO pseudonyms (lookup, pseudonym, created, kind) VALUES (?, ?, ?, ?)",
                (lookup, pseudonym, at, kind),
            )
            row = self._db.execute("SELECT pseudonym FROM pseudonyms WHERE lookup = ?", (lookup,)).fetchone()
            return str(row[0])

    def _in(self, op: str, sql: str, values: Iterable[str]) -> list[tuple]:
        """Rows of ``sql`` (one ``IN ({})`` placeholder) over ``values``, ``_IN_CHUNK`` at a time."""
        todo = sorted(set(values))
        rows: list[tuple] = []
        with self._lock, self._errors(op):
            for i in range(0, len(todo), _IN_CHUNK):
                chunk = todo[i : i + _IN_CHUNK]
                rows.extend(self._db.execute(sql.format(",".join("?" * len(chunk))), chunk).fetchall())
        return rows

    def pseudonyms(self, lookups: Iterable[str]) -> dict[str, str]:
        """``pseudonym`` for many lookups at once (lookup -> pseudonym; unknown ones absent)."""
        rows = self._in("read pseudonyms", "SELECT lookup, pseudonym FROM pseudonyms WHERE lookup IN ({})", lookups)
        return {str(a): str(b) for a, b in rows}

    def add_pseudonyms(self, rows: Iterable[tuple[str, str, int]], at: float) -> dict[str, str]:
        """``add_pseudonym`` for many (lookup, pseudonym, kind) in one transaction; returns the
        pseudonym recorded for each lookup (another process's where it was first)."""
        rows = list(rows)
        for _, p, _ in rows:
            _check_subject_hash(p)
        with self.transaction(), self._errors("record pseudonyms"):
            self._db.executemany(
                "INSERT OR IGNORE INTO pseudonyms (lookup, pseudonym, created, kind) VALUES (?, ?, ?, ?)",
                ((lookup, p, at, kind) for lookup, p, kind in rows),
            )
            return self.pseudonyms(lookup for lookup, _, _ in rows)

    def live_pseudonyms(self, pseudonyms: Iterable[str]) -> set[str]:
        """Those of ``pseudonyms`` a subject still maps to (``pseudonym_live`` for many)."""
        rows = self._in("read pseudonyms", "SELECT pseudonym FROM pseudonyms WHERE pseudonym IN ({})", pseudonyms)
        return {str(r[0]) for r in rows}

    def legacy_subjects(self, subject_hashes: Iterable[str]) -> set[str]:
        """Those of ``subject_hashes`` that key DEKs or holds (``legacy_subject`` for many)."""
        todo = list(subject_hashes)
        found = self._in("read subjects", "SELECT DISTINCT subject_hash FROM deks WHERE subject_hash IN ({})", todo)
        found += self._in("read subjects", "SELECT subject_hash FROM holds WHERE subject_hash IN ({})", todo)
        return {str(r[0]) for r in found}

    def pseudonym_live(self, pseudonym: str) -> bool:
        """Whether a subject still maps to ``pseudonym`` (False once it was forgotten)."""
        row = self._one("read pseudonym", "SELECT 1 FROM pseudonyms WHERE pseudonym = ?", (pseudonym,))
        return row is not None

    def legacy_subject(self, subject_hash: str) -> bool:
        """Whether a store made before pseudonyms keys anything (DEKs, holds) by this keyed hash."""
        for sql in ("SELECT 1 FROM deks WHERE subject_hash = ? LIMIT 1",
                    "SELECT 1 FROM holds WHERE subject_hash = ? LIMIT 1"):
            if self._one("read subject", sql, (subject_hash,)) is not None:
                return True
        return False

    # --- legal holds ------------------------------------------------------------------------
    def hold(self, subject_hash: str, reason: str, since: float, by: str = "") -> None:
        _check_subject_hash(subject_hash)
        with self.transaction(), self._errors("place hold"):
            self._db.execute(
                "INSERT OR REPLACE INTO holds (subject_hash, reason, since, placed_by) VALUES (?, ?, ?, ?)",
                (subject_hash, reason, since, by),
            )

    def release(self, subject_hash: str) -> bool:
        with self.transaction(), self._errors("release hold"):
            return self._db.execute("DELETE FROM holds WHERE subject_hash = ?", (subject_hash,)).rowcount == 1

    def held(self, subject_hash: str) -> str | None:
        row = self._one("read hold", "SELECT reason FROM holds WHERE subject_hash = ?", (subject_hash,))
        return row[0] if row else None

    def hold_info(self, subject_hash: str) -> tuple[str, float, str] | None:
        """(reason code, since, placed by) of the subject's hold, or None."""
        row = self._one(
            "read hold", "SELECT reason, since, placed_by FROM holds WHERE subject_hash = ?", (subject_hash,)
        )
        return (str(row[0]), float(row[1]), str(row[2])) if row else None

    def holds_count(self) -> int:
        row = self._one("count holds", "SELECT count(*) FROM holds")
        return row[0] if row else 0

    # --- revocation epoch, stats, purge ----------------------------------------------------------
    def epoch(self) -> int:
        row = self._one("read epoch", "SELECT value FROM meta WHERE key = 'epoch'")
        return row[0] if row else 0

    def _bump(self) -> int:
        sql = "UPDATE meta SET value = value + 1 WHERE key = 'epoch' RETURNING value"
        return self._db.execute(sql).fetchone()[0]

    def bump_epoch(self) -> int:
        with self.transaction(), self._errors("bump epoch"):
            return self._bump()

    def counts(self) -> list[ClassCounts]:
        deks = self._all(
            "count keys", "SELECT class, count(*), count(DISTINCT subject_hash) FROM deks GROUP BY class"
        )
        tombs = dict(self._all("count tombstones", "SELECT class, count(*) FROM tombstones GROUP BY class"))
        out = {c: ClassCounts(c, n, s, tombs.get(c, 0)) for c, n, s in deks}
        for c, t in tombs.items():
            out.setdefault(c, ClassCounts(c, 0, 0, t))
        return [out[c] for c in sorted(out)]

    def purge(self, attempts: int = 20) -> bool:
        """Checkpoint and truncate the WAL; retried while another connection briefly reads."""
        for i in range(attempts):
            row = self._one("checkpoint", "PRAGMA wal_checkpoint(TRUNCATE)")
            if row and row[0] == 0:
                return True
            time.sleep(0.005 * (i + 1))
        return False

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.close()
