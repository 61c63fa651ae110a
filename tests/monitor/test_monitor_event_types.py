"""Produce and consume metrics per (topic, event type): the producer's Publish audit record names
its batch's types (bounded schema names, counts only), the consumer reports its deliveries per read
batch (count and acceptance-to-delivery latency), and the new labels stay names under the same
per-family cap as every other label."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from eventward._internal.client import consumer as consumer_mod
from eventward._internal.client.envelopes import EnvelopeBuilder
from eventward._internal.client.producer import parse_types_meta, types_meta
from eventward._internal.monitor import metrics

from .world import PRINCIPALS, make_home

REFUND = {
    "type": "object",
    "properties": {"order_id": {"type": "string"}, "cents": {"type": "integer"}},
    "required": ["order_id", "cents"],
}
TYPE_NAME = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:/\-]{0,40}", fullmatch=True)


def value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(TYPE_NAME, st.integers(1, 5000), min_size=1, max_size=40))
def test_types_meta_fits_one_audit_string_and_keeps_every_event(counts: dict[str, int]) -> None:
    text = types_meta(counts)
    assert 0 < len(text) <= 256  # an audit meta string (audit.records.MAX_TEXT)
    back = parse_types_meta(text)
    assert sum(back.values()) == sum(counts.values())  # folded types are summed, never dropped
    for t, n in back.items():
        assert t == "_other_" or counts[t] == n


def test_types_meta_of_a_batch_is_its_types() -> None:
    assert types_meta({"Refund": 2, "Order": 3}) == "Order:3,Refund:2"
    assert parse_types_meta("com.ex:Order.v1:3") == {"com.ex:Order.v1": 3}  # a type may hold ':'
    assert parse_types_meta(None) == {} and parse_types_meta("x,:,y:z") == {}


@pytest.mark.usefixtures("type_families")
def test_publish_records_and_metrics_per_type_on_both_paths(tmp_path: Path) -> None:
    dep = make_home(tmp_path)
    try:
        prop = dep.registry.propose("alice", "Refund", REFUND)
        dep.registry.approve("bob", "Refund", prop.version)
        types = ("Order", "Refund")
        before = {t: value("eventward_events_produced_total", topic="orders", event_type=t) for t in types}
        got = {t: value("eventward_events_delivered_total", topic="orders", event_type=t) for t in types}
        lat = value("eventward_delivery_latency_seconds_count", topic="orders", event_type="Refund")
        with dep.producer("orders-svc", "orders") as p:
            for i in range(3):
                p.send("Order", {"order_id": f"ord-{i}", "amount": i})
            p.send_many("Refund", [{"order_id": "ord-1", "cents": 5}, {"order_id": "ord-2", "cents": 7}])
        dep.audit.flush()
        pubs = [r for r in dep.audit.tail(50) if r.action == "Publish"]
        assert [r.meta["types"] for r in pubs] == ["Order:3,Refund:2"]  # one sealed batch, both types
        assert "ord-" not in repr(pubs[0].meta)  # counts and names only
        assert value("eventward_events_produced_total", topic="orders", event_type="Order") == before["Order"] + 3
        assert value("eventward_events_produced_total", topic="orders", event_type="Refund") == before["Refund"] + 2

        c = dep.consumer("shipping", "orders", group="per-type", from_beginning=True)
        assert len(c.poll()) == 5
        assert value("eventward_events_delivered_total", topic="orders", event_type="Order") == got["Order"] + 3
        assert value("eventward_events_delivered_total", topic="orders", event_type="Refund") == got["Refund"] + 2
        assert value("eventward_delivery_latency_seconds_count", topic="orders", event_type="Refund") == lat + 2
        c.close()
    finally:
        dep.close()


@pytest.mark.usefixtures("type_families")
def test_delivery_latency_is_acceptance_to_delivery_in_the_right_buckets() -> None:
    b = EnvelopeBuilder("p")
    t0 = 1_900_000_000.25
    stamp = b.time(t0)  # the producer's ewtime format
    assert metrics._epoch(stamp) == t0
    assert metrics._epoch("2030-01-01T00:00:00Z") is None and metrics._epoch(17) is None
    assert metrics._epoch("2030-01-01T00:00:00.12345xZ") is None
    topic = "lat.test"
    metrics.observe_deliveries(topic, [("T", stamp, t0 + 0.003), ("T", stamp, t0 + 42.0), ("T", stamp, t0 - 5),
                                       ("T", None, t0 + 9999), ("T", "garbage", t0)])
    assert value("eventward_events_delivered_total", topic=topic, event_type="T") == 5  # every delivery counts
    assert value("eventward_delivery_latency_seconds_count", topic=topic, event_type="T") == 3  # live, parseable
    assert value("eventward_delivery_latency_seconds_bucket", topic=topic, event_type="T", le="0.0025") == 1  # skew: 0
    assert value("eventward_delivery_latency_seconds_bucket", topic=topic, event_type="T", le="0.005") == 2
    assert value("eventward_delivery_latency_seconds_bucket", topic=topic, event_type="T", le="30.0") == 2
    assert value("eventward_delivery_latency_seconds_bucket", topic=topic, event_type="T", le="60.0") == 3
    assert abs(value("eventward_delivery_latency_seconds_sum", topic=topic, event_type="T") - 42.003) < 1e-6


@settings(max_examples=100, deadline=None)
@given(st.floats(0, 4_000_000_000, allow_nan=False))
def test_ewtime_parse_agrees_with_datetime(ts: float) -> None:
    stamp = EnvelopeBuilder("p").time(ts)
    want = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    assert abs(metrics._epoch(stamp) - want) < 1e-6


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(1_000_000_000, 4_000_000_000), st.floats(-100, 1000)), min_size=1, max_size=30))
def test_fast_latency_path_agrees_with_the_strict_one(events: list[tuple[float, float]]) -> None:
    b = EnvelopeBuilder("p")
    received = [b.time(t) for t, _ in events]
    at = [metrics._epoch(r) + d for r, (_, d) in zip(received, events, strict=True)]  # type: ignore[operator]
    fast = metrics._latencies(received, at)  # minutes now cached: the comprehension path
    assert fast == pytest.approx([max(0.0, d) for _, d in events], abs=1e-5)


def test_attack_crafted_ewtime_cannot_poison_the_latency_sum() -> None:
    """A sealed event's ewtime is its producer's to write: a value that parses to infinity on the
    fast path must not make the histogram's sum infinite (it would stay so for good)."""
    ok = EnvelopeBuilder("p").time(1_900_000_000.0)
    metrics._epoch(ok)  # its minute is cached
    for bad in (ok[:17] + "-infinity", ok[:17] + "+infinity", ok[:17] + "nan      Z", None, 12, ok[:20] + "xxxxxxZ"):
        lat = metrics._latencies([ok, bad], [1_900_000_001.0, 1_900_000_001.0])
        assert lat[0] == pytest.approx(1.0) and lat[1] is None, bad


