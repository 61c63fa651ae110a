"""Attacks on the stored log: every change is detected, and the first bad index is named."""

from __future__ import annotations

import sqlite3

import orjson
import pytest

from eventward._internal.audit.log import AuditLog
from eventward._internal.audit.verify import verify_log
from eventward._internal.crypto import merkle
from eventward.errors import AuditIntegrityError

from .helpers import backup, fill, flip, raw, rebuild_tree, restore, tamper

N = 100


@pytest.fixture
def db(home):
    with AuditLog.open(home) as log:
        fill(log, N)
    return home.audit_db


def failure(db, **kw) -> AuditIntegrityError:
    report = verify_log(db, **kw)
    assert not report.ok, "tampering went unnoticed"
    with pytest.raises(AuditIntegrityError):
        report.raise_for_error()
    return report.error


def body(db, idx: int) -> bytes:
    conn = sqlite3.connect(db)
    try:
        return bytes(conn.execute("SELECT body FROM records WHERE idx = ?", (idx,)).fetchone()[0])
    finally:
        conn.close()


def test_untouched_log_verifies(db):
    report = verify_log(db)
    assert report.ok and report.size == N and report.records_checked == N
    assert report.nodes_checked == sum(N >> lvl for lvl in range(1, N.bit_length()))
    with AuditLog.open_readonly(db) as ro:
        assert report.root == ro.root()


@pytest.mark.parametrize("idx", [0, 1, 37, 64, N - 1])
@pytest.mark.parametrize("at", [2, 40, -3])
def test_one_changed_byte_in_a_record_is_named(db, idx, at):
    original = body(db, idx)
    tamper(db, "UPDATE records SET body = ? WHERE idx = ?", flip(original, at % len(original)), idx)
    assert failure(db).index == idx


@pytest.mark.parametrize("idx", [0, 50, N - 1])
def test_one_changed_byte_in_a_stored_leaf_hash_is_named(db, idx):
    tamper(db, "UPDATE records SET leaf = ? WHERE idx = ?", flip(bytes(32), idx % 32), idx)
    assert failure(db).index == idx


@pytest.mark.parametrize(("level", "j"), [(1, 0), (1, 21), (2, 7), (3, 5), (6, 0)])
def test_one_changed_byte_in_a_stored_node_is_named(db, level, j):
    conn = raw(db)
    (h,) = conn.execute("SELECT hash FROM nodes WHERE level = ? AND idx = ?", (level, j)).fetchone()
    conn.execute("UPDATE nodes SET hash = ? WHERE level = ? AND idx = ?", (flip(bytes(h), 5), level, j))
    conn.close()
    err = failure(db)
    assert err.index == j << level and err.details["level"] == level
    assert err.details["range"] == (j << level, (j + 1) << level)


def test_deleted_node_is_detected(db):
    tamper(db, "DELETE FROM nodes WHERE level = 2 AND idx = 3")
    err = failure(db)
    assert err.index == 12 and "missing" in err.message


def test_extra_node_is_detected(db):
    tamper(db, "INSERT INTO nodes (level, idx, hash) VALUES (1, 999, ?)", bytes(32))
    assert "beyond" in failure(db).message


@pytest.mark.parametrize("idx", [0, 42, 43])
def test_deleted_record_is_named(db, idx):
    tamper(db, "DELETE FROM records WHERE idx = ?", idx)
    err = failure(db)
    assert err.index == idx and "missing" in err.message


def test_deleted_and_renumbered_records_are_named(db):
    conn = raw(db)
    conn.execute("DELETE FROM records WHERE idx = 30")
    conn.execute("UPDATE records SET idx = idx - 1 WHERE idx > 30")  # close the gap
    conn.close()
    assert failure(db).index == 30


def test_truncated_tail_is_detected(db):
    tamper(db, "DELETE FROM records WHERE idx >= 90")
    assert failure(db).index == 90


@pytest.mark.parametrize(("a", "b"), [(10, 11), (20, 57), (33, 34)])
def test_reordered_records_are_named(db, a, b):
    conn = raw(db)
    conn.execute("UPDATE records SET idx = -1 WHERE idx = ?", (a,))
    conn.execute("UPDATE records SET idx = ? WHERE idx = ?", (a, b))
    conn.execute("UPDATE records SET idx = ? WHERE idx = -1", (b,))
    conn.close()
    assert failure(db).index == a


def _insert_forged(db, k: int) -> None:
    """Shift records k.. up by one and insert a well-formed record claiming index k."""
    conn = raw(db)
    conn.execute("UPDATE records SET idx = -idx - 1 WHERE idx >= ?", (k,))
    conn.execute("UPDATE records SET idx = -idx WHERE idx < 0")
    forged = orjson.loads(body(db, 0))
    forged.update(index=k, principal="mallory", action="key.unwrap")
    data = orjson.dumps(forged, option=orjson.OPT_SORT_KEYS)
    conn.execute("INSERT INTO records (idx, leaf, body) VALUES (?, ?, ?)", (k, merkle.leaf_hash(data), data))
    conn.close()


