"""A whole deployment with ``store.backend: postgres``: init binds the database, keys and audit
live there, forget leaves a certificate in the one tree, ``audit verify`` passes, and a second
deployment cannot take the same database."""

from __future__ import annotations

import json

import psycopg
import pytest
from typer.testing import CliRunner

from eventward._internal.audit.pg_log import PgAuditLog
from eventward._internal.cli import app
from eventward._internal.deployment import BOOTSTRAP_POLICY, Deployment
from eventward._internal.home import Home
from eventward._internal.keys.pg_store import PgKeyStore
from eventward._internal.schema.pg_store import PgRegistryStore
from eventward.errors import ConfigError, StoreForeignDeployment


def _pg_home(root, dsn_env: str = "EW_TEST_DSN") -> Home:
    home = Home(root).ensure()
    home.config.write_text(f"store: {{backend: postgres, dsn_env: {dsn_env}}}\n")
    return home


def test_deployment_on_postgres_forget_and_audit_verify(tmp_path, pg_dsn, monkeypatch):
    monkeypatch.setenv("EW_TEST_DSN", pg_dsn)
    home = _pg_home(tmp_path / "home")
    policy = BOOTSTRAP_POLICY.format(admin="admin") + '    - {allow: encrypt, class: "*"}\n'
    with Deployment.init(home, admin="admin", policy_yaml=policy) as dep:
        assert isinstance(dep.keys.store, PgKeyStore) and isinstance(dep.audit, PgAuditLog)
        assert isinstance(dep.registry._store, PgRegistryStore)
        kid, _ = dep.keys.encryption_key("jane", "pii", principal="admin")
        gone = dep.forget("jane", principal="admin", reason="gdpr-art17")
        assert gone.receipt.destroyed == 1 and gone.receipt.purged
        assert dep.keys.store.get_dek(kid) is None
    assert not home.keys_db.exists() and not home.audit_db.exists() and not home.registry_db.exists()
    with psycopg.connect(pg_dsn) as c:
        actions = [r[0] for r in c.execute("SELECT convert_from(body, 'UTF8')::json->>'action' "
                                           "FROM eventward_audit.records ORDER BY idx")]
    assert "key.forget" in actions and any(a.startswith("erasure") for a in actions)
    r = CliRunner().invoke(app, ["--home", str(home.root), "audit", "verify", "--no-state", "--json", "--as", "admin"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["ok"] is True and doc["size"] == len(actions)


def test_attack_second_deployment_cannot_take_the_database(tmp_path, pg_dsn, monkeypatch):
    monkeypatch.setenv("EW_TEST_DSN", pg_dsn)
    Deployment.init(_pg_home(tmp_path / "first"), admin="admin").close()
    with pytest.raises(StoreForeignDeployment, match=r"belongs to deployment eventward\.audit/"):
        Deployment.init(_pg_home(tmp_path / "second"), admin="admin")
    with psycopg.connect(pg_dsn) as c:  # nothing of the second deployment was written
        origins = c.execute("SELECT value FROM eventward_audit.meta WHERE key = 'origin'").fetchall()
    assert len(origins) == 1


def test_backup_and_restore_of_a_postgres_home_are_refused_not_partial(tmp_path, pg_dsn, monkeypatch):
    """A copy of the home alone would miss the keys and the audit log: refused, naming the tools."""
    from eventward._internal.backup import backup, restore

    monkeypatch.setenv("EW_TEST_DSN", pg_dsn)
    home = _pg_home(tmp_path / "home")
    with Deployment.init(home, admin="admin") as dep, pytest.raises(ConfigError, match="pg_dump"):
        backup(dep, tmp_path / "bk")
    assert not (tmp_path / "bk").exists()
    with pytest.raises(ConfigError, match="PostgreSQL"):
        restore(tmp_path / "bk", home)
