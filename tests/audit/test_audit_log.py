"""AuditLog: RFC 6962 roots and proofs from storage, batching, durability, files, access control."""

from __future__ import annotations

import inspect
import sqlite3
import stat
import subprocess
import sys

import orjson
import pytest

from eventward._internal.audit.base import DENIED, AuditEvent, AuditSink
from eventward._internal.audit.log import AuditLog
from eventward._internal.audit.signing import AuditVerifier
from eventward._internal.audit.verify import verify_log
from eventward._internal.crypto import merkle
from eventward._internal.home import Home
from eventward._internal.policy.base import READ_AUDIT, AllowList
from eventward.errors import AccessDenied, AuditUnavailable, ConfigError, InputError, NotFoundError
from support_wait import wait_until

from .helpers import events, fill


def leaves(log: AuditLog) -> list[bytes]:
    return [merkle.leaf_hash(log.get(i).body) for i in range(log.size())]


def test_roots_and_proofs_match_the_rfc_reference_at_every_size(log):
    for n in range(1, 41):
        fill(log, 1, start=n - 1)
        hashes = leaves(log)
        assert log.root() == merkle.root_from_leaf_hashes(hashes)
        for i in range(n):
            p = log.prove(i)
            assert list(p.hashes) == merkle.inclusion_proof(hashes, i)
            merkle.verify_inclusion(p.leaf_hash, i, n, p.hashes, log.root())
        for m in range(1, n + 1):
            c = log.consistency(m)
            assert list(c.hashes) == merkle.consistency_proof(hashes, m)
            merkle.verify_consistency(m, n, log.root(m), log.root(), c.hashes)
    assert log.root(0) == merkle.empty_root()


def test_record_bytes_are_canonical_and_the_leaf_covers_them_exactly(log):
    log.record("key.unwrap", principal="svc", resource="Class::pii", kid="k1", size=12, ok=True, ratio=0.5)
    rec = log.get(0)
    assert rec.body == orjson.dumps(orjson.loads(rec.body), option=orjson.OPT_SORT_KEYS)
    assert set(orjson.loads(rec.body)) == {
        "index",
        "time",
        "principal",
        "action",
        "resource",
        "outcome",
        "reason",
        "meta",
    }
    assert rec.meta == {"kid": "k1", "size": 12, "ok": True, "ratio": 0.5}
    assert log.prove(0).leaf_hash == merkle.leaf_hash(rec.body)


def test_auditlog_is_an_auditsink_with_the_seam_signature():
    def params(fn):
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]

    assert params(AuditLog.record)[1:] == params(AuditSink.record)[1:]


def test_record_is_buffered_until_flush_every(home):
    with AuditLog.open(home, flush_every=5, flush_ms=60_000) as log:
        peek = sqlite3.connect(home.audit_db)
        for i in range(4):
            log.record("a.b", principal="p", resource="r", n=i)
        assert peek.execute("SELECT count(*) FROM records").fetchone()[0] == 0
        log.record("a.b", principal="p", resource="r", n=4)
        assert peek.execute("SELECT count(*) FROM records").fetchone()[0] == 5
        peek.close()


def test_buffer_is_flushed_after_flush_ms_without_further_calls(home):
    with AuditLog.open(home, flush_every=10_000, flush_ms=20) as log:
        log.record("a.b", principal="p", resource="r")
        peek = sqlite3.connect(home.audit_db)
        wait_until(lambda: peek.execute("SELECT count(*) FROM records").fetchone()[0] == 1, what="timer flush")
        assert peek.execute("SELECT count(*) FROM records").fetchone()[0] == 1  # no second call was needed
        peek.close()


def test_reads_and_close_flush_first(home):
    log = AuditLog.open(home, flush_every=10_000, flush_ms=60_000)
    log.record("a.b", principal="p", resource="r")
    assert log.size() == 1  # a read flushes
    log.record("a.b", principal="p", resource="r")
    log.close()
    with AuditLog.open(home) as again:
        assert again.size() == 2


