"""Gateway consumer groups on a partitioned topic (issue 16): read across partitions, ack each.

The topic has 3 partitions (policy.yaml). Events of one data subject go to one partition, so a
client consuming through the gateway sees each subject's events in the order they were
published; every event arrives, and none comes back once its partition was acked.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from .gw_deployment import ORDERS, POLICY, SHIPPING, World, cloudevent, order

TOPIC = "orders.parts"
PARTITIONED = POLICY + f"resources:\n  Topic:\n    {TOPIC}: {{partitions: 3}}\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("gw-partitions"), policy_yaml=PARTITIONED)
    yield w
    w.close()


def _ack(world: World, group: str, offset: int, partition: int) -> Any:
    return world.call(SHIPPING, "POST", f"/v1/topics/{TOPIC}/ack",
                      {"group": group, "offset": offset, "partition": partition})


def test_groups_read_every_partition_in_subject_order_and_ack_each(world: World) -> None:
    subjects = [f"cust-{k}" for k in range(24)]  # routed by their pseudonyms (keyed per home): some in each
    published: dict[str, list[str]] = defaultdict(list)
    for i in range(3):  # 72 events, 3 per subject, in 3 requests
        batch = [cloudevent(order(i, customer=c)) for c in subjects]
        assert world.publish(ORDERS, TOPIC, batch).status == 200
        for c, e in zip(subjects, batch, strict=True):
            published[c].append(e["id"])
    subject_of = {i: c for c, ids in published.items() for i in ids}

    used = {p for p in range(3) if world.end(TOPIC if p == 0 else f"{TOPIC}.p{p}") > 0}
    assert len(used) >= 2
    first = world.consume(SHIPPING, TOPIC, "parts", max_events=9)
    assert first.status == 200 and len(first.json["events"]) == 9
    assert {e["partition"] for e in first.json["events"]} == used  # one fetch spans the partitions
    again = world.consume(SHIPPING, TOPIC, "parts", max_events=9)
    assert again.json["events"] == first.json["events"]  # nothing acked: the same batch

    seen: dict[str, list[str]] = defaultdict(list)
    got: list[str] = []
    for _ in range(40):
        r = world.consume(SHIPPING, TOPIC, "parts", max_events=9)
        assert r.status == 200, r.json
        if not r.json["events"]:
            break
        upto: dict[int, int] = {}
        for e in r.json["events"]:
            got.append(e["event"]["id"])
            seen[subject_of[e["event"]["id"]]].append(e["event"]["id"])
            upto[e["partition"]] = e["offset"] + 1
        for p, off in upto.items():  # commit each partition on its own
            a = _ack(world, "parts", off, p)
            assert a.status == 200 and a.json == {"group": "parts", "committed": off, "partition": p}
    assert Counter(got) == Counter(i for ids in published.values() for i in ids)  # none lost, none twice
    assert seen == published  # each subject's events in publish order
    assert world.consume(SHIPPING, TOPIC, "parts").json["events"] == []


def test_acks_name_a_partition_of_the_topic(world: World) -> None:
    assert world.publish(ORDERS, TOPIC, [cloudevent(order(k, customer=f"c-{k}")) for k in range(6)]).status == 200
    r = world.consume(SHIPPING, TOPIC, "named", max_events=100)
    assert r.status == 200 and r.json["events"]
    beyond = _ack(world, "named", 1, 3)  # the topic has partitions 0..2
    assert beyond.status == 400
    by_partition: dict[int, int] = {}
    for e in r.json["events"]:
        by_partition[e["partition"]] = e["offset"] + 1
    p, off = next(iter(by_partition.items()))
    assert _ack(world, "named", off + 1, p).status == 409  # past what this partition delivered
    assert _ack(world, "named", off, p).json["committed"] == off
    rest = world.consume(SHIPPING, TOPIC, "named", max_events=100).json["events"]
    assert all(e["partition"] != p for e in rest)  # the acked partition's events do not come back
    assert len(rest) == len(r.json["events"]) - sum(1 for e in r.json["events"] if e["partition"] == p)


def test_unpartitioned_topics_still_report_partition_0(world: World) -> None:
    t = "orders.flat"
    assert world.publish(ORDERS, t, [cloudevent(order(1))]).status == 200
    r = world.consume(SHIPPING, t, "flat")
    assert [e["partition"] for e in r.json["events"]] == [0]
    plain = world.ack(SHIPPING, t, "flat", r.json["events"][0]["offset"] + 1)  # no partition named
    assert plain.status == 200 and plain.json == {"group": "flat", "committed": 1}
