"""Client mode counts what it produces and consumes per event type: its producers have no audit
log (the home's is the record), so their Publish records go to the process's observers only, and
its consumers report deliveries like home-mode ones once the process exposes metrics."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from eventward._internal import demo, monitor
from eventward._internal.monitor import metrics


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


def test_client_mode_producer_and_consumer_counted_per_type(world, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = fresh_families(monkeypatch)
    monitor.observe_process()  # what start_http_server does in an SDK process
    labels = {"topic": demo.TOPIC, "event_type": demo.EVENT_TYPE}
    produced = _v(reg, "eventward_events_produced_total", **labels)
    delivered = _v(reg, "eventward_events_delivered_total", **labels)
    timed = _v(reg, "eventward_delivery_latency_seconds_count", **labels)
    with world.client(demo.PRODUCER).producer(demo.TOPIC) as p:
        for i in range(3):
            p.send(demo.EVENT_TYPE, demo.order(i))
    assert _v(reg, "eventward_events_produced_total", **labels) == produced + 3
    seen: list = []
    c = world.client(demo.SHIPPING).consumer(demo.TOPIC, group="metrics", from_beginning=True)
    try:
        c.run(seen.append, max_events=3, idle_timeout=2.0)
    finally:
        c.close()
    assert len(seen) == 3
    assert _v(reg, "eventward_events_delivered_total", **labels) == delivered + 3
    assert _v(reg, "eventward_delivery_latency_seconds_count", **labels) == timed + 3
    text = metrics.render().decode() + generate_latest(reg).decode()
    assert not any(v in text for v in demo.pii_values())  # names, never values
