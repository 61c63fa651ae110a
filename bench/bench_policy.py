"""Authorization: cached PolicyEngine.decide against an uncached cedarpy call.

    python -m bench.bench_policy [--quick]

authorize: 68 distinct allowed requests (topics, event types, classes, schemas, producers'
signing keys, ABAC with a zone) cycled through PolicyEngine.decide with a warm cache. Baselines, same run, same
requests: cedarpy.is_authorized with pre-parsed PolicySet and Entities handles (the cheapest
uncached Cedar call), and eventward's own uncached evaluation (request building, DLQ mapping,
explanations). Target: cached >= 1,000,000 decisions/s.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import cedarpy

from bench.common import print_scenario, rate, scenario
from eventward._internal.home import Home
from eventward._internal.policy import base
from eventward._internal.policy.compile_cedar import uid
from eventward._internal.policy.engine import PolicyEngine
from eventward._internal.policy.evaluator import time_context
from eventward._internal.policy.store import PolicyStore

POLICY = """
principals:
  orders-svc: {type: service, roles: [order-writer], attributes: {zone: internal}}
  shipping-svc: {type: service, roles: [shipping]}
  analytics-svc: {type: service, roles: [analytics]}
  alice: {type: user, roles: [schema-admin, policy-admin, key-admin]}
roles:
  order-writer:
    - {allow: publish, topic: orders, event_types: [OrderPlaced, OrderCancelled, OrderShipped, OrderRefunded]}
  shipping:
    - {allow: subscribe, topic: orders}
    - {allow: subscribe, topic: "orders.", match: prefixed}
    - {allow: decrypt, classes: [pii]}
  analytics:
    - {allow: subscribe, topic: "*"}
    - {deny: subscribe, topic: payments}
  schema-admin: [{allow: [propose_schema, approve_schema, read_schema], schema: "*"}]
  policy-admin: [{allow: manage_policy}]
  key-admin: [{allow: rotate_keys, producer: "*"}]
"""

ABAC = """
@id("internal-decrypt")
permit (principal, action == Eventward::Action::"Decrypt", resource == Eventward::Class::"payment")
when { principal has zone && principal.zone == "internal" && context has zone && context.zone == "internal" };
"""

Request = tuple[str, str, tuple[str, str], dict[str, str] | None]


def requests() -> list[Request]:
    out: list[Request] = []
    for t in ("OrderPlaced", "OrderCancelled", "OrderShipped", "OrderRefunded"):
        out.append(("orders-svc", base.PUBLISH, ("Topic", "orders"), {"event_type": t}))
    for region in ("eu", "us", "apac", "latam"):
        topic = ("Topic", f"orders.{region}")
        out.append(("shipping-svc", base.SUBSCRIBE, topic, {"event_type": "OrderPlaced"}))
    for i in range(40):
        out.append(("analytics-svc", base.SUBSCRIBE, ("Topic", f"topic-{i}"), {"event_type": "Any"}))
    for i in range(12):
        out.append(("alice", base.READ_SCHEMA, ("Schema", f"Event{i}"), None))
    for i in range(4):
        out.append(("alice", base.ROTATE_KEYS, ("Producer", f"svc-{i}"), None))
    out += [("shipping-svc", base.DECRYPT, ("Class", "pii"), None)] * 2
    out += [("orders-svc", base.DECRYPT, ("Class", "payment"), {"zone": "internal"})] * 2
    return out


def _cedar_requests(engine: PolicyEngine, reqs: list[Request]) -> tuple[list[dict[str, Any]], Any, Any]:
    """The same requests as raw cedarpy inputs, every resource entity parsed in advance."""
    spec = engine._state.evaluator.spec
    compiled = engine._state.evaluator.compiled
    resources = {r for _, _, r, _ in reqs}
    delta = [{"uid": uid(k, i), "attrs": {"name": i}, "parents": []} for k, i in resources]
    entities = cedarpy.Entities.from_json_str(compiled.entities).with_added_json_str(json.dumps(delta))
    policies = cedarpy.PolicySet.from_str(compiled.text)
    now = time_context(0.0)
    raw = [
        {
            "principal": uid(spec.principals[p].type, p),
            "action": uid("Action", a),
            "resource": uid(*r),
            "context": {**(c or {}), **now},
        }
        for p, a, r, c in reqs
    ]
    return raw, policies, entities


# A batch-window rule: the policy now reads the time, so the cache key gains the UTC minute.
TIMED = """
@id("batch-window")
permit (principal == Eventward::User::"alice", action == Eventward::Action::"Publish", resource)
when { context.hour >= 1 && context.hour < 3 };
"""


def _engine(root: Path, name: str, cedar: dict[str, str]) -> PolicyEngine:
    home = Home(root / name).ensure()
    store = PolicyStore.open(home)
    store.init(POLICY, cedar)
    store.close()
    return PolicyEngine.open(home)


def _cached(engine: PolicyEngine, reqs: list[Request], n: int) -> dict[str, float]:
    for r in reqs:
        assert engine.decide(*r).allowed, r
    rs = reqs * max(1, n // len(reqs))

    def loop() -> int:
        decide = engine.decide
        for p, a, r, c in rs:
            decide(p, a, r, c)
        return len(rs)

    return rate(loop, repeats=3)


def run(quick: bool = False) -> list[dict[str, Any]]:
    cached_n = 50_000 if quick else 1_000_000
    uncached_n = 200 if quick else 5_000
    reqs = requests()
    with tempfile.TemporaryDirectory() as tmp:
        engine = _engine(Path(tmp), "plain", {"abac.cedar": ABAC})
        timed = _engine(Path(tmp), "timed", {"abac.cedar": ABAC, "timed.cedar": TIMED})
        try:
            raw, policies, entities = _cedar_requests(engine, reqs)
            assert all(cedarpy.is_authorized(q, policies, entities).allowed for q in raw)
            evaluator = engine._state.evaluator

            def cedar_uncached() -> int:
                for i in range(uncached_n):
                    cedarpy.is_authorized(raw[i % len(raw)], policies, entities)
                return uncached_n

            def eventward_uncached() -> int:
                for i in range(uncached_n):
                    p, a, r, c = reqs[i % len(reqs)]
                    evaluator.evaluate(p, a, r, c, 0.0)
                return uncached_n

            measured = _cached(engine, reqs, cached_n)
            measured_timed = _cached(timed, reqs, cached_n)
            cedar = rate(cedar_uncached, repeats=3)
            ew = rate(eventward_uncached, repeats=3)
        finally:
            engine.close()
            timed.close()
    baselines = {"uncached cedarpy.is_authorized": cedar, "uncached eventward evaluation": ew}
    extra = {"unit": "decisions/s", "distinct_requests": len(reqs)}
    return [
        scenario("authorize (cached PolicyEngine.decide)", measured, baselines, target=1_000_000, **extra),
        scenario("authorize (cached, time-dependent policy)", measured_timed, baselines, **extra),
        scenario("authorize (uncached eventward evaluation)", ew, {"cedarpy.is_authorized": cedar}, **extra),
    ]


if __name__ == "__main__":
    for res in run(quick="--quick" in sys.argv):
        print_scenario(res)
