"""The gateway's publish and consume paths feed the per-type produce/consume metrics: publishing
goes through the SDK Producer (its Publish audit record names the batch's types), fetching through
the SDK Consumer's ``process`` inside ``delivery_batch`` (deliveries per type, with latency)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter

from eventward._internal.monitor import metrics

from .gw_deployment import ORDERS, SHIPPING, TYPE, cloudevent, order, topic


def _v(reg: CollectorRegistry, name: str, **labels: str) -> float:
    return reg.get_sample_value(name, labels) or 0.0


def fresh_families(monkeypatch: pytest.MonkeyPatch) -> CollectorRegistry:
    """The per-type families as fresh instances on a registry of their own: in a long test run the
    shared ones may already hold MAX_SERIES label sets (one per test topic) and fold new ones into
    _other_, as designed."""
    reg = CollectorRegistry()
    labels = ("topic", "event_type")
    for attr, name in (("produced", "eventward_events_produced"), ("delivered", "eventward_events_delivered")):
        monkeypatch.setattr(metrics, attr, metrics._Capped(Counter(name, name, labels, registry=reg), 2))
    monkeypatch.setattr(metrics, "delivery_seconds", metrics._BulkHistogram(
        "eventward_delivery_latency_seconds", "latency", labels, metrics.E2E_LATENCY, registry=reg))
    return reg


def test_gateway_publish_and_fetch_are_counted_per_event_type(dep_world, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = fresh_families(monkeypatch)
    t = topic()
    r = dep_world.publish(ORDERS, t, [cloudevent(order(i)) for i in range(4)])
    assert r.status == 200, r.json
    pubs = [rec for rec in dep_world.audit_records() if rec.action == "Publish" and rec.resource == f"Topic::{t}"]
    assert [rec.meta["types"] for rec in pubs] == [f"{TYPE}:4"]
    assert _v(reg, "eventward_events_produced_total", topic=t, event_type=TYPE) == 4

    got = dep_world.consume(SHIPPING, t, "typed")
    assert got.status == 200 and len(got.json["events"]) == 4
    assert _v(reg, "eventward_events_delivered_total", topic=t, event_type=TYPE) == 4
    assert _v(reg, "eventward_delivery_latency_seconds_count", topic=t, event_type=TYPE) == 4
    assert _v(reg, "eventward_delivery_latency_seconds_sum", topic=t, event_type=TYPE) >= 0
