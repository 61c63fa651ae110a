"""Monitoring test fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import Counter

from eventward._internal.monitor import metrics

_TYPED = ("topic", "event_type")


@pytest.fixture
def type_families(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The per-(topic, event type) families swapped for empty ones on the shared registry for one
    test (scrapes still see them), the originals put back after. In one long test run the shared
    ones may already hold MAX_SERIES label sets, one per test topic, and fold a new one into
    ``_other_`` as designed, which a test reading exact labels would take for a miss."""
    old = (metrics.produced, metrics.delivered, metrics.delivery_seconds)
    for collector in (old[0].metric, old[1].metric, old[2]):
        metrics.REGISTRY.unregister(collector)
    new = []
    try:
        for attr, name, doc in (("produced", "eventward_events_produced", "Events published."),
                                ("delivered", "eventward_events_delivered", "Events delivered.")):
            fam = metrics._Capped(Counter(name, doc, _TYPED, registry=metrics.REGISTRY), 2)
            new.append(fam.metric)
            monkeypatch.setattr(metrics, attr, fam)
        hist = metrics._BulkHistogram("eventward_delivery_latency_seconds", "Delivery latency.", _TYPED,
                                      metrics.E2E_LATENCY)
        new.append(hist)
        monkeypatch.setattr(metrics, "delivery_seconds", hist)
        yield
    finally:
        for collector in new:
            metrics.REGISTRY.unregister(collector)
        for collector in (old[0].metric, old[1].metric, old[2]):
            metrics.REGISTRY.register(collector)
