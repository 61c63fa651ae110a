"""A bounded LRU with a TTL, so unwrapped DEKs stay in memory briefly and never without limit.

A million distinct subjects must not mean a million cached keys: entries beyond ``max_entries``
evict the least recently used, and every entry expires ``ttl`` seconds after it was stored.
``max_entries <= 0`` or ``ttl <= 0`` disables caching (every lookup misses).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from itertools import repeat
from operator import add
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LruTtlCache(Generic[K, V]):
    def __init__(self, max_entries: int, ttl: float, clock: Callable[[], float]) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self._clock = clock
        self._data: OrderedDict[K, tuple[V, float]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:  # never the values: they are keys
        return f"LruTtlCache(size={len(self._data)}, max={self.max_entries}, ttl={self.ttl})"

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: K) -> V | None:
        with self._lock:
            item = self._data.get(key)
            if item is None or item[1] <= self._clock():
                if item is not None:
                    del self._data[key]
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return item[0]

    def get_many(self, keys: Iterable[K]) -> list[V | None]:
        """``get`` of each key under one lock and one clock reading (a read batch's keys)."""
        out: list[V | None] = []
        with self._lock:
            data, now, hits = self._data, self._clock(), 0
            for key in keys:
                item = data.get(key)
                if item is None or item[1] <= now:
                    if item is not None:
                        del data[key]
                    out.append(None)
                    continue
                data.move_to_end(key)
                hits += 1
                out.append(item[0])
            self.hits += hits
            self.misses += len(out) - hits
        return out

    def put(self, key: K, value: V) -> None:
        if self.max_entries <= 0 or self.ttl <= 0:
            return
        with self._lock:
            self._data[key] = (value, self._clock() + self.ttl)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def put_many(self, items: Iterable[tuple[K, V]]) -> None:
        """``put`` for many entries under one lock and one clock reading (a read batch's keys)."""
        if self.max_entries <= 0 or self.ttl <= 0:
            return
        with self._lock:
            data, until = self._data, self._clock() + self.ttl
            for key, value in items:
                data[key] = (value, until)
                data.move_to_end(key)
            while len(data) > self.max_entries:
                data.popitem(last=False)

    def pop(self, key: K) -> None:
        with self._lock:
            self._data.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


_NO_CLASS = 0xFF  # DekCache: no class slot left (more than 255 classes): the key is not cached


class DekCache:
    """The key service's DEK cache: kid -> (class, DEK, or None when the key was destroyed),
    bounded by ``max_entries`` and ``ttl`` as LruTtlCache is, built so that the garbage collector
    never walks it.

    A consumer of a million data subjects fills a 100,000-entry cache with keys it never reads
    again. As an LruTtlCache (OrderedDict of (value, expiry) tuples) that cost three tuples per
    key to build and evict, and every full collection walked all 100,000 entries (~10 ms each,
    ~2 us per event at a million subjects). Here each entry is one ``bytes`` (its class's slot
    number, then the DEK) in a plain dict: a dict of str -> bytes is untracked by the collector.

    Eviction is by generation, not per entry: entries go into the young dict; when it holds half
    of ``max_entries`` it becomes the old one and the previous old one is dropped at once. So an
    entry is dropped after at most ``max_entries`` later insertions (first in, first out; a hit
    does not renew it), and a generation expires ``ttl`` seconds after its first entry was stored,
    so no entry outlives ``ttl`` (some leave earlier)."""

    def __init__(self, max_entries: int, ttl: float, clock: Callable[[], float]) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self._clock = clock
        self._half = max(1, max_entries // 2)
        self._young: dict[str, bytes] = {}
        self._old: dict[str, bytes] = {}
        self._young_until = 0.0  # when the young generation expires (ttl after its first entry)
        self._old_until = 0.0
        self._classes: list[str] = []  # slot -> class name
        self._slots: dict[str, bytes] = {}  # class name -> its one-byte slot prefix
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:  # never the values: they are keys
        return f"DekCache(size={len(self)}, max={self.max_entries}, ttl={self.ttl})"

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def _expire(self, now: float) -> None:
        if self._old and now >= self._old_until:
            self._old = {}
        if self._young and now >= self._young_until:
            self._young = {}

    def get(self, key: str) -> tuple[str, bytes | None] | None:
        return self.get_many((key,))[0]

    def get_many(self, keys: Iterable[str]) -> list[tuple[str, bytes | None] | None]:
        """``get`` of each key under one lock and one clock reading (a read batch's keys)."""
        if not isinstance(keys, (list, tuple)):
            keys = list(keys)
        out: list[tuple[str, bytes | None] | None] = []
        with self._lock:
            self._expire(self._clock())
            if self._young.keys().isdisjoint(keys) and self._old.keys().isdisjoint(keys):
                # nothing cached (a consumer of many subjects): two set tests, no loop per key
                self.misses += len(keys)
                return [None] * len(keys)
            young, old, classes, hits = self._young.get, self._old.get, self._classes, 0
            for key in keys:
                v = young(key) or old(key)
                if v is None:
                    out.append(None)
                    continue
                hits += 1
                out.append((classes[v[0]], v[1:] or None))
            self.hits += hits
            self.misses += len(out) - hits
        return out

    def put(self, key: str, value: tuple[str, bytes | None]) -> None:
        self.put_many(((key, value),))

    def put_many(self, items: Iterable[tuple[str, tuple[str, bytes | None]]]) -> None:
        """``put`` for many entries under one lock and one clock reading (a read batch's keys)."""
        if self.max_entries <= 0 or self.ttl <= 0:
            return
        with self._lock:
            now = self._clock()
            self._expire(now)
            young, slots, half = self._young, self._slots, self._half
            for key, (cls, dek) in items:
                slot = slots.get(cls)
                if slot is None:
                    slot = self._slot(cls)
                    if slot is None:
                        continue
                if len(young) >= half and key not in young:  # full: it becomes the old generation
                    self._old, self._old_until = (young, self._young_until) if self.max_entries > 1 else ({}, 0.0)
                    young = self._young = {}
                if not young:
                    self._young_until = now + self.ttl
                self._old.pop(key, None)  # one entry per kid: the newer one
                young[key] = slot + dek if dek is not None else slot

    def put_class(self, cls: str, keys: Sequence[str], deks: Sequence[bytes]) -> None:
        """``put_many`` of ``keys`` of one class with their DEKs (a read batch's unwraps): one
        dict update instead of a loop when they fit in the young generation and none is in the
        old one (so the loop would roll no generation and drop no older entry); else put_many."""
        if self.max_entries <= 0 or self.ttl <= 0:
            return
        with self._lock:
            now = self._clock()
            self._expire(now)
            young, slot = self._young, self._slots.get(cls)
            if slot is not None and len(young) + len(keys) <= self._half and (
                not self._old or self._old.keys().isdisjoint(keys)
            ):
                if not young:
                    self._young_until = now + self.ttl
                young.update(zip(keys, map(add, repeat(slot), deks), strict=True))
                return
        self.put_many(zip(keys, zip(repeat(cls), deks), strict=True))

    def _slot(self, cls: str) -> bytes | None:
        if len(self._classes) >= _NO_CLASS:
            return None
        slot = self._slots[cls] = bytes((len(self._classes),))
        self._classes.append(cls)
        return slot

    def pop(self, key: str) -> None:
        with self._lock:
            self._young.pop(key, None)
            self._old.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._young = {}
            self._old = {}

    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
