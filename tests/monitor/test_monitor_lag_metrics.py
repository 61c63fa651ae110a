"""Consumer lag per group on the embedded log and on a real nats-server (gauge and a once-per-episode
alert from the live monitor); metric labels that cannot carry identities or grow without bound;
KMS, key-cache, forget and gateway-bridge metrics; OpenTelemetry spans joined by traceparent."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from eventward._internal.audit import log as audit_log
from eventward._internal.log import natsserver
from eventward._internal.log.embedded import EmbeddedLog
from eventward._internal.log.nats import NatsTransport
from eventward._internal.monitor import metrics
from eventward._internal.monitor.lag import group_lags
from eventward._internal.monitor.rules import load_rules
from eventward._internal.monitor.service import Monitor

from .world import free_port_block, make_home


def value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    node = natsserver.start_all(tmp_path_factory.mktemp("nats-lag"), size=1, port=free_port_block(1))[0]
    try:
        yield node.url(tls=False)
    finally:
        natsserver.stop(node)


class _Audit:
    """The slice of the audit log the monitor needs, for transport-only tests."""

    def __init__(self) -> None:
        self.records: list[dict] = []

    def since(self, start: int, limit: int = 4096) -> list:
        return []

    def record(self, action: str, **kw: object) -> None:
        self.records.append({"action": action, **kw})

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("kind", ["embedded", "nats"])
def test_lag_per_group_gauge_and_alert(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if kind == "embedded":
        t = EmbeddedLog(tmp_path / "log.db")
    else:
        t = NatsTransport(request.getfixturevalue("nats_url"), timeout_s=5.0)
    try:
        stream = f"lag.{uuid.uuid4().hex[:10]}"
        t.create_stream(stream)
        t.append(stream, "b1", [b"e%d" % i for i in range(30)], b"seal")
        t.commit("fast", stream, 30)
        t.commit("slow", stream, 5)
        lags = {(g.group, g.stream): g.lag for g in group_lags(t)}
        assert lags[("fast", stream)] == 0 and lags[("slow", stream)] == 25
        assert value("eventward_consumer_lag", stream=stream, group="slow") == 25

        audit = _Audit()
        mon = Monitor(audit, t, rules={**load_rules(), "consumer_lag": {"threshold": 20}}, sample_every=0)
        assert [a.rule for a in mon.poll()] == ["consumer_lag"]
        assert [a.rule for a in mon.poll()] == []  # still behind: the same episode
        assert audit.records[0]["action"] == "monitor.alert" and audit.records[0]["group"] == "slow"
        t.commit("slow", stream, 29)
        assert mon.poll() == []  # caught up: re-armed
        t.append(stream, "b2", [b"x"] * 40, b"seal")
        assert sorted(a.meta["group"] for a in mon.poll()) == ["fast", "slow"]
    finally:
        t.close()


def test_attack_label_values_cannot_carry_identities_or_grow_unbounded() -> None:
    metrics.observe_audit("dlq.put", "Topic::jane.doe@example.org", "ok", "", {"code": "bad seal\nx"})
    text = metrics.render().decode()
    assert "jane.doe@example.org" not in text and "bad seal" not in text
    assert 'eventward_dlq_events_total{code="_invalid_",topic="_invalid_"}' in text
    for i in range(metrics.MAX_SERIES + 50):  # a family no other test reads: the registry is per process
        metrics.observe_audit("Subscribe", f"Topic::flood.t{i}", "error", "handler_error", {"code": "handler_error"})
    fams = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    topics = {s.labels["topic"] for s in fams["eventward_consume_refusals"].samples}
    assert len(topics) <= metrics.MAX_SERIES + 1 and metrics.OTHER in topics


def test_attack_audit_observer_never_sees_the_principal(tmp_path: Path) -> None:
    seen: list[tuple] = []
    audit_log.OBSERVERS.append(lambda *a: seen.append(a))
    try:
        dep = make_home(tmp_path)
        with dep.producer("orders-svc", "orders") as p:
            p.send("Order", {"order_id": "ord-1", "amount": 1})
        dep.close()
    finally:
        audit_log.OBSERVERS.pop()
    assert seen and all(len(a) == 5 for a in seen)  # (action, resource, outcome, reason, meta)
    publishes = [a for a in seen if a[0] == "Publish"]
    assert publishes and not any("orders-svc" in repr(a) for a in publishes)  # who published is not passed
    text = metrics.render().decode()
    assert "orders-svc" not in text  # trust.register's resource names it; no label ever takes a resource as is


def test_kms_cache_forget_and_gateway_bridge(tmp_path: Path) -> None:
    from eventward._internal.gateway.metrics import GatewayMetrics

    dep = make_home(tmp_path)
    try:
        before = value("eventward_forget_seconds_count")
        macs = value("eventward_kms_seconds_count", op="mac")
        dep.forget("customer-7@example.org", principal="admin", reason="gdpr-art17")
        assert value("eventward_forget_seconds_count") == before + 1
        assert value("eventward_kms_seconds_count", op="mac") > macs  # the subject hash is a KMS MAC
        assert metrics.REGISTRY.get_sample_value("eventward_cache_hit_ratio", {"cache": "dek"}) is not None
        text = GatewayMetrics().render()
        assert "# TYPE eventward_gateway_requests_total counter" in text
        assert "# TYPE eventward_forget_seconds histogram" in text
        assert "customer-7" not in text
        fams = [f.name for f in text_string_to_metric_families(text)]  # one parseable page
        assert "eventward_gateway_requests" in fams and "eventward_forgets" in fams
    finally:
        dep.close()


def test_sdk_metrics_server_binds_loopback() -> None:
    server, thread = metrics.start_http_server(0)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.shutdown()
        thread.join(5)


def test_otel_spans_follow_the_event_through_the_log(tmp_path: Path) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from eventward._internal.monitor import tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    old = trace._TRACER_PROVIDER
    trace._TRACER_PROVIDER = provider  # the global provider, restored below (set_tracer_provider is once-only)
    try:
        dep = make_home(tmp_path)
        with tracer.start_as_current_span("checkout") as root, dep.producer("orders-svc", "orders") as p:
            tracing.send(p, "Order", {"order_id": "ord-9", "amount": 9})
        handled = []
        c = dep.consumer("shipping", "orders", group="ship-team", from_beginning=True)
        c.run(tracing.traced(handled.append), max_events=1, idle_timeout=0)
        dep.close()
    finally:
        trace._TRACER_PROVIDER = old
    assert len(handled) == 1 and handled[0].attributes["traceparent"].split("-")[1] == format(
        root.get_span_context().trace_id, "032x")
    spans = {s.name: s for s in exporter.get_finished_spans()}
    pub, proc = spans["publish orders"], spans["process orders"]
    assert pub.context.trace_id == proc.context.trace_id == root.get_span_context().trace_id
    assert proc.parent.span_id == pub.context.span_id
    assert "ord-9" not in repr(proc.attributes) and "ord-9" not in repr(pub.attributes)


def test_kms_failures_are_counted_by_code_and_still_raised() -> None:
    from eventward.errors import KMSUnavailable

    class Flaky:
        def unwrap(self, kek_id: str, wrapped: bytes, aad: bytes) -> bytes:
            raise KMSUnavailable("token gone")

        def mac(self, purpose: str, data: bytes) -> bytes:
            return b"m"

    kms = metrics.instrument_kms(Flaky())
    assert isinstance(kms, Flaky) and metrics.instrument_kms(kms) is kms  # same class, idempotent
    before = value("eventward_kms_errors_total", op="unwrap", code="kms_unavailable")
    with pytest.raises(KMSUnavailable):
        kms.unwrap("pii.v1", b"w", b"a")
    assert kms.mac("p", b"d") == b"m"
    assert value("eventward_kms_errors_total", op="unwrap", code="kms_unavailable") == before + 1
