"""The monitoring-overhead benchmark produces well-formed scenarios with its same-run baseline."""

from __future__ import annotations

from bench import bench_monitor, run
from eventward._internal.audit import log as audit_log
from eventward._internal.client import consumer
from eventward._internal.monitor import metrics


def test_quick_monitor_bench_is_well_formed_and_leaves_instrumentation_on() -> None:
    results = bench_monitor.run(quick=True)
    for res in results:
        run.check_result(res)
    assert [r["name"] for r in results] == ["produce, metrics + anomaly rules", "consume, metrics + anomaly rules"]
    assert all(r["baselines"][0]["name"] == "no monitoring" and r["baselines"][0]["ratio"] > 0 for r in results)
    assert all(r["cpu_ratio"] > 0 for r in results)  # CPU-time ratio too (robust on a shared machine)
    assert metrics.observe_audit in audit_log.OBSERVERS  # the bench restored the default
    assert metrics.observe_deliveries in consumer.DELIVERY_OBSERVERS
    assert "monitor" in run.AREAS
