"""``store`` configuration, the versioned PostgreSQL schema, ``eventward db migrate|status``, and
the refusals at start: wrong DSN, unreachable server, older/newer schema, another deployment."""

from __future__ import annotations

import json
import threading
import time

import psycopg
import pytest
from typer.testing import CliRunner

from eventward._internal.cli import app
from eventward._internal.cli.common import exit_code
from eventward._internal.config import Config, StoreConfig
from eventward._internal.store import Database, describe, resolve_dsn
from eventward._internal.store import pg as pgmod
from eventward._internal.store.migrations import MIGRATIONS, Migration
from eventward.errors import (
    ConfigError,
    KeyFilePermissionError,
    StoreForeignDeployment,
    StoreNotReady,
    StoreUnavailable,
)

SECRET = "hunter2-Pa55w0rd"


# --- configuration ----------------------------------------------------------------------------
def test_store_config_defaults_to_sqlite_and_parses_postgres():
    assert Config.parse("").store == StoreConfig()
    s = Config.parse("store: {backend: postgres, dsn_env: EW_DSN, pool_max: 4}").store
    assert (s.backend, s.dsn_env, s.pool_max) == ("postgres", "EW_DSN", 4)


@pytest.mark.parametrize("doc", [
    f"store: {{backend: postgres, dsn: 'postgresql://ew:{SECRET}@db/ew'}}",
    f"store: {{backend: postgres, dsn_env: E, password: {SECRET}}}",
    f"store: {{backend: postgres, url: 'postgresql://ew:{SECRET}@db/ew'}}",
    f"store: {{backend: postgres, dsn_env: 'postgresql://ew:{SECRET}@db/ew'}}",
    f"store: {{backend: postgres, dsn_file: 'host=db password={SECRET}'}}",
])
def test_attack_dsn_or_password_in_yaml_is_refused_and_never_echoed(doc):
    with pytest.raises(ConfigError) as e:
        Config.parse(doc)
    assert SECRET not in str(e.value) and "store." in str(e.value)
    assert "dsn_env" in str(e.value) or "dsn_file" in str(e.value)


@pytest.mark.parametrize("doc, words", [
    ("store: {backend: mysql}", "sqlite, postgres"),
    ("store: {backend: postgres}", "exactly one"),
    ("store: {backend: postgres, dsn_env: A, dsn_file: b}", "exactly one"),
    ("store: {dsn_env: A}", "postgres only"),
    ("store: {backend: postgres, dsn_env: A, pool_min: 5, pool_max: 2}", "pool_min"),
])
def test_bad_store_config_is_refused_by_name(doc, words):
    with pytest.raises(ConfigError, match=words):
        Config.parse(doc)


def test_dsn_from_environment_or_private_file(tmp_path, monkeypatch):
    cfg = StoreConfig(backend="postgres", dsn_env="EW_TEST_DSN")
    monkeypatch.delenv("EW_TEST_DSN", raising=False)
    with pytest.raises(ConfigError, match="EW_TEST_DSN, which is not set"):
        resolve_dsn(cfg, tmp_path)
    monkeypatch.setenv("EW_TEST_DSN", f"host=db user=ew password={SECRET} dbname=ew")
    assert resolve_dsn(cfg, tmp_path).endswith("dbname=ew")
    f = tmp_path / "dsn"
    f.write_text(f"postgresql://ew:{SECRET}@db:6543/ew\n")
    f.chmod(0o644)
    fcfg = StoreConfig(backend="postgres", dsn_file="dsn")
    with pytest.raises(KeyFilePermissionError):  # a DSN file others can read is refused
        resolve_dsn(fcfg, tmp_path)
    f.chmod(0o600)
    dsn = resolve_dsn(fcfg, tmp_path)
    assert describe(dsn) == "PostgreSQL ew@db:6543/ew" and SECRET not in describe(dsn)


# --- refusals at start ------------------------------------------------------------------------
def _dead_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_attack_unreachable_server_is_a_typed_error_without_the_password():
    dsn = f"host=127.0.0.1 port={_dead_port()} user=ew password={SECRET} dbname=ew"
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable) as e:
        Database.open(dsn, deployment_id="d1", connect_timeout=2)
    assert time.monotonic() - t0 < 2.0
    assert SECRET not in str(e.value) and "127.0.0.1" in str(e.value)
    assert e.value.code == "store_unavailable"


def test_wrong_database_name_is_a_typed_error(pg_server):
    with pytest.raises(StoreUnavailable, match="does not exist"):
        Database.open(pg_server.dsn("no_such_db"), deployment_id="d1")


def test_unmigrated_database_is_refused_saying_what_to_run(pg_dsn):
    with pytest.raises(StoreNotReady, match="no eventward schema: run 'eventward db migrate'"):
        Database.open(pg_dsn, deployment_id="d1")


def test_migrate_is_idempotent_and_records_the_deployment(pg_dsn):
    db = Database(pg_dsn)
    assert [m.version for m in db.migrate("d1")] == [m.version for m in MIGRATIONS]
    assert db.migrate("d1") == []
    st = db.status()
    assert st.current and st.deployment_id == "d1" and st.pending == ()
    with psycopg.connect(pg_dsn) as c:
        assert c.execute("SELECT count(*) FROM eventward.migrations").fetchone()[0] == len(MIGRATIONS)
    Database.open(pg_dsn, deployment_id="d1").close()


