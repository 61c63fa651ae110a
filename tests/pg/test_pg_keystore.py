"""The key store on PostgreSQL beyond the shared contract: forget is one transaction, the wrapped
bytes leave the table's file, a vanished database fails closed, and the key service on two
replicas (two pools on one database) converges on one key and one erasure."""

from __future__ import annotations

import os

import psycopg
import pytest

from eventward._internal.audit.base import MemoryAudit
from eventward._internal.audit.log import AuditLog
from eventward._internal.home import Home
from eventward._internal.keys.pg_store import PgKeyStore
from eventward._internal.keys.service import KeyService
from eventward._internal.keys.store_base import DekRecord
from eventward._internal.store.pg import Database
from eventward.errors import ConflictError, KeyStoreUnavailable
from keys.conftest import make_authz
from pg.conftest import race


@pytest.fixture
def pg_dsn(pg_migrated_dsn: str) -> str:
    """Databases here start migrated (pg.conftest.pg_migrated_dsn): these tests are about the key store,
    not about migrating (~0.3 s of DDL per test saved)."""
    return pg_migrated_dsn


DEP = "pg-keystore-tests"


def _store(dsn: str, timeout: float = 5.0) -> PgKeyStore:
    Database(dsn).migrate(DEP)
    return PgKeyStore(Database.open(dsn, deployment_id=DEP, pool_max=4, connect_timeout=timeout), owns_db=True)


def _subject(i: int) -> str:
    return f"{i:032x}"


def _fill(store: PgKeyStore, n: int) -> dict[str, bytes]:
    wrapped = {}
    for i in range(n):
        w = os.urandom(60)
        store.insert_dek(DekRecord(f"kid{i:019d}", _subject(i), "pii", 1, "pii.v1", w, 1.0))
        wrapped[_subject(i)] = w
    return wrapped


def test_attack_forget_is_one_transaction_a_failed_ledger_write_deletes_nothing(pg_dsn):
    store = _store(pg_dsn)
    try:
        _fill(store, 3)
        store.add_pseudonym("lookup", _subject(1), 1.0)
        with psycopg.connect(pg_dsn, autocommit=True) as c:  # the ledger insert fails after the DELETE ran
            c.execute("CREATE FUNCTION eventward.boom() RETURNS trigger LANGUAGE plpgsql AS "
                      "$$ BEGIN RAISE EXCEPTION 'ledger write refused'; END $$")
            c.execute("CREATE TRIGGER boom BEFORE INSERT ON eventward.erasures FOR EACH ROW "
                      "EXECUTE FUNCTION eventward.boom()")
        e0 = store.epoch()
        with pytest.raises(KeyStoreUnavailable, match="erase subject failed"):
            store.erase_subject(_subject(1), 9.0)
        assert store.current_dek(_subject(1), "pii") is not None  # keys, pseudonym, epoch all intact
        assert store.pseudonym_live(_subject(1)) and store.epoch() == e0
        assert store.tombstone("kid0000000000000000001") is None and store.erasures() == []
        with psycopg.connect(pg_dsn, autocommit=True) as c:
            c.execute("DROP TRIGGER boom ON eventward.erasures")
        assert store.erase_subject(_subject(1), 10.0).destroyed == 1
        assert store.current_dek(_subject(1), "pii") is None and not store.pseudonym_live(_subject(1))
    finally:
        store.close()


def _on_disk(pg_server, dsn: str, table: str) -> bytes:
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        c.execute("CHECKPOINT")  # dirty pages reach the relation file
    return b"".join(f.read_bytes() for f in pg_server.relation_files(dsn, table))


def test_plain_vacuum_leaves_deleted_bytes_in_page_free_space(pg_server, pg_dsn):
    """Why purge uses VACUUM (FULL): plain VACUUM compacts pages but does not zero the space it
    frees, so the last tuple of a page keeps its bytes on disk (PostgreSQL 18)."""
    store = _store(pg_dsn)
    try:
        wrapped = _fill(store, 400)  # ~25 rows in each of the 16 partitions: the victim's page keeps others
        last = _subject(399)
        with psycopg.connect(pg_dsn, autocommit=True) as c:
            c.execute("DELETE FROM eventward.deks WHERE subject_hash = %s", (last,))
            c.execute("VACUUM eventward.deks")
            assert c.execute("SELECT count(*) FROM eventward.deks WHERE subject_hash = %s", (last,)).fetchone()[0] == 0
        assert wrapped[last] in _on_disk(pg_server, pg_dsn, "eventward.deks")
    finally:
        store.close()


