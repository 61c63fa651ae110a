"""Producer: refusals leave nothing behind; retries never duplicate; batches are audited."""

from __future__ import annotations

import pytest

from eventward._internal.client.producer import Producer
from eventward._internal.crypto import seal as sealing
from eventward._internal.schema.compiled import compile_schema
from eventward.errors import (
    AccessDenied,
    KeyServiceError,
    OversizeError,
    TransportUnavailable,
    ValidationError,
)
from support_wait import wait_until

from .client_world import ADMIN, INTRUDER, SCHEMA, SENTINEL_EMAIL, TOPIC, TYPE, Version, customer


class FlakyLog:
    """Wraps the embedded log: the next ``fail`` appends raise, before or after storing."""

    def __init__(self, log, fail: int = 1, after_store: bool = False) -> None:
        self.log, self.fail, self.after_store, self.calls = log, fail, after_store, []

    def append(self, stream, batch_id, events, seal):
        self.calls.append((batch_id, tuple(events), seal))
        if self.fail and not self.after_store:
            self.fail -= 1
            raise TransportUnavailable("injected outage")
        first = self.log.append(stream, batch_id, events, seal)
        if self.fail:
            self.fail -= 1
            raise TransportUnavailable("injected lost acknowledgement")
        return first

    def __getattr__(self, name):
        return getattr(self.log, name)


def stored(world) -> list:
    return world.log.read(TOPIC, 0, 1000)


def test_refused_events_leave_nothing_behind(world):
    world.trust.register(INTRUDER, by=ADMIN)
    p = world.producer()
    with pytest.raises(ValidationError) as e:
        p.send(TYPE, customer(1, plan="platinum"))
    assert e.value.path and SENTINEL_EMAIL not in str(e.value)
    with pytest.raises(ValidationError):
        p.send(TYPE, {**customer(1), "extra": "field"})
    assert p.pending() == 0
    with pytest.raises(AccessDenied):
        world.producer(INTRUDER).send(TYPE, customer(1))
    assert world.audit.find("Publish", outcome="denied", principal=INTRUDER, event_type=TYPE)
    first = p.send(TYPE, customer(2))
    p.close()
    [rec] = stored(world)
    assert b'"ewseq":0' in rec.data and first.encode() in rec.data  # refused events consumed no sequence


def test_key_service_outage_fails_closed(world):
    class Down:
        def subject_hash(self, subject):
            return "h" * 64

        def encryption_key(self, subject, cls, *, principal):
            raise KeyServiceError("KMS unreachable")

        def decryption_key(self, kid, cls, *, principal):
            raise KeyServiceError("KMS unreachable")

    from eventward._internal.crypto.fields import FieldEncryptor

    p = world.producer()
    p._encryptor = FieldEncryptor(Down())
    with pytest.raises(KeyServiceError):
        p.send(TYPE, customer(1))
    p.close()
    assert p.pending() == 0 and stored(world) == []


def test_oversize_after_encryption_is_refused(world):
    world.schemas.versions[(TYPE, 2)] = Version(
        TYPE, 2, compile_schema({**SCHEMA, "x-eventward-max-bytes": 900})
    )
    p = world.producer()
    small = customer(1)
    big = customer(
        1, note="n" * 500
    )  # fits the schema's limit as plaintext, not once encrypted and enveloped
    p.send(TYPE, small)
    with pytest.raises(OversizeError):
        p.send(TYPE, big)
    assert p.pending() == 1
    p.close()
    assert len(stored(world)) == 1 and all(len(r.data) <= 900 for r in stored(world))


