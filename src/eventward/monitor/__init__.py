"""Security monitoring: Prometheus metrics, anomaly rules over the audit log, OCSF export, traces.

``instrument(dep)`` is the one hook a Deployment calls: the audit observer, per-batch timing on
its transport, KMS timing and the key cache's hit ratio. See docs/monitoring.md.
"""

from __future__ import annotations

from typing import Any

from eventward.audit import log as _audit_log
from eventward.monitor import metrics
from eventward.monitor.metrics import render, start_http_server

__all__ = ["instrument", "metrics", "render", "start_http_server", "uninstrument"]


def instrument(dep: Any) -> None:
    """Wire a Deployment's audit log, transport, KMS and key cache into the metrics registry."""
    if metrics.observe_audit not in _audit_log.OBSERVERS:
        _audit_log.OBSERVERS.append(metrics.observe_audit)
    metrics.instrument_transport(dep.transport)
    metrics.instrument_kms(getattr(dep.keys, "kms", None))
    metrics.track_cache("dek", dep.keys.cache)


def uninstrument(dep: Any) -> None:
    """Undo ``instrument`` (the benchmark's baseline; processes that must not count anything)."""
    if metrics.observe_audit in _audit_log.OBSERVERS:
        _audit_log.OBSERVERS.remove(metrics.observe_audit)
    for obj, names in ((dep.transport, ("append", "read")),
                       (getattr(dep.keys, "kms", None), ("wrap", "unwrap", "mac", "rotate", "destroy"))):
        if obj is None or not getattr(obj, "_ew_instrumented", False):
            continue
        for name in names:
            obj.__dict__.pop(name, None)
        del obj._ew_instrumented
