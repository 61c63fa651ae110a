"""PostgreSQL going away under a running deployment: every key and audit write fails closed with a
typed error, nothing committed is lost, and it recovers by itself once the database is back."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from eventward._internal.deployment import BOOTSTRAP_POLICY, Deployment
from eventward._internal.home import Home
from eventward.errors import AuditUnavailable, KeyStoreUnavailable
from support_wait import wait_until

POLICY = BOOTSTRAP_POLICY.format(admin="admin") + '    - {allow: [encrypt, decrypt], class: "*"}\n'


def _set_reachable(pg_server, dsn: str, reachable: bool) -> None:
    """Refuse (or allow again) new connections to the database and drop the open ones: to its
    clients this is the database being down."""
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with pg_server.admin() as a:
        a.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"true" if reachable else "false"}')
        if not reachable:
            a.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))


def _answers(call: Callable[[], object]) -> object:
    try:
        return call()
    except KeyStoreUnavailable:
        return None


def test_database_down_fails_closed_and_recovers_by_itself(tmp_path, pg_server, pg_dsn, monkeypatch):
    monkeypatch.setenv("EW_TEST_DSN", pg_dsn)
    home = Home(tmp_path / "home").ensure()
    home.config.write_text("store: {backend: postgres, dsn_env: EW_TEST_DSN, connect_timeout_s: 1}\n")
    with Deployment.init(home, admin="admin", policy_yaml=POLICY) as dep:
        kid, dek = dep.keys.encryption_key("ann", "pii", principal="admin")
        dep.audit.flush()
        size = dep.audit.size()
        _set_reachable(pg_server, pg_dsn, False)
        try:
            with pytest.raises(KeyStoreUnavailable):
                dep.keys.encryption_key("bob", "pii", principal="admin")  # a new key: never plaintext
            with pytest.raises(KeyStoreUnavailable):
                dep.keys.store.get_dek(kid)
            with pytest.raises(AuditUnavailable):
                dep.audit.append_many([{"action": "test.down", "principal": "admin", "resource": "Thing::1"}])
        finally:
            _set_reachable(pg_server, pg_dsn, True)
        # back: no restart, no reopen (the pool reconnects with its backoff, so poll with a deadline)
        assert wait_until(lambda: _answers(lambda: dep.keys.store.get_dek(kid)), timeout=20, what="key store back")
        dep.keys.cache.clear()
        assert dep.keys.decryption_key(kid, "pii", principal="admin") == dek
        assert dep.keys.encryption_key("bob", "pii", principal="admin")[0] != kid
        idx = dep.audit.append_many([{"action": "test.up", "principal": "admin", "resource": "Thing::1"}])
        assert idx.start >= size  # nothing committed was lost or overwritten
        assert dep.audit.get(size - 1).index == size - 1
