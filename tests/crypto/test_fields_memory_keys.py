"""MemoryKeys: the in-memory DekSource (per-subject DEKs, clearance, crypto-shredding)."""

from __future__ import annotations

import re
import threading

import pytest

from eventward._internal.crypto.tokens import KID_PATTERN
from eventward._internal.keys.memory import MemoryKeys
from eventward._internal.policy.base import DECRYPT, AllowList
from eventward.errors import AccessDenied, FieldSpecError, InputError, KeyDestroyed, KeyNotFound

from .conftest import SENTINEL


def test_subject_hash_is_a_keyed_hash_that_hides_the_id():
    k1, k2 = MemoryKeys(), MemoryKeys()
    h = k1.subject_hash(SENTINEL)
    assert re.fullmatch(r"[0-9a-f]{64}", h) and SENTINEL not in h
    assert k1.subject_hash(SENTINEL) == h  # stable within a key source
    assert k2.subject_hash(SENTINEL) != h  # keyed: another key source cannot link it
    fixed = [MemoryKeys(hmac_key=b"k" * 32).subject_hash("x") for _ in range(2)]
    assert fixed[0] == fixed[1]


@pytest.mark.parametrize("bad", ["", None, 5, b"bytes", ["x"]])
def test_subject_ids_must_be_non_empty_strings(bad):
    with pytest.raises(InputError):
        MemoryKeys().subject_hash(bad)


def test_short_hmac_keys_are_refused():
    with pytest.raises(InputError):
        MemoryKeys(hmac_key=b"short")


def test_one_dek_per_subject_and_class():
    keys = MemoryKeys()
    kid, dek = keys.encryption_key("alice", "pii", principal="p")
    assert KID_PATTERN.fullmatch(kid) and len(dek) == 32
    assert keys.encryption_key("alice", "pii", principal="p") == (kid, dek)
    assert keys.encryption_key("alice", "payment", principal="p")[1] != dek
    assert keys.encryption_key("bob", "pii", principal="p")[1] != dek
    class_kid, class_dek = keys.encryption_key(None, "pii", principal="p")
    assert class_dek != dek and keys.encryption_key(None, "pii", principal="p") == (class_kid, class_dek)
    assert keys.decryption_key(kid, "pii", principal="anyone") == dek  # no authorizer: open


def test_bad_class_names_are_refused():
    with pytest.raises(FieldSpecError):
        MemoryKeys().encryption_key("alice", "PII!", principal="p")


def test_decryption_needs_clearance_deny_by_default():
    auth = AllowList()
    keys = MemoryKeys(auth)
    kid, dek = keys.encryption_key("alice", "pii", principal="producer")  # encrypting needs no clearance
    with pytest.raises(AccessDenied) as ei:
        keys.decryption_key(kid, "pii", principal="producer")
    assert "Decrypt" in str(ei.value) and ei.value.explanation is not None
    auth.grant("reader", DECRYPT, ("Class", "pii"))
    assert keys.decryption_key(kid, "pii", principal="reader") == dek
    with pytest.raises(AccessDenied):
        keys.decryption_key(kid, "pii", principal="other")
    auth.revoke("reader", DECRYPT, ("Class", "pii"))
    with pytest.raises(AccessDenied):
        keys.decryption_key(kid, "pii", principal="reader")


def test_a_key_id_asked_for_under_another_class_is_not_found():
    """Otherwise a reader cleared for 'public' could fetch a 'pii' DEK by relabelling a field."""
    auth = AllowList([("reader", DECRYPT, ("Class", "public"))])
    keys = MemoryKeys(auth)
    kid, _ = keys.encryption_key("alice", "pii", principal="p")
    with pytest.raises(KeyNotFound):
        keys.decryption_key(kid, "public", principal="reader")


def test_unknown_key_ids_are_not_found_and_not_echoed():
    keys = MemoryKeys()
    with pytest.raises(KeyNotFound) as ei:
        keys.decryption_key(SENTINEL, "pii", principal="p")
    assert SENTINEL not in str(ei.value)


def test_forget_destroys_every_key_of_the_subject_only():
    keys = MemoryKeys()
    a_pii, _ = keys.encryption_key("alice", "pii", principal="p")
    a_pay, _ = keys.encryption_key("alice", "payment", principal="p")
    old_pii = keys.rotate("alice", "pii")
    b_pii, b_dek = keys.encryption_key("bob", "pii", principal="p")
    assert keys.forget("alice") == 3
    assert "alice" not in keys._hashes  # the raw id is not kept around after erasure
    for kid, cls in ((a_pii, "pii"), (a_pay, "payment"), (old_pii, "pii")):
        with pytest.raises(KeyDestroyed):
            keys.decryption_key(kid, cls, principal="p")
    assert keys.decryption_key(b_pii, "pii", principal="p") == b_dek
    assert keys.forget("alice") == 0  # idempotent
    assert keys.forget("never-seen") == 0
    new_kid, _ = keys.encryption_key("alice", "pii", principal="p")  # new data gets a new key
    assert new_kid not in (a_pii, old_pii)


def test_clearance_is_checked_before_erasure_is_revealed():
    keys = MemoryKeys(AllowList())
    kid, _ = keys.encryption_key("alice", "pii", principal="p")
    keys.forget("alice")
    with pytest.raises(AccessDenied):
        keys.decryption_key(kid, "pii", principal="stranger")


def test_rotation_starts_a_new_key_and_old_ones_still_decrypt():
    keys = MemoryKeys()
    kid1, dek1 = keys.encryption_key("alice", "pii", principal="p")
    kid2 = keys.rotate("alice", "pii")
    assert kid2 != kid1 and keys.encryption_key("alice", "pii", principal="p")[0] == kid2
    assert keys.decryption_key(kid1, "pii", principal="p") == dek1
    assert keys.rotate(None, "pii") != keys.rotate(None, "pii")


def test_concurrent_first_use_yields_one_key():
    keys = MemoryKeys()
    seen: list[str] = []
    barrier = threading.Barrier(8)

    def use() -> None:
        barrier.wait()
        seen.append(keys.encryption_key("carol", "pii", principal="p")[0])

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 1


def test_repr_holds_no_keys_or_subjects():
    keys = MemoryKeys()
    _, dek = keys.encryption_key(SENTINEL, "pii", principal="p")
    keys.forget(SENTINEL)
    _, dek2 = keys.encryption_key("bob", "pii", principal="p")
    r = repr(keys)
    assert SENTINEL not in r and dek.hex() not in r and dek2.hex() not in r and "\\x" not in r
    assert r == "MemoryKeys(1 live keys, 1 destroyed)"
    for k in keys._keys.values():  # even the private records keep key bytes out of their repr
        assert "dek" not in repr(k) and dek2.hex() not in repr(k)
