"""Security monitoring: Prometheus metrics, anomaly rules over the audit log, OCSF export, traces.

``instrument(dep)`` is the one hook a Deployment calls: the audit and delivery observers,
per-batch timing on its transport, KMS timing and the key cache's hit ratio. A client-mode
process (``eventward.connect``) gets the observers from ``observe_process`` or
``start_http_server``. See docs/monitoring.md.
"""

from __future__ import annotations

from typing import Any

from eventward._internal.audit import log as _audit_log
from eventward._internal.client import consumer as _consumer
from eventward._internal.monitor import metrics
from eventward._internal.monitor.metrics import render

__all__ = ["instrument", "metrics", "observe_process", "render", "start_http_server", "uninstrument"]


def observe_process() -> None:
    """Count this process's audit records (produced events per type, refusals, denials, ...) and
    consumer deliveries (per type, with latency). Idempotent."""
    if metrics.observe_audit not in _audit_log.OBSERVERS:
        _audit_log.OBSERVERS.append(metrics.observe_audit)
    if metrics.observe_deliveries not in _consumer.DELIVERY_OBSERVERS:
        _consumer.DELIVERY_OBSERVERS.append(metrics.observe_deliveries)


def start_http_server(port: int, addr: str = "127.0.0.1") -> tuple[Any, Any]:
    """Expose /metrics from an SDK process (loopback unless told otherwise) and feed it this
    process's records and deliveries; (server, thread)."""
    observe_process()
    return metrics.start_http_server(port, addr)


def instrument(dep: Any) -> None:
    """Wire a Deployment's audit log, consumers, transport, KMS and key cache into the metrics."""
    observe_process()
    metrics.instrument_transport(dep.transport)
    metrics.instrument_kms(getattr(dep.keys, "kms", None))
    metrics.track_cache("dek", dep.keys.cache)


def uninstrument(dep: Any) -> None:
    """Undo ``instrument`` (the benchmark's baseline; processes that must not count anything)."""
    if metrics.observe_audit in _audit_log.OBSERVERS:
        _audit_log.OBSERVERS.remove(metrics.observe_audit)
    if metrics.observe_deliveries in _consumer.DELIVERY_OBSERVERS:
        _consumer.DELIVERY_OBSERVERS.remove(metrics.observe_deliveries)
    for obj, names in ((dep.transport, ("append", "read")),
                       (getattr(dep.keys, "kms", None), ("wrap", "unwrap", "mac", "rotate", "destroy"))):
        if obj is None or not getattr(obj, "_ew_instrumented", False):
            continue
        for name in names:
            obj.__dict__.pop(name, None)
        del obj._ew_instrumented
