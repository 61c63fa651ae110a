"""``eventward db import``: an embedded home moves into PostgreSQL with its keys, erasures and audit
tree intact (old keys decrypt, erased ones stay erased, ``audit verify`` passes, old checkpoints
are extended), and an import into a used or another deployment's database is refused."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from eventward._internal.audit.log import AuditLog
from eventward._internal.audit.pg_log import PgAuditLog
from eventward._internal.audit.verify import verify_consistency_proof
from eventward._internal.cli import app
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
    _to_postgres(home)
    monkeypatch.setenv("EW_TEST_DSN", pg_dsn)
    _cli(home, "db", "migrate")
    doc = json.loads(_cli(home, "db", "import", "--json").output)
    assert doc["rows"]["keys.deks"] >= 2 and doc["rows"]["keys.erasures"] == 1
    assert doc["rows"]["audit.records"] == size and doc["stale_files"]  # the SQLite files are named
    assert doc["rows"]["policy.versions"] == 1 and str(home.policy_dir / "policy.db") in doc["stale_files"]
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
