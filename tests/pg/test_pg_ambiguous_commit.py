"""A timeout during COMMIT is ambiguous: the client gave up (typed error), but the COMMIT is in the
frozen server's socket buffer and lands once the server resumes. A retry must then give ONE
result: the DEK get-or-create returns the key that landed (and audits its creation once), the
audit log's buffered records are not appended twice, and a retried forget finishes the erasure
that landed (its receipt and certificate) instead of recording a second, empty one.

The server is this test's own (frozen and thawed by PID), frozen from inside the transaction right
before its COMMIT is sent, with a short ``statement_timeout_s``."""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from eventward._internal.audit.pg_log import PgAuditLog
from eventward._internal.cli import app
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward._internal.keys.pg_store import PgKeyStore
from eventward.errors import AuditUnavailable, KeyStoreUnavailable
from pg.conftest import PgServer
from pg.test_pg_hung import POLICY, _server_pids, _signal, own_pg  # noqa: F401
from support_wait import wait_until

STATEMENT_S, CONNECT_S = 1.0, 1.0


@pytest.fixture
def world(tmp_path, own_pg, monkeypatch) -> Iterator[tuple[Deployment, PgServer, str]]:  # noqa: F811
    dsn = own_pg.create_database()
    monkeypatch.setenv("EW_TEST_DSN", dsn)
    home = Home(tmp_path / "home").ensure()
    home.config.write_text("store: {backend: postgres, dsn_env: EW_TEST_DSN, "
                           f"connect_timeout_s: {CONNECT_S:g}, statement_timeout_s: {STATEMENT_S:g}}}\n")
    with Deployment.init(home, admin="admin", policy_yaml=POLICY) as dep:
        yield dep, own_pg, dsn


@contextlib.contextmanager
def frozen_at_commit(owner: type, name: str, server: PgServer) -> Iterator[None]:
    """Patch ``owner.name`` (the last statement of a write transaction) to freeze the server right
    after it ran, once: the COMMIT that follows times out on the client. On leaving: unpatched
    and the server thawed."""
    frozen: list[int] = []
    real = getattr(owner, name)

    def last_statement_then_freeze(*args: Any, **kw: Any) -> Any:
        out = real(*args, **kw)
        if not frozen:
            frozen.extend(_server_pids(server))
            _signal(frozen, signal.SIGSTOP)
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(owner, name, last_statement_then_freeze)
        try:
            yield
        finally:
            _signal(frozen, signal.SIGCONT)
    assert frozen, "the server was frozen before the COMMIT"


def _answering(dsn: str) -> None:
    def answers() -> bool:
        try:
            with psycopg.connect(dsn, connect_timeout=2) as c:
                return c.execute("SELECT 1").fetchone() == (1,)
        except psycopg.OperationalError:
            return False

    assert wait_until(answers, timeout=15, what="database back")


def _rows(dsn: str, sql: str, args: tuple = ()) -> list[tuple]:
    with psycopg.connect(dsn) as c:
        return c.execute(sql, args).fetchall()


def _retry(call: Callable[[], Any], error: type[Exception] | tuple[type[Exception], ...]) -> Any:
    """What a caller does after the typed error: call again until the store answers."""
    out: list[Any] = []

    def attempt() -> bool:
        try:
            out.append(call())
            return True
        except error:
            return False

    assert wait_until(attempt, timeout=15, what="retry answered")
    return out[0]


def test_attack_dek_create_timed_out_at_commit_retry_returns_the_landed_key(world):
    dep, server, dsn = world
    h = dep.keys.subject_hash("bob")  # the pseudonym first: the next transaction is the DEK's
    with frozen_at_commit(PgKeyStore, "insert_dek", server), pytest.raises(KeyStoreUnavailable):
        dep.keys.encryption_key("bob", "pii", principal="admin")
    _answering(dsn)
    landed = _rows(dsn, "SELECT kid FROM eventward.deks WHERE subject_hash = %s AND class = 'pii'", (h,))
    assert len(landed) == 1, "the COMMIT the client gave up on landed after the server resumed"
    kid, dek = _retry(lambda: dep.keys.encryption_key("bob", "pii", principal="admin"), KeyStoreUnavailable)
    assert kid == landed[0][0]  # the same key, not a second version
    assert _rows(dsn, "SELECT count(*) FROM eventward.deks WHERE subject_hash = %s", (h,)) == [(1,)]
    assert dep.keys.encryption_key("bob", "pii", principal="admin") == (kid, dek)
    dep.audit.flush()
    created = [r for r in dep.audit.tail(50) if r.action == "key.create" and r.meta.get("kid") == kid]
    assert len(created) == 1  # its creation is audited once, when the retry settled it


