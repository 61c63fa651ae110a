"""A read batch's unwrapped keys go into the DEK cache with one update (DekCache.put_class), and a
batch of keys none of which is cached is looked up with two set tests (DekCache.get_many), issue
#16. Only cheaper: the same cache contents, and a key the batch path refuses (tampered row,
erased subject) is refused alone, typed, and never cached or served from the cache."""

from __future__ import annotations

import sqlite3

from hypothesis import given, settings
from hypothesis import strategies as st

from eventward._internal.keys.cache import DekCache
from eventward.errors import KeyDestroyed, KeyIntegrityError, KeyNotFound


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


_OPS = st.lists(st.tuples(st.sampled_from(["put", "put", "advance"]),
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
    """A database writer gives one row another subject hash, renumbers another's version,
    re-dates a third and moves a fourth to another class: each of those keys is refused on its
    own (integrity failures audited, nothing cached) and every other key of the batch is served
    and cached in one update."""
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
    same_shape = [(k, "pii", None) for i, (k, _) in enumerate(keys) if i != 3]  # every row found, one class
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
    assert [svc.cache.get(k) for k, _ in keys[4:]] == [("pii", d) for _, d in keys[4:]]


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
