"""The read batch's miss path made cheaper (issue #16): the key store reads a batch's rows through
one JSON array of kids (json_each) instead of ``kid IN (?, ...)``, kids are checked for the whole
batch with one regex, and a batch whose every key opened is filled a class at a time. Each is only
cheaper: every outcome is the one the per-key path gives, and a forgotten subject stays unreadable."""

from __future__ import annotations

import sqlite3
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventward._internal.keys import sqlite_store
from eventward._internal.keys.dek import all_kids, is_kid
from eventward._internal.keys.service import KeyServiceConfig
from eventward.errors import AccessDenied, InputError, KeyDestroyed, KeyIntegrityError, KeyNotFound

KID_ALPHABET = string.ascii_letters + string.digits + "-_"


def _keys(svc, n: int, cls: str = "pii", prefix: str = "subject") -> list[tuple[str, bytes]]:
    return [svc.encryption_key(f"{prefix}-{i}", cls, principal="writer") for i in range(n)]


def _outcome(v: object) -> object:
    return v if type(v) is bytes else type(v)


def test_json_read_returns_what_the_in_list_read_returns(svc):
    """wrapped_deks through json_each gives exactly the rows of ``kid IN (...)``, for present,
    absent, repeated and odd kids, and over more than one chunk of the batch."""
    kids = [k for k, _ in _keys(svc, 7)] + [k for k, _ in _keys(svc, 3, "payment")]
    store = svc.store
    assert store._json  # this SQLite has json_each: the fast read is the one tested
    asked = [*kids, "A" * 22, kids[0], "x'); DROP TABLE deks; --", "\u00e9" * 22, ""]
    fast = store.wrapped_deks(asked)
    store._json = False
    try:
        slow = store.wrapped_deks(asked)
    finally:
        store._json = True
    assert fast == slow and sorted(fast) == sorted(kids)
    old_chunk = sqlite_store._IN_CHUNK
    sqlite_store._IN_CHUNK = 3  # several chunks of the batch
    try:
        assert store.wrapped_deks(asked) == fast
    finally:
        sqlite_store._IN_CHUNK = old_chunk


def test_json_read_falls_back_for_kids_json_cannot_carry(svc):
    """A kid orjson refuses (a lone surrogate) is read with bound values, not refused as an outage."""
    (kid, _), = _keys(svc, 1)
    rows = svc.store.wrapped_deks([kid, "\ud800" * 22])
    assert list(rows) == [kid]


def test_a_store_without_json_each_reads_with_bound_values(home, svc, monkeypatch):
    """An SQLite built without JSON1 is detected at open and never asked for json_each."""
    (kid, _), = _keys(svc, 1)
    assert all_kids([kid])
    monkeypatch.setattr(sqlite_store, "_has_json_each", lambda db: False)
    store = sqlite_store.SQLiteKeyStore(home.keys_db)
    try:
        assert store._json is False
        assert list(store.wrapped_deks([kid])) == [kid]
    finally:
        store.close()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(KID_ALPHABET, min_size=20, max_size=24), st.text(max_size=24),
                          st.sampled_from(["A" * 22 + "\n", "A" * 21 + "!", "A" * 22])), max_size=6))
def test_batch_kid_check_never_passes_a_kid_is_kid_refuses(kids):
    if all_kids(kids):
        assert all(is_kid(k) for k in kids)
    if all(type(k) is str and len(k) == 22 and set(k) <= set(KID_ALPHABET) for k in kids):
        assert all_kids(kids)


def test_batch_kid_check_refuses_non_strings():
    assert not all_kids(["A" * 22, None])  # type: ignore[list-item]
    assert not all_kids([b"A" * 22])  # type: ignore[list-item]


def test_mixed_batch_outcomes_equal_the_per_key_outcomes(open_svc):
    """A batch mixing granted and refused classes, a malformed class, malformed kids, a kid asked
    in the wrong class, a destroyed key and keys of two classes all opened: each outcome is the
    one decryption_key gives (the reader is cleared for pii only)."""
    svc = open_svc(KeyServiceConfig(cache_ttl=0))
    pii = _keys(svc, 4)
    pay = _keys(svc, 2, "payment")
    svc.forget("subject-3", principal="admin")
    wanted = [(k, "pii", None) for k, _ in pii] + [(k, "payment", None) for k, _ in pay] + [
        (pii[0][0], "payment", None), ("bad kid!", "pii", None), ("bad kid!", "payment", None),
        (pii[1][0], "NOT A CLASS", None), ("A" * 22 + "\n", "pii", None),
    ]
    for principal in ("admin", "reader"):
        got = svc.decryption_keys(wanted, principal=principal)
        for kid, cls, _ in wanted:
            try:
                want: object = svc.decryption_key(kid, cls, principal=principal)
            except (AccessDenied, KeyDestroyed, KeyNotFound, InputError) as e:
                want = type(e)
            assert _outcome(got[kid, cls]) == want, (principal, kid, cls)
    got = svc.decryption_keys([(k, "pii", None) for k, _ in pii[:3]] + [(k, "payment", None) for k, _ in pay],
                              principal="admin")
    assert [got[k, "pii"] for k, _ in pii[:3]] + [got[k, "payment"] for k, _ in pay] == \
        [d for _, d in pii[:3]] + [d for _, d in pay]


