"""Pkcs11KMS on a real SoftHSM2 token: sealed keys, GCM wrapping, tampering, rotation, destruction."""

from __future__ import annotations

import os
import threading

import pytest
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11e

from eventward._internal.keys.kms.base import MAC_LEDGER, MAC_SUBJECT
from eventward._internal.keys.kms.pkcs11 import MAC_PREFIX, Pkcs11KMS, token_session
from eventward.errors import (
    ConflictError,
    KeyDestroyed,
    KeyIntegrityError,
    KeyNotFound,
    KMSUnavailable,
)

from .conftest import labels

DEK = bytes(range(32))
AAD = b"eventward-dek-v1\x00kid\x00pii\x00subjecthash"


def _key(session, label: str):
    return session.get_key(object_class=ObjectClass.SECRET_KEY, label=label)


def test_create_generates_sealed_keks_and_mac_secrets_inside_the_token(cfg, kms):
    assert kms.classes() == ["health", "payment", "pii"]
    assert [kms.current(c) for c in kms.classes()] == ["health.v1", "payment.v1", "pii.v1"]
    with token_session(cfg) as s:
        for label, key_type in (("pii.v1", KeyType.AES), (MAC_PREFIX + MAC_SUBJECT, KeyType.GENERIC_SECRET),
                                (MAC_PREFIX + MAC_LEDGER, KeyType.GENERIC_SECRET)):
            key = _key(s, label)
            a = key.get_attributes([
                Attribute.KEY_TYPE, Attribute.VALUE_LEN, Attribute.SENSITIVE, Attribute.EXTRACTABLE,
                Attribute.NEVER_EXTRACTABLE, Attribute.ALWAYS_SENSITIVE, Attribute.LOCAL, Attribute.TOKEN,
                Attribute.COPYABLE, Attribute.MODIFIABLE, Attribute.WRAP, Attribute.UNWRAP,
            ])
            assert a[Attribute.KEY_TYPE] == key_type and a[Attribute.VALUE_LEN] == 32
            assert a[Attribute.SENSITIVE] and a[Attribute.ALWAYS_SENSITIVE] and a[Attribute.LOCAL]
            assert not a[Attribute.EXTRACTABLE] and a[Attribute.NEVER_EXTRACTABLE] and a[Attribute.TOKEN]
            assert not (a[Attribute.COPYABLE] or a[Attribute.MODIFIABLE] or a[Attribute.WRAP]
                        or a[Attribute.UNWRAP])


def test_kek_cannot_be_read_exported_copied_or_loosened(cfg, kms):
    """The attacks a PIN holder could try to get KEK bytes out of the token: all refused."""
    with token_session(cfg) as s:
        kek = _key(s, "pii.v1")
        with pytest.raises(p11e.AttributeSensitive):
            kek[Attribute.VALUE]
        thief = s.generate_key(KeyType.AES, 256, label="thief", store=False,
                               template={Attribute.WRAP: True, Attribute.EXTRACTABLE: True})
        with pytest.raises(p11e.KeyUnextractable):
            thief.wrap_key(kek, mechanism=Mechanism.AES_KEY_WRAP_PAD)
        for attack in (
            lambda: kek.__setitem__(Attribute.EXTRACTABLE, True),
            lambda: kek.__setitem__(Attribute.SENSITIVE, False),
            lambda: kek.__setitem__(Attribute.LABEL, "pii.v9"),
            lambda: kek.copy({Attribute.LABEL: "stolen", Attribute.EXTRACTABLE: True}),
            lambda: kek.copy({Attribute.LABEL: "survives-destroy"}),
        ):
            with pytest.raises(p11e.PKCS11Error):
                attack()
        assert labels(cfg, "stolen") == [] and labels(cfg, "survives-destroy") == []
    assert kms.unwrap(*kms.wrap("pii", DEK, AAD), AAD) == DEK  # still intact after the attempts


def test_wrap_unwrap_round_trip_uses_gcm_with_fresh_ivs(kms):
    kid, wrapped = kms.wrap("pii", DEK, AAD)
    kid2, wrapped2 = kms.wrap("pii", DEK, AAD)
    assert kid == kid2 == "pii.v1"
    assert DEK not in wrapped and wrapped != wrapped2  # random IV per wrap
    assert len(wrapped) == 1 + 16 + 12 + 32 + 16
    assert kms.unwrap(kid, wrapped, AAD) == DEK
    assert kms.unwrap(kid2, wrapped2, AAD) == DEK


