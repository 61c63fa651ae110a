"""The whole KeyService on the PKCS#11 KMS: data keys, authorized unwrap, forget, KEK rotation, restart,
and a second process sharing the token."""

from __future__ import annotations

import shutil
import sqlite3

import pytest

from eventward._internal.keys.dek import dek_aad
from eventward._internal.keys.kms.pkcs11 import Pkcs11KMS
from eventward._internal.keys.service import KeyService
from eventward.errors import AccessDenied, ConfigError, KeyDestroyed, KMSUnavailable

from .conftest import labels, make_authz, worker

ALICE = "SENTINEL-alice@example.org-51c2"
BOB = "SENTINEL-bob@example.org-0e7d"


def test_data_keys_authorized_unwrap_and_forget(service):
    svc = service()
    kid, dek = svc.encryption_key(ALICE, "pii", principal="writer")
    assert svc.encryption_key(ALICE, "pii", principal="writer") == (kid, dek)
    pay_kid, _ = svc.encryption_key(ALICE, "payment", principal="writer")
    class_kid, class_dek = svc.encryption_key(None, "health", principal="writer")
    rec = svc.store.get_dek(kid)
    assert rec.kek_id == "pii.v1" and rec.wrapped[:1] == b"\x02" and dek not in rec.wrapped
    assert ALICE not in rec.subject_hash and len(rec.subject_hash) == 32

    svc.cache.clear()  # force the unwrap through the token
    assert svc.decryption_key(kid, "pii", principal="reader") == dek
    assert svc.decryption_key(class_kid, "health", principal="admin") == class_dek
    with pytest.raises(AccessDenied):
        svc.decryption_key(pay_kid, "payment", principal="reader")

    receipt = svc.forget(ALICE, principal="admin", reason="erasure-request")
    assert receipt.destroyed == 2 and receipt.kek_epochs == {"payment": 1, "pii": 1}
    for k, c in ((kid, "pii"), (pay_kid, "payment")):
        with pytest.raises(KeyDestroyed):
            svc.decryption_key(k, c, principal="admin")
    records = repr(service.audit.events)
    assert any(e.action == "key.forget" for e in service.audit.events)
    assert ALICE not in records and dek.hex() not in records


def test_rotate_kek_rewraps_then_destroys_the_old_version_in_the_token(service, cfg):
    svc = service()
    deks = {s: svc.encryption_key(s, "pii", principal="w") for s in (ALICE, BOB, "carol")}
    backup = service.home.keys_db.with_name("backup.db")  # a residual copy: what crypto-shredding must beat
    svc.store.purge()
    shutil.copy(service.home.keys_db, backup)
    svc.forget(ALICE, principal="admin")

    report = svc.rotate_kek("pii", principal="admin")
    assert (report.new_kek_id, report.destroyed_kek_ids, report.rewrapped, report.failed) == (
        "pii.v2", ("pii.v1",), 2, 0)
    assert labels(cfg, "pii.v1") == [] and len(labels(cfg, "pii.v2")) == 1
    status = {c.cls: c for c in svc.status().classes}["pii"]
    assert status.destroyed_keks == ("pii.v1",) and status.live_keks == ("pii.v2",)

    svc.close()
    svc = service()  # restart: new KMS object, new session, empty caches
    for s in (BOB, "carol"):
        kid, dek = deks[s]
        assert svc.store.get_dek(kid).kek_id == "pii.v2"
        assert svc.decryption_key(kid, "pii", principal="admin") == dek
        assert svc.encryption_key(s, "pii", principal="w") == (kid, dek)  # same subject hash after restart

    alice_kid = deks[ALICE][0]
    with sqlite3.connect(backup) as db:  # the forgotten subject's wrapped DEK, from the old backup
        kek, wrapped, h = db.execute("SELECT kek_id, wrapped, subject_hash FROM deks WHERE kid = ?",
                                     (alice_kid,)).fetchone()
    assert kek == "pii.v1"
    with pytest.raises(KeyDestroyed):
        svc.kms.unwrap(kek, wrapped, dek_aad(alice_kid, "pii", h))


def test_a_second_process_shares_the_token(softhsm, cfg, closing):
    """Another process unwraps what this one wrapped; its rotation and destruction are seen here, even
    through a key handle this process had cached."""
    kms = closing(Pkcs11KMS.create(cfg.__class__(**{**cfg.__dict__, "refresh_s": 0.0})))
    aad = b"ctx"
    kid, wrapped = kms.wrap("pii", b"\x07" * 32, aad)
    assert kms.unwrap(kid, wrapped, aad) == b"\x07" * 32  # handle now cached here

    out = worker(softhsm, "unwrap", kid, wrapped.hex(), aad.hex())
    assert (out.returncode, out.stdout.strip()) == (0, "07" * 32), out.stderr

    out = worker(softhsm, "rotate", "pii")
    assert (out.returncode, out.stdout.strip()) == (0, "pii.v2"), out.stderr
    assert kms.wrap("pii", b"\x01" * 32, aad)[0] == "pii.v2"

    out = worker(softhsm, "destroy", "pii.v1")
    assert out.returncode == 0, out.stderr
    with pytest.raises(KeyDestroyed):
        kms.unwrap(kid, wrapped, aad)
    out = worker(softhsm, "unwrap", kid, wrapped.hex(), aad.hex())
    assert (out.returncode, out.stdout.strip()) == (3, "error key_destroyed")


def test_a_closed_token_fails_closed_and_stores_nothing(service):
    svc = service()
    svc.encryption_key(ALICE, "pii", principal="w")
    svc.kms.close()
    with pytest.raises(KMSUnavailable):
        svc.encryption_key(BOB, "pii", principal="w")
    with pytest.raises(KMSUnavailable):
        svc.encryption_key(None, "payment", principal="w")
    assert [c.deks for c in svc.store.counts()] == [1]


def test_init_with_a_kms_and_a_passphrase_is_refused_and_releases_the_kms(tmp_path, cfg):
    from eventward._internal.home import Home

    kms = Pkcs11KMS.create(cfg)
    with pytest.raises(ConfigError, match="passphrase"):
        KeyService.init(Home(tmp_path / "h"), authorizer=make_authz(), passphrase="x", kms=kms)
    with pytest.raises(KMSUnavailable, match="closed"):
        kms.current("pii")
