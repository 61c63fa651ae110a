"""Partitioned topics on a real nats-server with policy-compiled permissions: the partition
streams of a topic are granted exactly to the topic's principals, and the SDK produces to and
consumes from them (one group, two members, every event once)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client.client_world import PRODUCER, READER, TYPE, World, customer
from eventward._internal.cli.nats import OPERATOR
from eventward._internal.client.consumer import Consumer
from eventward._internal.client.replay import ReplayGuard
from eventward._internal.log.nats import NatsTransport
from eventward._internal.log.partitions import partition_streams
from eventward._internal.policy.base import PUBLISH, SUBSCRIBE
from eventward.errors import AccessDenied

from .conftest import FAST
from .nats_world import OPERATOR_PASSWORD, Deployment, start_passwords

TOPIC = "parted"
POLICY = f"""
principals:
  {PRODUCER}: {{type: service, roles: [writer]}}
  {READER}: {{type: service, roles: [reader]}}
  intruder: {{type: service, roles: [elsewhere]}}
roles:
  writer: [{{allow: publish, topic: {TOPIC}}}]
  reader: [{{allow: subscribe, topic: {TOPIC}}}]
  elsewhere: [{{allow: publish, topic: other}}]
resources:
  Topic:
    {TOPIC}: {{partitions: 2}}
"""
PASSWORDS = {PRODUCER: "pw-prod-77e1", READER: "pw-read-2b90", "intruder": "pw-intr-c4d3"}
P1 = f"{TOPIC}.p1"


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    d = start_passwords(tmp_path_factory.mktemp("partitions"), PASSWORDS, policy=POLICY)
    try:
        with NatsTransport(d.urls, user=OPERATOR, password=OPERATOR_PASSWORD, backoff=FAST, timeout_s=2) as op:
            for s in [*partition_streams(TOPIC, 2), f"{TOPIC}.dlq", "other"]:
                op.create_stream(s)
        yield d
    finally:
        d.stop()


def login(d: Deployment, user: str) -> NatsTransport:
    return NatsTransport(d.urls, user=user, password=PASSWORDS[user], backoff=FAST, timeout_s=2)


def refused_fast(fn: Any) -> None:
    t0 = time.monotonic()
    with pytest.raises(AccessDenied):
        fn()
    assert time.monotonic() - t0 < 1.5, "a denial must not be retried like an outage"


def test_attack_principal_without_the_topic_cannot_publish_to_its_partition(dep: Deployment) -> None:
    """The intruder may publish on ``other`` only: the partition stream ``parted.p1`` is part of
    ``parted`` and the broker refuses it, as it refuses ``parted`` itself."""
    with login(dep, "intruder") as intruder, login(dep, PRODUCER) as writer:
        before = writer.end_offset(P1)
        refused_fast(lambda: intruder.append(P1, "forged-p1", [b"fake"], b"seal"))
        refused_fast(lambda: intruder.append(TOPIC, "forged-p0", [b"fake"], b"seal"))
        refused_fast(lambda: intruder.read(P1, 0, 10))
        assert writer.end_offset(P1) == before  # nothing forged was stored


def test_partition_streams_are_granted_with_the_topic(dep: Deployment) -> None:
    with login(dep, PRODUCER) as writer, login(dep, READER) as reader:
        first = writer.append(P1, f"grant-check-{time.time_ns()}", [b"x"], b"seal")
        assert [r.offset for r in reader.read(P1, first, 10)] == [first]
        refused_fast(lambda: reader.append(P1, "reader-forged", [b"y"], b"seal"))  # subscribe is not publish
        reader.commit("grp", P1, first + 1)
        assert reader.committed("grp", P1) == first + 1


def test_sdk_group_members_on_nats_partitions_see_every_event_once(dep: Deployment, tmp_path: Path) -> None:
    world = World(tmp_path / "home")
    try:
        world.auth.grant(PRODUCER, PUBLISH, ("Topic", TOPIC))
        world.auth.grant(READER, SUBSCRIBE, ("Topic", TOPIC))
        with login(dep, PRODUCER) as t:
            starts = {s: t.end_offset(s) for s in partition_streams(TOPIC, 2)}
            p = world.producer(topic=TOPIC, transport=t, partitions=2, max_batch=10)
            sent = [p.send(TYPE, customer(i)) for i in range(40)]
            p.close()
        with login(dep, READER) as rt:  # the group starts after what the other tests wrote
            for s, start in starts.items():
                rt.commit("nats-grp", s, start)
        got: list[Any] = []
        for m in range(2):
            with login(dep, READER) as rt:
                guard = ReplayGuard.open(world.home, f"nats-grp#{m}")
                world._closers.append(guard)
                c = Consumer(TOPIC, principal=READER, transport=rt, verifier=world.verifier(),
                             schemas=world.schemas, encryptor=world.enc, authorizer=world.auth, guard=guard,
                             dlq=world.dlq(READER, TOPIC, transport=rt), audit=world.audit, group="nats-grp",
                             from_beginning=True, partition_count=2, partition_of=(m, 2))
                mine, stats = world.consume(c)
                assert not stats.refused
                assert {d.stream for d in mine} <= {partition_streams(TOPIC, 2)[m]}
                got += mine
                for s in c.streams:
                    assert rt.committed("nats-grp", s) == rt.end_offset(s)
        assert Counter(d.id for d in got) == Counter(sent)
        with login(dep, READER) as rt:
            assert sum(rt.end_offset(s) - starts[s] for s in starts) == 40
            assert all(rt.end_offset(s) > starts[s] for s in starts)  # both partitions got events
    finally:
        world.close()
