"""A PKCS#11 token that goes away mid-consume: unavailable (stop and retry), never "key not found"
(which a consumer would read as a forged token, dead-letter and commit past), and the same
process carries on once the token is back."""

from __future__ import annotations

import os
import time

import pytest

from eventward._internal.crypto.fields import FieldEncryptor
from eventward._internal.fieldspec import FieldRule, FieldSpec
from eventward._internal.keys.kms import pkcs11 as p11
from eventward.errors import KeyNotFound, KMSUnavailable, TokenError

SPEC = FieldSpec((FieldRule("email", "pii"),), subject_path="id")


def test_attack_token_removed_midconsume(service, softhsm):
    svc = service()
    enc = FieldEncryptor(svc)
    events = [enc.encrypt(f"e{i}", {"id": f"customer-{i}", "email": f"c{i}@example.org"}, SPEC,
                          principal="writer", topic="orders")[0] for i in range(6)]
    hashes = [svc.subject_hash(f"customer-{i}") for i in range(6)]
    read = [enc.decrypt("e0", events[0], SPEC, hashes[0], principal="reader", topic="orders")[0]]
    assert read[0]["email"] == "c0@example.org"
    svc.cache.clear()

    tokens = softhsm.conf.parent / "tokens"
    away = softhsm.conf.parent / "tokens-away"
    os.rename(tokens, away)  # the token is unplugged mid-consume
    try:
        for i in (1, 2):
            with pytest.raises(KMSUnavailable) as ei:
                enc.decrypt(f"e{i}", events[i], SPEC, hashes[i], principal="reader", topic="orders")
            assert not isinstance(ei.value, KeyNotFound | TokenError)  # never judged forged
    finally:
        os.rename(away, tokens)
    deadline = time.monotonic() + 10 * p11.RECONNECT_INTERVAL_S + 5
    while True:  # the same process and KeyService recover, no restart
        try:
            out, _ = enc.decrypt("e1", events[1], SPEC, hashes[1], principal="reader", topic="orders")
            break
        except KMSUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    assert out["email"] == "c1@example.org"
    for i in range(2, 6):
        assert enc.decrypt(f"e{i}", events[i], SPEC, hashes[i], principal="reader",
                           topic="orders")[0]["email"] == f"c{i}@example.org"
    kid, _ = svc.encryption_key("customer-new", "pii", principal="writer")  # wrapping works again too
    assert svc.decryption_key(kid, "pii", principal="reader")
