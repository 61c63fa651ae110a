"""KeyService: clearance per class, forged/moved keys, DEK rotation, class DEKs, cache bounds, failures."""

from __future__ import annotations

import os
import sqlite3

import pytest

from eventward._internal.audit.base import DENIED
from eventward._internal.home import write_secret
from eventward._internal.keys.cache import LruTtlCache
from eventward._internal.keys.service import KeyServiceConfig
from eventward.errors import (
    AccessDenied,
    InputError,
    KeyIntegrityError,
    KeyNotFound,
    KeyServiceError,
    KeyStoreUnavailable,
    KMSUnavailable,
)


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_deny_by_default_and_clearance_per_class(svc, audit):
    kid, dek = svc.encryption_key("alice", "pii", principal="producer")
    pkid, _ = svc.encryption_key("alice", "payment", principal="producer")
    assert svc.decryption_key(kid, "pii", principal="reader") == dek
    for who, k, cls in (("nobody", kid, "pii"), ("producer", kid, "pii"), ("reader", pkid, "payment")):
        with pytest.raises(AccessDenied) as ei:
            svc.decryption_key(k, cls, principal=who)
        assert ei.value.explanation is not None and not ei.value.explanation.allowed
    denials = [e for e in audit.events if e.action == "key.unwrap" and e.outcome == DENIED]
    assert len(denials) == 3 and {e.reason for e in denials} == {"not_authorized"}
    assert denials[-1].resource == "class:payment" and denials[-1].meta["kid"] == pkid


def test_same_subject_same_key_different_subject_or_class_different_key(svc):
    a1 = svc.encryption_key("alice", "pii", principal="p")
    assert svc.encryption_key("alice", "pii", principal="p") == a1
    assert svc.encryption_key("bob", "pii", principal="p")[0] != a1[0]
    assert svc.encryption_key("alice", "payment", principal="p")[0] != a1[0]
    assert len(a1[1]) == 32 and len(a1[0]) == 22


def test_forged_malformed_and_cross_class_kids_are_not_found(open_svc):
    svc = open_svc()
    kid, _ = svc.encryption_key("alice", "payment", principal="p")
    fresh = open_svc()  # no cache: goes to the store
    for forged in ("A" * 22, "not a kid", "", "x" * 5000, kid + "A"):
        with pytest.raises(KeyNotFound):
            fresh.decryption_key(forged, "pii", principal="admin")
    with pytest.raises(KeyNotFound):  # a payment kid presented as pii, even to an admin
        fresh.decryption_key(kid, "pii", principal="admin")
    with pytest.raises(KeyNotFound):  # and from the cache as well
        svc.decryption_key(kid, "pii", principal="admin")
    with pytest.raises(InputError):
        fresh.decryption_key(kid, "PII; drop table", principal="admin")


def test_wrapped_key_moved_to_another_subject_fails_authentication(open_svc, home):
    svc = open_svc()
    ka, _ = svc.encryption_key("alice", "pii", principal="p")
    kb, _ = svc.encryption_key("bob", "pii", principal="p")
    db = sqlite3.connect(home.keys_db)
    wa = db.execute("SELECT wrapped FROM deks WHERE kid=?", (ka,)).fetchone()[0]
    db.execute("UPDATE deks SET wrapped=? WHERE kid=?", (wa, kb))  # an insider swaps key blobs
    db.commit()
    db.close()
    with pytest.raises(KeyIntegrityError):
        open_svc().decryption_key(kb, "pii", principal="admin")


def test_dek_rotation_keeps_old_versions_decryptable(svc, audit):
    old, old_dek = svc.encryption_key("alice", "pii", principal="p")
    new = svc.rotate_dek("alice", "pii", principal="admin")
    assert new != old
    kid, dek = svc.encryption_key("alice", "pii", principal="p")
    assert kid == new and dek != old_dek
    assert svc.decryption_key(old, "pii", principal="admin") == old_dek
    assert svc.store.current_dek(svc.subject_hash("alice"), "pii").version == 2
    with pytest.raises(AccessDenied):
        svc.rotate_dek("alice", "pii", principal="reader")


def test_class_dek_rotates_after_n_uses_and_after_t_seconds(open_svc):
    clock = Clock()
    svc = open_svc(KeyServiceConfig(class_dek_max_uses=10, class_dek_max_age=60.0), clock=clock)
    kids = [svc.encryption_key(None, "pii", principal="p")[0] for _ in range(25)]
    assert len(set(kids[:10])) == 1 and kids[10] != kids[0]  # exactly N uses per version
    assert len(set(kids)) == 3
    clock.t += 61
    aged = svc.encryption_key(None, "pii", principal="p")[0]
    assert aged not in kids
    for k in set(kids):  # every version still decrypts
        assert len(svc.decryption_key(k, "pii", principal="admin")) == 32


