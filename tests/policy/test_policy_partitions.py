"""Partitioned topics in policy.yaml: declared per topic, granted per topic, compiled per stream."""

from __future__ import annotations

import json

import pytest

from eventward._internal.log.nats import consumer_permissions, producer_permissions, stream_name
from eventward._internal.policy.compile_kafka import compile_kafka
from eventward._internal.policy.compile_nats import compile_nats
from eventward._internal.policy.spec import parse
from eventward.errors import PolicyError

POLICY = """
principals:
  writer: {type: service, roles: [writer]}
  reader: {type: service, roles: [reader]}
  stranger: {type: service, roles: [other]}
  prefixer: {type: service, roles: [prefixer]}
roles:
  writer: [{allow: publish, topic: orders}]
  reader: [{allow: subscribe, topic: orders}]
  other: [{allow: publish, topic: refunds}]
  prefixer: [{allow: subscribe, topic: "orders.", match: prefixed}]
resources:
  Topic:
    orders: {partitions: 3}
"""


def users(text: str) -> dict[str, dict]:
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith('{"user"'):
            u = json.loads(line)
            out[u["user"]] = u["permissions"]
    return out


def test_partitions_are_declared_per_topic() -> None:
    spec = parse(POLICY)
    assert spec.partitions("orders") == 3 and spec.partitions("refunds") == 1
    assert spec.partitioned() == {"orders": 3}


@pytest.mark.parametrize("value", ["0", "65", '"2"', "true", "1.5"])
def test_bad_partition_counts_are_refused(value: str) -> None:
    with pytest.raises(PolicyError) as e:
        parse(POLICY.replace("{partitions: 3}", f"{{partitions: {value}}}"))
    assert e.value.path == "resources.Topic.orders.partitions"


def test_partitions_only_on_topics_and_not_on_dead_letter_streams() -> None:
    with pytest.raises(PolicyError):
        parse(POLICY.replace("    orders: {partitions: 3}", "    orders.dlq: {partitions: 2}"))
    with pytest.raises(PolicyError):
        parse(POLICY + "  Class:\n    pii: {partitions: 2}\n")


def test_attack_topic_named_like_a_partition_stream_is_refused() -> None:
    """``orders.p2`` is partition 2 of ``orders``: a grant on it as a topic of its own would hand
    out part of ``orders`` under another name, so the policy is refused."""
    with pytest.raises(PolicyError) as e:
        parse(POLICY.replace("topic: refunds}", "topic: orders.p2}"))
    assert "partition stream of topic 'orders'" in str(e.value)
    parse(POLICY.replace("topic: refunds}", "topic: orders.p3}"))  # beyond the count: a topic of its own


def test_nats_grants_every_partition_of_a_granted_topic() -> None:
    perms = users(compile_nats(parse(POLICY)))
    w, r = perms["writer"], perms["reader"]
    for stream in ("orders", "orders.p1", "orders.p2"):
        assert set(producer_permissions(stream)) <= set(w["publish"]["allow"]), stream
        assert f"ew.{stream}" in r["subscribe"]["allow"]
        assert set(consumer_permissions(stream)) - {f"ew.{stream}"} <= set(r["publish"]["allow"])
    assert "ew.orders.p3" not in w["publish"]["allow"]
    assert "ew.orders.dlq" in r["publish"]["allow"]  # one DLQ for the topic, not one per partition
    stranger = json.dumps(perms["stranger"])
    assert "orders" not in stranger and stream_name("orders.p1") not in stranger


def test_nats_prefix_grant_does_not_reach_a_partition_of_another_topic() -> None:
    """``orders.`` matches ``ew.orders.p1`` at the broker, but that is partition 1 of ``orders``,
    which the prefix does not grant: denied explicitly."""
    p = users(compile_nats(parse(POLICY)))["prefixer"]
    assert "ew.orders.>" in p["subscribe"]["allow"]
    assert {"ew.orders.p1", "ew.orders.p2"} <= set(p["subscribe"]["deny"])


def test_kafka_acls_cover_partition_streams() -> None:
    text = compile_kafka(parse(POLICY))
    for stream in ("orders", "orders.p1", "orders.p2"):
        assert any("User:writer" in ln and f"--topic {stream} " in ln and "Write" in ln for ln in text.splitlines())
    assert not any("User:stranger" in ln and "orders" in ln for ln in text.splitlines())
    assert any("--deny-principal User:prefixer" in ln and "--topic orders.p1 " in ln for ln in text.splitlines())
