"""The audit log on PostgreSQL: one Merkle tree across replicas, the same proofs and verifier,
append-only guards, tampering found by ``verify``, and a dropped connection recovered."""

from __future__ import annotations

import psycopg
import pytest

from eventward._internal.audit.log import AuditLog
from eventward._internal.audit.pg_log import PgAuditLog
from eventward._internal.audit.verify import verify_consistency_proof, verify_inclusion_proof, verify_log
from eventward._internal.config import Config
from eventward._internal.home import Home
from eventward._internal.store.binding import bind_new_home
from eventward.errors import AuditUnavailable, StoreNotReady
from pg.conftest import race


@pytest.fixture
def pg_home(tmp_path, pg_dsn, monkeypatch) -> Home:
    home = Home(tmp_path / "home").ensure()
    home.config.write_text("store: {backend: postgres, dsn_env: EW_TEST_DSN}\n")
    monkeypatch.setenv("EW_TEST_DSN", pg_dsn)
    bind_new_home(home, Config.load(home.config).store)
    return home


def _events(tag: str, n: int) -> list[dict]:
    return [{"action": "test.append", "principal": tag, "resource": f"Thing::{i}", "meta": {"i": i}}
            for i in range(n)]


def test_home_audit_log_lives_in_postgres_and_verifies(pg_home, pg_dsn):
    with AuditLog.open(pg_home) as log:
        assert isinstance(log, PgAuditLog)
        log.record("test.one", principal="alice", resource="Thing::1")
        idx = log.append_many(_events("bob", 100))
        assert idx == range(1, 101) and log.size() == 101
        assert log.get(5).principal == "bob" and [r.index for r in log.tail(2)] == [99, 100]
        cp1 = log.checkpoint()
        log.append_many(_events("carol", 37))
        cp2 = log.checkpoint()
        verify_inclusion_proof(log.prove(42, cp2.size), cp2)
        verify_consistency_proof(log.consistency(cp1.size, cp2.size), cp1, cp2)
        assert len(log.checkpoints()) == 2 and len(log.since(130)) == 8
        report = verify_log(log)
        assert report.error is None and report.size == report.records_checked == 138
        assert report.checkpoints_checked == 2
    assert not pg_home.audit_db.exists()
    with psycopg.connect(pg_dsn) as c:
        assert c.execute("SELECT count(*) FROM eventward_audit.records").fetchone()[0] == 138


def test_replicas_append_to_one_tree(pg_home):
    """Three handles (three replicas) append batches at once: one sequence of indexes, one root,
    and a consistency proof links a checkpoint one replica signed to one another signed later."""
    logs = [AuditLog.open(pg_home) for _ in range(3)]
    try:
        cp_before = logs[0].checkpoint()
        taken: list[int] = []
        for _ in range(4):
            ranges = race(*(lambda log=log, k=k: log.append_many(_events(f"replica{k}", 250))
                            for k, log in enumerate(logs)))
            taken += [i for r in ranges for i in r]
        assert sorted(taken) == list(range(3000))  # no index given twice, none skipped
        assert logs[0].size() == logs[1].size() == logs[2].size() == 3000
        assert logs[0].root() == logs[1].root() == logs[2].root()
        cp_after = logs[2].checkpoint()
        verify_consistency_proof(logs[1].consistency(cp_before.size, cp_after.size), cp_before, cp_after)
        report = verify_log(logs[1])
        assert report.error is None and report.size == 3000
    finally:
        for log in logs:
            log.close()


def test_attack_records_are_append_only_and_edits_are_found(pg_home, pg_dsn):
    with AuditLog.open(pg_home) as log:
        log.append_many(_events("alice", 10))
        log.checkpoint()
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        for sql in ("UPDATE eventward_audit.records SET body = 'x' WHERE idx = 3",
                    "DELETE FROM eventward_audit.records WHERE idx = 9",
                    "TRUNCATE eventward_audit.nodes"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                c.execute(sql)
        # someone with DDL rights drops the guard and rewrites a record: verify names the index
        c.execute("ALTER TABLE eventward_audit.records DISABLE TRIGGER records_append_only")
        cur = c.execute("UPDATE eventward_audit.records SET body = convert_to(replace(convert_from(body, 'UTF8'), "
                        "'alice', 'mallo'), 'UTF8') WHERE idx = 4")
        assert cur.rowcount == 1
    with AuditLog.open(pg_home) as log:
        report = verify_log(log)
    assert report.error is not None and report.error.details.get("index") == 4


def test_dropped_connection_fails_closed_then_recovers(pg_home, pg_server):
    with AuditLog.open(pg_home) as log:
        log.append_many(_events("a", 3))
        pid = log._conn.info.backend_pid
        with pg_server.admin() as a:
            a.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # the next call notices the broken connection, reconnects and appends at the right index
        assert log.append_many(_events("b", 2)) == range(3, 5)
        assert verify_log(log).error is None


def test_unreachable_or_unmigrated_database_refuses_to_open(tmp_path, pg_server, monkeypatch):
    home = Home(tmp_path / "home").ensure()
    home.config.write_text("store: {backend: postgres, dsn_env: EW_TEST_DSN}\n")
    monkeypatch.setenv("EW_TEST_DSN", pg_server.create_database())
    with pytest.raises(StoreNotReady, match="run 'eventward db migrate'"):
        AuditLog.open(home)
    monkeypatch.setenv("EW_TEST_DSN", "host=127.0.0.1 port=1 dbname=x connect_timeout=1")
    with pytest.raises(Exception) as e:
        AuditLog.open(home)
    assert e.value.__class__.__name__ == "StoreUnavailable"
    assert isinstance(e.value, AuditUnavailable) or e.value.code == "store_unavailable"
