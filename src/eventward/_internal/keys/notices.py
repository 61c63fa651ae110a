"""Erasure notices with acknowledgements: every consumer group hears of each ``forget``.

``forget`` destroys the subject's keys, but DEKs already cached by consumers and read models
built by applications (caches, search indexes) are outside the key store. So each forget issues
a notice, named by the subject's pseudonym only, to every consumer group registered in the
home at that moment. A group's consumer drops its cached keys, runs the application's
``on_forget(pseudonym)`` hooks and acknowledges: ``acked`` (when), or ``failed`` with the
hook's error code (never its message, which may carry personal data; retried every
``retry_s``). A group that never answers stays ``pending`` (since when) for good: it is
reported by ``eventward erasure status`` and ``overdue``, never dropped. When every group has
acknowledged, one ``erasure.complete`` record (naming the certificate's audit index) joins the
certificate in the audit log: the flip happens in one SQLite transaction, so exactly one
process writes it.

The notices live in their own SQLite file (``notices.db`` in the home, 0600, WAL).
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from eventward._internal.audit.base import ERROR, OK, AuditSink, NullAudit
from eventward._internal.home import Home, private_file
from eventward.errors import InputError, KeyStoreUnavailable

ACKED = "acked"
PENDING = "pending"
FAILED = "failed"
COMPLETE_ACTION = "erasure.complete"
ACK_ACTION = "erasure.ack"
_PSEUDONYM = re.compile(r"[0-9a-f]{32}")
ERROR_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # what a hook failure is reported as
_CODE = ERROR_CODE
_MAX_GROUP = 200

_SCHEMA = """
CREATE TABLE IF NOT EXISTS groups (
    grp TEXT PRIMARY KEY,
    registered REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS notices (
    pseudonym TEXT PRIMARY KEY,
    issued REAL NOT NULL,
    certificate INTEGER NOT NULL,
    completed REAL
);
CREATE TABLE IF NOT EXISTS acks (
    pseudonym TEXT NOT NULL,
    grp TEXT NOT NULL,
    state TEXT NOT NULL,
    at REAL,
    error TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (pseudonym, grp)
);
CREATE INDEX IF NOT EXISTS acks_grp_state ON acks (grp, state);
"""

Hook = Callable[[str], object]


def notices_path(home: Home) -> Path:
    return home.keys_db.with_name("notices.db")


def error_code(exc: BaseException) -> str:
    """A hook's error as a code: its ``code`` attribute when it is one, else its class name.
    Never the message, which may carry the subject's data."""
    code = getattr(exc, "code", None)
    if isinstance(code, str) and _CODE.fullmatch(code):
        return code
    name = type(exc).__name__
    return name if _CODE.fullmatch(name) else "hook_error"


def _check_pseudonym(p: str) -> str:
    if not isinstance(p, str) or not _PSEUDONYM.fullmatch(p):
        raise InputError("not an erasure reference (32 lowercase hex characters)")
    return p


def _check_group(g: str) -> str:
    if not isinstance(g, str) or not g or len(g) > _MAX_GROUP or not g.isprintable():
        raise InputError(f"a consumer group name must be 1..{_MAX_GROUP} printable characters")
    return g


@dataclass(frozen=True)
class GroupAck:
    group: str
    state: str  # acked | pending | failed
    since: float  # when the notice was issued to the group
    at: float | None  # when it acknowledged, or last failed
    error: str  # the hook's error code when failed
    attempts: int


@dataclass(frozen=True)
class NoticeStatus:
    pseudonym: str
    issued: float
    certificate: int
    completed: float | None
    groups: tuple[GroupAck, ...]

    def pending(self) -> tuple[GroupAck, ...]:
        return tuple(g for g in self.groups if g.state != ACKED)

    def to_json(self, now: float) -> dict[str, object]:
        return {
            "subject_hash": self.pseudonym,
            "issued": self.issued,
            "certificate_index": self.certificate,
            "complete": self.completed is not None,
            "completed": self.completed,
            "groups": [
                {"group": g.group, "state": g.state, "since": g.since, "acknowledged": g.at if g.state == ACKED
                 else None, "failed_at": g.at if g.state == FAILED else None, "error_code": g.error or None,
                 "attempts": g.attempts, "waiting_s": None if g.state == ACKED else round(now - g.since, 3)}
                for g in self.groups
            ],
        }


class ErasureNotices:
    """The notice board of one home: groups, notices and acknowledgements. Thread-safe."""

    def __init__(
        self,
        path: Path,
        *,
        audit: AuditSink | None = None,
        clock: Callable[[], float] = time.time,
        retry_s: float = 60.0,
        busy_timeout: float = 5.0,
    ) -> None:
        self.path = path
        self._audit = audit or NullAudit()
        self._clock = clock
        self.retry_s = retry_s
        self._lock = threading.RLock()
        try:
            private_file(path)
            uri = "file:" + urllib.parse.quote(str(path)) + "?mode=rwc"
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                                       timeout=busy_timeout)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as e:
            raise KeyStoreUnavailable(f"erasure notices {path.name} cannot be opened ({type(e).__name__})") from None

    @classmethod
    def open(cls, home: Home, *, audit: AuditSink | None = None, **kw: object) -> ErasureNotices:
        return cls(notices_path(home), audit=audit, **kw)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"ErasureNotices({str(self.path)!r})"

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                raise KeyStoreUnavailable(f"erasure notices: {type(e).__name__}") from None

    def _rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as e:
                raise KeyStoreUnavailable(f"erasure notices: {type(e).__name__}") from None

    # --- groups and notices ---------------------------------------------------------------------
    def register_group(self, group: str) -> None:
        """A consumer group that must acknowledge every later forget (idempotent)."""
        _check_group(group)
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO groups (grp, registered) VALUES (?, ?)", (group, self._clock()))

    def groups(self) -> list[str]:
        return [r[0] for r in self._rows("SELECT grp FROM groups ORDER BY grp")]

    def issue(self, pseudonym: str, certificate: int) -> int:
        """A notice for every registered group; returns how many groups must acknowledge. With no
        group at all the erasure is complete at once (and recorded so)."""
        _check_pseudonym(pseudonym)
        now = self._clock()
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO notices (pseudonym, issued, certificate, completed) "
                       "VALUES (?, ?, ?, NULL)", (pseudonym, now, int(certificate)))
            groups = [r[0] for r in db.execute("SELECT grp FROM groups").fetchall()]
            db.executemany("INSERT OR REPLACE INTO acks (pseudonym, grp, state, at, error, attempts) "
                           "VALUES (?, ?, ?, NULL, '', 0)", [(pseudonym, g, PENDING) for g in groups])
        if not groups:
            self._complete(pseudonym, "eventward.keys")
        return len(groups)

    def due(self, group: str) -> list[str]:
        """Pseudonyms this group must still handle: pending ones, and failed ones after ``retry_s``."""
        now = self._clock()
        rows = self._rows(
            "SELECT a.pseudonym FROM acks a JOIN notices n ON n.pseudonym = a.pseudonym WHERE a.grp = ? AND "
            "(a.state = ? OR (a.state = ? AND a.at <= ?)) ORDER BY n.issued",
            (group, PENDING, FAILED, now - self.retry_s),
        )
        return [r[0] for r in rows]

    def acknowledge(self, pseudonym: str, group: str, *, principal: str, error: str | None = None) -> bool:
        """Record the group's answer; True when this answer completed the erasure."""
        _check_pseudonym(pseudonym)
        now = self._clock()
        state = ACKED if error is None else FAILED
        with self._tx() as db:
            cur = db.execute("UPDATE acks SET state = ?, at = ?, error = ?, attempts = attempts + 1 "
                             "WHERE pseudonym = ? AND grp = ? AND state != ?",
                             (state, now, error or "", pseudonym, group, ACKED))
            changed = cur.rowcount == 1
        if changed:
            self._audit.record(ACK_ACTION, principal=principal, resource=f"subject:{pseudonym}",
                               outcome=OK if error is None else ERROR, reason=error or "", subject_hash=pseudonym,
                               group=group)
        return error is None and changed and self._complete(pseudonym, principal)

    def _complete(self, pseudonym: str, principal: str) -> bool:
        with self._tx() as db:
            left = db.execute("SELECT count(*) FROM acks WHERE pseudonym = ? AND state != ?",
                              (pseudonym, ACKED)).fetchone()[0]
            if left:
                return False
            cur = db.execute("UPDATE notices SET completed = ? WHERE pseudonym = ? AND completed IS NULL",
                             (self._clock(), pseudonym))
            if cur.rowcount != 1:
                return False
            row = db.execute("SELECT certificate FROM notices WHERE pseudonym = ?", (pseudonym,)).fetchone()
            groups = db.execute("SELECT count(*) FROM acks WHERE pseudonym = ?", (pseudonym,)).fetchone()[0]
        # After the flip committed: exactly one caller gets here per notice.
        self._audit.record(COMPLETE_ACTION, principal=principal, resource=f"Subject::{pseudonym}",
                           subject_hash=pseudonym, certificate_index=int(row[0]), groups=int(groups))
        return True

    def status(self, pseudonym: str) -> NoticeStatus | None:
        _check_pseudonym(pseudonym)
        rows = self._rows("SELECT issued, certificate, completed FROM notices WHERE pseudonym = ?", (pseudonym,))
        if not rows:
            return None
        issued, cert, completed = rows[0]
        acks = self._rows("SELECT grp, state, at, error, attempts FROM acks WHERE pseudonym = ? ORDER BY grp",
                          (pseudonym,))
        return NoticeStatus(pseudonym, issued, cert, completed,
                            tuple(GroupAck(g, s, issued, at, err, n) for g, s, at, err, n in acks))

    def overdue(self, older_than: float) -> list[tuple[str, str, str, float]]:
        """(pseudonym, group, state, issued) of every answer still missing after ``older_than`` s."""
        cutoff = self._clock() - older_than
        return [tuple(r) for r in self._rows(  # type: ignore[misc]
            "SELECT a.pseudonym, a.grp, a.state, n.issued FROM acks a JOIN notices n ON n.pseudonym = a.pseudonym "
            "WHERE a.state != ? AND n.issued <= ? ORDER BY n.issued, a.grp", (ACKED, cutoff))]


class NoticeBoard(Protocol):
    """What a consumer needs of the notice board: the home's ErasureNotices, or the control
    plane's answers in client mode (control.client.RemoteNotices)."""

    def due(self, group: str) -> list[str]:
        """Pseudonyms ``group`` must still handle."""
        ...

    def acknowledge(self, pseudonym: str, group: str, *, principal: str, error: str | None = None) -> bool:
        """Record ``group``'s answer; True when it completed the erasure."""
        ...


def handle_notices(
    notices: NoticeBoard,
    group: str,
    hooks: Sequence[Hook],
    *,
    principal: str,
    drop_keys: Callable[[], None] | None = None,
) -> int:
    """What a consumer of ``group`` does with its due notices: drop cached keys, run every
    ``on_forget(pseudonym)`` hook, acknowledge (or report the first hook's error code). Returns
    how many notices were answered."""
    due = notices.due(group)
    if due and drop_keys is not None:
        drop_keys()
    for p in due:
        error = None
        for hook in hooks:
            try:
                hook(p)
            except Exception as e:  # the application's hook: its failure is reported, by code
                error = error_code(e)
                break
        notices.acknowledge(p, group, principal=principal, error=error)
    return len(due)
