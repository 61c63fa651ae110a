"""Partitioned topics on the embedded log: routing, order, offsets, group members, seals."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from eventward._internal.client.consumer import Consumer
from eventward._internal.client.replay import ReplayGuard
from eventward._internal.crypto import seal as sealing
from eventward._internal.log.partitions import (
    member_partitions,
    partition_for,
    partition_stream,
    partition_streams,
    split_stream,
    topic_of,
)
from eventward.errors import ConfigError, InputError

from .client_world import PRODUCER, READER, TOPIC, TYPE, World, customer

P1 = f"{TOPIC}.p1"


@pytest.fixture
def world(tmp_path: Path) -> Any:
    w = World(tmp_path)
    yield w
    w.close()


def member(world: World, group: str, **kw: Any) -> Consumer:
    """A consumer whose replay journal is its own (one process per journal), sharing ``group``."""
    g = ReplayGuard.open(world.home, f"{group}#{kw.get('partition_of') or kw.get('partitions')}")
    world._closers.append(g)
    kw.setdefault("partition_count", 2)
    return Consumer(
        TOPIC, principal=READER, transport=world.log, verifier=world.verifier(), schemas=world.schemas,
        encryptor=world.enc, authorizer=world.auth, guard=g, dlq=world.dlq(), audit=world.audit,
        group=group, from_beginning=True, backoff=0.001, **kw,
    )


def send(world: World, n: int, partitions: int = 2, subjects: int | None = None) -> list[str]:
    with world.producer(partitions=partitions, max_batch=7) as p:
        return [p.send(TYPE, customer(i % subjects if subjects else i)) for i in range(n)]


def test_partition_names_and_hash_are_fixed() -> None:
    assert partition_streams("orders", 3) == ["orders", "orders.p1", "orders.p2"]
    assert partition_streams("orders", 1) == ["orders"]  # one partition: today's layout
    assert split_stream("orders.p2") == ("orders", 2) and split_stream("orders.dlq") is None
    assert split_stream("orders.p0") is None and split_stream("orders.p01") is None
    # SHA-256 of the key, first 8 bytes big-endian, mod N: the same on every host and version
    key = "a3f9c2"
    expect = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 4
    assert partition_for(key, 4) == expect
    assert partition_for(key, 1) == 0
    assert topic_of("orders.p1", {"orders": 2}.get) == "orders"  # type: ignore[arg-type]
    assert topic_of("orders.p2", lambda t: 2) == "orders.p2"  # beyond the count: a topic of its own
    assert member_partitions(0, 2, 5) == [0, 2, 4] and member_partitions(1, 2, 5) == [1, 3]
    with pytest.raises(InputError):
        member_partitions(2, 2, 4)
    with pytest.raises(InputError):
        member_partitions(0, 3, 2)  # more members than partitions


def test_routing_is_stable_and_by_subject(world: World) -> None:
    send(world, 60, partitions=4, subjects=6)  # 6 customers, 10 events each
    where: dict[str, set[str]] = {}
    for stream in partition_streams(TOPIC, 4):
        for rec in world.log.read(stream, 0, 1000):
            shash = sealing_subject(rec.data)
            where.setdefault(shash, set()).add(stream)
    assert len(where) == 6
    assert all(len(s) == 1 for s in where.values()), "one subject's events must stay in one partition"
    assert len({next(iter(s)) for s in where.values()}) > 1, "6 subjects all hashed to one of 4 partitions"
    for shash, streams in where.items():  # the partition is the hash of the subject pseudonym
        assert streams == {partition_stream(TOPIC, partition_for(shash, 4))}


def test_remembered_routes_stay_bounded_and_route_as_the_hash(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The producer remembers subjects' partitions (issue 16); past its bound it forgets them and
    hashes again, so every event still lands in partition_for(its pseudonym), by send and send_many."""
    from eventward._internal.client import producer as producer_mod

    monkeypatch.setattr(producer_mod, "_ROUTES", 3)
    with world.producer(partitions=4, max_batch=7) as p:
        for i in range(40):
            p.send(TYPE, customer(i % 8))
            assert len(p._routes) <= 3
        p.send_many(TYPE, [customer(i % 8) for i in range(40)])
        assert 0 < len(p._routes) <= 3
    where: dict[str, set[str]] = {}
    for stream in partition_streams(TOPIC, 4):
        for rec in world.log.read(stream, 0, 1000):
            where.setdefault(sealing_subject(rec.data), set()).add(stream)
    assert len(where) == 8 and sum(len(world.log.read(s, 0, 1000)) for s in partition_streams(TOPIC, 4)) == 80
    for shash, streams in where.items():
        assert streams == {partition_stream(TOPIC, partition_for(shash, 4))}


def sealing_subject(raw: bytes) -> str:
    import orjson

    return orjson.loads(raw)["ewsubject"]


