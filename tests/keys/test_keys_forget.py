"""Crypto-shredding: keys gone everywhere (cache, other processes, db/WAL bytes, restored backups)."""

from __future__ import annotations

import shutil
import sqlite3
import time

import pytest

from eventward._internal.audit.base import DENIED, OK
from eventward._internal.keys.service import erasures_log_path
from eventward.errors import AccessDenied, KeyDestroyed, KeyIntegrityError, LegalHoldError

from .conftest import CLASSES, spawn, store_files


def keys_of(svc, subject):
    return {cls: svc.encryption_key(subject, cls, principal="producer") for cls in CLASSES}


def wrapped_blobs(home, kids):
    db = sqlite3.connect(home.keys_db)
    try:
        return [db.execute("SELECT wrapped FROM deks WHERE kid=?", (k,)).fetchone()[0] for k in kids]
    finally:
        db.close()


def test_forget_destroys_every_class_and_spares_others(svc, audit):
    alice, bob = keys_of(svc, "alice"), keys_of(svc, "bob")
    svc.rotate_dek("alice", "pii", principal="admin")  # a second version is destroyed too
    pseudonym = svc.subject_hash("alice")
    receipt = svc.forget("alice", principal="admin", reason="gdpr-art17")
    assert receipt.destroyed == 4 and receipt.classes == ("health", "payment", "pii")
    assert receipt.subject_hash == pseudonym and receipt.purged
    assert svc.known_subject("alice") is None  # the pseudonym went with the keys
    assert receipt.kek_epochs == {"health": 1, "payment": 1, "pii": 1}
    assert "pii.v1" in receipt.statement()
    for cls, (kid, _) in alice.items():
        with pytest.raises(KeyDestroyed):
            svc.decryption_key(kid, cls, principal="admin")
    for cls, (kid, dek) in bob.items():
        assert svc.decryption_key(kid, cls, principal="admin") == dek
    # a forgotten subject seen again gets a brand-new key, never the old one
    assert svc.encryption_key("alice", "pii", principal="p")[0] != alice["pii"][0]
    ev = [e for e in audit.events if e.action == "key.forget"][-1]
    assert ev.outcome == OK and ev.resource == f"subject:{receipt.subject_hash}" and ev.meta["destroyed"] == 4


def test_wrapped_bytes_leave_the_db_wal_and_shm(open_svc, home):
    svc = open_svc()
    alice = keys_of(svc, "alice")
    keys_of(svc, "bob")
    blobs = wrapped_blobs(home, [k for k, _ in alice.values()])
    raw = b"".join(store_files(home).values())
    assert all(b in raw for b in blobs)  # the search can see them before...
    reader = open_svc()  # a second connection stays open, as a consumer's would
    reader.decryption_key(alice["pii"][0], "pii", principal="admin")
    svc.forget("alice", principal="admin")
    files = store_files(home)
    assert "keys.db" in files
    for name, data in files.items():
        for b in blobs:
            assert b not in data, f"wrapped DEK bytes still in {name}"


def test_second_process_sees_the_revocation_within_one_second(svc, home):
    kid, _ = svc.encryption_key("alice", "pii", principal="producer")
    proc = spawn("watch", str(home.root), kid, "pii")
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()  # serving from its cache
        svc.forget("alice", principal="admin")
        done = time.time()
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    seen = float(out.strip())
    assert seen - done < 1.0, f"revocation took {seen - done:.3f}s to reach the other process"


def test_restored_backup_does_not_resurrect_a_forgotten_subject(open_svc, home, tmp_path):
    svc = open_svc()
    alice, bob = keys_of(svc, "alice"), keys_of(svc, "bob")
    svc.store.purge()
    backup = tmp_path / "keys.db.bak"
    shutil.copy(home.keys_db, backup)  # an old backup taken before the erasure
    pseudonym = svc.subject_hash("alice")
    svc.forget("alice", principal="admin")
    svc.close()
    for suffix in ("-wal", "-shm"):
        home.keys_db.with_name(home.keys_db.name + suffix).unlink(missing_ok=True)
    shutil.copy(backup, home.keys_db)  # restore it
    assert all(b in home.keys_db.read_bytes() for b in wrapped_blobs(home, [k for k, _ in alice.values()]))
    again = open_svc()
    for cls, (kid, _) in alice.items():
        with pytest.raises(KeyDestroyed):
            again.decryption_key(kid, cls, principal="admin")
        assert again.store.get_dek(kid) is None
    for cls, (kid, dek) in bob.items():
        assert again.decryption_key(kid, cls, principal="admin") == dek
    assert [e.subject_hash for e in again.store.erasures()] == [pseudonym]
    assert again.known_subject("alice") is None


def test_lost_ledger_file_is_rebuilt_from_the_store_and_a_torn_tail_is_tolerated(open_svc, home):
    svc = open_svc()
    keys_of(svc, "alice")
    svc.forget("alice", principal="admin")
    svc.close()
    log = erasures_log_path(home)
    line = log.read_bytes()
    log.unlink()
    open_svc().close()
    assert log.read_bytes() == line  # copied back from the store's ledger table
    log.write_bytes(line + line[:17])  # crash mid-append
    open_svc().close()
    assert log.read_bytes() == line


def test_forged_or_edited_ledger_line_stops_the_service(open_svc, home):
    svc = open_svc()
    bob = keys_of(svc, "bob")
    keys_of(svc, "alice")
    svc.forget("alice", principal="admin")
    svc.close()
    log = erasures_log_path(home)
    good = log.read_bytes()
    bob_hash = good.split(b'"s":"')[1][:32]  # alice's hash, to splice bob's in
    forged = good.replace(bob_hash, b"0" * 32)
    for bad in (forged, good + b'{"c":[],"n":0,"s":"' + b"1" * 32 + b'","t":1.0} ' + b"ab" * 32 + b"\n"):
        log.write_bytes(bad)
        with pytest.raises(KeyIntegrityError, match="line"):
            open_svc()
    log.write_bytes(good)
    ok = open_svc()
    assert ok.decryption_key(bob["pii"][0], "pii", principal="admin") == bob["pii"][1]


def test_legal_hold_blocks_forget_until_released(svc, audit):
    alice = keys_of(svc, "alice")
    svc.hold("alice", principal="admin", reason="litigation-42")
    assert svc.is_held("alice") and not svc.is_held("bob")
    with pytest.raises(LegalHoldError, match="legal hold") as ei:
        svc.forget("alice", principal="admin")
    assert ei.value.http_status == 409
    for cls, (kid, dek) in alice.items():  # nothing was lost
        assert svc.decryption_key(kid, cls, principal="admin") == dek
    assert [e.reason for e in audit.events if e.action == "key.forget"] == ["legal_hold"]
    with pytest.raises(AccessDenied):
        svc.release("alice", principal="reader")
    assert svc.release("alice", principal="admin") and not svc.is_held("alice")
    assert svc.forget("alice", principal="admin").destroyed == 3


def test_unauthorized_forget_and_hold_are_denied_and_audited(svc, audit):
    kid, dek = svc.encryption_key("alice", "pii", principal="producer")
    for fn in (lambda: svc.forget("alice", principal="reader"),
               lambda: svc.hold("alice", principal="producer", reason="x")):
        with pytest.raises(AccessDenied):
            fn()
    assert svc.decryption_key(kid, "pii", principal="admin") == dek and not svc.is_held("alice")
    denied = [e for e in audit.events if e.outcome == DENIED]
    assert [e.action for e in denied] == ["key.forget", "key.hold"]
