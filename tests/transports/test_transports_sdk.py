"""The Producer/Consumer SDK runs unchanged on every transport: sealed, encrypted events go in,
the same events come out verified and decrypted, once each, and the group position persists."""

from __future__ import annotations

from pathlib import Path

from client.client_world import PRODUCER, READER, TYPE, World, customer
from eventward._internal.log import framing
from eventward._internal.log.nats import subject_for
from eventward._internal.policy.base import PUBLISH, SUBSCRIBE

from .conftest import Backend, nats_client
from .nats_world import raw_publish


def test_sdk_round_trip_on_every_transport(backend: Backend, tmp_path: Path) -> None:
    world = World(tmp_path / "home")
    try:
        topic = backend.stream("sdk")
        world.auth.grant(PRODUCER, PUBLISH, ("Topic", topic))
        world.auth.grant(READER, SUBSCRIBE, ("Topic", topic))
        producer = world.producer(topic=topic, transport=backend.open(), max_batch=25)
        sent = [producer.send(TYPE, customer(i)) for i in range(120)]
        producer.close()
        assert producer.pending() == 0
        consumer = world.consumer(READER, topic, transport=backend.open(), group="sdk")
        got, stats = world.consume(consumer)
        assert [d.id for d in got] == sent
        assert [d.data["customer_id"] for d in got] == [f"c-{i}" for i in range(120)]
        assert all(d.verified for d in got) and stats.refused == {}
        consumer.close()
        restarted = world.consumer(READER, topic, transport=backend.open(), group="sdk")
        again, _ = world.consume(restarted)
        assert again == []  # the group's committed position survived in the transport
    finally:
        world.close()


def test_a_batch_forged_directly_on_the_broker_is_refused_by_the_consumer(nats_node, tmp_path: Path) -> None:
    """An attacker with raw publish rights writes a well-framed batch that continues the offsets
    (so the transport accepts it) but tampers with an event: the seal check refuses it."""
    world = World(tmp_path / "home")
    try:
        topic = "sdk.forged"
        world.auth.grant(PRODUCER, PUBLISH, ("Topic", topic))
        world.auth.grant(READER, SUBSCRIBE, ("Topic", topic))
        t = nats_client(nats_node)
        producer = world.producer(topic=topic, transport=t, max_batch=5)
        sent = [producer.send(TYPE, customer(i)) for i in range(5)]
        producer.close()
        genuine = t.read(topic, 0, 5)
        tampered = genuine[0].data.replace(b'"plan":"pro"', b'"plan":"free"')
        assert tampered != genuine[0].data
        raw_publish(
            nats_node.url(tls=False),
            subject_for(topic),
            framing.encode("forged-batch", [tampered], genuine[0].seal),
            {"Ew-Offset": "5", "Ew-Count": "1", "Nats-Expected-Last-Sequence": "1"},
        )
        assert t.end_offset(topic) == 6  # the transport stores bytes; it cannot judge them
        got, stats = world.consume(world.consumer(READER, topic, transport=nats_client(nats_node)))
        assert [d.id for d in got] == sent
        assert sum(stats.refused.values()) == 1 and stats.delivered == 5
    finally:
        world.close()
