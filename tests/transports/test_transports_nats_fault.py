"""Fault injection on a real 3-node JetStream cluster (mTLS routes, compiled permissions).

The stream leader is killed with SIGKILL while the SDK producer publishes; bounded retries
ride out the election; the node is restarted. Then every acknowledged event must be
delivered exactly once, with every seal verifying, and offsets must stay dense.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.client_world import PRODUCER, READER, TOPIC, TYPE, World, customer
from eventward._internal.cli.nats import OPERATOR
from eventward._internal.log import natsserver
from eventward._internal.log.retry import Backoff
from eventward.errors import EventwardError, TransportUnavailable
from support_wait import wait_until

from .conftest import nats_client
from .nats_world import Deployment, start_mtls

RIDE_OUT = Backoff(base_s=0.05, cap_s=0.5, budget_s=25.0)  # longer than a JetStream election


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    d = start_mtls(tmp_path_factory.mktemp("cluster"), size=3, principals=[PRODUCER, READER])
    try:
        yield d
    finally:
        d.stop()


def wait_for(cond, timeout: float, what: str) -> None:
    wait_until(cond, timeout=timeout, interval=0.05, what=what)


@pytest.mark.slow  # scale/fault-injection: `make bench` runs it (`pytest -m slow`)
def test_killing_the_stream_leader_loses_and_duplicates_nothing(cluster: Deployment, tmp_path: Path) -> None:
    with cluster.client(OPERATOR, replicas=3, backoff=RIDE_OUT) as op:
        op.create_stream(TOPIC, replicas=3)
        leader = op.stream_leader(TOPIC)
    assert leader in {n.name for n in cluster.nodes}
    world = World(tmp_path / "home")
    transport = cluster.client(PRODUCER, replicas=3, backoff=RIDE_OUT, timeout_s=1.0)
    producer = world.producer(transport=transport, max_batch=100_000, max_delay_ms=3_600_000)
    acked: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def publish() -> None:
        i = 0
        while not stop.is_set() and i < 20_000:
            for _ in range(20):
                producer.send(TYPE, customer(i))
                i += 1
            try:
                acked.extend(producer.flush())
            except TransportUnavailable as e:  # kept by the producer, re-sent by the next flush
                failures.append(e.code)
            except EventwardError as e:
                failures.append(f"unexpected {e.code}")
                return

    th = threading.Thread(target=publish)
    th.start()
    killed = next(n for n in cluster.nodes if n.name == leader)
    try:
        wait_for(lambda: len(acked) >= 200, 30, "publishing to start")
        before_kill = len(acked)
        assert natsserver.kill(killed) is not None
        wait_for(lambda: len(acked) >= before_kill + 200, 40, "publishing to resume after the leader died")
        natsserver.start(killed)
        after_restart = len(acked)
        wait_for(lambda: len(acked) >= after_restart + 200, 30, "publishing with the node back")
    finally:
        stop.set()
        th.join(60)
    assert not th.is_alive()
    assert not [f for f in failures if f.startswith("unexpected")]
    for _ in range(3):  # what the last flush may have left pending
        if producer.pending() == 0:
            break
        acked.extend(producer.flush())
    assert producer.pending() == 0

    with cluster.client(OPERATOR) as op:
        new_leader = op.stream_leader(TOPIC)
    assert new_leader is not None

    reader = cluster.client(READER, timeout_s=2.0, backoff=RIDE_OUT)
    consumer = world.consumer(READER, transport=reader, group="fault-check")
    delivered, stats = world.consume(consumer, idle_timeout=1.0)
    ids = [d.id for d in delivered]
    assert len(ids) == len(set(ids)), "an event was delivered twice"
    assert set(ids) == set(acked), "an acknowledged event was lost (or an unacknowledged one appeared)"
    assert len(acked) == len(set(acked))
    assert stats.refused == {} and stats.gaps == 0 and stats.dead_lettered == 0
    assert all(d.verified for d in delivered)

    # the raw log: dense offsets, each batch stored once, every seal verifying over the stored bytes
    verifier = world.verifier()
    end = reader.end_offset(TOPIC)
    records, pos = [], 0
    while pos < end:
        got = reader.read(TOPIC, pos, 5000)
        records += got
        pos = got[-1].offset + 1
    assert [r.offset for r in records] == list(range(end)) and end == len(acked)
    batches = [r.batch for r in records if r.index == 0]
    assert len(batches) == len(set(batches))
    for r in records:
        verifier.verify_record(r)
    reader.close()
    transport.close()
    world.close()


def test_publish_fails_fast_when_the_server_is_gone_then_retries_without_duplicates(
    nats_node: natsserver.Node,
) -> None:
    """Bounded retries: no server means TransportUnavailable after the budget, not a hang;
    the same batch re-sent after recovery is stored once."""
    t = nats_client(nats_node, backoff=Backoff(base_s=0.05, cap_s=0.3, budget_s=2.0), timeout_s=0.5)
    s = "fault.gone"
    t.create_stream(s)
    assert t.append(s, "before", [b"a"], b"seal") == 0
    natsserver.stop(nats_node)
    try:
        t0 = time.monotonic()
        with pytest.raises(TransportUnavailable):
            t.append(s, "during", [b"b"], b"seal")
        assert time.monotonic() - t0 < 8
    finally:
        natsserver.start(nats_node)
    deadline = time.monotonic() + 15
    while True:
        try:
            first = t.append(s, "during", [b"b"], b"seal")
            break
        except TransportUnavailable:
            if time.monotonic() > deadline:
                raise
    assert first == 1
    assert t.append(s, "during", [b"b"], b"seal") == 1
    assert [(r.batch, r.offset) for r in t.read(s, 0, 10)] == [("before", 0), ("during", 1)]
    t.close()