@pytest.mark.parametrize("where", ["format", "object id", "iv", "ciphertext", "tag"])
def test_a_flipped_bit_anywhere_is_refused(kms, where):
    kid, wrapped = kms.wrap("pii", DEK, AAD)
    pos = {"format": 0, "object id": 5, "iv": 20, "ciphertext": 40, "tag": len(wrapped) - 1}[where]
    bad = bytearray(wrapped)
    bad[pos] ^= 0x01
    with pytest.raises(KeyIntegrityError) as e:
        kms.unwrap(kid, bytes(bad), AAD)
    assert DEK.hex() not in str(e.value)
    assert kms.unwrap(kid, wrapped, AAD) == DEK  # the genuine blob still works


def test_other_context_other_class_or_truncation_is_refused(kms):
    kid, wrapped = kms.wrap("pii", DEK, AAD)
    with pytest.raises(KeyIntegrityError):
        kms.unwrap(kid, wrapped, AAD + b"x")  # moved to another subject / kid
    with pytest.raises(KeyIntegrityError):
        kms.unwrap(kid, wrapped, b"")
    for short in (b"", wrapped[:20], wrapped[:-1]):
        with pytest.raises(KeyIntegrityError):
            kms.unwrap(kid, short, AAD)
    with pytest.raises(KeyIntegrityError):  # pii blob presented as payment's: its object id is not there
        kms.unwrap("payment.v1", wrapped, AAD)
    with pytest.raises(KeyNotFound):
        kms.unwrap("pii.v7", wrapped, AAD)  # a version that never existed
    with pytest.raises(KeyNotFound):
        kms.unwrap("../etc.v1", wrapped, AAD)


def test_rotate_then_destroy_removes_the_object_and_unwrap_says_destroyed(cfg, kms):
    old_kid, old = kms.wrap("pii", DEK, AAD)
    assert kms.rotate("pii") == "pii.v2"
    new_kid, new = kms.wrap("pii", DEK, AAD)
    assert (kms.current("pii"), kms.epoch("pii"), new_kid) == ("pii.v2", 2, "pii.v2")
    assert kms.unwrap(old_kid, old, AAD) == DEK  # old versions still unwrap until destroyed
    with pytest.raises(ConflictError):
        kms.destroy("pii.v2")  # never the current one
    with pytest.raises(KeyNotFound):
        kms.destroy("pii.v3")
    assert len(labels(cfg, "pii.v1")) == 1
    kms.destroy("pii.v1")
    assert labels(cfg, "pii.v1") == []  # C_DestroyObject: gone from the token itself
    with pytest.raises(KeyDestroyed):
        kms.unwrap(old_kid, old, AAD)
    kms.destroy("pii.v1")  # idempotent
    assert kms.versions("pii") == ["pii.v2"] and kms.destroyed("pii") == ["pii.v1"]
    assert kms.unwrap(new_kid, new, AAD) == DEK
    assert kms.versions("payment") == ["payment.v1"] and kms.destroyed("payment") == []


def test_unknown_class_is_created_on_first_wrap_but_not_on_read(kms):
    with pytest.raises(KeyNotFound):
        kms.current("genome")
    kid, wrapped = kms.wrap("genome", DEK, AAD)
    assert kid == "genome.v1" and "genome" in kms.classes()
    assert kms.unwrap(kid, wrapped, AAD) == DEK


def test_mac_secrets_are_stable_distinct_and_token_bound(cfg, kms, closing):
    a = kms.mac(MAC_SUBJECT, b"alice")
    assert len(a) == 32 and a == kms.mac(MAC_SUBJECT, b"alice") != kms.mac(MAC_SUBJECT, b"bob")
    assert kms.mac(MAC_LEDGER, b"alice") != a
    with pytest.raises(KeyNotFound):
        kms.mac("nonexistent", b"alice")
    uncached = closing(Pkcs11KMS.open(cfg.__class__(**{**cfg.__dict__, "mac_cache": 0})))
    assert uncached.mac(MAC_SUBJECT, b"alice") == a  # the memo returns what the token computes


