"""eventward as deployed, for benchmarks: one home wired by eventward._internal.deployment.

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
from eventward._internal import demo
from eventward._internal.client.types import Delivered
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home

TOPIC = "orders"
# The example deployment's principals (src/eventward/_internal/examples/policy.yaml).
PRODUCER, CONSUMER, ADMIN, AUTHOR, APPROVER = demo.PRODUCER, demo.SHIPPING, demo.ADMIN, demo.AUTHOR, demo.APPROVER


def example_policy(*, any_topic: bool = False) -> str:
    """The example policy a user applies after ``eventward init``, verbatim. ``any_topic``
    widens its topic grants to every topic (scenarios that use a fresh topic per run); the
    rules and their evaluation are otherwise the same."""
    text = demo.example("policy.yaml")
    if any_topic:
        text = text.replace("topic: orders", 'topic: "*"').replace(", on_topics: [orders]", "")
    return text


def init_home(
    root: Path,
    *,
    config: dict[str, Any] | None = None,
    schema: dict[str, Any] | None = None,
    any_topic: bool = True,
) -> Home:
    """A new deployment home as ``eventward init`` + the example policy make it: policy, the
    event schema (proposed and approved), signing keys."""
    home = Home(root).ensure()
    if config:
        home.config.write_text(yaml.safe_dump(config))
    with Deployment.init(home, policy_yaml=example_policy(any_topic=any_topic)) as d:
        proposal = d.registry.propose(AUTHOR, EVENT_TYPE, schema or ORDER_JSON_SCHEMA)
        d.registry.approve(APPROVER, EVENT_TYPE, proposal.version)
        for p in (PRODUCER, CONSUMER):
            d.trust.ensure(p, by=ADMIN)
    return home


def produce(d: Deployment, events: Iterable[dict[str, Any]], *, topic: str = TOPIC, batch: int = 500) -> int:
    """Send every event through the Producer (authorize, validate, encrypt, seal, append, audit),
    ``batch`` events per ``send_many`` call: the producer's per-batch path."""
    n = 0
    with d.producer(PRODUCER, topic, max_batch=batch, max_delay_ms=60_000) as p:
        chunk: list[dict[str, Any]] = []
        for data in events:
            chunk.append(data)
            if len(chunk) == batch:
                n += len(p.send_many(EVENT_TYPE, chunk, source=SOURCE))
                chunk = []
        if chunk:
            n += len(p.send_many(EVENT_TYPE, chunk, source=SOURCE))
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