def test_two_class_batch_is_cached_and_audited_per_class(open_svc, audit):
    """Every key of a two-class batch opened: each is cached under its own class and the release
    is one key.unwrap record per class with its count, as the per-key loop recorded it."""
    svc = open_svc()
    pii, pay = _keys(svc, 3), _keys(svc, 2, "payment")
    svc._drop_caches()
    start = len(audit.events)
    wanted = [(k, "pii", None) for k, _ in pii] + [(k, "payment", None) for k, _ in pay]
    got = svc.decryption_keys(wanted, principal="admin", topic="orders", event_type="OrderPlaced")
    assert all(type(v) is bytes for v in got.values())
    assert [svc.cache.get(k) for k, _ in pii] == [("pii", d) for _, d in pii]
    assert [svc.cache.get(k) for k, _ in pay] == [("payment", d) for _, d in pay]
    svc.flush_audit()
    recs = [r for r in audit.events[start:] if r.action == "key.unwrap"]
    assert sorted((r.resource, r.meta["count"], r.meta["unwrapped"]) for r in recs) == [
        ("class:payment", 2, 2), ("class:pii", 3, 3)]


def test_forgotten_subject_stays_unreadable_through_the_json_read(open_svc, home):
    """Resolved once through the batch path, then forgotten: the next batch (cold cache, json_each
    read) finds no row, KeyDestroyed; the wrapped bytes are gone from the table."""
    svc = open_svc()
    (kid, dek), (other, other_dek) = _keys(svc, 2)
    svc._drop_caches()
    wanted = [(kid, "pii", None), (other, "pii", None)]
    assert svc.decryption_keys(wanted, principal="admin")[kid, "pii"] == dek
    svc.forget("subject-0", principal="admin")
    svc._drop_caches()
    again = svc.decryption_keys(wanted, principal="admin")
    assert isinstance(again[kid, "pii"], KeyDestroyed) and again[other, "pii"] == other_dek
    db = sqlite3.connect(home.keys_db)
    try:
        assert db.execute("SELECT count(*) FROM deks WHERE kid = ?", (kid,)).fetchone()[0] == 0
    finally:
        db.close()


def test_one_tampered_key_in_a_one_kek_batch_is_refused_alone(svc):
    """unwrap_many opens a batch under one KEK in one comprehension; a tampered, truncated or
    reformatted wrapped key in it is still that key's KeyIntegrityError and every other key of
    the batch its DEK, as unwrap gives each on its own (an attacker cannot make one bad row cost
    the batch, nor slip one through)."""
    kms = svc.kms
    deks = [bytes([i]) * 32 for i in range(4)]
    kek = kms.wrap("pii", deks[0], b"x")[0]
    wrapped = [kms.wrap("pii", d, b"ctx%d" % i)[1] for i, d in enumerate(deks)]
    items = [(kek, w, b"ctx%d" % i) for i, w in enumerate(wrapped)]
    assert kms.unwrap_many(items) == deks  # the one-KEK batch
    flipped = bytearray(wrapped[1])
    flipped[-1] ^= 1
    reformatted = b"\x02" + wrapped[2][1:]
    for bad in (bytes(flipped), wrapped[1][:20], reformatted):
        batch = [items[0], (kek, bad, items[1][2]), *items[2:]]
        got = kms.unwrap_many(batch)
        assert got[0] == deks[0] and got[2:] == deks[2:]
        assert isinstance(got[1], KeyIntegrityError)
        with pytest.raises(KeyIntegrityError):
            kms.unwrap(*batch[1])
    moved = [(kek, wrapped[0], b"ctx1"), *items[1:]]  # row 0's wrapped bytes under row 1's context
    got = kms.unwrap_many(moved)
    assert isinstance(got[0], KeyIntegrityError) and got[1:] == deks[1:]
