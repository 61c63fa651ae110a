"""A read batch's store misses handled a column at a time (issue #16): the AADs packed in one map
(dek.rows_aad), the one-KEK unwrap mapped over the wrapped keys (kms.local._open_one_kek), the
cache filled with one update (DekCache.put_class) and read with two set tests when nothing is
cached (DekCache.get_many). Each is only cheaper: the same AAD bytes, the same cache contents,
and any row the key-by-key path refuses is still refused, alone and typed."""

from __future__ import annotations

import sqlite3
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from eventward._internal.keys.cache import DekCache
from eventward._internal.keys.dek import AAD_V1, AAD_V2, row_aad, rows_aad
from eventward._internal.keys.service import _batch_items
from eventward.errors import KeyDestroyed, KeyIntegrityError, KeyNotFound


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


_TEXT = st.one_of(st.text(max_size=3), st.sampled_from(["pii", "phi", "a" * 22, "b" * 22, "0" * 32, "é"]))
_ROW = st.tuples(
    _TEXT, _TEXT, st.one_of(_TEXT, st.integers(), st.binary(max_size=2)),
    st.one_of(st.integers(-1, 2**64), st.just("1")), st.just("pii:1"), st.just(b"w"),
    st.one_of(st.floats(allow_nan=False), st.just("now")), st.sampled_from([AAD_V2, AAD_V2, AAD_V1, 3]),
)


def _per_row(rows: list[tuple]) -> list[bytes] | None:
    try:
        return [row_aad(r) for r in rows]
    except (AttributeError, TypeError, ValueError, UnicodeError, struct.error):
        return None


@settings(max_examples=400, deadline=None)
@given(st.lists(_ROW, min_size=1, max_size=6))
def test_rows_aad_is_row_aad_of_each_row_or_declines(rows):
    """Never an AAD row_aad would not build (a row it refuses declines the whole batch), and the
    same bytes whenever it answers; the common shape (format 2, one length per text column,
    every row well typed) always answers."""
    got, want = rows_aad(list(zip(*rows, strict=True))), _per_row(rows)
    if got is not None:
        assert got == want
    shaped = all(r[7] != AAD_V1 for r in rows) and all(
        len({len(r[i].encode()) if type(r[i]) is str else -1 for r in rows}) == 1 and type(rows[0][i]) is str
        for i in (0, 1, 2))
    if want is not None and shaped:
        assert got == want


_OPS = st.lists(st.tuples(st.sampled_from(["put_class", "put_many", "advance"]),
                          st.lists(st.sampled_from([f"k{i}" for i in range(12)]), max_size=5),
                          st.sampled_from(["pii", "payment"])), max_size=25)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 9), _OPS)
def test_put_class_holds_what_put_many_holds(max_entries, ops):
    """Generation roll-overs, a key already in the old generation, a class met for the first
    time, TTL expiry: after every step both caches answer every key alike and hold as many."""
    a, b = Clock(), Clock()
    one, many = DekCache(max_entries, 50.0, a), DekCache(max_entries, 50.0, b)
    for n, (op, keys, cls) in enumerate(ops):
        if op == "advance":
            a.t += 20.0
            b.t += 20.0
            continue
        deks = [bytes([n, i]) * 16 for i in range(len(keys))]
        one.put_class(cls, keys, deks)
        many.put_many(zip(keys, [(cls, d) for d in deks], strict=True))
        every = [f"k{i}" for i in range(12)]
        assert one.get_many(every) == many.get_many(every)
        assert len(one) == len(many) <= max_entries


def test_get_many_of_nothing_cached_counts_misses_and_still_finds_hits():
    c = DekCache(100, 60.0, Clock())
    assert c.get_many(iter(["a", "b"])) == [None, None] and (c.hits, c.misses) == (0, 2)
    c.put_class("pii", ["b"], [b"k" * 32])
    c.put_many([("d", ("pii", None))])  # destroyed: a hit that is not a key
    assert c.get_many(["a", "b", "c", "d"]) == [None, ("pii", b"k" * 32), None, ("pii", None)]
    assert (c.hits, c.misses) == (2, 4)


def _keys(svc, n: int, cls: str = "pii") -> list[tuple[str, bytes]]:
    return [svc.encryption_key(f"subject-{i}", cls, principal="writer") for i in range(n)]


def test_attack_a_row_renumbered_or_moved_to_another_subject_is_refused_alone_in_a_batch(open_svc, home, audit):
    """A database writer gives one row another subject hash (same length, so the batch keeps
    its one shape), renumbers another's version, re-dates a third and moves a fourth to another
    class: the AADs are packed at once, yet each of those keys is refused on its own (integrity
    failures audited, nothing cached) and every other key of the batch is served."""
    svc = open_svc()
    keys = _keys(svc, 7)
    db = sqlite3.connect(home.keys_db)
    db.execute("UPDATE deks SET subject_hash = ? WHERE kid = ?", ("f" * 32, keys[0][0]))  # a hash of 32 too
    db.execute("UPDATE deks SET version = version + 1 WHERE kid = ?", (keys[1][0],))
    db.execute("UPDATE deks SET created = created + 1e-6 WHERE kid = ?", (keys[2][0],))
    db.execute("UPDATE deks SET class = 'payment' WHERE kid = ?", (keys[3][0],))
    db.commit()
    db.close()
    svc._drop_caches()
    same_shape = [(k, "pii", None) for i, (k, _) in enumerate(keys) if i != 3]
    assert _batch_items(same_shape, svc.store.wrapped_deks(k for k, _, _ in same_shape)) is not None  # packed at once
    start = len(audit.events)
    got = svc.decryption_keys(same_shape, principal="admin")
    assert [type(got[k, "pii"]) for k, _ in keys[:3]] == [KeyIntegrityError] * 3
    assert [got[k, "pii"] for k, _ in keys[4:]] == [d for _, d in keys[4:]]
    denied = [r for r in audit.events[start:] if r.action == "key.unwrap" and r.outcome == "denied"
              and r.reason == KeyIntegrityError.code]
    assert sum(int(r.meta["count"]) for r in denied) == 3
    svc._drop_caches()
    got = svc.decryption_keys([(k, "pii", None) for k, _ in keys], principal="admin")
    assert isinstance(got[keys[3][0], "pii"], KeyNotFound)
    assert [type(got[k, "pii"]) for k, _ in keys[:3]] == [KeyIntegrityError] * 3
    assert [got[k, "pii"] for k, _ in keys[4:]] == [d for _, d in keys[4:]]
    for k, _ in keys[:4]:
        assert svc.cache.get(k) is None


def test_attack_a_key_erased_after_its_batch_is_never_served_from_the_batch_cache(open_svc):
    """A batch caches its keys with one update (put_class); the subject is then forgotten: the
    next batch refuses that key as destroyed and serves the others from the cache."""
    svc = open_svc()
    keys = _keys(svc, 4)
    svc._drop_caches()
    wanted = [(k, "pii", None) for k, _ in keys]
    first = svc.decryption_keys(wanted, principal="admin")
    assert [first[k, "pii"] for k, _ in keys] == [d for _, d in keys]
    assert [svc.cache.get(k) for k, _ in keys] == [("pii", d) for _, d in keys]
    svc.forget("subject-2", principal="admin")
    again = svc.decryption_keys(wanted, principal="admin")
    assert isinstance(again[keys[2][0], "pii"], KeyDestroyed)
    assert [again[k, "pii"] for i, (k, _) in enumerate(keys) if i != 2] == [d for i, (_, d) in enumerate(keys)
                                                                             if i != 2]
    assert svc.cache.get(keys[2][0]) == ("pii", None)