def test_per_partition_order_and_sequences(world: World) -> None:
    send(world, 40, partitions=2, subjects=4)
    got, stats = world.consume(member(world, "g", partitions=[0, 1]))
    assert stats.gaps == 0 and not stats.refused and len(got) == 40
    by_subject: dict[str, list[int]] = {}
    for d in got:
        by_subject.setdefault(d.data["customer_id"], []).append(d.offset)
    for offsets in by_subject.values():  # each subject's events in the order they were sent
        assert offsets == sorted(offsets)
    for stream in partition_streams(TOPIC, 2):
        seqs = [sealing.parse(r.seal).seq_of(r.index) for r in world.log.read(stream, 0, 1000)]
        assert seqs == list(range(len(seqs))), f"{stream}: sequences are dense per partition"


def test_offsets_are_per_partition_and_group(world: World) -> None:
    send(world, 30)
    got, _ = world.consume(member(world, "g1"))
    assert len(got) == 30
    ends = {s: world.log.end_offset(s) for s in partition_streams(TOPIC, 2)}
    assert all(ends.values()) and sum(ends.values()) == 30
    for stream, end in ends.items():
        assert world.log.committed("g1", stream) == end
        assert world.log.committed("g2", stream) is None  # another group is untouched
    got2, _ = world.consume(member(world, "g2", partitions=[1]))
    assert len(got2) == ends[P1]
    assert world.log.committed("g2", TOPIC) is None and world.log.committed("g2", P1) == ends[P1]


def test_group_members_each_see_their_partition_exactly_once(world: World) -> None:
    ids = send(world, 50, partitions=2)
    a = member(world, "grp", partition_of=(0, 2))
    b = member(world, "grp", partition_of=(1, 2))
    got_a, _ = world.consume(a)
    got_b, _ = world.consume(b)
    assert {d.stream for d in got_a} == {TOPIC} and {d.stream for d in got_b} == {P1}
    seen = Counter(d.id for d in got_a + got_b)
    assert set(seen) == set(ids) and max(seen.values()) == 1
    more = send(world, 10, partitions=2)
    got_a, _ = world.consume(a)
    got_b, _ = world.consume(b)
    assert sorted(d.id for d in got_a + got_b) == sorted(more)  # only the new ones, once


def test_default_consumer_reads_every_partition(world: World) -> None:
    ids = send(world, 25, partitions=3)
    c = member(world, "all", partition_count=3)
    assert c.streams == partition_streams(TOPIC, 3)
    got, _ = world.consume(c)
    assert sorted(d.id for d in got) == sorted(ids)


def test_attack_batch_moved_to_another_partition(world: World) -> None:
    """A stored batch of partition 1 appended to partition 0 (same bytes, same seal): the seal
    names the partition stream it was made for, so the consumer refuses every event of it."""
    send(world, 20, partitions=2)
    moved = world.log.read(P1, 0, 1000)
    first = moved[0]
    batch = [r for r in moved if r.batch == first.batch]
    world.log.append(TOPIC, first.batch, [r.data for r in batch], first.seal)
    c = member(world, "victim", partitions=[0])
    got, stats = world.consume(c)
    assert stats.refused.get("stream_mismatch") == len(batch)
    assert not {d.id for d in got} & {sealing_id(r.data) for r in batch}
    assert all(d.stream == TOPIC for d in got)


def sealing_id(raw: bytes) -> str:
    import orjson

    return orjson.loads(raw)["id"]


def test_one_partition_is_todays_layout(world: World) -> None:
    with world.producer() as p:
        assert p.partitions == 1
        for i in range(5):
            p.send(TYPE, customer(i))
    assert world.log.streams() == [TOPIC]
    assert not (world.home.root / "log.parts").exists()
    recs = world.log.read(TOPIC, 0, 10)
    s = sealing.parse(recs[0].seal)
    assert recs[0].batch == f"{s.instance}-0" and s.stream == TOPIC
    got, _ = world.consume(world.consumer())
    assert len(got) == 5


def test_partition_streams_have_their_own_files(world: World) -> None:
    send(world, 20, partitions=2)
    assert (world.home.root / "log.parts" / f"{P1}.db").is_file()
    raw = world.db()
    try:
        names = [r[0] for r in raw.execute("SELECT name FROM streams")]
    finally:
        raw.close()
    assert names == [TOPIC]  # partition 0 is the topic's stream in log.db; partition 1 is elsewhere
    assert world.log.streams() == [TOPIC, P1]
    assert (world.home.root / "log.parts").stat().st_mode & 0o077 == 0


def test_producer_refuses_a_bad_partition_count(world: World) -> None:
    for n in (0, 65):
        with pytest.raises(ConfigError):
            world.producer(partitions=n)
    with pytest.raises(InputError):
        member(world, "g", partitions=[2], partition_count=2)


def test_send_many_routes_per_event(world: World) -> None:
    with world.producer(partitions=2, max_batch=500) as p:
        ids = p.send_many(TYPE, [customer(i) for i in range(30)])
    got, _ = world.consume(member(world, "m"))
    assert sorted(d.id for d in got) == sorted(ids)
    assert {d.stream for d in got} == {TOPIC, P1}
    assert PRODUCER in {d.producer for d in got}
