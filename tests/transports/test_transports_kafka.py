"""Kafka specifics (librdkafka mock cluster): retry copies that Kafka cannot deduplicate get no
offsets, foreign messages are refused, group positions live in Kafka's own group offsets."""

from __future__ import annotations

import os
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from eventward._internal.log.retry import Backoff
from eventward.errors import TransportError, TransportUnavailable

from .conftest import kafka, port_block


def raw_produce(bootstrap: str, topic: str, value: bytes) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "log_level": 0})
    p.produce(topic, value=value, partition=0)
    assert p.flush(10) == 0


def kafka_messages(bootstrap: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe", "log_level": 0})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        c.close()


def test_retry_copies_are_stored_by_kafka_but_get_no_offsets(kafka_bootstrap: str) -> None:
    a, b = kafka(kafka_bootstrap), kafka(kafka_bootstrap)
    s = "k.copies"
    a.create_stream(s)
    assert a.append(s, "b1", [b"1", b"2", b"3"], b"seal") == 0
    assert b.append(s, "b1", [b"1", b"2", b"3"], b"seal") == 0  # b never saw b1: a copy is produced
    assert kafka_messages(kafka_bootstrap, a.topic(s)) == 2
    assert a.append(s, "b2", [b"4"], b"seal") == 3  # not 6: the copy holds no offsets
    for view in (a, b, kafka(kafka_bootstrap)):
        recs = view.read(s, 0, 100)
        assert [(r.batch, r.offset) for r in recs] == [("b1", 0), ("b1", 1), ("b1", 2), ("b2", 3)]
        assert view.end_offset(s) == 4
    for t in (a, b):
        t.close()


def test_foreign_message_is_refused_and_earlier_events_stay_readable(kafka_bootstrap: str) -> None:
    t = kafka(kafka_bootstrap)
    s = "k.foreign"
    t.create_stream(s)
    t.append(s, "good", [b"a", b"b"], b"seal")
    raw_produce(kafka_bootstrap, t.topic(s), b'{"injected-secret": 1}')
    fresh = kafka(kafka_bootstrap)
    assert [r.data for r in fresh.read(s, 0, 2)] == [b"a", b"b"]
    with pytest.raises(TransportError) as e:
        fresh.read(s, 0, 100)
    assert "injected-secret" not in e.value.message and "Kafka offset 1" in e.value.message
    with pytest.raises(TransportError):
        kafka(kafka_bootstrap).append(s, "after", [b"c"], b"seal")  # no offsets on top of garbage
    t.close()
    fresh.close()


def test_group_positions_are_kafka_group_offsets(kafka_bootstrap: str) -> None:
    t = kafka(kafka_bootstrap)
    s = "k.groups"
    t.create_stream(s)
    t.append(s, "b0", [b"0", b"1", b"2"], b"seal")
    t.append(s, "b1", [b"3", b"4", b"5"], b"seal")
    t.commit("billing", s, 4)  # inside the second batch (Kafka offset 1)
    raw = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "billing", "log_level": 0})
    try:
        tp = raw.committed([TopicPartition(t.topic(s), 0)], timeout=10)[0]
        assert (tp.offset, tp.metadata) == (1, "ew:4")
        # a plain Kafka consumer moves the group to Kafka offset 1 (no eventward metadata)
        raw.commit(offsets=[TopicPartition(t.topic(s), 0, 1)], asynchronous=False)
    finally:
        raw.close()
    assert kafka(kafka_bootstrap).committed("billing", s) == 3  # the first event of that batch
    t.close()


def test_unreachable_cluster_fails_fast() -> None:
    closed_port = port_block(1)
    quick = Backoff(base_s=0.05, cap_s=0.2, budget_s=1.5)
    t = kafka(f"127.0.0.1:{closed_port}", backoff=quick, timeout_s=0.5)
    t0 = time.monotonic()
    with pytest.raises(TransportUnavailable):
        t.streams()
    assert time.monotonic() - t0 < 8
    t.close()


def test_a_trimmed_partition_is_reported_not_renumbered(kafka_bootstrap: str) -> None:
    """The mock keeps ~5 MiB per partition, like a retention limit: offsets of what is left
    cannot be derived, so a new reader must refuse instead of numbering from the wrong base."""
    t = kafka(kafka_bootstrap)
    s = "k.trimmed"
    t.create_stream(s)
    for i in range(8):
        t.append(s, f"b{i}", [os.urandom(100_000)] * 9, b"seal")
    fresh = kafka(kafka_bootstrap)
    with pytest.raises(TransportError, match="retention"):
        fresh.read(s, 0, 10)
    with pytest.raises(TransportError, match="retention"):
        fresh.end_offset(s)
    t.close()
    fresh.close()
