"""SQLite key store: pragmas, constraints, erasure atomicity, typed failures."""

from __future__ import annotations

import os
import sqlite3

import pytest

from eventward._internal.keys.sqlite_store import SQLiteKeyStore
from eventward._internal.keys.store_base import CLASS_SUBJECT, DekRecord, Erasure
from eventward.errors import InputError, KeyStoreUnavailable, LegalHoldError

H1, H2 = "a" * 32, "b" * 32


def rec(kid: str, h: str = H1, cls: str = "pii", version: int = 1, created: float = 10.0) -> DekRecord:
    return DekRecord(kid, h, cls, version, f"{cls}.v1", os.urandom(60), created)


@pytest.fixture
def store(tmp_path):
    s = SQLiteKeyStore(tmp_path / "keys.db", busy_timeout=0.2, create=True)
    yield s
    s.close()


def test_wal_secure_delete_full_sync_and_private_file(store, tmp_path):
    db = store._db
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA secure_delete").fetchone()[0] == 1
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert (tmp_path / "keys.db").stat().st_mode & 0o777 == 0o600


def test_unique_subject_class_version_converges(store):
    assert store.insert_dek(rec("k" * 22))
    assert not store.insert_dek(rec("j" * 22))  # same (subject, class, version), other kid: ignored
    assert store.current_dek(H1, "pii").kid == "k" * 22
    assert store.insert_dek(rec("m" * 22, version=2))
    assert store.current_dek(H1, "pii").version == 2
    assert store.get_dek("j" * 22) is None


def test_erasure_tombstones_and_bumps_epoch_atomically(store):
    store.insert_dek(rec("k" * 22))
    store.insert_dek(rec("p" * 22, cls="payment"))
    store.insert_dek(rec("o" * 22, h=H2))
    e0 = store.epoch()
    e = store.erase_subject(H1, 20.0)
    assert e == Erasure(H1, 20.0, ("payment", "pii"), 2)
    assert store.epoch() == e0 + 1
    assert store.get_dek("k" * 22) is None and store.tombstone("k" * 22) == ("pii", 20.0)
    assert store.get_dek("o" * 22) is not None  # someone else's key survives
    row = store._db.execute("SELECT * FROM tombstones WHERE kid = ?", ("k" * 22,)).fetchone()
    assert len(row) == 3  # kid, class, time: no key material, no subject
    assert store.erasures() == [e]


def test_legal_hold_blocks_erasure_and_nothing_is_deleted(store):
    store.insert_dek(rec("k" * 22))
    store.hold(H1, "case 7", 5.0)
    e0 = store.epoch()
    with pytest.raises(LegalHoldError, match="legal hold"):
        store.erase_subject(H1, 20.0)
    assert store.get_dek("k" * 22) is not None and store.epoch() == e0 and store.erasures() == []
    assert store.release(H1) and not store.release(H1)
    assert store.erase_subject(H1, 21.0).destroyed == 1


def test_class_dek_sentinel_and_non_hashes_can_never_be_erased(store):
    store.insert_dek(rec("c" * 22, h=CLASS_SUBJECT))
    for bad in (CLASS_SUBJECT, "A" * 32, "a" * 31, "' OR 1=1 --"):
        with pytest.raises(InputError):
            store.erase_subject(bad, 1.0)
        with pytest.raises(InputError):
            store.apply_erasure(Erasure(bad, 1.0, (), 0))
    assert store.get_dek("c" * 22) is not None


def test_reapplying_an_erasure_only_removes_keys_created_before_it(store):
    store.insert_dek(rec("k" * 22, created=10.0))
    store.insert_dek(rec("n" * 22, version=2, created=30.0))  # created after the erasure
    e = Erasure(H1, 20.0, ("pii",), 1)
    assert store.apply_erasure(e) == 1
    assert store.apply_erasure(e) == 0  # already known
    assert store.get_dek("k" * 22) is None and store.get_dek("n" * 22) is not None


def test_garbage_database_is_a_typed_error(tmp_path):
    p = tmp_path / "keys.db"
    p.write_bytes(os.urandom(8192))
    with pytest.raises(KeyStoreUnavailable, match="not a database"):
        SQLiteKeyStore(p)


def test_locked_database_is_a_typed_error_and_nothing_is_written(store, tmp_path):
    other = sqlite3.connect(tmp_path / "keys.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(KeyStoreUnavailable, match="locked"):
            store.insert_dek(rec("k" * 22))
        with pytest.raises(KeyStoreUnavailable):
            store.erase_subject(H1, 1.0)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.get_dek("k" * 22) is None
    assert store.insert_dek(rec("k" * 22))  # and the store works once the lock is gone


def test_failed_transaction_rolls_back_everything(store):
    with pytest.raises(RuntimeError), store.transaction():
        store.insert_dek(rec("k" * 22))
        store.hold(H2, "x", 1.0)
        raise RuntimeError("boom")
    assert store.get_dek("k" * 22) is None and store.held(H2) is None
