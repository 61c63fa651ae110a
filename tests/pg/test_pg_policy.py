"""The policy store on PostgreSQL (migration 5): the policy store tests run again on a home with
``store.backend: postgres``, so the backends cannot drift. Among them: four replicas applying at
once get distinct versions (serialized by the advisory lock, each authorized against the policy
active when it runs), and a change by another process reaches a running engine within 1 s."""

from __future__ import annotations

import psycopg
import pytest

from eventward._internal.audit.signing import ensure_key, load_signer
from eventward._internal.home import Home
from eventward._internal.store.pg import Database
from eventward._internal.store.sqlcompat import PgTables
from eventward.errors import StoreUnavailable
from policy.conftest import audit, clock, engine, store  # noqa: F401
from policy.support import ABAC
from policy.test_policy_store import (  # noqa: F401
    POLICY_V2,
    test_bootstrap_only_once,
    test_change_by_another_engine_takes_effect_within_one_second,
    test_change_by_another_process_takes_effect_within_one_second,
    test_change_needs_manage_policy,
    test_concurrent_applies_get_distinct_versions,
    test_invalid_change_is_refused_and_old_policy_stays,
    test_rollback_restores_an_old_version,
    test_threads_deciding_during_a_change_see_old_or_new_never_garbage,
    test_versions_are_stored_and_listed,
)


@pytest.fixture
def pg_dsn(pg_migrated_dsn: str) -> str:
    """Databases here start migrated (pg.conftest.pg_migrated_dsn): these tests are about the policy store,
    not about migrating (~0.3 s of DDL per test saved)."""
    return pg_migrated_dsn


@pytest.fixture
def home(tmp_path, pg_dsn, monkeypatch) -> Home:
    monkeypatch.setenv("EW_TEST_DSN", pg_dsn)
    h = Home(tmp_path / "home").ensure()
    h.config.write_text("store: {backend: postgres, dsn_env: EW_TEST_DSN, connect_timeout_s: 1}\n")
    ensure_key(h)
    Database(pg_dsn).migrate(load_signer(h.audit_key).name)
    return h


def test_versions_are_in_the_database_and_immutable(home, store, pg_dsn):  # noqa: F811
    assert isinstance(store._db, PgTables) and not (home.policy_dir / "policy.db").exists()
    store.apply("alice", POLICY_V2, {"abac.cedar": ABAC})
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        assert c.execute("SELECT version FROM eventward_control.policy_active").fetchone() == (2,)
        for sql in ("UPDATE eventward_control.policy_versions SET yaml = 'x'",
                    "DELETE FROM eventward_control.policy_versions"):
            with pytest.raises(psycopg.Error, match="immutable"):
                c.execute(sql)


def test_database_down_policy_change_fails_closed(home, store, engine, pg_server, pg_dsn):  # noqa: F811
    name = psycopg.conninfo.conninfo_to_dict(pg_dsn)["dbname"]
    with pg_server.admin() as adm:
        adm.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        adm.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
    try:
        with pytest.raises(StoreUnavailable):
            store.apply("alice", POLICY_V2, {"abac.cedar": ABAC})
        engine.refresh()  # a running engine keeps enforcing the last good version
        assert engine.version == 1
    finally:
        with pg_server.admin() as adm:
            adm.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