def test_attack_audit_append_timed_out_at_commit_is_not_appended_twice(world):
    dep, server, dsn = world
    dep.audit.flush()
    size = dep.audit.size()
    with frozen_at_commit(PgAuditLog, "_append_in_txn", server):
        for i in range(3):
            dep.audit.record("test.doubt", principal="admin", resource=f"Thing::{i}")
        with pytest.raises(AuditUnavailable):
            dep.audit.flush()
    _answering(dsn)
    assert _rows(dsn, "SELECT count(*) FROM eventward_audit.records WHERE idx >= %s", (size,)) == [(3,)]
    _retry(dep.audit.flush, AuditUnavailable)  # the buffer is flushed again: the landed records are settled
    dep.audit.record("test.after", principal="admin", resource="Thing::9")
    dep.audit.flush()
    assert dep.audit.size() == size + 4
    assert [r.action for r in dep.audit.since(size)] == ["test.doubt"] * 3 + ["test.after"]
    r = CliRunner().invoke(app, ["--home", str(dep.home.root), "audit", "verify", "--no-state", "--json", "--as",
                                 "admin"])
    assert r.exit_code == 0 and json.loads(r.output)["ok"] is True, r.output


def test_attack_forget_timed_out_at_commit_retry_finishes_the_landed_erasure(world):
    dep, server, dsn = world
    kid, _ = dep.keys.encryption_key("carol", "pii", principal="admin")
    h = dep.keys.known_subject("carol")
    # _bump is erase_subject's last statement
    # (the audit record of the failure may meet the frozen server too: then that error is the answer)
    with frozen_at_commit(PgKeyStore, "_bump", server), pytest.raises((KeyStoreUnavailable, AuditUnavailable)):
        dep.forget("carol", principal="admin", reason="gdpr-art17")
    _answering(dsn)
    assert _rows(dsn, "SELECT destroyed FROM eventward.erasures WHERE subject_hash = %s", (h,)) == [(1,)]
    done = _retry(lambda: dep.forget("carol", principal="admin", reason="gdpr-art17"),
                  (KeyStoreUnavailable, AuditUnavailable))
    assert done.receipt.subject_hash == h and done.receipt.destroyed == 1 and not done.receipt.nothing_to_erase
    assert _rows(dsn, "SELECT destroyed FROM eventward.erasures WHERE subject_hash = %s", (h,)) == [(1,)]
    assert _rows(dsn, "SELECT count(*) FROM eventward.deks WHERE kid = %s", (kid,)) == [(0,)]


def test_attack_forget_timed_out_at_commit_is_certified_though_retried_elsewhere(world):
    """The client-mode CLI fails over to the next replica on a 503: that replica finds the subject
    already gone ("nothing to erase"), so the erasure that landed had no ledger entry, audit record
    or erasure certificate anywhere. The replica that ran it now settles it by itself."""
    dep, server, dsn = world
    dep.keys.encryption_key("dave", "pii", principal="admin")
    h = dep.keys.known_subject("dave")
    with frozen_at_commit(PgKeyStore, "_bump", server), pytest.raises((KeyStoreUnavailable, AuditUnavailable)):
        dep.forget("dave", principal="admin", reason="gdpr-art17")
    _answering(dsn)
    with Deployment.open(dep.home) as other:  # the retry, through another replica
        elsewhere = _retry(lambda: other.forget("dave", principal="admin", reason="gdpr-art17"),
                           (KeyStoreUnavailable, AuditUnavailable))
    assert elsewhere.receipt.nothing_to_erase
    settled = _retry(dep.settle_in_doubt, (KeyStoreUnavailable, AuditUnavailable))
    assert [(f.receipt.subject_hash, f.receipt.destroyed) for f in settled] == [(h, 1)]
    record = dep.audit.get(settled[0].certificate.index)
    assert (record.action, record.resource) == ("erasure.certificate", f"Subject::{h}")
    assert dep.settle_in_doubt() == []  # settled once
    assert _rows(dsn, "SELECT destroyed FROM eventward.erasures WHERE subject_hash = %s", (h,)) == [(1,)]