@pytest.mark.parametrize("after_store", [False, True])
def test_retry_resends_the_same_sealed_batch(world, after_store):
    flaky = FlakyLog(world.log, after_store=after_store)
    p = world.producer(transport=flaky)
    ids = [p.send(TYPE, customer(i)) for i in range(3)]
    with pytest.raises(TransportUnavailable):
        p.flush()
    assert p.pending() == 3
    later = p.send(TYPE, customer(3))  # sending goes on while the batch waits
    assert p.flush() == [*ids, later]
    assert flaky.calls[0] == flaky.calls[1]  # same batch id, same bytes, same seal: nothing re-encrypted
    recs = stored(world)
    assert len(recs) == 4 and len({r.batch for r in recs}) == 2
    seals = [sealing.parse(recs[0].seal), sealing.parse(recs[3].seal)]
    assert [(s.first_seq, s.count) for s in seals] == [(0, 3), (3, 1)]


def test_outage_applies_backpressure_with_bounded_memory(world):
    flaky = FlakyLog(world.log, fail=100)
    p = world.producer(transport=flaky, max_batch=3)
    ids = [p.send(TYPE, customer(i)) for i in range(6)]  # the first full batch waits; three more buffer
    assert isinstance(p.last_error, TransportUnavailable) and p.pending() == 6
    with pytest.raises(TransportUnavailable):
        p.send(TYPE, customer(6))  # refused, not buffered
    assert p.pending() == 6 and stored(world) == []
    flaky.fail = 0
    assert p.flush() == ids
    assert [r.offset for r in stored(world)] == list(range(6))


def test_one_metadata_only_audit_record_per_batch(world):
    with world.producer(max_batch=4) as p:
        for i in range(10):
            p.send(TYPE, customer(i))
    recs = world.audit.find("Publish", outcome="ok")
    assert [(r.meta["count"], r.meta["first_seq"], r.meta["last_seq"]) for r in recs] == [
        (4, 0, 3),
        (4, 4, 7),
        (2, 8, 9),
    ]
    assert all(r.meta["bytes"] > 0 and r.meta["batch"] and r.meta["stream"] == TOPIC for r in recs)
    assert SENTINEL_EMAIL not in repr(world.audit.events)


def test_background_flusher_bounds_the_wait(world):
    p = world.producer(background=True, max_delay_ms=20)
    eid = p.send(TYPE, customer(1))
    recs = wait_until(lambda: stored(world), timeout=5, what="background flush")
    assert [eid.encode() in r.data for r in recs] == [True]
    p.close()


def test_producer_rejects_a_signer_of_another_principal(world):
    from eventward.errors import ConfigError

    with pytest.raises(ConfigError):
        Producer(
            TOPIC,
            principal="x",
            transport=world.log,
            signer=world.trust.signer_for("billing"),
            schemas=world.schemas,
            encryptor=world.enc,
            authorizer=world.auth,
        )


def test_send_many_is_all_or_nothing_and_delivers_like_send(world):
    """A refused event anywhere in the call buffers none of it and uses no sequence number; the
    accepted call seals in batches of at most max_batch with dense sequence numbers, and a
    consumer receives exactly what was sent, in order, decrypted."""
    p = world.producer(max_batch=4)
    with pytest.raises(ValidationError):
        p.send_many(TYPE, [customer(1), customer(2), customer(3, plan="platinum"), customer(4)])
    assert p.pending() == 0 and stored(world) == []
    ids = p.send_many(TYPE, [customer(i) for i in range(10)])
    p.close()
    records = stored(world)
    assert len(ids) == len(set(ids)) == len(records) == 10
    assert [r.data.count(b'"ewseq":%d' % i) for i, r in enumerate(records)] == [1] * 10
    assert len({r.batch for r in records}) == 3  # 4 + 4 + 2
    assert all(SENTINEL_EMAIL.encode() not in r.data for r in records)
    got = world.consumer().poll(100)
    assert [e.id for e in got] == ids
    assert [e.data["email"] for e in got] == [customer(i)["email"] for i in range(10)]


def test_send_many_refused_publish_is_audited_and_buffers_nothing(world):
    world.trust.register(INTRUDER, by=ADMIN)
    p = world.producer(INTRUDER)
    with pytest.raises(AccessDenied):
        p.send_many(TYPE, [customer(1)])
    assert p.pending() == 0
    assert world.audit.find("Publish", outcome="denied", principal=INTRUDER, event_type=TYPE)
