"""Pkcs11KMS.unwrap_many: a read batch's wrapped keys opened in one locked token call, each
checked by the token on its own, each refusal typed exactly as ``unwrap`` would raise it."""

from __future__ import annotations

import pytest

from eventward.errors import KeyDestroyed, KeyIntegrityError, KeyNotFound, KMSUnavailable

DEK = bytes(range(32))
AAD = b"eventward-dek-v1\x00kid\x00pii\x00subjecthash"


def test_attack_unwrap_many_refuses_each_tampered_moved_or_destroyed_key_as_unwrap_does(kms):
    old_kid, old = kms.wrap("pii", DEK, b"old")
    kms.rotate("pii")
    kms.destroy(old_kid)
    kid, wrapped = kms.wrap("pii", DEK, AAD)
    other = bytes(reversed(DEK))
    _, wrapped2 = kms.wrap("pii", other, AAD)
    bad = bytearray(wrapped)
    bad[-1] ^= 1
    oid = bytearray(wrapped)
    oid[5] ^= 1  # names no object of that KEK
    items = [(kid, wrapped, AAD), (kid, bytes(bad), AAD), (kid, wrapped, AAD + b"x"), ("payment.v1", wrapped, AAD),
             ("pii.v9", wrapped, AAD), (old_kid, old, b"old"), (kid, wrapped[:20], AAD), ("../etc.v1", wrapped, AAD),
             (kid, bytes(oid), AAD), (kid, wrapped2, AAD)]
    got = kms.unwrap_many(items)
    assert got[0] == DEK and got[-1] == other
    assert [type(g) for g in got[1:-1]] == [KeyIntegrityError, KeyIntegrityError, KeyIntegrityError, KeyNotFound,
                                          KeyDestroyed, KeyIntegrityError, KeyNotFound, KeyIntegrityError]
    for (k, w, a), g in zip(items[1:-1], got[1:-1], strict=True):  # what unwrap alone raises
        with pytest.raises(type(g)):
            kms.unwrap(k, w, a)
        assert DEK.hex() not in str(g)
    assert kms.unwrap_many([]) == []
    kms.close()
    with pytest.raises(KMSUnavailable):  # an unavailable token is an outage, never a refusal
        kms.unwrap_many(items[:1])


def test_batch_decryption_keys_on_the_token_use_one_unwrap_many_call(service, monkeypatch):
    svc = service()
    keys = [svc.encryption_key(f"s{i}", "pii", principal="admin") for i in range(5)]
    svc._drop_caches()
    calls = []
    real = svc.kms.unwrap_many
    monkeypatch.setattr(svc.kms, "unwrap_many", lambda items: calls.append(len(items)) or real(items))
    got = svc.decryption_keys([(k, "pii", None) for k, _ in keys], principal="admin")
    assert [got[k, "pii"] for k, _ in keys] == [d for _, d in keys] and calls == [5]
