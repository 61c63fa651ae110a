"""Encrypt keys per batch on PostgreSQL: one pseudonym query, one current-key query and one
multi-row INSERT per request, and two replicas batching the same new subjects converge."""

from __future__ import annotations

import pytest

from eventward._internal.audit.base import MemoryAudit
from eventward._internal.audit.log import AuditLog
from eventward._internal.home import Home
from eventward._internal.keys.service import KeyService
from keys.conftest import make_authz
from pg.conftest import race


@pytest.fixture
def pg_home(tmp_path, pg_dsn, monkeypatch) -> Home:
    home = Home(tmp_path / "home").ensure()
    AuditLog.open(home).close()  # the deployment id (the audit key's name)
    home.config.write_text("store: {backend: postgres, dsn_env: EW_TEST_DSN, pool_max: 4}\n")
    monkeypatch.setenv("EW_TEST_DSN", pg_dsn)
    KeyService.init(home, authorizer=make_authz()).close()  # migrates and binds the database
    return home


def test_race_two_replicas_batch_the_same_new_subjects_one_key_each(pg_home):
    replicas = [KeyService.open(pg_home, authorizer=make_authz(), audit=MemoryAudit()) for _ in range(2)]
    try:
        for round_ in range(2):
            wanted = [(f"b{round_}-{i}", c, 1) for i in range(80) for c in ("pii", "payment")]
            got = race(lambda w=wanted: replicas[0].encryption_keys(w, principal="writer"),
                       lambda w=wanted: replicas[1].encryption_keys(w[::-1], principal="writer")[::-1])
            assert got[0] is not None and got[0] == got[1]
            assert len({kid for kid, _, _ in got[0]}) == len(wanted)
        one = race(lambda: replicas[0].encryption_key("solo", "pii", principal="writer"),
                   lambda: replicas[1].encryption_keys([("solo", "pii", 1)], principal="writer")[0][:2])
        assert one[0] == one[1]
    finally:
        for r in replicas:
            r.close()


def test_batch_on_postgres_is_one_query_per_kind_and_one_insert(pg_home):
    svc = KeyService.open(pg_home, authorizer=make_authz(), audit=(audit := MemoryAudit()))
    cold = KeyService.open(pg_home, authorizer=make_authz(), audit=MemoryAudit())
    try:
        calls: dict[str, int] = {}
        for name in ("current_deks", "insert_deks", "insert_dek", "current_dek", "pseudonym", "add_pseudonym"):
            real = getattr(svc.store, name)

            def counted(*a, _real=real, _name=name, **kw):
                calls[_name] = calls.get(_name, 0) + 1
                return _real(*a, **kw)

            setattr(svc.store, name, counted)
        wanted = [(f"c{i}", "pii", 1) for i in range(600)]  # over one 500-row INSERT chunk
        got = svc.encryption_keys(wanted, principal="writer")
        assert calls == {"current_deks": 1, "insert_deks": 1}
        assert [(r.resource, r.meta["count"]) for r in audit.events if r.action == "key.create"] == [("class:pii", 600)]
        assert cold.encryption_keys(wanted, principal="writer") == got  # read back from PostgreSQL
        assert [cold.store.current_dek(h, "pii").kid for _, _, h in got] == [kid for kid, _, _ in got]
    finally:
        svc.close()
        cold.close()
