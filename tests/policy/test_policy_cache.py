"""The decision cache: a dict lookup on the hot path, keyed by the whole request, dropped
atomically on a policy change, bounded, and never a way to skip auditing a denial."""

from __future__ import annotations

import time

from eventward._internal.policy import base
from eventward._internal.policy import engine as engine_mod
from eventward._internal.policy.compile_cedar import compile_policy
from eventward._internal.policy.spec import parse

from .support import ABAC, POLICY
from .test_policy_store import ORDERS, POLICY_V2

PUB = ("orders-svc", base.PUBLISH, ("Topic", "orders"))


def test_cached_decision_is_the_same_object(engine):
    a = engine.decide(*ORDERS)
    assert engine.decide(*ORDERS) is a


def test_cache_key_includes_context(engine):
    assert engine.decide(*PUB, {"event_type": "OrderPlaced"}).allowed
    assert not engine.decide(*PUB, {"event_type": "OrderPaymentProcessed"}).allowed
    assert not engine.decide(*PUB).allowed
    assert engine.decide(*PUB, {"event_type": "OrderPlaced"}).allowed


def test_cache_dropped_on_policy_change(store, engine):
    assert engine.decide(*ORDERS).allowed
    store.apply("alice", POLICY_V2, {"abac.cedar": ABAC})
    engine.refresh()
    assert not engine.decide(*ORDERS).allowed
    assert engine.decide(*ORDERS).extra["version"] == 2


def test_version_is_checked_at_most_every_quarter_second(engine, monkeypatch):
    calls = []
    real = engine.store.active_version
    monkeypatch.setattr(engine.store, "active_version", lambda: calls.append(1) or real())
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < 0.6:
        for _ in range(1000):
            engine.decide(*ORDERS)
        n += 1000
    assert n > 10_000
    assert 1 <= len(calls) <= 4, len(calls)


def test_every_cached_denial_is_audited(engine, audit):
    req = ("analytics-svc", base.SUBSCRIBE, ("Topic", "payments"))
    for _ in range(3):
        assert not engine.decide(*req).allowed
    recs = [e for e in audit.events if e.action == "authorize" and e.principal == "analytics-svc"]
    assert len(recs) == 3
    assert all(r.outcome == "denied" and r.reason == "forbidden" for r in recs)
    assert all(r.meta["policies"] == "role:analytics:1" for r in recs)


def test_unhashable_context_still_decides(engine):
    d = engine.decide(*PUB, {"event_type": "OrderPlaced", "tags": ["a", "b"]})
    assert d.allowed
    d = engine.decide("analytics-svc", base.SUBSCRIBE, ("Topic", "payments"), {"tags": {"x": 1}})
    assert not d.allowed


def test_cache_is_bounded(engine, monkeypatch):
    monkeypatch.setattr(engine_mod, "MAX_CACHE_ENTRIES", 50)
    for i in range(500):
        engine.decide("analytics-svc", base.SUBSCRIBE, ("Topic", f"t{i}"))
        assert len(engine._state.cache) <= 50
    assert engine.decide("analytics-svc", base.SUBSCRIBE, ("Topic", "t499")).allowed


def test_time_bucket_only_when_policy_reads_time():
    spec = parse(POLICY)
    assert not compile_policy(spec, {}).uses_time
    assert compile_policy(spec, {"abac.cedar": ABAC}).uses_time
