"""The PII and secrets guard: scanner throughput, the producer guard's cost, pipeline throughput.

guard_scan: eventward's scanner (guard.scan.findings: every untagged leaf of an OrderPlaced
event, bench/workload.py, one RE2 Set match per string, validators on candidates) over events
of which 10% carry a planted value in a free-text ``notes`` field (bench/pii_corpus.py).
Baseline: a plain-regex scanner as usually written (Python ``re``: email, 13-19 digit runs,
SSN, IPv4, AWS key, JWT, PEM header over every string, no validation), which finds more
false positives and is not safe from ReDoS.

guard_warn_producer: a deployed home (Cedar policy, audit log, key service, registry) sending
the same kind of clean events with ``x-eventward-guard: warn`` on one topic, ``block`` on another
and ``off`` on a third, one ``send`` per event, through one long-lived producer per topic: short
chunks of events (one sealed batch each) to each in turn (rotating which goes first), CPU time
per chunk. The overhead is off / warn - 1 over the median chunk rates (goal: <= 15%): the modes
interleave every few tens of milliseconds, so a neighbour's load on a shared machine hits them
alike.

guard_pipeline: a redaction pipeline (tokenize, mask, generalize, drop) from a raw topic to a
clean one on the embedded log, as its own principal (consume, verify, decrypt, transform,
scan the output, re-encrypt, seal, append, lineage audit). Baseline: the same consumer
reading the raw topic with a no-op handler.

    python -m bench.bench_guard [--quick]
"""

from __future__ import annotations

import copy
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import interleaved, print_scenario, scenario, summarize
from bench.pii_corpus import planted
from bench.workload import EVENT_TYPE, ORDER_JSON_SCHEMA, ORDER_SPEC, order_placed
from eventward._internal.deployment import Deployment
from eventward._internal.guard import detectors as k
from eventward._internal.guard.pipeline import Pipeline, PipelineSpec
from eventward._internal.guard.scan import findings
from eventward._internal.home import Home

_PLAIN = [re.compile(p) for p in (
    r"[\w.+-]+@[\w-]+\.[\w.]+", r"\b(?:\d[ -]?){13,19}\b", r"\b\d{3}-\d{2}-\d{4}\b",
    r"\b\d{1,3}(?:\.\d{1,3}){3}\b", r"AKIA[0-9A-Z]{16}", r"eyJ[\w-]+\.[\w-]+\.[\w-]*", r"BEGIN [A-Z ]*PRIVATE KEY",
)]


def plain_regex_findings(data: Any, prefix: str = "") -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    if isinstance(data, dict):
        for key, v in data.items():
            out += plain_regex_findings(v, f"{prefix}.{key}" if prefix else key)
    elif isinstance(data, list):
        for v in data:
            out += plain_regex_findings(v, prefix + "[]")
    elif isinstance(data, str):
        out += [(prefix, i) for i, rx in enumerate(_PLAIN) if rx.search(data)]
    return out


def _events(n: int, seed: int = 19) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    kinds = sorted(k.CLASS_OF)
    out = []
    for i in range(n):
        e = order_placed(i)
        e["notes"] = planted(rng, rng.choice(kinds)) if i % 10 == 0 else "leave the parcel at the back door"
        out.append(e)
    return out


def scan_scenario(n: int, rounds: int) -> dict[str, Any]:
    events = _events(n)

    def ours() -> int:
        for e in events:
            findings(e, ORDER_SPEC)
        return n

    def plain() -> int:
        for e in events:
            plain_regex_findings(e)
        return n

    r = interleaved({"eventward": ours, "plain_regex": plain}, rounds)
    hits = sum(bool(findings(e, ORDER_SPEC)) for e in events)
    return scenario("guard_scan", r.pop("eventward"), r, events=n, events_with_findings=hits)


_GUARDED = copy.deepcopy(ORDER_JSON_SCHEMA)
_GUARDED["x-eventward-guard"] = {"*": "off", "orders.warn": "warn", "orders.block": "block"}
# the subject id encrypted too: valid whether or not a bare subject tag is (a clear id must say so)
_GUARDED["properties"]["customer"]["properties"]["id"]["x-eventward"] = {"subject": True, "class": "pii"}
POLICY = """\
principals:
  admin: {type: user, roles: [admin]}
  alice: {type: user, roles: [author]}
  bob: {type: user, roles: [approver]}
  orders-svc: {type: service, roles: [writer]}
  redactor: {type: service, roles: [redactor]}
roles:
  admin:
    - {allow: manage_policy}
    - {allow: rotate_keys, producer: "*"}
  author:
    - {allow: [propose_schema, read_schema], schema: "*"}
  approver:
    - {allow: [approve_schema, read_schema], schema: "*"}
  writer:
    - {allow: publish, topic: "*"}
    - {allow: encrypt, class: "*"}
  redactor:
    - {allow: [subscribe, publish], topic: "*"}
    - {allow: [encrypt, decrypt], class: "*"}
"""
_SINK: dict[str, Any] = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string"},
        "placed_at": {"type": "string"},
        "customer": {"type": "object", "properties": {
            "id": {"type": "string", "x-eventward": {"subject": True, "class": "pii"}},
            "email": {"type": "string", "x-eventward": {"class": "pii", "deterministic": True}},
            "phone": {"type": "string"},
            "tier": {"type": "string"},
        }, "required": ["id"]},
        "total": {"type": "string"},
        "channel": {"type": "string"},
    },
    "required": ["order_id", "customer"],
}
_PIPELINE = """\
name: bench
principal: redactor
source: {topic: raw}
sink: {topic: clean, type: OrderAnalytics}
fields:
  order_id: keep
  placed_at: {generalize: month}
  customer.id: keep
  customer.email: tokenize
  customer.phone: {mask: 4}
  customer.tier: keep
  totals.total: drop
  channel: keep
"""