def test_append_many_keeps_order_after_buffered_records_and_returns_indexes(home):
    with AuditLog.open(home, flush_every=10_000, flush_ms=60_000) as log:
        log.record("first.one", principal="p", resource="r")
        got = log.append_many([AuditEvent("second.one", "p", "r", "ok"), *events(3)])
        assert got == range(1, 5)
        assert [r.action for r in log.tail(10)] == [
            "first.one",
            "second.one",
            "key.unwrap",
            "key.unwrap",
            "key.unwrap",
        ]


def test_append_many_is_all_or_nothing(log):
    fill(log, 3)
    bad = [*events(2), {"action": "x.y", "principal": "p", "resource": "r", "meta": {"k": [1]}}]
    with pytest.raises(InputError):
        log.append_many(bad)
    for bad_record in (
        {"action": "x.y", "principal": "p", "resource": "r", "time": "2020-01-01T00:00:00.000Z"},
        {"action": "x.y", "principal": "p", "resource": "r", "meta": ["k", 1]},
        {"action": "x.y", "principal": "p"},
        ["x.y", "p", "r"],
    ):
        with pytest.raises(InputError):
            log.append_many([*events(2), bad_record])
    assert log.size() == 3
    assert verify_log(log).ok


def test_stored_rows_are_append_only(home, log):
    fill(log, 4)
    conn = sqlite3.connect(home.audit_db, isolation_level=None)
    for sql in (
        "UPDATE records SET body = x'00' WHERE idx = 1",
        "DELETE FROM records WHERE idx = 3",
        "UPDATE nodes SET hash = x'00'",
        "DELETE FROM nodes",
    ):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(sql)
    conn.close()
    assert verify_log(log).ok


def test_key_and_database_are_private_and_the_key_is_exportable(tmp_path):
    home = Home(tmp_path / "h")
    vkey = AuditLog.init(home)
    assert stat.S_IMODE(home.audit_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.audit_db.stat().st_mode) == 0o600
    verifier = AuditVerifier.parse_vkey(vkey)
    with AuditLog.open(home) as log:
        assert log.verifier.vkey() == vkey == verifier.vkey()
        assert "PRIVATE" not in repr(log) and "PRIVATE" not in vkey


def test_open_creates_key_and_db_lazily_and_refuses_a_swapped_key(tmp_path):
    home = Home(tmp_path / "h")
    with AuditLog.open(home) as log:
        log.record("a.b", principal="p", resource="r")
    assert home.audit_key.exists() and home.audit_db.exists()
    home.audit_key.unlink()  # a new key would sign checkpoints of a log it never saw
    with pytest.raises(ConfigError, match="does not belong"):
        AuditLog.open(home)


def test_world_readable_audit_key_is_refused(home):
    AuditLog.init(home)
    home.audit_key.chmod(0o644)
    with pytest.raises(ConfigError):
        AuditLog.open(home)


def test_reads_outside_the_tree_are_typed_errors(log):
    fill(log, 3)
    for call in (
        lambda: log.get(3),
        lambda: log.prove(3),
        lambda: log.prove(0, 4),
        lambda: log.consistency(4),
        lambda: log.consistency(2, 1),
        lambda: log.root(9),
    ):
        with pytest.raises(NotFoundError):
            call()


def test_closed_and_read_only_logs_refuse_writes(home):
    log = AuditLog.open(home)
    fill(log, 2)
    log.close()
    with pytest.raises(ConfigError):
        log.record("a.b", principal="p", resource="r")
    with pytest.raises(ConfigError):
        log.size()
    with AuditLog.open_readonly(home.audit_db) as ro:
        assert ro.size() == 2
        with pytest.raises(ConfigError):
            ro.record("a.b", principal="p", resource="r")
        with pytest.raises(ConfigError):
            ro.checkpoint()
    with pytest.raises(NotFoundError):
        AuditLog.open_readonly(home.root / "missing.db")


