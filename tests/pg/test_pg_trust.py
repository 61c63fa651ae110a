"""The trust registry and the control plane's seal grants on PostgreSQL (migration 4): the trust
tests that need only a registry run again on a PostgreSQL-backed one (so the backends cannot
drift), and replicas racing to change a principal's keys give one winner and a ConflictError."""

from __future__ import annotations

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.client_world import ADMIN, PRODUCER, StrictAudit, grants

# The backend-neutral trust tests, collected again in this module with its `trust` fixture.
from client.test_client_trust import (  # noqa: F401
    test_key_changes_need_rotate_keys,
    test_principal_names_cannot_escape_the_key_directory,
    test_register_rotate_revoke_lifecycle,
    test_unknown_kid_and_unsafe_key_file,
)
from eventward._internal.client.trust import ACTIVE, TRUST_LOCK, TRUST_TABLES, TrustRegistry
from eventward._internal.crypto.seal import kid_of
from eventward._internal.home import Home
from eventward._internal.store.pg import Database
from eventward._internal.store.sqlcompat import PgTables
from eventward.errors import ConflictError, StoreUnavailable
from pg.conftest import race
from support_wait import wait_until


@pytest.fixture
def pg_dsn(pg_migrated_dsn: str) -> str:
    """Databases here start migrated (pg.conftest.pg_migrated_dsn): these tests are about the trust registry,
    not about migrating (~0.3 s of DDL per test saved)."""
    return pg_migrated_dsn


DEP = "pg-trust-tests"


def _replica(dsn: str, root) -> TrustRegistry:
    """One replica's trust registry: its own pool on the shared database."""
    Database(dsn).migrate(DEP)
    tables = PgTables(Database.open(dsn, deployment_id=DEP, pool_max=2), TRUST_TABLES, TRUST_LOCK)
    return TrustRegistry(Home(root), grants(), StrictAudit(), db=tables)


@pytest.fixture
def trust(pg_dsn, tmp_path):
    t = _replica(pg_dsn, tmp_path)
    yield t
    t.close()


def _outcome(call):
    try:
        return call()
    except ConflictError as e:
        return e


def test_keys_live_in_the_database_not_in_the_home(trust, pg_dsn):
    s = trust.register(PRODUCER, by=ADMIN)
    assert not trust.home.trust_db.exists()
    with psycopg.connect(pg_dsn) as c:
        rows = c.execute("SELECT kid, principal, status FROM eventward_control.trust_keys").fetchall()
    assert rows == [(s.kid, PRODUCER, ACTIVE)]
    assert trust.signer_for(PRODUCER).kid == s.kid  # the private half stays a 0600 file in the home


def test_race_two_replicas_enroll_the_same_key_one_winner(pg_dsn, tmp_path):
    a, b = _replica(pg_dsn, tmp_path / "a"), _replica(pg_dsn, tmp_path / "b")
    try:
        pub = Ed25519PrivateKey.generate().public_key()
        for _ in range(5):  # several rounds: the window is small, the answer must never vary
            pub = Ed25519PrivateKey.generate().public_key()
            out = race(lambda p=pub: _outcome(lambda: a.enroll(PRODUCER, p, by=ADMIN)),
                       lambda p=pub: _outcome(lambda: b.enroll(PRODUCER, p, by=ADMIN)))
            assert sorted(type(o).__name__ for o in out) == ["ConflictError", "str"], out
            assert kid_of(pub) in out and "already registered" in str(next(o for o in out if not isinstance(o, str)))
        assert [k.kid for k in a.list(PRODUCER) if k.status == ACTIVE] == [kid_of(pub)]
    finally:
        a.close()
        b.close()


