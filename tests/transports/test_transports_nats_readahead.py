"""NATS read-ahead (log/nats.py): while a reader works on one page the transport fetches the next.

It must only ever be a cache of what a read at that offset returns: the same records, a page
that reached the end completed live, nothing skipped or lost when a reader stops mid read-ahead,
and a batch forged on the broker still refused by the consumer when it arrives read ahead."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client.client_world import PRODUCER, READER, TYPE, World, customer
from eventward._internal.client.types import Delivered
from eventward._internal.log import framing, natsserver
from eventward._internal.log.nats import NatsTransport, subject_for
from eventward._internal.log.retry import Backoff
from eventward._internal.policy.base import PUBLISH, SUBSCRIBE
from eventward.errors import EventwardError

from .conftest import nats_client
from .nats_world import raw_publish

SEAL = b"s" * 64


def _stream() -> str:
    return f"ra.{uuid.uuid4().hex[:12]}"


def _append(t: NatsTransport, stream: str, batches: int, size: int = 5) -> None:
    for _ in range(batches):
        t.append(stream, uuid.uuid4().hex, [os.urandom(20) for _ in range(size)], SEAL)


def _wait_ahead_done(t: NatsTransport, stream: str, offset: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        entry = t._ahead.get((stream, offset))
        if entry is not None and entry[0].done():
            return
        time.sleep(0.01)
    raise AssertionError(f"no finished read-ahead at offset {offset}")


@pytest.fixture
def spy_claims(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, bool]]]:
    """(offset, served from a finished read-ahead?) of every read."""
    seen: list[tuple[int, bool]] = []
    claim = NatsTransport._claim_ready

    def spy(self: NatsTransport, stream: str, offset: int, max_records: int) -> Any:
        got = claim(self, stream, offset, max_records)
        seen.append((offset, got is not None))
        return got

    monkeypatch.setattr(NatsTransport, "_claim_ready", spy)
    yield seen


def test_read_ahead_returns_exactly_what_a_fresh_read_returns(
    nats_node: natsserver.Node, spy_claims: list[tuple[int, bool]]
) -> None:
    writer, reader = nats_client(nats_node), nats_client(nats_node)
    try:
        stream = _stream()
        writer.create_stream(stream)
        _append(writer, stream, 9)  # 45 events
        pages, pos = [], 0
        while True:
            page = reader.read(stream, pos, 10)  # pages span batches: 10 = two batches of 5
            if not page:
                break
            pages.append(page)
            pos = page[-1].offset + 1
            if len(page) == 10:
                _wait_ahead_done(reader, stream, pos)
        for page in pages:
            fresh = nats_client(nats_node)
            try:
                assert fresh.read(stream, page[0].offset, 10) == page
            finally:
                fresh.close()
        assert [r.offset for p in pages for r in p] == list(range(45))
        # the reader's own reads (the fresh ones follow): full pages came from the read-ahead; the
        # one at 40 was short (the end when it was read ahead), so it was completed live
        assert spy_claims[:6] == [(0, False), (10, True), (20, True), (30, True), (40, False), (45, False)]
        assert (stream, 50) not in reader._ahead  # a short page (the end) reads nothing ahead
    finally:
        writer.close()
        reader.close()


def test_a_read_ahead_that_reached_the_end_is_completed_live(nats_node: natsserver.Node) -> None:
    writer, reader = nats_client(nats_node), nats_client(nats_node)
    try:
        stream = _stream()
        writer.create_stream(stream)
        _append(writer, stream, 3)  # 15 events: the read-ahead at 10 finds one batch of two
        assert [r.offset for r in reader.read(stream, 0, 10)] == list(range(10))
        _wait_ahead_done(reader, stream, 10)
        _append(writer, stream, 2)  # appended after the read-ahead finished
        assert [r.offset for r in reader.read(stream, 10, 10)] == list(range(10, 20))
        _wait_ahead_done(reader, stream, 20)  # found one batch (20-24), then the end
        _append(writer, stream, 1)
        assert [r.offset for r in reader.read(stream, 20, 10)] == list(range(20, 30))
        assert reader.read(stream, 30, 10) == []  # a short page read nothing ahead: asked live
        _append(writer, stream, 1)
        assert [r.offset for r in reader.read(stream, 30, 10)] == list(range(30, 35))
    finally:
        writer.close()
        reader.close()


def test_read_ahead_is_bounded_and_dropped_on_close(nats_node: natsserver.Node) -> None:
    writer, reader = nats_client(nats_node), nats_client(nats_node)
    try:
        streams = [_stream() for _ in range(12)]
        for s in streams:
            writer.create_stream(s)
            _append(writer, s, 2)
            assert len(reader.read(s, 0, 5)) == 5  # one read-ahead per reader position
        assert len(reader._ahead) <= 8
        assert {s for s, _ in reader._ahead} == set(streams[-len(reader._ahead):])  # the oldest went first
        tasks = [task for task, _ in reader._ahead.values()]
    finally:
        writer.close()
        reader.close()
    assert reader._ahead == {} and all(t.done() for t in tasks)
    with pytest.raises(Exception, match="closed"):
        reader.read(streams[-1], 5, 5)


def test_attack_a_page_read_ahead_is_not_served_once_the_connection_is_gone(nats_node: natsserver.Node) -> None:
    """Revoking a principal's certificate makes the server close its connection: a page fetched
    ahead before that must not be handed out after it (the read goes live, and fails typed)."""
    writer = nats_client(nats_node)
    reader = nats_client(nats_node, backoff=Backoff(base_s=0.01, cap_s=0.05, budget_s=0.3))
    try:
        stream = _stream()
        writer.create_stream(stream)
        _append(writer, stream, 3)
        assert len(reader.read(stream, 0, 5)) == 5
        _wait_ahead_done(reader, stream, 5)
        reader._loop.run(reader._nc.close(), 10, "drop the connection")  # as the server does on revocation
        with pytest.raises(EventwardError):
            reader.read(stream, 5, 5)
        assert (stream, 5) not in reader._ahead
    finally:
        writer.close()
        reader.close()


class _Crash(BaseException):
    """Escapes the consumer's handler error handling, as a process dying would."""


