"""KEK rotation: DEKs re-wrapped (no event rewritten), old KEK destroyed, concurrent writers safe."""

from __future__ import annotations

import base64
import sqlite3

import pytest

from eventward._internal.keys.dek import dek_aad
from eventward._internal.keys.service import KeyServiceConfig
from eventward.errors import AccessDenied, KeyDestroyed, KeyNotFound

from .conftest import spawn


def test_kek_rotation_rewraps_and_destroys_the_old_version(open_svc, home, audit):
    svc = open_svc(KeyServiceConfig(rewrap_chunk=7))
    before = {f"s{i}": svc.encryption_key(f"s{i}", "pii", principal="p") for i in range(30)}
    other = svc.encryption_key("s0", "payment", principal="p")
    old_row = svc.store.get_dek(before["s0"][0])
    old_key = base64.b64encode(svc.kms._ring.classes["pii"].keys[1])
    calls = []
    report = svc.rotate_kek("pii", principal="admin", progress=lambda d, t: calls.append((d, t)))
    assert report.new_kek_id == "pii.v2" and report.destroyed_kek_ids == ("pii.v1",)
    assert report.rewrapped == 30 and report.failed == 0
    assert calls[0] == (0, 30) and calls[-1] == (30, 30) and len(calls) == 1 + 5  # ceil(30 / 7) chunks
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    # old events still decrypt: same DEK bytes, from a fresh process with no cache
    fresh = open_svc()
    for kid, dek in before.values():
        assert fresh.decryption_key(kid, "pii", principal="admin") == dek
    assert fresh.decryption_key(other[0], "payment", principal="admin") == other[1]  # other class untouched
    new_row = fresh.store.get_dek(before["s0"][0])
    assert new_row.kek_id == "pii.v2" and new_row.wrapped != old_row.wrapped
    # the old KEK version is unusable and its bytes are gone from the keyring
    with pytest.raises(KeyDestroyed):
        fresh.kms.unwrap("pii.v1", old_row.wrapped, dek_aad(old_row.kid, "pii", old_row.subject_hash))
    from .test_keys_kms import keyring_plaintext

    assert old_key not in keyring_plaintext(home)
    db = sqlite3.connect(home.keys_db)
    assert db.execute("SELECT count(*) FROM deks WHERE kek_id = 'pii.v1'").fetchone()[0] == 0
    assert old_row.wrapped not in home.keys_db.read_bytes()
    db.close()
    assert [e.meta["destroyed"] for e in audit.events if e.action == "key.rotate_kek"] == ["pii.v1"]


def test_rotation_is_authorized_and_refuses_unknown_classes(svc):
    with pytest.raises(AccessDenied):
        svc.rotate_kek("pii", principal="reader")
    assert svc.kms.current("pii") == "pii.v1"
    with pytest.raises(KeyNotFound):
        svc.rotate_kek("typo", principal="admin")
    assert "typo" not in svc.kms.classes()


def test_receipt_names_the_kek_epoch_that_completes_erasure(svc):
    svc.encryption_key("alice", "pii", principal="p")
    svc.encryption_key("alice", "health", principal="p")
    svc.rotate_kek("pii", principal="admin")
    svc.rotate_kek("pii", principal="admin")
    r = svc.forget("alice", principal="admin")
    assert r.kek_epochs == {"health": 1, "pii": 3}
    assert "health.v1, pii.v3" in r.statement()


def test_a_tampered_dek_is_reported_and_its_kek_is_kept(open_svc, home):
    svc = open_svc()
    a, _ = svc.encryption_key("alice", "pii", principal="p")
    b, bdek = svc.encryption_key("bob", "pii", principal="p")
    db = sqlite3.connect(home.keys_db)
    db.execute("UPDATE deks SET wrapped = zeroblob(61) WHERE kid = ?", (a,))
    db.commit()
    db.close()
    report = svc.rotate_kek("pii", principal="admin")
    assert report.failed == 1 and report.rewrapped == 1
    assert report.destroyed_kek_ids == ()  # pii.v1 still wraps the damaged row: not destroyed blindly
    assert open_svc().decryption_key(b, "pii", principal="admin") == bdek


def test_rotation_while_another_process_creates_keys_loses_nothing(open_svc, home):
    svc = open_svc(KeyServiceConfig(rewrap_chunk=5))
    for i in range(20):
        svc.encryption_key(f"pre-{i}", "pii", principal="p")
    proc = spawn("create", str(home.root), "60", "during")
    try:
        assert proc.stdout.readline().strip() == "started", proc.stderr.read()  # rotate while it creates
        reports = [svc.rotate_kek("pii", principal="admin") for _ in range(3)]
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert sum(len(r.destroyed_kek_ids) for r in reports) == 3
    fresh = open_svc(KeyServiceConfig(cache_max=0))
    rows = fresh.store._db.execute("SELECT kid, kek_id FROM deks WHERE class='pii'").fetchall()
    assert len(rows) == 80 and {k for _, k in rows} == {"pii.v4"}
    for kid, _ in rows:  # every DEK, however it raced the rotations, still unwraps
        assert len(fresh.decryption_key(kid, "pii", principal="admin")) == 32
