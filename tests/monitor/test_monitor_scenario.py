"""The scripted scenario of issue 20: normal traffic, then a rogue producer, a denial burst, a DLQ
flood and a rate spike. The live monitor (as ``serve`` runs it) must raise each alert exactly once
per episode and none during normal traffic; /metrics, scraped over HTTP from the SDK helper and
parsed with prometheus_client's parser, must agree; and no label value may be a principal, a
subject or an id (bounded names only)."""

from __future__ import annotations

import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from eventward._internal.monitor import metrics, start_http_server
from eventward._internal.monitor.rules import load_rules
from eventward._internal.monitor.service import Monitor
from eventward.errors import AccessDenied

from .world import PRINCIPALS, make_home, patch_audit_clock

RULES = {
    **load_rules(),
    "rate_spike": {"severity": "medium", "window_s": 10, "alpha": 0.3, "factor": 5, "min_events": 100,
                   "warmup_windows": 3},
    "denial_burst": {"severity": "high", "window_s": 60, "threshold": 5},
    "dlq_growth": {"severity": "medium", "window_s": 60, "threshold": 5},
    "seal_failure_burst": {"severity": "high", "window_s": 60, "threshold": 5},
    "off_hours_admin": {"enabled": False},
}
T0 = 1_800_000_000.0  # a multiple of the 10 s window


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _alerts(scrape: dict, rule: str, severity: str) -> float:
    return scrape.get(("eventward_alerts_total", (("rule", rule), ("severity", severity))), 0.0)


def _send(dep, principal: str, n: int) -> None:
    with dep.producer(principal, "orders") as p:
        for i in range(n):
            p.send("Order", {"order_id": f"ord-{uuid.uuid4().hex[:8]}", "amount": i})


@pytest.mark.usefixtures("type_families")
def test_scenario_each_alert_once_per_episode_and_metrics_scraped(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    clock = patch_audit_clock(monkeypatch, T0 - 100)
    dep = make_home(tmp_path)
    server, thread = start_http_server(0)
    try:
        port = server.server_port
        before = _scrape(port)
        mon = Monitor(dep.audit, dep.transport, rules=RULES, sample_every=0)
        mon.learn()
        fired: Counter[str] = Counter()

        def step() -> Counter[str]:
            new = Counter(a.rule for a in mon.poll())
            fired.update(new)
            return new

        # normal traffic: 20 events per 10 s window, four windows, and a consumer keeping up
        for w in range(4):
            clock.now = T0 + 10 * w + 1
            _send(dep, "orders-svc", 20)
            assert step() == Counter(), f"alert during normal traffic (window {w})"
        reader = dep.consumer("shipping", "orders", group="ship-team", from_beginning=True)
        assert len(reader.poll()) == 80
        assert step() == Counter()

        # a rogue producer (it holds a grant, but never published here before)
        clock.now += 1
        _send(dep, "rogue-svc", 1)
        assert step() == Counter({"new_producer": 1})
        _send(dep, "rogue-svc", 1)
        assert step() == Counter()

        # a denial burst: a principal with no grants keeps trying
        for _ in range(8):
            with pytest.raises(AccessDenied):
                _send(dep, "mallory", 1)
        assert step() == Counter({"denial_burst": 1})
        with pytest.raises(AccessDenied):
            _send(dep, "mallory", 1)
        assert step() == Counter()

        # a DLQ flood: a batch under a garbage seal, every event dead-lettered by the reader
        good = dep.transport.read("orders", 0, 1)[0]
        forged = []
        for _ in range(8):
            ev = orjson.loads(good.data)
            ev["id"] = str(uuid.uuid4())
            forged.append(orjson.dumps(ev))
        dep.transport.append("orders", f"forged-{uuid.uuid4().hex}", forged, b"not a seal")
        reader.poll()
        assert step() == Counter({"dlq_growth": 1, "seal_failure_burst": 1})

        # a rate spike: the normal producer sends 10x its baseline in the next window
        clock.now = T0 + 10 * 5 + 1
        _send(dep, "orders-svc", 200)
        assert step() == Counter({"rate_spike": 1})
        _send(dep, "orders-svc", 50)  # the same episode
        assert step() == Counter()

        assert fired == Counter(
            {"new_producer": 1, "denial_burst": 1, "dlq_growth": 1, "seal_failure_burst": 1, "rate_spike": 1}
        )
        after = _scrape(port)
        for rule, sev in (("new_producer", "high"), ("denial_burst", "high"), ("dlq_growth", "medium"),
                          ("seal_failure_burst", "high"), ("rate_spike", "medium")):
            assert _alerts(after, rule, sev) - _alerts(before, rule, sev) == 1, rule

        def delta(name: str, **labels: str) -> float:
            key = (name, tuple(sorted(labels.items())))
            return after.get(key, 0.0) - before.get(key, 0.0)

        assert delta("eventward_events_produced_total", topic="orders", event_type="Order") == 80 + 2 + 250
        # per type on the consume side too: the reader's 80 + 2 (rogue) live deliveries, counted and
        # timed from each event's acceptance (ewtime) to its delivery
        assert delta("eventward_events_delivered_total", topic="orders", event_type="Order") == 82
        assert delta("eventward_delivery_latency_seconds_count", topic="orders", event_type="Order") == 82
        assert delta("eventward_delivery_latency_seconds_bucket", topic="orders", event_type="Order", le="+Inf") == 82
        assert 0 <= delta("eventward_delivery_latency_seconds_sum", topic="orders", event_type="Order") < 82 * 60
        assert delta("eventward_dlq_events_total", topic="orders", code="bad_seal") == 8
        assert delta("eventward_authz_denials_total", action="Publish") >= 9
        assert delta("eventward_authz_evaluations_total", action="Publish", decision="deny") >= 1
        assert delta("eventward_authz_evaluations_total", action="Publish", decision="allow") >= 1
        assert delta("eventward_events_read_total", topic="orders") >= 80 + 8
        assert after[("eventward_consumer_lag", (("group", "ship-team"), ("stream", "orders")))] > 0
        assert after[("eventward_dlq_depth", (("topic", "orders"),))] == 8
        check_labels(after)
    finally:
        server.shutdown()
        thread.join(5)
        dep.close()


def check_labels(scrape: dict) -> None:
    """Every label value is a bounded name; none is a principal, an id or free text (the
    per-type produce/consume families' ``event_type`` included)."""
    seen: Counter[str] = Counter()
    for (_, labels) in scrape:
        for k, v in labels:
            if k == "le":
                continue
            seen[k] += 1
            assert metrics.LABEL_VALUE.match(v), (k, v)
            assert v not in PRINCIPALS, (k, v)
            assert not v.startswith("ord-"), (k, v)
    assert sum(seen.values()) > 20 and seen["event_type"] >= 3 and seen["topic"] > 5
