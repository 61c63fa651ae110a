"""Attacks on the key service: key releases without a grant, a missing key store read as
"every event forged", a database writer promoting an old DEK, and the nonce budget."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from eventward._internal import demo
from eventward._internal.audit.base import MemoryAudit
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward._internal.keys.service import KeyService, KeyServiceConfig
from eventward.errors import (
    AccessDenied,
    KeyIntegrityError,
    KeyStoreUnavailable,
    KMSUnavailable,
)

from .conftest import make_authz


def _noop(name: str, data: object) -> None:
    return None


@pytest.fixture
def demo_dep(tmp_path: Path):
    """A deployment with the shipped example policy, the OrderPlaced schema and 6 orders."""
    dep = Deployment.init(Home(tmp_path / "home"), admin=demo.ADMIN)
    result = demo.DemoResult()
    demo.setup(dep, _noop)
    demo.schemas(dep, result, _noop)
    demo.produce(dep, result, _noop)
    yield dep
    dep.close()


# --- item 3: Encrypt is authorized and audited ------------------------------------------------

def test_attack_encryption_key_without_grant(demo_dep):
    keys = demo_dep.keys
    ctx = {"topic": "orders", "event_type": "OrderPlaced"}
    # analytics-svc reads orders but may not encrypt: it gets neither a subject's DEK nor the class DEK
    for subject in ("customer-7", None):
        with pytest.raises(AccessDenied):
            keys.encryption_key(subject, "pii", principal="analytics-svc", **ctx)
    # orders-svc may encrypt pii only for OrderPlaced on orders (the example policy's grant)
    kid, _ = keys.encryption_key("customer-7", "pii", principal="orders-svc", **ctx)
    for other in ({"topic": "payments", "event_type": "OrderPlaced"}, {"topic": "orders", "event_type": "Refund"},
                  {}):
        with pytest.raises(AccessDenied):
            keys.encryption_key("customer-7", "pii", principal="orders-svc", **other)
    with pytest.raises(AccessDenied):
        keys.encryption_key("customer-7", "payment", principal="orders-svc", **ctx)
    keys.flush_audit()
    demo_dep.audit.flush()
    recs = [r for r in demo_dep.audit.tail(2000) if r.action == "key.encrypt"]
    denied = [r for r in recs if r.outcome == "denied"]
    assert {r.principal for r in denied} == {"analytics-svc", "orders-svc"} and len(denied) == 6
    assert kid  # the granted release above worked


def test_encrypt_releases_are_audited_as_batched_counts(tmp_path):
    audit = MemoryAudit()
    svc = KeyService.init(Home(tmp_path / "h"), authorizer=make_authz(), audit=audit)
    try:
        for i in range(250):
            svc.encryption_key(f"s{i % 5}", "pii", principal="writer", topic="orders", event_type="OrderPlaced")
        assert not [e for e in audit.events if e.action == "key.encrypt"]  # nothing per call
    finally:
        svc.close()  # flushes the counts
    (rec,) = [e for e in audit.events if e.action == "key.encrypt"]
    assert rec.meta["count"] == 250 and rec.meta["topic"] == "orders" and rec.principal == "writer"


def test_decrypt_can_be_limited_to_a_topic(tmp_path):
    policy = demo.example("policy.yaml").replace(
        "    - {allow: decrypt, class: pii}", "    - {allow: decrypt, class: pii, on_topics: [orders]}"
    )
    with Deployment.init(Home(tmp_path / "h"), admin=demo.ADMIN, policy_yaml=policy) as dep:
        kid, dek = dep.keys.encryption_key("c1", "pii", principal="orders-svc", topic="orders",
                                           event_type="OrderPlaced")
        assert dep.keys.decryption_key(kid, "pii", principal="shipping-svc", topic="orders") == dek
        assert dep.keys.decryption_key(kid, "pii", principal="shipping-svc", topic="orders.dlq") == dek
        for topic in ("payments", None):
            with pytest.raises(AccessDenied):
                dep.keys.decryption_key(kid, "pii", principal="shipping-svc", topic=topic)


# --- item 4: a missing key store or KMS never turns into silent loss ----------------------------

def test_attack_missing_keystore_silent_loss(demo_dep):
    home = demo_dep.home
    demo_dep.close()
    moved = home.root / "keys.db.away"
    os.replace(home.keys_db, moved)
    with pytest.raises(KeyStoreUnavailable, match="missing"):
        Deployment.open(home)
    assert not home.keys_db.exists()  # no fresh, empty store was made behind the operator's back
    os.replace(moved, home.keys_db)
    with Deployment.open(home) as dep:
        view = demo._collect(dep, demo.SHIPPING, "shipping")
        assert view.stats.delivered == 6 and view.stats.dead_lettered == 0
        assert all("@" in e.data["customer"]["email"] for e in view.events)


def test_attack_foreign_keystore_is_refused(demo_dep, tmp_path):
    home = demo_dep.home
    demo_dep.close()
    other = Home(tmp_path / "other")
    Deployment.init(other).close()
    shutil.copy(other.keys_db, home.keys_db)  # a store of another deployment put in its place
    with pytest.raises(KeyStoreUnavailable, match="does not belong"):
        Deployment.open(home)


def test_kms_unavailable_midconsume_stops_and_resumes(demo_dep, monkeypatch):
    dep = demo_dep
    consumer = dep.consumer(demo.SHIPPING, demo.TOPIC, group="ship", from_beginning=True)
    seen: list = []

    def outage(*args: object, **kw: object) -> bytes:
        raise KMSUnavailable("KMS unreachable (test outage)")

    try:
        assert consumer.run(seen.append, max_events=2, idle_timeout=0.3).delivered == 2
        committed = dep.transport.committed("ship", demo.TOPIC)
        # the KMS goes away mid-consume: one key at a time and a read batch's keys at once
        monkeypatch.setattr(dep.keys.kms, "unwrap", outage)
        monkeypatch.setattr(dep.keys.kms, "unwrap_many", outage)
        dep.keys._drop_caches()
        with pytest.raises(KMSUnavailable):
            consumer.run(seen.append, idle_timeout=0.3)
        assert len(seen) == 2 and dep.transport.committed("ship", demo.TOPIC) == committed
        dlq = demo.TOPIC + ".dlq"
        assert not dep.transport.has_stream(dlq) or dep.transport.end_offset(dlq) == 0  # nothing dead-lettered
        monkeypatch.undo()  # it comes back: the same consumer resumes where it stopped
        stats = consumer.run(seen.append, idle_timeout=0.3)
    finally:
        consumer.close()
    assert stats.delivered == 4 and stats.dead_lettered == 0 and len(seen) == 6
    assert [e.offset for e in seen] == list(range(6))


def test_store_replaced_under_a_running_service_is_unavailable_not_forged(open_svc, home):
    svc = open_svc()
    kid, _ = svc.encryption_key("alice", "pii", principal="writer")
    svc._drop_caches()
    os.replace(home.keys_db, home.root / "keys.db.old")  # the store is moved away under the service
    svc.store._db.execute("DELETE FROM deks WHERE kid = ?", (kid,))  # and what it still reads lacks the key
    with pytest.raises(KeyStoreUnavailable, match="removed or replaced"):
        svc.decryption_key(kid, "pii", principal="admin")


def test_erased_key_missing_from_a_restored_store_reads_erased(open_svc, home):
    """The ledger, not a tombstone, says the subject was forgotten: KeyDestroyed, never forged."""
    from eventward.errors import KeyDestroyed

    svc = open_svc()
    kid, _ = svc.encryption_key("alice", "pii", principal="writer")
    h = svc.subject_hash("alice")
    svc.forget("alice", principal="admin")
    db = sqlite3.connect(home.keys_db)
    db.execute("DELETE FROM tombstones")  # e.g. a store restored from before the key was created
    db.commit()
    db.close()
    svc._drop_caches()
    with pytest.raises(KeyDestroyed):
        svc.decryption_key(kid, "pii", principal="admin", subject_hash=h)


# --- item 9: DEK rows are authenticated ------------------------------------------------------------

def test_attack_db_writer_promotes_old_dek(open_svc, home):
    svc = open_svc(KeyServiceConfig(cache_ttl=0))
    old, _ = svc.encryption_key("alice", "pii", principal="writer")
    new = svc.rotate_dek("alice", "pii", principal="admin")
    db = sqlite3.connect(home.keys_db)
    db.execute("UPDATE deks SET version = 99 WHERE kid = ?", (old,))  # make the old DEK "current"
    db.commit()
    with pytest.raises(KeyIntegrityError):
        svc.encryption_key("alice", "pii", principal="writer")  # refused, never used for new data
    db.execute("UPDATE deks SET version = 1 WHERE kid = ?", (old,))
    db.commit()
    assert svc.encryption_key("alice", "pii", principal="writer")[0] == new
    # resetting the use counter of the current DEK is detected: it is retired, not reused
    db.execute("UPDATE deks SET uses = 0 WHERE kid = ?", (new,))
    db.execute("UPDATE deks SET uses = 5 WHERE kid = ?", (new,))
    db.commit()
    db.close()
    assert svc.encryption_key("alice", "pii", principal="writer")[0] not in (old, new)


def test_old_format_dek_still_decrypts_and_rotation_upgrades_it(open_svc, home):
    from eventward._internal.keys.dek import AAD_V1, dek_aad

    svc = open_svc(KeyServiceConfig(cache_ttl=0))
    kid, dek = svc.encryption_key("alice", "pii", principal="writer")
    rec = svc.store.get_dek(kid)
    kek, wrapped = svc.kms.wrap("pii", dek, dek_aad(kid, "pii", rec.subject_hash))  # a round-1 row
    db = sqlite3.connect(home.keys_db)
    db.execute("UPDATE deks SET wrapped = ?, kek_id = ?, fmt = ? WHERE kid = ?", (wrapped, kek, AAD_V1, kid))
    db.commit()
    db.close()
    assert svc.decryption_key(kid, "pii", principal="admin") == dek
    assert svc.encryption_key("alice", "pii", principal="writer")[0] != kid  # never encrypts under it
    svc.rotate_kek("pii", principal="admin")
    assert svc.store.get_dek(kid).fmt == 2 and svc.decryption_key(kid, "pii", principal="admin") == dek


# --- item 10: the nonce budget -----------------------------------------------------------------------

def test_attack_nonce_budget_exhausted(open_svc):
    """Every encrypted value counts; a DEK is never used past its budget, across processes."""
    cfg = KeyServiceConfig(dek_max_nonces=10, uses_flush=3, class_dek_max_uses=10)
    svc = open_svc(cfg)
    kids = [svc.encryption_key("alice", "pii", principal="writer", nonces=4)[0] for _ in range(5)]
    # 4 + 4 fit in 10, a third would make 12: every key served at most 10 values
    assert kids[0] == kids[1] != kids[2] and kids[2] == kids[3] != kids[4]
    other = open_svc(cfg)  # a second process sees the counts the first wrote
    svc.close()
    assert other.encryption_key("alice", "pii", principal="writer", nonces=7)[0] != kids[4]
    class_kids = [other.encryption_key(None, "pii", principal="writer", nonces=3)[0] for _ in range(7)]
    assert len(set(class_kids)) == 3  # 3 + 3 + 3 = 9 per class DEK, then a new version


def test_field_encryptor_charges_every_field_and_array_item(open_svc):
    from eventward._internal.crypto.fields import FieldEncryptor
    from eventward._internal.fieldspec import FieldRule, FieldSpec

    svc = open_svc(KeyServiceConfig(dek_max_nonces=12, uses_flush=1))
    spec = FieldSpec((FieldRule("email", "pii"), FieldRule("phones[]", "pii")), subject_path="id")
    enc = FieldEncryptor(svc)
    event = {"id": "alice", "email": "a@example.org", "phones": ["1", "2", "3", "4", "5"]}
    first, _ = enc.encrypt("e1", event, spec, principal="writer", topic="orders", event_type="T")
    kid = svc._current.get((svc.subject_hash("alice"), "pii"))
    assert svc.store.get_dek(kid).uses == 6  # 1 field + 5 array items
    enc.encrypt("e2", event, spec, principal="writer", topic="orders")  # 12: the budget, exactly
    enc.encrypt("e3", event, spec, principal="writer", topic="orders")  # would be 18: a new DEK
    assert svc._current.get((svc.subject_hash("alice"), "pii")) != kid
    assert first["email"].split(".")[2] == kid  # tokens name the key that sealed them


ROUND1_SCHEMA = """
CREATE TABLE deks (kid TEXT PRIMARY KEY, subject_hash TEXT NOT NULL, class TEXT NOT NULL,
    version INTEGER NOT NULL, kek_id TEXT NOT NULL, wrapped BLOB NOT NULL, created REAL NOT NULL,
    uses INTEGER NOT NULL DEFAULT 0, UNIQUE (subject_hash, class, version));
