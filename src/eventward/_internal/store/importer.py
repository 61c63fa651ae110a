"""``eventward db import``: move an embedded home's key store, audit log, schema registry, policy
versions, trust registry, the control plane's seal grants and direct-path reconciler positions,
the PKI's book of issued certificates with its current CRL, and the HTTP gateway's consumer groups
(``consumers/gateway.db``: offsets, replay state, last fetches) into PostgreSQL.

Everything is copied in ONE transaction holding the key store's and the audit log's write
locks, into a database that is migrated, belongs to the same deployment (same audit key name)
and holds nothing yet; a refused or failed import leaves it empty. The copy keeps the key
store's random id and its KMS-bound tag, so the key service recognises the store as its own,
and keeps every audit record, stored subtree hash and checkpoint byte for byte, so
``audit verify`` (and every consistency proof a verifier or witness holds) still passes.

The SQLite files are read, never changed. They still hold wrapped keys: once the import is
verified they must be removed, or a subject forgotten later keeps a copy there until its KEK
epoch ends (the report names them).
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from eventward._internal.audit.pg_log import APPEND_LOCK
from eventward._internal.home import Home
from eventward._internal.keys.pg_store import WRITE_LOCK
from eventward._internal.store.migrations import AUDIT_SCHEMA, CONTROL_SCHEMA, REGISTRY_SCHEMA, SCHEMA
from eventward._internal.store.pg import Database
from eventward.errors import ConflictError, NotFoundError, StoreForeignDeployment

# (table, columns) copied as they are; the order of checkpoints and attachments is their rowid.
_KEY_TABLES = (
    ("deks", "kid, subject_hash, class, version, kek_id, wrapped, created, uses, fmt, uses_tag"),
    ("tombstones", "kid, class, destroyed_at"),
    ("holds", "subject_hash, reason, since, placed_by"),
    ("erasures", "subject_hash, time, classes, destroyed"),
    ("pseudonyms", "lookup, pseudonym, created, kind"),
)
_AUDIT_TABLES = (
    ("records", "idx, leaf, body", "idx"),
    ("nodes", "level, idx, hash", "level, idx"),
    ("checkpoints", "size, root, time, text", "rowid"),
    ("attachments", "kind, key, idx, doc", "rowid"),
    ("watermarks", 'source, stream, "offset"', "source, stream"),
    ("published", "stream, batch, idx", "stream, batch"),
)
_REGISTRY_TABLES = (
    ("subjects", "type, mode, created_at", "type"),
    ("versions", "type, version, fmt, document, fingerprint, state, proposer, report, created_at, decided_at, "
                 "decided_by", "type, version"),
    ("approvals", "type, version, kind, principal, at", "type, version, kind"),
)
_DIRECT_TABLES = (
    ("direct_tail", "stream, last_seq, end_offset"),
    ("direct_refused", "stream, seq"),
    ("direct_progress", "grp, stream, committed"),
)
# The gateway's consumer groups (gateway/groupstore.py): the same tables on both backends.
_GATEWAY_TABLES = (
    ("gw_groups", "gid, version, acks"),
    ("gw_offsets", "gid, stream, committed"),
    ("gw_seen", "gid, producer, id, stream, off, status, at, version"),
    ("gw_seqs", "gid, producer, instance, stream, seq, version"),
    ("gw_fetches", "gid, topic, NULL, 0, upto, entries"),  # leases end with the process that held them
)
_SKIP_KEY_META = frozenset({"schema"})  # SQLite's own schema version


@dataclass
class ImportReport:
    database: str
    deployment: str
    rows: dict[str, int] = field(default_factory=dict)
    stale_files: list[str] = field(default_factory=list)


@contextmanager
def _sqlite(path: Path) -> Iterator[sqlite3.Connection]:
    if not path.is_file():
        raise NotFoundError(f"no {path.name} in {path.parent}: nothing to import")
    uri = "file:" + urllib.parse.quote(str(path)) + "?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as conn:
        conn.execute("BEGIN")  # one snapshot of the file for the whole copy
        yield conn


def _empty(conn: psycopg.Connection) -> bool:
    for table in ("deks", "tombstones", "erasures", "pseudonyms", "holds"):
        if conn.execute(f"SELECT 1 FROM {SCHEMA}.{table} LIMIT 1").fetchone():
            return False
    if conn.execute(f"SELECT 1 FROM {REGISTRY_SCHEMA}.versions LIMIT 1").fetchone():
        return False
    for table in ("trust_keys", "policy_versions", "seal_grants", "issued_certs", "crl", "direct_tail",
                  "direct_progress", "direct_refused"):
        if conn.execute(f"SELECT 1 FROM {CONTROL_SCHEMA}.{table} LIMIT 1").fetchone():
            return False
    return conn.execute(f"SELECT 1 FROM {AUDIT_SCHEMA}.records LIMIT 1").fetchone() is None


def import_home(source: Home, db: Database, deployment_id: str) -> ImportReport:
    """Copy ``source``'s keys.db and audit.db into ``db`` (migrated, this deployment's, empty)."""
    from eventward._internal.keys.stores import home_deployment_id

    found = home_deployment_id(source)
    if found != deployment_id:
        raise StoreForeignDeployment(
            f"{source.root} is deployment {found}, not {deployment_id}: import a home of this deployment",
            found=found, expected=deployment_id,
        )
    db.require(db.status(), deployment_id)
    report = ImportReport(db.where, deployment_id)
    with _sqlite(source.keys_db) as keys, _sqlite(source.audit_db) as audit, db.errors("import"), \
            psycopg.connect(db.dsn, connect_timeout=max(1, int(db.connect_timeout))) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s), pg_advisory_xact_lock(%s)", (WRITE_LOCK, APPEND_LOCK))
        if not _empty(conn):
            raise ConflictError(f"{db.where} already holds keys or audit records: import into a database "
                                "that 'eventward db migrate' just created")
        with conn.cursor() as cur:
            _copy(cur, keys, audit, report, found)
            if source.registry_db.is_file():
                with _sqlite(source.registry_db) as registry:
                    _copy_registry(cur, registry, report)
            _copy_control(cur, source, report)
            _copy_pki(cur, source, report)
            _copy_gateway_groups(cur, source, report)
    report.stale_files = [str(p) for p in (source.keys_db, source.audit_db, source.registry_db, source.trust_db,
                                            source.policy_dir / "policy.db", source.root / "control.db",
                                            source.certs / "issued.db", _gateway_db(source))
                          if p.exists()]
    return report


def _copy(cur: psycopg.Cursor, keys: sqlite3.Connection, audit: sqlite3.Connection, report: ImportReport,
          deployment: str) -> None:
    for table, cols in _KEY_TABLES:
        rows = keys.execute(f"SELECT {cols} FROM {table}").fetchall()
        marks = ", ".join(["%s"] * len(cols.split(",")))
        cur.executemany(f"INSERT INTO {SCHEMA}.{table} ({cols}) VALUES ({marks})", rows)
        report.rows[f"keys.{table}"] = len(rows)
    # The store's id, its KMS-bound tag, the epoch and the KEK epoch dates replace the new database's.
    meta = [(str(k), str(v)) for k, v in keys.execute("SELECT key, value FROM meta") if k not in _SKIP_KEY_META]
    cur.executemany(f"INSERT INTO {SCHEMA}.key_meta (key, value) VALUES (%s, %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value", meta)
    report.rows["keys.meta"] = len(meta)
    for table, cols, order in _AUDIT_TABLES:
        rows = audit.execute(f"SELECT {cols.replace(chr(34), '')} FROM {table} ORDER BY {order}").fetchall()
        marks = ", ".join(["%s"] * len(cols.split(",")))
        cur.executemany(f"INSERT INTO {AUDIT_SCHEMA}.{table} ({cols}) VALUES ({marks})", rows)
        report.rows[f"audit.{table}"] = len(rows)
    row = audit.execute("SELECT value FROM meta WHERE key = 'origin'").fetchone()
    cur.execute(f"INSERT INTO {AUDIT_SCHEMA}.meta (key, value) VALUES ('origin', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (row[0] if row else deployment,))


def _copy_registry(cur: psycopg.Cursor, registry: sqlite3.Connection, report: ImportReport) -> None:
    for table, cols, order in _REGISTRY_TABLES:
        rows = registry.execute(f"SELECT {cols} FROM {table} ORDER BY {order}").fetchall()
        marks = ", ".join(["%s"] * len(cols.split(",")))
        cur.executemany(f"INSERT INTO {REGISTRY_SCHEMA}.{table} ({cols}) VALUES ({marks})", rows)
        report.rows[f"registry.{table}"] = len(rows)
    row = registry.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
    cur.execute(f"UPDATE {REGISTRY_SCHEMA}.meta SET value = %s WHERE key = 'generation'", (row[0] if row else 0,))


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})")}


def _copy_control(cur: psycopg.Cursor, source: Home, report: ImportReport) -> None:
    """The policy versions and active pointer, the trust registry's keys (a registry from before
    key purposes or hybrid keys gets the values its own open would give) and the seal grants."""
    policy_db = source.policy_dir / "policy.db"
    if policy_db.is_file():
        with _sqlite(policy_db) as policy:
            rows = policy.execute("SELECT version, created, principal, sha256, yaml, cedar FROM versions "
                                  "ORDER BY version").fetchall()
            cur.executemany(f"INSERT INTO {CONTROL_SCHEMA}.policy_versions (version, created, principal, sha256, "
                            "yaml, cedar) VALUES (%s, %s, %s, %s, %s, %s)", rows)
            report.rows["policy.versions"] = len(rows)
            active = policy.execute("SELECT version FROM active WHERE id = 1").fetchone()
            if active:
                cur.execute(f"INSERT INTO {CONTROL_SCHEMA}.policy_active (id, version) VALUES (1, %s)", (active[0],))
    if source.trust_db.is_file():
        with _sqlite(source.trust_db) as trust:
            cols = _columns(trust, "keys")
            purpose = "purpose" if "purpose" in cols else "'seal'"
            mldsa = "mldsa" if "mldsa" in cols else "NULL"
            rows = trust.execute(f"SELECT kid, principal, public, status, created, changed, changed_by, {purpose}, "
                                 f"{mldsa} FROM keys ORDER BY created").fetchall()
            cur.executemany(f"INSERT INTO {CONTROL_SCHEMA}.trust_keys (kid, principal, public, status, created, "
                            "changed, changed_by, purpose, mldsa) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)
            report.rows["trust.keys"] = len(rows)
    control_db = source.root / "control.db"
    if control_db.is_file():
        with _sqlite(control_db) as control:
            if "grants" in _columns(control, "seal_grants"):
                rows = [(k, g if isinstance(g, bytes) else str(g).encode())
                        for k, g in control.execute("SELECT kid, grants FROM seal_grants")]
                cur.executemany(f"INSERT INTO {CONTROL_SCHEMA}.seal_grants (kid, grants) VALUES (%s, %s)", rows)
                report.rows["control.seal_grants"] = len(rows)
            # The direct-path reconciler's positions: without them the first pass after the move
            # would re-read every stream from the start (duplicate Publish and refusal records).
            tables = {str(r[0]) for r in control.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            for table, cols in _DIRECT_TABLES:
                if table in tables:
                    rows = control.execute(f"SELECT {cols} FROM {table} ORDER BY 1, 2").fetchall()
                    marks = ", ".join(["%s"] * len(cols.split(",")))
                    cur.executemany(f"INSERT INTO {CONTROL_SCHEMA}.{table} ({cols}) VALUES ({marks})", rows)
                    report.rows[f"control.{table}"] = len(rows)


def _gateway_db(source: Home) -> Path:
    return source.root / "consumers" / "gateway.db"


def _copy_gateway_groups(cur: psycopg.Cursor, source: Home, report: ImportReport) -> None:
    """The gateway's groups: without their replay state, an id acked before the move could be
    replayed after it (a copy at a new offset would not be a duplicate any more)."""
    path = _gateway_db(source)
    if not path.is_file():
        return
    with _sqlite(path) as gw:
        for table, cols in _GATEWAY_TABLES:
            rows = gw.execute(f"SELECT {cols} FROM {table}").fetchall()
            names = cols.replace("NULL, 0", "holder, lease_until")
            marks = ", ".join(["%s"] * len(cols.split(",")))
            cur.executemany(f"INSERT INTO {CONTROL_SCHEMA}.{table} ({names}) VALUES ({marks})", rows)
            report.rows[f"gateway.{table}"] = len(rows)


def _copy_pki(cur: psycopg.Cursor, source: Home, report: ImportReport) -> None:
    """The PKI's book (``certs/issued.db``) and its current CRL: the stored one, or for a book from
    before CRLs were stored, ``certs/crl.pem`` (its CRL number kept, so later ones are newer)."""
    from cryptography import x509

    from eventward._internal.certstore import CRL_NAME, DB_NAME

    book = source.certs / DB_NAME
    if not book.is_file():
        return
    with _sqlite(book) as pki:
        cols = "serial, principal, kind, path, not_before, not_after, spki, status, revoked_at, reason, alerted"
        rows = pki.execute(f"SELECT {cols} FROM issued ORDER BY serial").fetchall()
        cur.executemany(f"INSERT INTO {CONTROL_SCHEMA}.issued_certs ({cols}) VALUES "
                        f"({', '.join(['%s'] * 11)})", rows)
        report.rows["pki.issued"] = len(rows)
        has_crl = pki.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'crl'").fetchone()
        stored = pki.execute("SELECT number, pem FROM crl WHERE id = 1").fetchone() if has_crl else None
    if stored is None and (source.certs / CRL_NAME).is_file():
        pem = (source.certs / CRL_NAME).read_bytes()
        try:
            crl = x509.load_pem_x509_crl(pem)
            number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        except (ValueError, x509.ExtensionNotFound):
            number = 0
        stored = (int(number), pem.decode())
    if stored is not None:
        cur.execute(f"INSERT INTO {CONTROL_SCHEMA}.crl (id, number, pem) VALUES (1, %s, %s)",
                    (int(stored[0]), str(stored[1])))
        report.rows["pki.crl"] = 1