def test_attack_event_type_labels_cannot_carry_identities_or_grow_unbounded(monkeypatch: pytest.MonkeyPatch) -> None:
    # The same families (classes, names, labels, cap) on a registry of their own, so the flood
    # does not fold the label sets other tests in this process read into _other_.
    reg = CollectorRegistry()
    labels = ("topic", "event_type")
    monkeypatch.setattr(metrics, "produced", metrics._Capped(Counter("eventward_events_produced", "p", labels,
                                                                     registry=reg), 2))
    monkeypatch.setattr(metrics, "delivered", metrics._Capped(Counter("eventward_events_delivered", "d", labels,
                                                                      registry=reg), 2))
    monkeypatch.setattr(metrics, "delivery_seconds", metrics._BulkHistogram(
        "eventward_delivery_latency_seconds", "l", labels, metrics.E2E_LATENCY, registry=reg))
    # A type cannot be an e-mail (the registry's names have no '@'), but the observers do not rely on it.
    metrics.observe_audit("Publish", "Topic::types.attack", "ok", "", {"count": 3, "types": "jane.doe@example.org:3"})
    metrics.observe_deliveries("types.attack", [("jane.doe@example.org", None, time.time())])
    for i in range(metrics.MAX_SERIES + 50):  # floods of distinct types fold into _other_
        metrics.observe_audit("Publish", "Topic::types.flood", "ok", "", {"count": 1, "types": f"T{i}:1"})
        metrics.observe_deliveries(f"types.flood{i}", [(f"T{i}", EnvelopeBuilder("p").time(time.time()), time.time())])
    text = generate_latest(reg).decode()
    assert "jane.doe" not in text and "example.org" not in text
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("eventward_events_produced", "eventward_events_delivered", "eventward_delivery_latency_seconds"):
        series = {tuple(sorted((k, v) for k, v in s.labels.items() if k != "le")) for s in fams[name].samples}
        assert len(series) <= metrics.MAX_SERIES + 1, name
        assert (("event_type", metrics.OTHER), ("topic", metrics.OTHER)) in series, name
        for label_set in series:
            for _, v in label_set:
                assert metrics.LABEL_VALUE.match(v) and v not in PRINCIPALS, (name, v)
    assert reg.get_sample_value("eventward_events_produced_total", {"topic": "types.attack",
                                                                     "event_type": metrics.INVALID}) == 3


def test_malformed_deliveries_never_raise_and_deployments_observe_consumers(tmp_path: Path) -> None:
    """Monitoring must never cost an event: the metrics observer swallows its own errors."""
    metrics.observe_deliveries("x", [(None, object(), "not a time")])  # type: ignore[list-item]
    dep = make_home(tmp_path)
    try:
        with dep.producer("orders-svc", "orders") as p:
            p.send("Order", {"order_id": "ord-1", "amount": 1})
        assert metrics.observe_deliveries in consumer_mod.DELIVERY_OBSERVERS  # Deployment instruments
        c = dep.consumer("shipping", "orders", group="obs", from_beginning=True)
        assert len(c.poll()) == 1
    finally:
        dep.close()
