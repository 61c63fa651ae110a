"""DekCache, the key service's DEK cache: bounded in entries and time like LruTtlCache, but held
as plain dicts of bytes the garbage collector never walks (a consumer of a million subjects
keeps 100,000 keys it never reads again; walking them was a full collection's main cost)."""

from __future__ import annotations

import gc

from eventward._internal.keys.cache import DekCache
from eventward._internal.keys.service import KeyServiceConfig


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_values_round_trip_per_class_and_destroyed():
    c = DekCache(10, 60.0, Clock())
    c.put_many([("k1", ("pii", b"\x00" * 32)), ("k2", ("payment", b"\xff" * 32)), ("k3", ("pii", None))])
    assert c.get_many(["k1", "k2", "k3", "k4"]) == [("pii", b"\x00" * 32), ("payment", b"\xff" * 32),
                                                    ("pii", None), None]
    c.put("k1", ("health", b"\x01" * 32))  # the newer value wins
    assert c.get("k1") == ("health", b"\x01" * 32) and len(c) == 3
    assert (c.hits, c.misses) == (4, 1)
    c.pop("k2")
    assert c.get("k2") is None
    c.clear()
    assert len(c) == 0 and c.get("k1") is None


def test_bounded_by_max_entries_first_in_first_out():
    c = DekCache(1000, 300.0, Clock())
    for i in range(1_000_000):
        c.put(str(i), ("pii", b"k"))
    assert len(c) <= 1000
    assert c.get("999999") == ("pii", b"k") and c.get("998999") is None  # older than max_entries puts
    one = DekCache(1, 300.0, Clock())
    one.put_many([("a", ("pii", b"a")), ("b", ("pii", b"b"))])
    assert len(one) == 1 and one.get("b") == ("pii", b"b") and one.get("a") is None


def test_no_entry_outlives_its_ttl_even_when_read():
    clock = Clock()
    c = DekCache(100, 10.0, clock)
    c.put("a", ("pii", b"a"))
    clock.t += 6
    c.put("b", ("pii", b"b"))
    assert c.get("a") == ("pii", b"a")  # a hit does not renew it
    clock.t += 4
    assert c.get("a") is None
    assert c.get("b") is None  # its generation began with "a": dropped early, never late
    off = DekCache(0, 10.0, clock)
    off.put("a", ("pii", b"a"))
    assert off.get("a") is None and len(off) == 0


def test_the_collector_never_tracks_what_it_holds():
    c = DekCache(100, 300.0, Clock())
    c.put_many((f"k{i}", ("pii", bytes(32))) for i in range(250))  # rotated generations too
    assert len(c) > 0
    assert not gc.is_tracked(c._young) and not gc.is_tracked(c._old)


def test_more_classes_than_slots_are_not_cached_and_not_an_error():
    c = DekCache(10_000, 300.0, Clock())
    c.put_many((f"k{i}", (f"c{i}", b"x")) for i in range(300))
    assert c.get("k0") == ("c0", b"x") and c.get("k299") is None


def test_the_service_caches_unwrapped_keys_in_a_dek_cache(svc):
    kid, dek = svc.encryption_key("alice", "pii", principal="p")
    assert isinstance(svc.cache, DekCache) and svc.cache.max_entries == KeyServiceConfig().cache_max
    svc._drop_caches()
    assert svc.decryption_keys([(kid, "pii", None)], principal="admin")[kid, "pii"] == dek
    assert svc.cache.get(kid) == ("pii", dek)
