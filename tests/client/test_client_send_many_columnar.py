"""send_many's per-call path (ids drawn together, validate_many, encrypt_many): all or nothing
when encryption fails mid-call, the same records with or without the batch calls, and event
ids that are RFC 4122 version 4 UUIDs, unique across the pool and the batch draw."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from eventward._internal.client.envelopes import EnvelopeBuilder
from eventward._internal.crypto.fields import FieldEncryptor
from eventward._internal.log.embedded import EmbeddedLog
from eventward.errors import InputError, KMSUnavailable, ValidationError

from .client_world import SENTINEL_EMAIL, TOPIC, TYPE, Version, customer


def stored(world) -> list:
    return world.log.read(TOPIC, 0, 1000)


def test_new_ids_are_unique_version_4_uuids_from_pool_and_batch():
    b = EnvelopeBuilder("p")
    ids = [b.new_id() for _ in range(10)] + b.new_ids(300) + b.new_ids(5) + b.new_ids(0) + [b.new_id()]
    assert len(ids) == len(set(ids)) == 316
    for i in ids:
        u = uuid.UUID(i)
        assert u.version == 4 and u.variant == uuid.RFC_4122 and str(u) == i
    assert b.new_ids(0) == [] and b.new_ids(-1) == []


def test_a_key_failure_mid_call_buffers_nothing_and_uses_no_sequence_number(world, monkeypatch):
    real = world.keys.encryption_key

    def flaky(subject: Any, cls: str, **kw: Any) -> Any:
        if subject == "c-3":
            raise KMSUnavailable("kms is unreachable")
        return real(subject, cls, **kw)

    monkeypatch.setattr(world.keys, "encryption_key", flaky)
    p = world.producer(max_batch=4)
    with pytest.raises(KMSUnavailable):
        p.send_many(TYPE, [customer(i) for i in range(6)])
    assert p.pending() == 0
    monkeypatch.setattr(world.keys, "encryption_key", real)
    ids = p.send_many(TYPE, [customer(i) for i in range(3)])
    p.close()
    records = stored(world)
    assert [r.data.count(b'"ewseq":%d' % i) for i, r in enumerate(records)] == [1, 1, 1]
    assert [e.id for e in world.consumer().poll(10)] == ids


class _EncryptOnly:
    """A FieldCipher with ``encrypt`` alone (an adapter): send_many takes the per-event path."""

    def __init__(self, inner: FieldEncryptor) -> None:
        self.inner = inner

    def encrypt(self, *a: Any, **kw: Any) -> Any:
        return self.inner.encrypt(*a, **kw)


class _ManyVersion(Version):
    def validate_many(self, events: Any) -> None:
        self.compiled.validate_many(events)


def test_the_batch_calls_and_the_per_event_path_store_the_same_events(world):
    world.schemas.versions[(TYPE, 1)] = _ManyVersion(TYPE, 1, world.schemas.versions[(TYPE, 1)].compiled)
    batch = world.producer()
    with pytest.raises(ValidationError):
        batch.send_many(TYPE, [customer(1), customer(2, plan="gold"), customer(3, plan="gold")])
    assert batch.pending() == 0
    ids = batch.send_many(TYPE, [customer(i) for i in range(4)])
    batch.close()
    single = world.producer()
    single._encryptor = _EncryptOnly(world.enc)
    ids += single.send_many(TYPE, [customer(i) for i in range(4, 8)])
    single.close()
    records = stored(world)
    assert len(records) == 8 and all(SENTINEL_EMAIL.encode() not in r.data for r in records)
    got = world.consumer().poll(20)
    assert [e.id for e in got] == ids
    assert [e.data for e in got] == [customer(i) for i in range(8)]


def test_embedded_append_stores_exact_bytes_of_any_buffer_and_refuses_others(tmp_path):
    log = EmbeddedLog(tmp_path / "log.db")
    try:
        log.create_stream("s")
        with pytest.raises(InputError):
            log.append("s", "b0", [b"ok", "not bytes"], b"seal")  # type: ignore[list-item]
        assert log.end_offset("s") == 0 and log.read("s", 0, 10) == []
        assert log.append("s", "b1", [b"a", bytearray(b"bb"), memoryview(b"ccc")], b"seal") == 0
        assert log.append("s", "b2", (b"d",), b"seal2") == 3
        assert log.append("s", "b1", [b"a", b"bb", b"ccc"], b"seal") == 0  # a retry stores nothing
        got = log.read("s", 0, 10)
        assert [(r.offset, r.data, r.batch, r.index) for r in got] == [
            (0, b"a", "b1", 0), (1, b"bb", "b1", 1), (2, b"ccc", "b1", 2), (3, b"d", "b2", 0)
        ]
        assert all(type(r.data) is bytes for r in got) and log.end_offset("s") == 4
    finally:
        log.close()
