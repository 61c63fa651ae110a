"""``eventward db import``: an embedded home moves into PostgreSQL with its keys, erasures and audit
tree intact (old keys decrypt, erased ones stay erased, ``audit verify`` passes, old checkpoints
are extended), and an import into a used or another deployment's database is refused."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing

import psycopg
import pytest
import yaml
from cryptography import x509
from typer.testing import CliRunner

from eventward._internal import certstore
from eventward._internal.audit.log import AuditLog
from eventward._internal.audit.pg_log import PgAuditLog
from eventward._internal.audit.verify import verify_consistency_proof
from eventward._internal.cli import app
from eventward._internal.control.reconciler import _SCHEMA as DIRECT_SCHEMA
from eventward._internal.deployment import BOOTSTRAP_POLICY, Deployment
from eventward._internal.home import Home
from eventward._internal.keys.pg_store import PgKeyStore
from eventward._internal.schema.pg_store import PgRegistryStore
from eventward.errors import ConflictError, KeyDestroyed, StoreForeignDeployment

POLICY = BOOTSTRAP_POLICY.format(admin="admin") + '    - {allow: [encrypt, decrypt], class: "*"}\n' + (
    '    - {allow: propose_schema, schema: "*"}\n')
PING = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": False}


def _to_postgres(home: Home) -> None:
    doc = yaml.safe_load(home.config.read_text())
    doc["store"] = {"backend": "postgres", "dsn_env": "EW_TEST_DSN"}
    home.config.write_text(yaml.safe_dump(doc))


def _cli(home: Home, *args: str) -> object:
    r = CliRunner().invoke(app, ["--home", str(home.root), *args])
    assert r.exit_code == 0, (r.output, r.exception)
    return r


def test_embedded_home_moves_into_postgres_intact(tmp_path, pg_dsn, monkeypatch):
    home = Home(tmp_path / "home")
    with Deployment.init(home, admin="admin", policy_yaml=POLICY) as dep:
        dep.registry.propose("admin", "com.example.Ping", PING)
        kept = {s: dep.keys.encryption_key(s, "pii", principal="admin") for s in ("ann", "bob")}
        gone_kid, _ = dep.keys.encryption_key("eve", "payment", principal="admin")
        dep.forget("eve", principal="admin", reason="gdpr-art17")
        cp_before = dep.audit.checkpoint()
    with AuditLog.open_readonly(home.audit_db) as before:  # closing the deployment added records
        size, root = before.size(), before.root()
    positions = _direct_positions(home)
    book = _pki_book(home)
    _to_postgres(home)
    monkeypatch.setenv("EW_TEST_DSN", pg_dsn)
    _cli(home, "db", "migrate")
    doc = json.loads(_cli(home, "db", "import", "--json").output)
    assert doc["rows"]["keys.deks"] >= 2 and doc["rows"]["keys.erasures"] == 1
    assert doc["rows"]["audit.records"] == size and doc["stale_files"]  # the SQLite files are named
    assert doc["rows"]["policy.versions"] == 1 and str(home.policy_dir / "policy.db") in doc["stale_files"]
    assert str(home.certs / certstore.DB_NAME) in doc["stale_files"]
    with psycopg.connect(pg_dsn) as c:  # the reconciler resumes where it stopped, not from each stream's start
        assert {t: c.execute(f"SELECT * FROM eventward_control.{t} ORDER BY 1, 2").fetchall()
                for t in positions} == positions
    (home.certs / certstore.DB_NAME).unlink()  # as the report says: the book now lives in the database
    reg = certstore.CertRegistry(home.certs)
    try:
        assert sorted(reg.list(), key=lambda r: r.serial) == sorted(book[0], key=lambda r: r.serial)
        assert reg.crl() == book[1]
        assert certstore.CertRegistry.managed(home.certs) and not (home.certs / certstore.DB_NAME).exists()
        revoked = {r.serial for r in reg.list() if r.status == certstore.REVOKED}
        assert revoked and revoked == {format(r.serial_number, "x") for r in x509.load_pem_x509_crl(reg.crl()[1])}
    finally:
        reg.close()
    with Deployment.open(home) as dep:
        assert isinstance(dep.keys.store, PgKeyStore) and isinstance(dep.audit, PgAuditLog)
        for kid, dek in kept.values():
            assert dep.keys.decryption_key(kid, "pii", principal="admin") == dek
        with pytest.raises(KeyDestroyed):
            dep.keys.decryption_key(gone_kid, "payment", principal="admin")
        assert dep.audit.root(size) == root
        assert isinstance(dep.registry._store, PgRegistryStore)
        assert [v.state for v in dep.registry.versions("com.example.Ping")] == ["proposed"]
        dep.audit.append_many([{"action": "test.after", "principal": "admin", "resource": "Thing::1"}])
        cp_after = dep.audit.checkpoint()
        verify_consistency_proof(dep.audit.consistency(cp_before.size, cp_after.size), cp_before, cp_after)
    verified = json.loads(_cli(home, "audit", "verify", "--no-state", "--json", "--as", "admin").output)
    assert verified["ok"] is True and verified["size"] == cp_after.size


def _direct_positions(home: Home) -> dict[str, list[tuple]]:
    """control.db as the direct-path reconciler leaves it on SQLite: stream tails, refused batches
    and each group's progress."""
    with closing(sqlite3.connect(home.root / "control.db")) as c, c:
        c.executescript(DIRECT_SCHEMA)
        c.executemany("INSERT INTO direct_tail VALUES (?, ?, ?)", [("orders", 41, 40), ("billing", 7, 9)])
        c.executemany("INSERT INTO direct_refused VALUES (?, ?)", [("orders", 12), ("orders", 30)])
        c.executemany("INSERT INTO direct_progress VALUES (?, ?, ?)", [("shipping", "orders", 38)])
    with closing(sqlite3.connect(home.root / "control.db")) as c:
        return {t: c.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
                for t in ("direct_tail", "direct_refused", "direct_progress")}


def _pki_book(home: Home) -> tuple[list[certstore.CertRecord], tuple[int, bytes] | None]:
    """An initialised PKI with one valid and one revoked certificate; the book and its CRL."""
    certstore.init(home.certs)[0].close()
    certstore.issue(home.certs, "orders")
    certstore.issue(home.certs, "billing")
    certstore.revoke(home.certs, "billing", "key-compromise")
    reg = certstore.CertRegistry(home.certs)
    try:
        return reg.list(), reg.crl()
    finally:
        reg.close()


def test_import_into_a_used_or_foreign_database_is_refused(tmp_path, pg_dsn, monkeypatch):
    home = Home(tmp_path / "home")
    Deployment.init(home, admin="admin").close()
    other = Home(tmp_path / "other")
    Deployment.init(other, admin="admin").close()
    _to_postgres(home)
    monkeypatch.setenv("EW_TEST_DSN", pg_dsn)
    _cli(home, "db", "migrate")
    r = CliRunner().invoke(app, ["--home", str(home.root), "db", "import", "--from", str(other.root)])
    assert isinstance(r.exception, StoreForeignDeployment)
    _cli(home, "db", "import")
    again = CliRunner().invoke(app, ["--home", str(home.root), "db", "import"])
    assert isinstance(again.exception, ConflictError) and "already holds" in str(again.exception)