def test_attack_racing_replicas_cannot_leave_two_active_seal_keys(pg_dsn, tmp_path):
    """Two replicas registering a principal's first key at once: the check used to run before the
    write transaction, so both could insert and the principal had two active keys (either could
    seal). Now the check runs under the write lock and the database allows one active key."""
    a, b = _replica(pg_dsn, tmp_path / "a"), _replica(pg_dsn, tmp_path / "b")
    try:
        for i in range(5):
            who = f"{PRODUCER}{i}"
            out = race(lambda w=who: _outcome(lambda: a.register(w, by=ADMIN)),
                       lambda w=who: _outcome(lambda: b.register(w, by=ADMIN)))
            errors = [o for o in out if isinstance(o, ConflictError)]
            assert len(errors) == 1 and "already has an active seal key" in str(errors[0])
            assert len([k for k in a.list(who) if k.status == ACTIVE]) == 1
            loser = b if isinstance(out[1], ConflictError) else a
            assert not list(loser.home.producer_keys.glob(f"{who}.*"))  # the loser's key file is gone
        with psycopg.connect(pg_dsn) as c, pytest.raises(psycopg.errors.UniqueViolation):
            c.execute("INSERT INTO eventward_control.trust_keys (kid, principal, public, status, created, changed, "
                      "changed_by) VALUES ('x', %s, '\\x00', 'active', 0, 0, 'sql')", (f"{PRODUCER}0",))
    finally:
        a.close()
        b.close()


def test_database_down_trust_changes_fail_closed(pg_server, pg_dsn, tmp_path):
    trust = _replica(pg_dsn, tmp_path)
    name = psycopg.conninfo.conninfo_to_dict(pg_dsn)["dbname"]
    try:
        s = trust.register(PRODUCER, by=ADMIN)
        with pg_server.admin() as adm:
            adm.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            adm.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        trust._db.db.connect_timeout = 1
        with pytest.raises(StoreUnavailable):
            trust.rotate(PRODUCER, by=ADMIN)
        with pytest.raises(StoreUnavailable):
            trust.resolve(s.kid)
    finally:
        with pg_server.admin() as adm:
            adm.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    try:  # back by itself (the pool reconnects): the refused rotation changed nothing
        assert wait_until(lambda: _answers(lambda: trust.resolve(s.kid)), timeout=20, what="trust registry back")
        assert trust.signer_for(PRODUCER).kid == s.kid
        assert [k.kid for k in trust.list(PRODUCER)] == [s.kid]
    finally:
        trust.close()


def _answers(call):
    try:
        return call()
    except StoreUnavailable:
        return None


def test_enrollment_check_of_pki_sign_csr_reads_the_database(tmp_path, pg_dsn, monkeypatch):
    """``pki sign-csr`` certifies enrolled principals only: on PostgreSQL it must look there, not
    at a trust.db the home no longer has."""
    from eventward._internal.audit.signing import ensure_key, load_signer
    from eventward._internal.client.trust import is_enrolled

    monkeypatch.setenv("EW_TEST_DSN", pg_dsn)
    home = Home(tmp_path / "home").ensure()
    home.config.write_text("store: {backend: postgres, dsn_env: EW_TEST_DSN}\n")
    ensure_key(home)
    Database(pg_dsn).migrate(load_signer(home.audit_key).name)
    trust = TrustRegistry.open(home, grants(), StrictAudit())
    try:
        assert isinstance(trust._db, PgTables) and not is_enrolled(home, PRODUCER)
        s = trust.register(PRODUCER, by=ADMIN)
        assert is_enrolled(home, PRODUCER) and not home.trust_db.exists()
        trust.revoke(s.kid, by=ADMIN)
        assert not is_enrolled(home, PRODUCER)
    finally:
        trust.close()


def test_threat_report_counts_seal_suites_in_the_database(tmp_path, pg_dsn, monkeypatch):
    """``harden threats`` says which producers seal hybrid: on PostgreSQL it must count there."""
    from eventward._internal.audit.signing import ensure_key, load_signer
    from eventward._internal.config import Config
    from eventward._internal.crypto.seal import HYBRID
    from eventward._internal.harden.threats import _suites

    monkeypatch.setenv("EW_TEST_DSN", pg_dsn)
    home = Home(tmp_path / "home").ensure()
    home.config.write_text("store: {backend: postgres, dsn_env: EW_TEST_DSN}\n")
    ensure_key(home)
    Database(pg_dsn).migrate(load_signer(home.audit_key).name)
    trust = TrustRegistry.open(home, grants(), StrictAudit())
    try:
        trust.register(PRODUCER, by=ADMIN)
        trust.register("other-svc", by=ADMIN, suite=HYBRID)
    finally:
        trust.close()
    assert _suites(home, Config.load(home.config)) == {"ed25519": 1, HYBRID: 1}