def _home(root: Path) -> Home:
    home = Home(root).ensure()
    with Deployment.init(home, policy_yaml=POLICY) as d:
        for type_, doc in ((EVENT_TYPE, _GUARDED), ("OrderAnalytics", _SINK)):
            prop = d.registry.propose("alice", type_, doc)
            d.registry.approve("bob", type_, prop.version)
        for p in ("orders-svc", "redactor"):
            d.trust.ensure(p, by="admin")
    return home


def producer_scenario(dep: Deployment, n: int, rounds: int) -> dict[str, Any]:
    """Rates in events per CPU-second of this process (on a shared machine wall time mostly
    measures the neighbours): ``rounds`` chunks of ``n`` fresh events (new order ids) per mode."""
    modes = ("warn", "off", "block")
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    base = 0
    # a chunk is one sealed batch: each chunk pays for exactly one flush (seal, append; in warn
    # mode the deferred detectors too), so chunk rates compare like for like
    producers = {m: dep.producer("orders-svc", f"orders.{m}", max_batch=n, max_delay_ms=60_000) for m in modes}
    try:

        def chunk(mode: str) -> float:
            nonlocal base
            events = [order_placed(i) for i in range(base, base + n)]
            base += n
            send = producers[mode].send
            t0 = time.process_time()
            for e in events:
                send(EVENT_TYPE, e)
            return time.process_time() - t0

        for m in modes:
            chunk(m)  # warm-up: keys, plans, caches
        for r in range(rounds):
            for m in modes[r % 3:] + modes[: r % 3]:
                cpu[m].append(chunk(m))
    finally:
        for p in producers.values():
            p.close()
    warn, off, block = (summarize([n / t for t in cpu[m]]) for m in modes)
    # extra CPU per event relative to guard off; medians: a chunk that caught a full garbage
    # collection (tens of ms) would otherwise count against whichever mode was running
    return scenario("guard_warn_producer", warn, {"guard_off": off, "guard_block": block}, unit="events/CPU-s",
                    events=n * rounds, overhead=round(off["median"] / warn["median"] - 1, 4),
                    overhead_block=round(off["median"] / block["median"] - 1, 4), goal_overhead=0.15)


def pipeline_scenario(dep: Deployment, n: int, rounds: int) -> dict[str, Any]:
    events = [order_placed(i) for i in range(n)]
    with dep.producer("orders-svc", "raw", max_batch=500, max_delay_ms=60_000) as p:
        for e in events:
            p.send(EVENT_TYPE, e)
    spec = PipelineSpec.from_yaml(_PIPELINE)
    pipe_rates, base_rates = [], []
    for r in range(rounds):
        named = PipelineSpec(**{**spec.__dict__, "name": f"bench{r}", "sink_topic": f"clean{r}"})
        t0 = time.perf_counter()
        stats = Pipeline(dep, named).run(idle_timeout=0.0)
        pipe_rates.append(stats.emitted / (time.perf_counter() - t0))
        if stats.emitted != n:
            raise AssertionError(f"pipeline bench: {stats.emitted} of {n} emitted")
        consumer = dep.consumer("redactor", "raw", group=f"base{r}", from_beginning=True)
        t0 = time.perf_counter()
        got = consumer.run(lambda _: None, idle_timeout=0.0).delivered
        base_rates.append(got / (time.perf_counter() - t0))
        consumer.close()
    return scenario("guard_pipeline", summarize(pipe_rates), {"consume_only": summarize(base_rates)}, events=n)


def run(quick: bool = False, sizes: tuple[int, int, int] | None = None) -> list[dict[str, Any]]:
    n_scan, n_prod, n_pipe = sizes or ((2_000, 250, 500) if quick else (20_000, 500, 5_000))
    rounds = 1 if quick else 5
    out = [scan_scenario(n_scan, rounds)]
    root = Path(tempfile.mkdtemp(prefix="ew-bench-guard-"))
    try:
        with Deployment.open(_home(root / "home")) as dep:
            out.append(producer_scenario(dep, n_prod, 4 if quick else 25))
            out.append(pipeline_scenario(dep, n_pipe, rounds))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for res in run(quick="--quick" in args):
        print_scenario(res)
        if "overhead" in res:
            print(f"      warn-mode overhead {res['overhead']:.1%} (goal <= {res['goal_overhead']:.0%}), "
                  f"block-mode {res['overhead_block']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
