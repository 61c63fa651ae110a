"""PostgreSQL hung (frozen by SIGSTOP, as a partition or a stalled host looks to its clients):
a connection stays open but nothing answers, so without a client-side bound every write would
block forever. Every key and audit write must fail closed with a typed error within the bound,
nothing half-written, and the same open store answers again once the server thaws.

The database is a server of this test's own (the session's is shared by other tests), frozen and
thawed by PID: the postmaster and its backends."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from eventward._internal.config import Config
from eventward._internal.deployment import BOOTSTRAP_POLICY, Deployment
from eventward._internal.home import Home
from eventward.errors import AuditUnavailable, ConfigError, KeyStoreUnavailable
from pg.conftest import PgServer, start_server
from support_wait import wait_until

POLICY = BOOTSTRAP_POLICY.format(admin="admin") + '    - {allow: [encrypt, decrypt], class: "*"}\n'
STATEMENT_S, CONNECT_S = 1.0, 1.0
BOUND_S = 2 * (STATEMENT_S + CONNECT_S)  # one call: a checkout (connect bound) plus its waits (statement bound)


@pytest.fixture
def own_pg() -> Iterator[PgServer]:
    server = start_server()
    try:
        yield server
    finally:
        server.stop()


def _server_pids(server: PgServer) -> list[int]:
    """The postmaster first (so it forks nothing new), then every backend and worker under it."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == server.pid:
            kids.append(int(stat.parent.name))
    return [server.pid, *kids]


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _timed(call: Callable[[], object], error: type[Exception]) -> float:
    start = time.monotonic()
    with pytest.raises(error):
        call()
    return time.monotonic() - start


def _answers(call: Callable[[], object]) -> object:
    try:
        return call()
    except KeyStoreUnavailable:
        return None


def test_attack_hung_database_fails_closed_within_the_timeout(tmp_path, own_pg, monkeypatch):
    dsn = own_pg.create_database()
    monkeypatch.setenv("EW_TEST_DSN", dsn)
    home = Home(tmp_path / "home").ensure()
    home.config.write_text("store: {backend: postgres, dsn_env: EW_TEST_DSN, "
                           f"connect_timeout_s: {CONNECT_S:g}, statement_timeout_s: {STATEMENT_S:g}}}\n")
    with Deployment.init(home, admin="admin", policy_yaml=POLICY) as dep:
        kid, dek = dep.keys.encryption_key("ann", "pii", principal="admin")
        dep.audit.flush()
        size = dep.audit.size()
        pids = _server_pids(own_pg)
        _signal(pids, signal.SIGSTOP)
        try:
            took = _timed(lambda: dep.keys.encryption_key("bob", "pii", principal="admin"), KeyStoreUnavailable)
            assert took < BOUND_S, f"key-store write hung {took:.1f}s"
            took = _timed(lambda: dep.keys.store.get_dek(kid), KeyStoreUnavailable)
            assert took < BOUND_S, f"key-store read hung {took:.1f}s"
            took = _timed(lambda: dep.audit.append_many(
                [{"action": "test.hung", "principal": "admin", "resource": "Thing::1"}]), AuditUnavailable)
            assert took < BOUND_S, f"audit append hung {took:.1f}s"
        finally:
            _signal(pids, signal.SIGCONT)
        # thawed: the same open deployment answers again (the pool replaced the connections it closed)
        assert wait_until(lambda: _answers(lambda: dep.keys.store.get_dek(kid)), timeout=15, what="key store back")
        assert dep.audit.size() == size  # the append that timed out left nothing behind
        dep.keys.cache.clear()
        assert dep.keys.decryption_key(kid, "pii", principal="admin") == dek
        assert dep.keys.encryption_key("bob", "pii", principal="admin")[0] != kid
        idx = dep.audit.append_many([{"action": "test.up", "principal": "admin", "resource": "Thing::1"}])
        assert idx.start >= size  # nothing committed was lost or overwritten
        assert dep.audit.get(size - 1).index == size - 1
        assert "test.hung" not in {dep.audit.get(i).action for i in range(size, idx.stop)}


@pytest.mark.parametrize("bad", ["0", "-1", "4000", ".nan"])
def test_statement_timeout_is_validated(tmp_path, bad):
    path = tmp_path / "eventward.yaml"
    path.write_text(f"store: {{backend: postgres, dsn_env: X, statement_timeout_s: {bad}}}\n")
    with pytest.raises(ConfigError, match="statement_timeout_s"):
        Config.load(path)


def test_attack_hung_database_ends_leadership_within_the_timeout(own_pg):
    """The reconciler's leader checks its lock before each pass: on a frozen database that check
    must answer "not leading" within the bound, not block the reconciler thread forever."""
    from eventward._internal.store.leader import AdvisoryLeader

    leader = AdvisoryLeader(own_pg.create_database(), 0x6577, connect_timeout=CONNECT_S, statement_timeout=STATEMENT_S)
    try:
        assert leader.lead()
        pids = _server_pids(own_pg)
        _signal(pids, signal.SIGSTOP)
        try:
            start = time.monotonic()
            assert not leader.lead()
            assert time.monotonic() - start < BOUND_S
        finally:
            _signal(pids, signal.SIGCONT)
        assert wait_until(leader.lead, timeout=15, what="leadership back")  # the old session ended with its socket
    finally:
        leader.release()