def test_a_consumer_stopped_mid_read_ahead_resumes_at_its_commit_and_skips_nothing(
    nats_node: natsserver.Node, tmp_path: Path, spy_claims: list[tuple[int, bool]]
) -> None:
    world = World(tmp_path / "home")
    try:
        topic = "ra.crash"
        world.auth.grant(PRODUCER, PUBLISH, ("Topic", topic))
        world.auth.grant(READER, SUBSCRIBE, ("Topic", topic))
        producer = world.producer(topic=topic, transport=nats_client(nats_node), max_batch=5)
        sent = [producer.send(TYPE, customer(i)) for i in range(20)]
        producer.close()
        first = nats_client(nats_node)
        seen: list[str] = []

        def crash_in_page_two(d: Delivered) -> None:
            if len(seen) == 7:  # page one (0-4) committed, page two read ahead, page three in flight
                raise _Crash
            seen.append(d.id)

        consumer = world.consumer(READER, topic, transport=first, group="g", read_batch=5)
        with pytest.raises(_Crash):
            consumer.run(crash_in_page_two, idle_timeout=0)
        assert (5, True) in spy_claims  # page two came from the read-ahead
        deadline = time.monotonic() + 10  # page three is read ahead (started from the loop thread)
        while (topic, 10) not in first._ahead and time.monotonic() < deadline:
            time.sleep(0.005)
        assert (topic, 10) in first._ahead
        consumer.close()  # its group's lock goes, as with a process that died
        first.close()
        second = nats_client(nats_node)
        assert second.committed("g", topic) == 5  # read-ahead never moves a group's position
        got, stats = world.consume(world.consumer(READER, topic, transport=second, group="g", read_batch=5))
        assert [d.id for d in got] == sent[7:]  # 5 and 6 were handled: the replay guard knows
        assert seen + [d.id for d in got] == sent and stats.refused == {} and stats.redelivered == 2
        assert second.committed("g", topic) == 20
        second.close()
    finally:
        world.close()


def test_attack_a_batch_forged_on_the_broker_is_refused_when_it_arrives_read_ahead(
    nats_node: natsserver.Node, tmp_path: Path, spy_claims: list[tuple[int, bool]]
) -> None:
    """An attacker with raw publish rights stores a well-framed batch that continues the offsets
    right after the first page; the consumer gets it from the read-ahead, not from a read of its
    own, and still checks its seal: refused, the genuine pages around it delivered."""
    world = World(tmp_path / "home")
    try:
        topic = "ra.forged"
        world.auth.grant(PRODUCER, PUBLISH, ("Topic", topic))
        world.auth.grant(READER, SUBSCRIBE, ("Topic", topic))
        t = nats_client(nats_node)
        producer = world.producer(topic=topic, transport=t, max_batch=5)
        sent = [producer.send(TYPE, customer(i)) for i in range(5)]
        producer.flush()
        genuine = t.read(topic, 0, 5)
        forged = [g.data.replace(b'"plan":"pro"', b'"plan":"free"') for g in genuine]
        assert forged != [g.data for g in genuine]
        raw_publish(
            nats_node.url(tls=False),
            subject_for(topic),
            framing.encode("forged-batch", forged, genuine[0].seal),
            {"Ew-Offset": "5", "Ew-Count": "5", "Nats-Expected-Last-Sequence": "1"},
        )
        t._tails.pop(topic, None)  # the producer's transport learns the new end from the broker
        sent += [producer.send(TYPE, customer(i)) for i in range(5, 10)]
        producer.close()
        assert t.end_offset(topic) == 15
        reader = nats_client(nats_node)
        got, stats = world.consume(world.consumer(READER, topic, transport=reader, read_batch=5))
        assert (5, True) in spy_claims  # the forged page was served from the read-ahead
        assert [d.id for d in got] == sent
        assert sum(stats.refused.values()) == 5 and stats.delivered == 10
        reader.close()
        t.close()
    finally:
        world.close()