CREATE TABLE tombstones (kid TEXT PRIMARY KEY, class TEXT NOT NULL, destroyed_at REAL NOT NULL);
CREATE TABLE holds (subject_hash TEXT PRIMARY KEY, reason TEXT NOT NULL, since REAL NOT NULL);
CREATE TABLE erasures (subject_hash TEXT NOT NULL, time REAL NOT NULL, classes TEXT NOT NULL,
    destroyed INTEGER NOT NULL, PRIMARY KEY (subject_hash, time));
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta (key, value) VALUES ('epoch', 0), ('schema', 1);
"""


def test_round1_key_store_is_migrated_and_its_keys_still_decrypt(open_svc, home):
    """A schema-1 store with format-1 wrapped DEKs: opened, read, never used for new data."""
    from eventward._internal.keys.dek import dek_aad, new_kid

    svc = open_svc()
    h = svc._lookup("alice")  # round-1 stores keyed subjects by their keyed hash (no pseudonym)
    kid, dek = new_kid(), os.urandom(32)
    kek, wrapped = svc.kms.wrap("pii", dek, dek_aad(kid, "pii", h))  # the round-1 AAD
    svc.close()
    for suffix in ("", "-wal", "-shm"):
        home.keys_db.with_name(home.keys_db.name + suffix).unlink(missing_ok=True)
    db = sqlite3.connect(home.keys_db)
    db.executescript(ROUND1_SCHEMA)
    db.execute("INSERT INTO deks VALUES (?, ?, 'pii', 1, ?, ?, 1.0, 7)", (kid, h, kek, wrapped))
    db.commit()
    db.close()
    svc = open_svc()
    assert svc.decryption_key(kid, "pii", principal="admin") == dek
    assert svc.store.get_dek(kid).fmt == 1
    new_kid_, _ = svc.encryption_key("alice", "pii", principal="writer")
    assert new_kid_ != kid and svc.store.get_dek(new_kid_).version == 2


def test_attack_missing_keyring_is_not_remade_next_to_the_store(demo_dep):
    """A lost keyring must be restored: a new one next to the old store would make every key unreadable."""
    from eventward.errors import ConflictError

    home = demo_dep.home
    demo_dep.close()
    os.replace(home.keyring, home.root / "keyring.away")
    with pytest.raises(KMSUnavailable, match="does not exist"):
        Deployment.open(home)
    with pytest.raises(ConflictError, match="already exists"):
        Deployment.init(home, admin=demo.ADMIN)
    assert not home.keyring.exists()
    os.replace(home.root / "keyring.away", home.keyring)
    with Deployment.open(home) as dep:
        assert demo._collect(dep, demo.SHIPPING, "shipping").stats.delivered == 6


def test_use_counts_of_many_subjects_reach_the_store_in_one_flush(open_svc):
    """Bounded memory: past ``cache_max`` counted DEKs, every pending count is written (not dropped)."""
    svc = open_svc(KeyServiceConfig(cache_max=3, uses_flush=1_000))
    kids = [svc.encryption_key(f"s{i}", "pii", principal="writer", nonces=5)[0] for i in range(4)]
    assert [svc.store.get_dek(k).uses for k in kids[:3]] == [5, 5, 5]  # flushed when the 4th came
    assert svc.store.get_dek(kids[3]).uses == 0 and len(svc._uses) == 1
