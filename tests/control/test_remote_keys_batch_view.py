"""RemoteKeys' batch view: the keys of the last prepared call and of the last prefetched read
batch are looked up per event without the LRU's lock, but keep every bound the cache has: the
TTL, the per-key use bound, erasure notices and ``clear`` (nothing is served from the view that
the cache itself would no longer serve)."""

from __future__ import annotations

from typing import Any

import pytest

from eventward._internal.control.client import RemoteKeys
from eventward.errors import KeyNotFound

P, T, E = "orders-svc", "orders", "OrderPlaced"


class _API:
    principal = P

    def __init__(self) -> None:
        self.enc: list[list[Any]] = []
        self.dec: list[list[Any]] = []
        self.generation = 0  # bumped to hand out new keys (after an erasure)

    def encryption_keys(self, topic: str, event_type: str, wanted: Any) -> list[tuple[str, bytes, str | None]]:
        self.enc.append(list(wanted))
        return [(f"k{self.generation}-{s}-{c}", bytes([self.generation]) * 32, f"h-{s}") for s, c, _ in wanted]

    def decryption_keys(self, topic: str, event_type: str, wanted: Any) -> dict[str, bytes | str]:
        self.dec.append(list(wanted))
        return {kid: bytes([self.generation]) * 32 for kid, _, _ in wanted}


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _keys(**kw: Any) -> tuple[RemoteKeys, _API, _Clock]:
    api, clock = _API(), _Clock()
    return RemoteKeys(api, clock=clock, **kw), api, clock  # type: ignore[arg-type]


def _enc(keys: RemoteKeys, subject: str) -> tuple[str, bytes]:
    return keys.encryption_key(subject, "pii", principal=P, topic=T, event_type=E)


def _dec(keys: RemoteKeys, kid: str) -> bytes:
    return keys.decryption_key(kid, "pii", principal=P, topic=T, event_type=E, subject_hash="h")


def test_prepared_keys_are_served_without_requests_and_count_their_uses() -> None:
    keys, api, _ = _keys(max_uses=3)
    keys.prepare(T, E, [("a", "pii", 1), ("b", "pii", 1)])
    assert [_enc(keys, "a")[0] for _ in range(3)] == ["k0-a-pii"] * 3
    assert keys.subject_hash("b") == "h-b" and len(api.enc) == 1
    api.generation = 1
    assert _enc(keys, "a")[0] == "k1-a-pii"  # its 3 uses spent: asked again, never a fourth use
    assert len(api.enc) == 2


def test_the_view_expires_with_the_cache() -> None:
    keys, api, clock = _keys(ttl=60.0)
    keys.prepare(T, E, [("a", "pii", 1)])
    keys.prefetch(T, E, [("kid-1", "pii", "h")])
    assert _dec(keys, "kid-1") == bytes(32) and len(api.dec) == 1
    clock.now += 61
    api.generation = 1
    assert _enc(keys, "a")[0] == "k1-a-pii" and len(api.enc) == 2
    assert _dec(keys, "kid-1") == bytes([1]) * 32 and len(api.dec) == 2
    with pytest.raises(KeyNotFound):  # its pseudonym expired too: the call must be prepared again
        keys.subject_hash("zz")


def test_the_view_holds_one_call_or_read_batch() -> None:
    keys, api, _ = _keys()
    keys.prepare(T, E, [(f"s{i}", "pii", 1) for i in range(50)])
    keys.prepare(T, E, [("s0", "pii", 1)])
    assert list(keys._hot_enc) == [("s0", "pii", T, E)]  # bounded by the last call
    assert _enc(keys, "s7")[0] == "k0-s7-pii" and len(api.enc) == 1  # still in the LRU
    keys.prefetch(T, E, [(f"kid-{i}", "pii", "h") for i in range(50)])
    keys.prefetch(T, E, [("kid-1", "pii", "h")])
    assert list(keys._hot_dec) == ["kid-1"] and len(api.dec) == 1  # a cached key is not asked again


def test_attack_an_erasure_notice_stops_the_batch_view_at_once() -> None:
    """A producer or consumer in the middle of a batch when the erasure notice arrives: the next
    event asks the control plane (which answers with new keys, or ``erased``), never the view."""
    keys, api, _ = _keys()
    keys.prepare(T, E, [("alice", "pii", 1)])
    keys.prefetch(T, E, [("kid-alice", "pii", "h")])
    assert _enc(keys, "alice")[1] == bytes(32) and _dec(keys, "kid-alice") == bytes(32)
    keys.forget_subjects(["h-alice"])
    api.generation = 1
    assert _enc(keys, "alice") == ("k1-alice-pii", bytes([1]) * 32)
    assert _dec(keys, "kid-alice") == bytes([1]) * 32
    with pytest.raises(KeyNotFound):
        keys.subject_hash("alice-never-prepared")
    assert len(api.enc) == 2 and len(api.dec) == 2
    keys.prefetch(T, E, [("kid-bob", "pii", "h")])
    keys.clear()
    assert _dec(keys, "kid-bob") == bytes([1]) * 32 and len(api.dec) == 4  # clear drops the view too