def test_record_inserted_in_the_middle_is_named(db):
    _insert_forged(db, 40)
    assert failure(db).index == 40


def test_record_inserted_at_an_odd_index_is_localized_to_its_pair(db):
    _insert_forged(db, 41)
    err = failure(db)
    lo, hi = err.details["range"]
    assert lo <= 41 < hi and hi - lo == 2 and err.index == lo


def test_record_rewritten_with_its_leaf_hash_is_localized_to_its_pair(db):
    forged = orjson.loads(body(db, 66))
    forged["principal"] = "someone-else"
    data = orjson.dumps(forged, option=orjson.OPT_SORT_KEYS)
    tamper(db, "UPDATE records SET body = ?, leaf = ? WHERE idx = 66", data, merkle.leaf_hash(data))
    err = failure(db)
    assert err.details["range"] == (66, 68) and err.index == 66


def test_non_canonical_record_bytes_are_refused_even_with_a_matching_leaf(db):
    data = orjson.dumps(orjson.loads(body(db, 5)), option=orjson.OPT_INDENT_2)
    tamper(db, "UPDATE records SET body = ?, leaf = ? WHERE idx = 5", data, merkle.leaf_hash(data))
    assert failure(db).index == 5


def test_wholesale_rewrite_is_caught_by_signed_checkpoints_and_localized(home):
    with AuditLog.open(home) as log:
        fill(log, 50)
        log.checkpoint()
        fill(log, 50, start=50)
        cp = log.checkpoint()
    forged = orjson.loads(body(home.audit_db, 70))
    forged["outcome"] = "denied"
    data = orjson.dumps(forged, option=orjson.OPT_SORT_KEYS)
    tamper(home.audit_db, "UPDATE records SET body = ?, leaf = ? WHERE idx = 70", data, merkle.leaf_hash(data))
    rebuild_tree(home.audit_db)
    with AuditLog.open(home) as log:
        assert verify_log(log.path).ok  # without signatures a thorough rewrite is self-consistent...
        err = failure(log.path, public_key=log.verifier)  # ...but the signed checkpoints disagree
        assert err.index == 50 and err.details["range"] == (50, 100) and "fork" in err.message
        assert "fork" in failure(log.path, public_key=log.verifier, checkpoint=cp.text).message


def test_rollback_to_an_earlier_copy_is_detected_against_a_saved_checkpoint(home, tmp_path):
    copy = tmp_path / "audit-at-60.db"
    with AuditLog.open(home) as log:
        fill(log, 60)
        backup(home.audit_db, copy)
        fill(log, 40, start=60)
        saved = log.checkpoint().text
        vkey = log.verifier.vkey()
    restore(copy, home.audit_db)
    assert verify_log(home.audit_db).ok  # the copy is internally consistent
    err = failure(home.audit_db, checkpoint=saved, public_key=vkey)
    assert "rollback" in err.message and err.index == 60


def test_fork_of_the_same_size_is_detected_against_a_saved_checkpoint(home, tmp_path):
    with AuditLog.open(home) as log:
        fill(log, 30)
        saved = log.checkpoint().text
        vkey = log.verifier.vkey()
    # The attacker rebuilds a log of the same size with different history, using the real key.
    home.audit_db.unlink()
    with AuditLog.open(home) as log:
        fill(log, 30, start=1000)
        assert log.size() == 30
    err = failure(home.audit_db, checkpoint=saved, public_key=vkey)
    assert "fork" in err.message and err.index == 0


def test_log_that_extends_a_saved_checkpoint_verifies_against_it(home):
    with AuditLog.open(home) as log:
        fill(log, 33)
        saved = log.checkpoint().text
        fill(log, 70, start=33)
        report = verify_log(log, checkpoint=saved)
        assert report.ok and report.checkpoint.size == 33 and report.checkpoints_checked == 2


def test_tampered_stored_checkpoint_is_reported(home):
    with AuditLog.open(home) as log:
        fill(log, 10)
        cp = log.checkpoint()
    tamper(home.audit_db, "UPDATE checkpoints SET text = ?", cp.text.replace("\n10\n", "\n9\n"))
    with AuditLog.open(home) as log:
        err = failure(log.path, public_key=log.verifier)
    assert "stored checkpoint #1" in err.message and "signature" in err.message


def test_progress_is_reported_up_to_the_total(db):
    seen = []
    assert verify_log(db, progress=lambda done, total: seen.append((done, total))).ok
    assert seen[-1] == (N, N)


def test_record_stored_at_a_negative_index_is_detected(db):
    tamper(db, "INSERT INTO records (idx, leaf, body) SELECT -1, leaf, body FROM records WHERE idx = 0")
    err = failure(db)
    assert err.index == 0 and "stored at -1" in err.message