def test_a_new_kms_object_finds_every_key_after_restart(cfg, kms, closing):
    kid, wrapped = kms.wrap("payment", DEK, AAD)
    kms.rotate("payment")
    mac = kms.mac(MAC_SUBJECT, b"alice")
    kms.close()
    with pytest.raises(KMSUnavailable):
        kms.wrap("pii", DEK, AAD)  # a closed KMS fails closed
    again = closing(Pkcs11KMS.open(cfg))
    assert again.unwrap(kid, wrapped, AAD) == DEK
    assert again.current("payment") == "payment.v2" and again.mac(MAC_SUBJECT, b"alice") == mac


def test_create_refuses_an_initialised_token_and_open_refuses_an_empty_one(cfg, kms, softhsm):
    with pytest.raises(ConflictError):
        Pkcs11KMS.create(cfg)
    assert len(labels(cfg, "pii.v1")) == 1  # nothing duplicated by the refused create
    with token_session(cfg) as s:
        for obj in list(s.get_objects()):
            obj.destroy()
    with pytest.raises(KMSUnavailable, match="holds no eventward keys"):
        Pkcs11KMS.open(cfg)


def _plant(session, label: str, template: dict) -> None:
    session.create_object({
        Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES, Attribute.VALUE: b"k" * 32,
        Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.LABEL: label, Attribute.ID: os.urandom(16),
        Attribute.ENCRYPT: True, Attribute.DECRYPT: True, **template,
    })


@pytest.mark.parametrize("template", [
    {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},  # imported: its bytes existed outside
    {Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},  # readable and exportable
])
def test_a_planted_key_under_a_kek_label_is_refused_not_used(cfg, kms, template):
    """Poisoning: a key someone holds a copy of, labelled as the next KEK version, would capture every
    new DEK. The KMS refuses to wrap (fail closed) instead of using it."""
    with token_session(cfg) as s:
        _plant(s, "pii.v2", template)
    with pytest.raises(KeyIntegrityError, match=r"pii\.v2"):
        kms.current("pii")
    with pytest.raises(KeyIntegrityError):
        kms.wrap("pii", DEK, AAD)


def test_other_applications_keys_on_a_shared_token_are_ignored(cfg, kms):
    with token_session(cfg) as s:
        for label in ("backup-key", "mac:foreign", "pii.v1.bak", "PII.v2"):
            _plant(s, label, {Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True})
    assert kms.classes() == ["health", "payment", "pii"] and kms.current("pii") == "pii.v1"
    assert kms.unwrap(*kms.wrap("pii", DEK, AAD), AAD) == DEK
    with pytest.raises(KeyNotFound):
        kms.mac("foreign", b"x")


def test_duplicate_versions_from_a_rotation_race_both_unwrap_and_both_are_destroyed(cfg, kms, closing):
    """Two processes rotating at once both create pii.v2: each blob names its object, destroy takes both."""
    kms.rotate("pii")
    kid_a, blob_a = kms.wrap("pii", DEK, AAD)
    with token_session(cfg) as s:  # the other process's pii.v2, generated in the token like rotate does
        s.generate_key(KeyType.AES, 256, id=bytes(16), label="pii.v2", store=True, template={
            Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.ENCRYPT: True,
            Attribute.DECRYPT: True, Attribute.COPYABLE: False, Attribute.MODIFIABLE: False,
        })
    assert len(labels(cfg, "pii.v2")) == 2
    other = closing(Pkcs11KMS.open(cfg))
    kid_b, blob_b = other.wrap("pii", DEK, AAD)
    assert kid_a == kid_b == "pii.v2" and blob_b[1:17] == bytes(16) != blob_a[1:17]
    assert kms.unwrap(kid_b, blob_b, AAD) == DEK == other.unwrap(kid_a, blob_a, AAD)
    with pytest.raises(KeyIntegrityError):  # a blob pointed at the other copy does not decrypt
        kms.unwrap(kid_a, blob_a[:1] + bytes(16) + blob_a[17:], AAD)
    kms.rotate("pii")
    kms.destroy("pii.v2")
    assert labels(cfg, "pii.v2") == []
    for blob in (blob_a, blob_b):
        with pytest.raises(KeyDestroyed):
            other.unwrap("pii.v2", blob, AAD)


def test_concurrent_threads_share_one_kms_safely(kms):
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(40):
                dek = os.urandom(32)
                aad = f"{i}:{j}".encode()
                kid, wrapped = kms.wrap(("pii", "payment")[j % 2], dek, aad)
                assert kms.unwrap(kid, wrapped, aad) == dek
                kms.mac(MAC_SUBJECT, aad)
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
