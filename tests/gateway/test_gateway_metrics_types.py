"""The gateway's publish and consume paths feed the per-type produce/consume metrics: publishing
goes through the SDK Producer (its Publish audit record names the batch's types), fetching through
the SDK Consumer's ``process`` inside ``delivery_batch`` (deliveries per type, with latency)."""

from __future__ import annotations

from eventward.monitor import metrics

from .gw_deployment import ORDERS, SHIPPING, TYPE, cloudevent, order, topic


def _v(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_gateway_publish_and_fetch_are_counted_per_event_type(dep_world) -> None:
    t = topic()
    r = dep_world.publish(ORDERS, t, [cloudevent(order(i)) for i in range(4)])
    assert r.status == 200, r.json
    pubs = [rec for rec in dep_world.audit_records() if rec.action == "Publish" and rec.resource == f"Topic::{t}"]
    assert [rec.meta["types"] for rec in pubs] == [f"{TYPE}:4"]
    assert _v("eventward_events_produced_total", topic=t, event_type=TYPE) == 4

    got = dep_world.consume(SHIPPING, t, "typed")
    assert got.status == 200 and len(got.json["events"]) == 4
    assert _v("eventward_events_delivered_total", topic=t, event_type=TYPE) == 4
    assert _v("eventward_delivery_latency_seconds_count", topic=t, event_type=TYPE) == 4
    assert _v("eventward_delivery_latency_seconds_sum", topic=t, event_type=TYPE) >= 0