def test_concurrent_migrations_apply_once(pg_dsn):
    results: list[object] = []

    def run() -> None:
        try:
            results.append(len(Database(pg_dsn).migrate("d1")))
        except Exception as e:  # pragma: no cover - reported by the assertion
            results.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0, 0, len(MIGRATIONS)]


def test_attack_database_of_another_deployment_is_refused(pg_dsn):
    Database(pg_dsn).migrate("deployment-a")
    with pytest.raises(StoreForeignDeployment, match="belongs to deployment deployment-a, not deployment-b"):
        Database.open(pg_dsn, deployment_id="deployment-b")
    with pytest.raises(StoreForeignDeployment):  # migrate does not adopt it either
        Database(pg_dsn).migrate("deployment-b")
    assert Database(pg_dsn).status().deployment_id == "deployment-a"


def test_older_schema_is_refused_until_migrated(pg_dsn, monkeypatch):
    Database(pg_dsn).migrate("d1")
    extra = Migration(MIGRATIONS[-1].version + 1, "test: one more table", ("CREATE TABLE eventward.extra (x int)",))
    monkeypatch.setattr(pgmod, "MIGRATIONS", (*MIGRATIONS, extra))
    monkeypatch.setattr(pgmod, "TARGET_VERSION", extra.version)
    with pytest.raises(StoreNotReady, match=f"version {extra.version - 1}, this eventward needs {extra.version}: "
                                            "run 'eventward db migrate'"):
        Database.open(pg_dsn, deployment_id="d1")
    assert [m.version for m in Database(pg_dsn).migrate("d1")] == [extra.version]
    Database.open(pg_dsn, deployment_id="d1").close()


def test_newer_schema_is_refused_saying_upgrade(pg_dsn):
    Database(pg_dsn).migrate("d1")
    with psycopg.connect(pg_dsn) as c:
        c.execute("UPDATE eventward.meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreNotReady, match=r"newer than this eventward.*upgrade eventward"):
        Database.open(pg_dsn, deployment_id="d1")
    with pytest.raises(StoreNotReady):
        Database(pg_dsn).migrate("d1")


def test_pool_fails_closed_while_the_database_is_gone_and_recovers(pg_server, pg_dsn):
    Database(pg_dsn).migrate("d1")
    db = Database.open(pg_dsn, deployment_id="d1", connect_timeout=1, pool_max=1)  # one connection: deterministic
    try:
        with db.connection() as c:
            pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        with pg_server.admin() as a:  # the server drops our connection (a restart looks the same)
            a.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # a read through run() is repeated once on a fresh connection: the caller sees no error
        assert db.run("read", lambda c: c.execute("SELECT pg_backend_pid()").fetchone()[0]) != pid
        with db.connection() as c:
            pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        with pg_server.admin() as a:
            a.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StoreUnavailable), db.connection() as c:  # without run(): fails closed, once
            c.execute("SELECT 1")
        with db.connection() as c:  # the broken connection left the pool
            assert c.execute("SELECT 1").fetchone()[0] == 1
    finally:
        db.close()
    with pytest.raises(StoreUnavailable, match="not open"), db.connection():
        pass


# --- CLI --------------------------------------------------------------------------------------
def test_cli_db_migrate_and_status(tmp_path, pg_dsn, monkeypatch):
    from eventward._internal.audit.log import AuditLog
    from eventward._internal.backup import deployment_id
    from eventward._internal.home import Home

    home = Home(tmp_path / "home").ensure()
    AuditLog.open(home).close()  # the audit key names the deployment
    home.config.write_text("store: {backend: postgres, dsn_env: EW_TEST_DSN}\n")
    monkeypatch.setenv("EW_TEST_DSN", pg_dsn)
    runner = CliRunner()
    st = runner.invoke(app, ["--home", str(home.root), "db", "status"])
    assert st.exit_code == 1 and "eventward db migrate" in st.output
    first = runner.invoke(app, ["--home", str(home.root), "db", "migrate", "--json"])
    assert first.exit_code == 0, first.output
    doc = json.loads(first.output)
    assert doc["applied"] == [m.version for m in MIGRATIONS] and doc["deployment"] == deployment_id(home)
    again = runner.invoke(app, ["--home", str(home.root), "db", "migrate"])
    assert again.exit_code == 0 and "nothing to do" in again.output
    ok = runner.invoke(app, ["--home", str(home.root), "db", "status", "--json"])
    assert ok.exit_code == 0 and deployment_id(home) in ok.output
    monkeypatch.setenv("EW_TEST_DSN", f"host=127.0.0.1 port={_dead_port()} password={SECRET}")
    down = runner.invoke(app, ["--home", str(home.root), "db", "status"])
    assert isinstance(down.exception, StoreUnavailable) and exit_code(down.exception) == 6
    assert SECRET not in str(down.exception) and SECRET not in down.output
