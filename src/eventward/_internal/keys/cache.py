"""A bounded LRU with a TTL, so unwrapped DEKs stay in memory briefly and never without limit.

A million distinct subjects must not mean a million cached keys: entries beyond ``max_entries``
evict the least recently used, and every entry expires ``ttl`` seconds after it was stored.
``max_entries <= 0`` or ``ttl <= 0`` disables caching (every lookup misses).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
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
