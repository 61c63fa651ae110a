"""Versioned policy storage: every change is validated, authorized, stored and audited.

One SQLite file (``<home>/policy/policy.db``, mode 0600) holds every version ever applied and a
one-row pointer to the active one. Activation is a single transaction, so a running engine
(in this or another process) sees either the old or the new policy, never half of one; an
engine notices a change by reading that one row. The stored YAML and Cedar sources are the
truth: engines recompile them, so what is enforced is exactly what was reviewed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eventward._internal.audit.base import DENIED, ERROR, AuditSink, NullAudit, meta_list, meta_text
from eventward._internal.home import Home, private_file
from eventward._internal.policy.base import MANAGE_POLICY, Decision
from eventward._internal.policy.compile_cedar import CompiledPolicy, compile_policy
from eventward._internal.policy.evaluator import Evaluator
from eventward._internal.policy.spec import PolicySpec, parse
from eventward._internal.store.migrations import CONTROL_SCHEMA
from eventward._internal.store.sqlcompat import PgTables
from eventward.errors import (
    AccessDenied,
    ConfigError,
    ConflictError,
    EventwardError,
    NotFoundError,
    PolicyError,
)

log = logging.getLogger("eventward.policy")

DB_NAME = "policy.db"
POLICY_RESOURCE = ("Policy", "active")
_AUDIT_RESOURCE = "Policy::active"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    version   INTEGER PRIMARY KEY,
    created   REAL NOT NULL,
    principal TEXT NOT NULL,
    sha256    TEXT NOT NULL,
    yaml      TEXT NOT NULL,
    cedar     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS active (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL REFERENCES versions(version)
);
"""


@dataclass(frozen=True)
class PolicyVersion:
    version: int
    created: float
    principal: str  # who applied it ("bootstrap" for init)
    sha256: str
    yaml: str
    cedar: Mapping[str, str]  # file name -> hand-written Cedar text


# Where the store's SQLite tables live on PostgreSQL: (qualified name, key column).
POLICY_TABLES = {"versions": (f"{CONTROL_SCHEMA}.policy_versions", "version"),
                 "active": (f"{CONTROL_SCHEMA}.policy_active", "id")}
POLICY_LOCK = 0x65777070  # pg_advisory_xact_lock key of policy changes ("ewpp")

_SELECT = "SELECT v.version, v.created, v.principal, v.sha256, v.yaml, v.cedar FROM versions v"
_SELECT_ACTIVE = _SELECT + " JOIN active a ON a.version = v.version WHERE a.id = 1"


def _version(row: tuple[Any, ...]) -> PolicyVersion:
    return PolicyVersion(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]))


def digest(yaml_text: str, cedar_files: Mapping[str, str]) -> str:
    h = hashlib.sha256(yaml_text.encode())
    h.update(json.dumps(dict(sorted(cedar_files.items()))).encode())
    return h.hexdigest()


def build(yaml_text: str, cedar_files: Mapping[str, str] | None) -> tuple[PolicySpec, CompiledPolicy]:
    """Parse and compile a candidate policy; PolicyError names what is wrong."""
    files = cedar_files or {}
    if isinstance(yaml_text, str) and all(isinstance(v, str) for v in files.values()):
        return _build(yaml_text, tuple(sorted(files.items())))
    spec = parse(yaml_text)  # raises the typed error for non-text input
    return spec, compile_policy(spec, files)


@functools.lru_cache(maxsize=8)
def _build(yaml_text: str, cedar_files: tuple[tuple[str, str], ...]) -> tuple[PolicySpec, CompiledPolicy]:
    # Engines in one process (and apply's checks) load the same versions: compile each once.
    # Results are immutable by convention; failures are not cached.
    spec = parse(yaml_text)
    return spec, compile_policy(spec, dict(cedar_files))


def load(version: PolicyVersion) -> Evaluator:
    spec, compiled = build(version.yaml, version.cedar)
    return Evaluator(version.version, spec, compiled)