def test_cache_stays_bounded_with_many_subjects(open_svc):
    svc = open_svc(KeyServiceConfig(cache_max=50))
    kids = [svc.encryption_key(f"s{i}", "pii", principal="p")[0] for i in range(400)]
    for k in kids[:100]:
        svc.decryption_key(k, "pii", principal="admin")
    assert len(svc.cache) <= 50 and len(svc._current) <= 50
    # the bound holds for a million distinct entries too (the structure itself)
    c: LruTtlCache[str, bytes] = LruTtlCache(1000, 300.0, Clock())
    for i in range(1_000_000):
        c.put(str(i), b"")
    assert len(c) == 1000 and c.get("999999") == b"" and c.get("0") is None


def test_cache_ttl_expires_keys(open_svc):
    clock = Clock()
    svc = open_svc(KeyServiceConfig(cache_ttl=10.0), clock=clock)
    kid, _ = svc.encryption_key("alice", "pii", principal="p")
    assert svc.cache.get(kid) is not None
    clock.t += 11
    assert svc.cache.get(kid) is None
    c = LruTtlCache(0, 10.0, clock)  # disabled
    c.put("a", 1)
    assert c.get("a") is None and len(c) == 0


def test_kms_failure_at_runtime_fails_closed(open_svc, home):
    svc = open_svc(KeyServiceConfig(cache_max=0))
    kid, _ = svc.encryption_key("alice", "pii", principal="p")
    write_secret(home.keyring, os.urandom(300))  # keyring replaced under a running service
    with pytest.raises(KMSUnavailable):
        svc.decryption_key(kid, "pii", principal="admin")
    with pytest.raises(KMSUnavailable):
        svc.encryption_key("bob", "pii", principal="p")
    assert svc.store.current_dek(svc.subject_hash("bob"), "pii") is None  # nothing half-written


def test_keystore_garbage_or_locked_is_typed(open_svc, home):
    svc = open_svc(KeyServiceConfig(busy_timeout=0.2))
    svc.encryption_key("alice", "pii", principal="p")
    other = sqlite3.connect(home.keys_db, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(KeyStoreUnavailable, match="locked"):
            svc.encryption_key("bob", "pii", principal="p")
        with pytest.raises(KeyStoreUnavailable):
            svc.forget("alice", principal="admin")
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert svc.decryption_key(svc.encryption_key("alice", "pii", principal="p")[0], "pii", principal="admin")
    svc.close()
    for suffix in ("", "-wal", "-shm"):
        home.keys_db.with_name(home.keys_db.name + suffix).unlink(missing_ok=True)
    home.keys_db.write_bytes(os.urandom(16384))
    with pytest.raises(KeyServiceError) as ei:
        open_svc()
    assert isinstance(ei.value, KeyStoreUnavailable) and "keys.db" in str(ei.value)


def test_bad_subjects_and_classes_are_refused_without_echo(svc):
    for bad in ("", "x" * 2000):
        with pytest.raises(InputError) as ei:
            svc.encryption_key(bad, "pii", principal="p")
        assert "xxxx" not in str(ei.value)
    with pytest.raises(InputError):
        svc.encryption_key("alice", "Not-A-Class", principal="p")
    with pytest.raises(InputError):
        svc.hold("alice", principal="admin", reason="  ")
    with pytest.raises(InputError):
        svc.forget("alice", principal="admin", reason="r" * 5000)
    with pytest.raises(InputError):
        svc.encryption_key(12345, "pii", principal="p")  # type: ignore[arg-type]


def test_subject_hash_is_memoised_bounded_and_dropped_on_forget(open_svc, monkeypatch):
    """The producer hashes every event's subject twice: one MAC per subject id, not per call; at
    most cache_max ids kept; none kept past a forget (raw ids are personal data)."""
    svc = open_svc(KeyServiceConfig(cache_max=3))
    macs = []
    real_mac = svc.kms.mac
    monkeypatch.setattr(svc.kms, "mac", lambda name, data: macs.append(data) or real_mac(name, data))
    first = svc.subject_hash("alice")
    assert [svc.subject_hash("alice") for _ in range(5)] == [first] * 5 and len(macs) == 1
    for s in ("bob", "carol", "dave"):
        svc.subject_hash(s)
    assert len(svc._hashes) == 3 and "alice" not in svc._hashes
    assert svc.subject_hash("alice") == first  # recomputed, same answer
    with pytest.raises(InputError):
        svc.subject_hash("")
    svc.forget("bob", principal="admin", reason="gdpr-art17")
    assert "bob" not in svc._hashes and not svc._hashes
