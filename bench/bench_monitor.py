"""Monitoring overhead: metrics (audit observer, per-batch transport timing) plus anomaly-rule
evaluation, on the producer and on the consumer path, against the same deployment with
instrumentation removed, interleaved in one run (goal: ratio >= 0.95, i.e. at most 5% overhead).

    python -m bench.bench_monitor [--quick]

"on" includes the live monitor's work: after each timed run it polls the audit log through the
rules once (``Monitor.poll``), inside the timing, as ``serve`` does on its background thread.

Besides the wall-clock ratio, each scenario reports ``cpu_ratio``: the best process CPU time per
run off over on. On a machine shared with other work the wall clock swings by more than the 5%
being measured; the least CPU time a run needed does not.
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import interleaved, print_scenario, scenario
from eventward._internal import monitor
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward._internal.monitor.service import Monitor

POLICY = """\
principals:
  admin: {type: user, roles: [admin]}
  alice: {type: user, roles: [author]}
  bob: {type: user, roles: [approver]}
  orders-svc: {type: service, roles: [writer]}
  shipping: {type: service, roles: [reader]}
roles:
  admin: [{allow: manage_policy}, {allow: read_audit}, {allow: rotate_keys, producer: "*"}]
  author: [{allow: [propose_schema, read_schema], schema: "*"}]
  approver: [{allow: [approve_schema, read_schema], schema: "*"}]
  writer: [{allow: publish, topic: orders}]
  reader: [{allow: subscribe, topic: orders}]
"""
ORDER = {
    "type": "object",
    "properties": {"order_id": {"type": "string"}, "amount": {"type": "integer"}, "note": {"type": "string"}},
    "required": ["order_id", "amount"],
}


def _both_orders(fns: dict[str, Any], rounds: int) -> dict[str, dict[str, float]]:
    """Interleaved rounds in one order, then in the other: whichever runs second in a round
    finds caches warmed by the first, so one order alone would flatter one side."""
    a = interleaved(fns, max(1, rounds // 2 + rounds % 2))
    b = interleaved(dict(reversed(list(fns.items()))), max(1, rounds // 2))
    return {k: {"median": (a[k]["median"] + b[k]["median"]) / 2, "min": min(a[k]["min"], b[k]["min"]),
                "max": max(a[k]["max"], b[k]["max"])} for k in fns}


def _cpu_timed(fn: Callable[[], int], into: list[float]) -> Callable[[], int]:
    def timed() -> int:
        t = time.process_time()
        n = fn()
        into.append(time.process_time() - t)
        return n
    return timed


def run(quick: bool = False) -> list[dict[str, Any]]:
    n = 1000 if quick else 10_000
    rounds = 3 if quick else 7
    with tempfile.TemporaryDirectory() as tmp:
        dep = Deployment.init(Home(Path(tmp) / "home"), admin="admin", policy_yaml=POLICY)
        try:
            dep.trust.ensure("orders-svc", by="admin")
            prop = dep.registry.propose("alice", "Order", ORDER)
            dep.registry.approve("bob", "Order", prop.version)
            watcher = Monitor(dep.audit, dep.transport, sample_every=3600)
            watcher.learn()
            events = [{"order_id": f"o-{i}", "amount": i, "note": "x" * 200} for i in range(n)]

            def mode(on: bool) -> None:
                (monitor.instrument if on else monitor.uninstrument)(dep)

            def produce(on: bool) -> Any:
                def fn() -> int:
                    mode(on)
                    with dep.producer("orders-svc", "orders") as p:
                        for e in events:
                            p.send("Order", e)
                    if on:
                        watcher.poll()
                    return n
                return fn

            def consume(on: bool) -> Any:
                def fn() -> int:
                    mode(on)
                    c = dep.consumer("shipping", "orders", group=f"g-{uuid.uuid4().hex[:8]}", from_beginning=True)
                    got = len(c.poll(max_events=n))
                    if on:
                        watcher.poll()
                    return got
                return fn

            cpu: dict[str, list[float]] = {k: [] for k in ("produce off", "produce on", "consume off", "consume on")}
            prod = _both_orders({"off": _cpu_timed(produce(False), cpu["produce off"]),
                                 "on": _cpu_timed(produce(True), cpu["produce on"])}, rounds)
            cons = _both_orders({"off": _cpu_timed(consume(False), cpu["consume off"]),
                                 "on": _cpu_timed(consume(True), cpu["consume on"])}, rounds)
            monitor.instrument(dep)
        finally:
            dep.close()
    extra = {"events_per_run": n, "goal_ratio_at_least": 0.95}
    def cpu_ratio(path: str) -> float:  # warm-up runs included: the minimum is a steady-state run
        return round(min(cpu[f"{path} off"]) / min(cpu[f"{path} on"]), 4)

    return [
        scenario("produce, metrics + anomaly rules", prod["on"], {"no monitoring": prod["off"]},
                 cpu_ratio=cpu_ratio("produce"), **extra),
        scenario("consume, metrics + anomaly rules", cons["on"], {"no monitoring": cons["off"]},
                 cpu_ratio=cpu_ratio("consume"), **extra),
    ]


if __name__ == "__main__":
    for res in run(quick="--quick" in sys.argv):
        print_scenario(res)
        print(f"    CPU-time ratio (best run off / best run on) {res['cpu_ratio']:.3f} (goal >= 0.95)")