def test_read_audit_is_enforced_and_denials_are_recorded(home):
    with AuditLog.open(home) as writer:
        fill(writer, 3)
    with AuditLog.open(home, authorizer=AllowList(), principal="mallory") as log:
        for call in (
            log.size,
            lambda: log.get(0),
            lambda: log.tail(1),
            lambda: log.prove(0),
            log.checkpoints,
        ):
            with pytest.raises(AccessDenied):
                call()
        with pytest.raises(AccessDenied):
            verify_log(log)
        log.record("a.b", principal="p", resource="r")  # writing needs no read grant
    grants = AllowList([("auditor", READ_AUDIT, ("Audit", "log"))])
    with AuditLog.open(home, authorizer=grants, principal="auditor") as log:
        denied = [r for r in log.tail(20) if r.action == "audit.read"]
        assert len(denied) == 6 and all(r.outcome == DENIED and r.principal == "mallory" for r in denied)
        assert verify_log(log).ok


class _FlakyConnection:
    """Wraps the log's connection; fails BEGIN IMMEDIATE while ``failing`` (a locked or lost disk)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.failing = True

    def execute(self, sql: str, *args):
        if self.failing and sql == "BEGIN IMMEDIATE":
            raise sqlite3.OperationalError("database is locked")
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str):
        return getattr(self.conn, name)


def test_a_failed_flush_is_a_typed_error_and_loses_nothing(home):
    with AuditLog.open(home, flush_every=3, flush_ms=60_000) as log:
        flaky = _FlakyConnection(log._conn)
        log._conn = flaky
        log.record("a.b", principal="p", resource="r", n=0)
        log.record("a.b", principal="p", resource="r", n=1)
        with pytest.raises(AuditUnavailable, match="unavailable"):
            log.record("a.b", principal="p", resource="r", n=2)  # the third triggers the flush
        flaky.failing = False
        log.flush()
        assert [r.meta["n"] for r in log.tail(5)] == [0, 1, 2]
        log._conn = flaky.conn
        assert verify_log(log).ok


def test_a_failed_timer_flush_is_retried_and_reported_on_the_next_call(home):
    with AuditLog.open(home, flush_every=1000, flush_ms=5) as log:
        flaky = _FlakyConnection(log._conn)
        log._conn = flaky
        log.record("a.b", principal="p", resource="r", n=0)
        wait_until(lambda: log._pending is not None, interval=0.005, what="timer flush ran and failed")
        with pytest.raises(AuditUnavailable):
            log.record("a.b", principal="p", resource="r", n=1)  # refused: the audit trail is failing
        flaky.failing = False
        log.record("a.b", principal="p", resource="r", n=2)
        log._conn = flaky.conn
        assert [r.meta["n"] for r in log.tail(5)] == [0, 2]


def test_a_corrupt_database_file_is_a_typed_error(home):
    AuditLog.init(home)
    for suffix in ("-wal", "-shm"):
        home.audit_db.with_name(home.audit_db.name + suffix).unlink(missing_ok=True)
    home.audit_db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(AuditUnavailable):
        AuditLog.open(home)


def test_importing_the_seam_stays_cheap():
    code = (
        "import sys, eventward._internal.audit.base; "
        "assert not {'eventward._internal.audit.log', 'cryptography'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_checkpoints_are_synced_to_disk_and_batches_are_not(log):
    fill(log, 3)
    seen: list[str] = []
    log._conn.set_trace_callback(seen.append)
    log.record("a.b", principal="p", resource="r")
    log.flush()
    batch = list(seen)
    log.checkpoint()
    log._conn.set_trace_callback(None)
    assert not any("synchronous" in s for s in batch)
    cp = seen[len(batch) :]
    full, commit, normal = (cp.index(s) for s in ("PRAGMA synchronous = FULL", "COMMIT", "PRAGMA synchronous = NORMAL"))
    assert full < commit < normal
    assert log._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