def test_attack_wrapped_dek_bytes_are_gone_from_the_table_file_after_forget_and_purge(pg_server, pg_dsn):
    store = _store(pg_dsn)
    try:
        wrapped = _fill(store, 40)
        victims = [_subject(i) for i in (0, 17, 39)]  # first, middle and last tuple of the page
        for i, v in enumerate(victims):
            store.add_pseudonym(f"lookup-of-victim-{i}", v, 1.0)
        before = _on_disk(pg_server, pg_dsn, "eventward.deks")
        assert all(wrapped[v] in before for v in victims)
        for v in victims:
            assert store.erase_subject(v, 5.0).destroyed == 1
        assert store.purge()
        after = _on_disk(pg_server, pg_dsn, "eventward.deks")
        assert not any(wrapped[v] in after for v in victims)
        assert sum(w in after for w in wrapped.values()) == len(wrapped) - len(victims)  # the rest is there
        links = _on_disk(pg_server, pg_dsn, "eventward.pseudonyms")
        assert b"lookup-of-victim" not in links
    finally:
        store.close()


def _filenodes(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as c:
        rows = c.execute("SELECT inhrelid::regclass::text, pg_relation_filenode(inhrelid) FROM pg_inherits "
                         "WHERE inhparent IN ('eventward.deks'::regclass, 'eventward.pseudonyms'::regclass)")
        return dict(rows.fetchall())


def test_purge_rewrites_only_the_partitions_that_held_the_subject(pg_dsn):
    store = _store(pg_dsn)
    try:
        _fill(store, 64)
        store.add_pseudonym("lookup", _subject(7), 1.0)
        before = _filenodes(pg_dsn)
        store.erase_subject(_subject(7), 2.0)
        assert store.purge()
        after = _filenodes(pg_dsn)
        rewritten = sorted(t for t in before if before[t] != after[t])
        assert len(rewritten) == 2  # of 32: the subject's DEK partition and its pseudonym's
        assert {t.split("_p")[0] for t in rewritten} == {"eventward.deks", "eventward.pseudonyms"}
        assert store.purge() and _filenodes(pg_dsn) == after  # nothing left to rewrite
    finally:
        store.close()


def test_purge_gives_up_politely_when_another_session_holds_the_table(pg_dsn):
    store = _store(pg_dsn)
    try:
        _fill(store, 4)
        store.erase_subject(_subject(1), 2.0)
        with psycopg.connect(pg_dsn) as other:
            other.execute("LOCK TABLE eventward.deks IN ACCESS SHARE MODE")  # a long reader
            assert store.purge(lock_timeout_s=0.2) is False
        before = _filenodes(pg_dsn)
        assert store.purge() is True  # the partition stayed marked: rewritten now
        assert sum(before[t] != n for t, n in _filenodes(pg_dsn).items()) == 1
    finally:
        store.close()


def test_attack_database_dropped_under_a_running_store_fails_closed(pg_server):
    dsn = pg_server.create_database()
    store = _store(dsn, timeout=0.5)
    try:
        _fill(store, 1)
        assert store.intact()
        pg_server.drop_database(dsn)
        with pytest.raises(KeyStoreUnavailable) as e:
            store.get_dek("kid0000000000000000000")
        assert "does not exist" in str(e.value) or "no connection" in str(e.value)
        with pytest.raises(KeyStoreUnavailable):
            store.erase_subject(_subject(0), 1.0)
        assert not store.intact()
    finally:
        store.close()


# --- the key service on two replicas ------------------------------------------------------------
@pytest.fixture
def pg_home(tmp_path, pg_dsn, monkeypatch) -> Home:
    home = Home(tmp_path / "home").ensure()
    AuditLog.open(home).close()  # the deployment id (the audit key's name)
    home.config.write_text("store: {backend: postgres, dsn_env: EW_TEST_DSN, pool_max: 4}\n")
    monkeypatch.setenv("EW_TEST_DSN", pg_dsn)
    KeyService.init(home, authorizer=make_authz()).close()  # migrates and binds the database
    return home


def test_key_service_keeps_its_keys_in_postgres_not_in_the_home(pg_home, pg_dsn):
    svc = KeyService.open(pg_home, authorizer=make_authz(), audit=MemoryAudit())
    try:
        assert isinstance(svc.store, PgKeyStore)
        kid, dek = svc.encryption_key("jane", "pii", principal="writer")
        assert svc.decryption_key(kid, "pii", principal="admin") == dek
    finally:
        svc.close()
    assert not pg_home.keys_db.exists()
    with psycopg.connect(pg_dsn) as c:
        assert c.execute("SELECT count(*) FROM eventward.deks WHERE kid = %s", (kid,)).fetchone()[0] == 1



def test_attack_reinit_after_losing_the_keyring_is_refused_keys_kept(pg_home, pg_dsn):
    """A lost keyring must be restored: a new one next to the old store would make every stored
    key unreadable (and the store of this deployment is not a new home's)."""
    svc = KeyService.open(pg_home, authorizer=make_authz(), audit=MemoryAudit())
    kid, _ = svc.encryption_key("jane", "pii", principal="writer")
    svc.close()
    pg_home.keyring.unlink()
    pg_home.master_key.unlink()
    with pytest.raises(ConflictError, match="already holds this deployment's keys"):
        KeyService.init(pg_home, authorizer=make_authz())
    with psycopg.connect(pg_dsn) as c:
        assert c.execute("SELECT count(*) FROM eventward.deks WHERE kid = %s", (kid,)).fetchone()[0] == 1


def test_race_two_replicas_first_use_of_a_subject_gives_one_key(pg_home):
    replicas = [KeyService.open(pg_home, authorizer=make_authz(), audit=MemoryAudit()) for _ in range(2)]
    try:
        for subject in ("s1", "s2", "s3"):
            got = race(*(lambda r=r, s=subject: r.encryption_key(s, "pii", principal="writer") for r in replicas))
            assert got[0] == got[1] and got[0] is not None  # same kid, same DEK
    finally:
        for r in replicas:
            r.close()


def test_race_two_replicas_forget_one_subject_one_winner(pg_home):
    replicas = [KeyService.open(pg_home, authorizer=make_authz(), audit=MemoryAudit()) for _ in range(2)]
    try:
        kid, _ = replicas[0].encryption_key("jane", "pii", principal="writer")
        replicas[0].encryption_key("jane", "payment", principal="writer")
        receipts = race(*(lambda r=r: r.forget("jane", principal="admin", reason="gdpr-art17") for r in replicas))
        assert len(receipts) == 2
        assert sorted(r.destroyed for r in receipts) == [0, 2]  # one winner; the other: nothing left
        loser = next(r for r in receipts if not r.destroyed)
        assert loser.nothing_to_erase or loser.classes == ()
        assert replicas[1].store.get_dek(kid) is None and replicas[1].store.tombstone(kid) is not None
    finally:
        for r in replicas:
            r.close()


def test_batched_unwrap_on_postgres_reads_the_batch_in_one_query(pg_home):
    from eventward.errors import KeyDestroyed, KeyNotFound

    svc = KeyService.open(pg_home, authorizer=make_authz(), audit=MemoryAudit())
    try:
        ann, ann_dek = svc.encryption_key("ann", "pii", principal="writer")
        bob, _ = svc.encryption_key("bob", "pii", principal="writer")
        svc.forget("bob", principal="admin", reason="gdpr-art17")
        svc.cache.clear()
        queries = []
        real = svc.store.wrapped_deks

        def counted(kids):
            kids = list(kids)
            queries.append(kids)
            return real(kids)

        svc.store.wrapped_deks = counted
        got = svc.decryption_keys([(ann, "pii", None), (bob, "pii", None), ("x" * 22, "pii", None)],
                                  principal="admin")
        assert got[(ann, "pii")] == ann_dek
        assert isinstance(got[(bob, "pii")], KeyDestroyed) and isinstance(got[("x" * 22, "pii")], KeyNotFound)
        assert len(queries) == 1 and sorted(queries[0]) == sorted([ann, bob, "x" * 22])
    finally:
        svc.close()
