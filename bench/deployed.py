"""eventward as deployed, for benchmarks: one home wired by eventward.deployment.

Everything is the real thing: the Cedar policy engine as authorizer, the tamper-evident audit
log, the key service (keys.db and the local KMS), the schema registry with the OrderPlaced
schema approved by a second principal, the trust registry, and the transport the home's
``eventward.yaml`` selects (the embedded SQLite log unless told otherwise).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from bench.workload import EVENT_TYPE, ORDER_JSON_SCHEMA, SOURCE
from eventward.client.types import Delivered
from eventward.deployment import Deployment
from eventward.home import Home

TOPIC = "orders"
PRODUCER, CONSUMER, ADMIN, AUTHOR, APPROVER = "checkout", "fulfilment", "admin", "alice", "bob"

POLICY = f"""\
principals:
  {ADMIN}: {{type: user, roles: [eventward-admin]}}
  {AUTHOR}: {{type: user, roles: [schema-author]}}
  {APPROVER}: {{type: user, roles: [schema-admin]}}
  {PRODUCER}: {{type: service, roles: [order-writer]}}
  {CONSUMER}: {{type: service, roles: [order-reader]}}
roles:
  eventward-admin:
    - {{allow: manage_policy}}
    - {{allow: [forget, hold]}}
    - {{allow: rotate_keys, class: "*"}}
    - {{allow: rotate_keys, producer: "*"}}
    - {{allow: read_audit}}
  schema-author:
    - {{allow: [propose_schema, read_schema], schema: "*"}}
  schema-admin:
    - {{allow: [approve_schema, read_schema], schema: "*"}}
  order-writer:
    - {{allow: publish, topic: "*"}}
    - {{allow: encrypt, class: "*"}}
  order-reader:
    - {{allow: subscribe, topic: "*"}}
    - {{allow: decrypt, class: pii}}
"""


def init_home(root: Path, *, config: dict[str, Any] | None = None, schema: dict[str, Any] | None = None) -> Home:
    """A new deployment home: policy, the event schema (proposed and approved), signing keys."""
    home = Home(root).ensure()
    if config:
        home.config.write_text(yaml.safe_dump(config))
    with Deployment.init(home, admin=ADMIN, policy_yaml=POLICY) as d:
        proposal = d.registry.propose(AUTHOR, EVENT_TYPE, schema or ORDER_JSON_SCHEMA)
        d.registry.approve(APPROVER, EVENT_TYPE, proposal.version)
        for p in (PRODUCER, CONSUMER):
            d.trust.ensure(p, by=ADMIN)
    return home


def produce(d: Deployment, events: Iterable[dict[str, Any]], *, topic: str = TOPIC, batch: int = 500) -> int:
    """Send every event through the Producer (authorize, validate, encrypt, seal, append, audit)."""
    n = 0
    with d.producer(PRODUCER, topic, max_batch=batch, max_delay_ms=60_000) as p:
        for data in events:
            p.send(EVENT_TYPE, data, source=SOURCE)
            n += 1
    return n


def consume(
    d: Deployment,
    n: int,
    *,
    topic: str = TOPIC,
    group: str = "bench",
    idle_timeout: float = 0.0,
    on_event: Callable[[Delivered], None] | None = None,
) -> int:
    """Deliver ``n`` events to a handler (verify, replay guard, authorize, decrypt); refuses a shortfall."""
    seen = 0

    def handler(event: Delivered) -> None:
        nonlocal seen
        seen += 1
        if on_event is not None:
            on_event(event)

    consumer = d.consumer(CONSUMER, topic, group=group, from_beginning=True)
    try:
        stats = consumer.run(handler, max_events=n, idle_timeout=idle_timeout)
    finally:
        consumer.close()
    if seen != n or stats.delivered != n or stats.refused:
        raise RuntimeError(f"delivered {stats.delivered} of {n} events (refused: {dict(stats.refused)})")
    return n


def timed(fn: Callable[[], int]) -> tuple[int, float]:
    """(what fn returned, seconds it took)."""
    t0 = time.perf_counter()
    n = fn()
    return n, time.perf_counter() - t0