class PolicyStore:
    """Policy versions in SQLite. Thread-safe; several processes may share one file."""

    def __init__(
        self,
        directory: Path,
        *,
        audit: AuditSink | None = None,
        clock: Callable[[], float] = time.time,
        db: PgTables | None = None,
    ) -> None:
        self._audit = audit or NullAudit()
        self._clock = clock
        self._lock = threading.Lock()
        if db is not None:  # on PostgreSQL (migration 5): shared by every replica
            self.path: Path | str = db.db.where
            self._db: sqlite3.Connection | PgTables = db
            return
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = directory / DB_NAME
        with self._sql():
            private_file(self.path)  # 0600 before SQLite opens it; -wal/-shm inherit the mode
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _sql(self) -> Iterator[None]:
        """Hold the lock; a storage failure becomes one typed error naming the file."""
        with self._lock:
            try:
                yield
            except (sqlite3.Error, OSError) as e:
                name = getattr(e, "sqlite_errorname", type(e).__name__)
                raise ConfigError(
                    f"policy store {self.path} unavailable ({name})", path=str(self.path)
                ) from None

    @classmethod
    def open(
        cls, home: Home, *, audit: AuditSink | None = None, clock: Callable[[], float] = time.time
    ) -> PolicyStore:
        """The home's policy store, on the backend ``store.backend`` names."""
        from eventward._internal.config import Config

        if Config.load(home.config).store.backend == "postgres":
            from eventward._internal.store.sqlcompat import open_pg_tables

            return cls(home.policy_dir, audit=audit, clock=clock,
                       db=open_pg_tables(home, POLICY_TABLES, POLICY_LOCK))
        return cls(home.policy_dir, audit=audit, clock=clock)

    def close(self) -> None:
        with self._sql():
            self._db.close()

    # --- reading -------------------------------------------------------------------------
    def active_version(self) -> int:
        """The active version number (0: none yet). One indexed row: cheap enough to poll."""
        with self._sql():
            row = self._db.execute("SELECT version FROM active WHERE id = 1").fetchone()
        return row[0] if row else 0

    def get(self, version: int | None = None) -> PolicyVersion:
        """A stored version (default: the active one); NotFoundError if there is none."""
        with self._sql():
            if version is None:
                row = self._db.execute(_SELECT_ACTIVE).fetchone()
            else:
                row = self._db.execute(_SELECT + " WHERE v.version = ?", (version,)).fetchone()
        if row is None:
            what = (
                "no policy has been applied yet" if version is None else f"policy version {version} not found"
            )
            raise NotFoundError(what, version=version)
        return _version(row)

    def versions(self) -> list[tuple[PolicyVersion, bool]]:
        """Every version, oldest first, with whether it is the active one."""
        active = self.active_version()
        with self._sql():
            rows = self._db.execute(_SELECT + " ORDER BY v.version").fetchall()
        return [(_version(r), r[0] == active) for r in rows]

    # --- changing ------------------------------------------------------------------------
    def init(
        self, yaml_text: str, cedar_files: Mapping[str, str] | None = None, *, principal: str = "bootstrap"
    ) -> int:
        """Bootstrap: apply the first policy without authorization; refused once any policy exists."""
        return self._change(principal, yaml_text, cedar_files or {}, bootstrap=True)

    def apply(self, principal: str, yaml_text: str, cedar_files: Mapping[str, str] | None = None) -> int:
        """Validate, authorize (ManagePolicy under the active policy), store and activate a new version.

        Anything wrong leaves the active policy untouched: PolicyError for an invalid policy,
        AccessDenied if ``principal`` may not manage policy, ConflictError before ``init``.
        """
        return self._change(principal, yaml_text, cedar_files or {}, bootstrap=False)

    def rollback(self, principal: str, version: int) -> int:
        """Re-apply an old version's sources as a new version (history stays append-only)."""
        old = self.get(version)
        return self.apply(principal, old.yaml, old.cedar)

    def _change(
        self, principal: str, yaml_text: str, cedar_files: Mapping[str, str], *, bootstrap: bool
    ) -> int:
        now = self._clock()
        try:
            spec, compiled = build(yaml_text, cedar_files)
            _refuse_lockout(Evaluator(-1, spec, compiled), spec, now)
        except PolicyError as e:
            where = meta_text(e.path)  # a YAML key from the refused file: any length, any characters
            log.warning("policy change by %s refused: invalid at %s", principal, where or "policy")
            self._audit.record(
                "policy.apply",
                principal=principal,
                resource=_AUDIT_RESOURCE,
                outcome=ERROR,
                reason=e.code,
                path=where,
            )
            raise
        sha = digest(yaml_text, cedar_files)
        with self._sql(), self._write("apply policy") as db:
            version = self._activate(db, principal, yaml_text, cedar_files, sha, now, bootstrap=bootstrap)
        self._audit.record(
            "policy.apply",
            principal=principal,
            resource=_AUDIT_RESOURCE,
            bootstrap=bootstrap,
            version=version,
            sha256=sha,
            policies=len(compiled.ids),
        )
        return version

    @contextlib.contextmanager
    def _write(self, what: str) -> Iterator[Any]:
        """SQLite: BEGIN IMMEDIATE .. COMMIT on the store's connection; PostgreSQL: one transaction
        under the policy store's advisory lock, so applies on several replicas are serialized."""
        if isinstance(self._db, PgTables):
            with self._db.write(what) as txn:
                yield txn
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _activate(
        self,
        db: Any,
        principal: str,
        yaml_text: str,
        cedar_files: Mapping[str, str],
        sha: str,
        now: float,
        *,
        bootstrap: bool,
    ) -> int:
        """Inside the write transaction: authorize against the policy active *now*, then swap."""
        row = db.execute(_SELECT_ACTIVE).fetchone()
        if bootstrap and row is not None:
            raise ConflictError(
                f"a policy is already active (version {row[0]}); use 'eventward policy apply'"
            )
        if not bootstrap:
            if row is None:
                raise ConflictError("no policy has been applied yet: run 'eventward policy init' first")
            current = load(_version(row))
            d = current.evaluate(principal, MANAGE_POLICY, POLICY_RESOURCE, None, now)
            if not d.allowed:
                deciding = meta_list(d.policies)  # hand-written forbids can be many: bounded, counted
                log.warning("policy change by %s denied (%s)", principal, deciding or "default-deny")
                self._audit.record(
                    "policy.apply",
                    principal=principal,
                    resource=_AUDIT_RESOURCE,
                    outcome=DENIED,
                    reason="forbidden",
                    policies=deciding,
                    policy_count=len(d.policies),
                    version=row[0],
                )
                raise AccessDenied(f"{principal} may not ManagePolicy Policy::active", explanation=d)
        (last,) = db.execute("SELECT COALESCE(MAX(version), 0) FROM versions").fetchone()
        version = last + 1
        db.execute(
            "INSERT INTO versions (version, created, principal, sha256, yaml, cedar) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (version, now, principal, sha, yaml_text, json.dumps(dict(cedar_files))),
        )
        db.execute(
            "INSERT INTO active (id, version) VALUES (1, ?) "
            "ON CONFLICT(id) DO UPDATE SET version = excluded.version",
            (version,),
        )
        return version


def _refuse_lockout(candidate: Evaluator, spec: PolicySpec, now: float) -> None:
    """A policy nobody may change again can only be fixed by hand-editing the store: refuse it."""
    for p in spec.principals:
        try:
            d: Decision = candidate.evaluate(p, MANAGE_POLICY, POLICY_RESOURCE, None, now)
        except EventwardError:
            continue
        if d.allowed:
            return
    raise PolicyError(
        "no declared principal could manage policy under this change (add {allow: manage_policy} to a role)",
        path="roles",
    )
