"""Scaling curves of the SDK's produce + consume path on the embedded log, as deployed.

    python -m bench.bench_scaling [--quick]

Each point sends events through the Producer (policy, schema validation, field encryption,
envelope, seal, SQLite append, audit) and reads them back through a Consumer (seal
verification, replay guard, policy, decryption, offsets), both from eventward._internal.deployment on
one home; the rate is events / (produce time + consume time). Every point opens a fresh
deployment, so key caches start cold as in a restarted service. Three curves:

* producer batch size 1 .. 1000: a seal (one Ed25519 signature) and a fully synchronous
  SQLite commit per batch, amortized over the batch;
* distinct data subjects 10 / 1k / 100k: the DEK caches (producer and consumer) stop hitting
  once every event belongs to a subject not seen before; each miss is a key-store read and
  a KEK unwrap (and an audited unwrap on the consumer side);
* event size ~300 B .. 8 KB: larger documents to validate, hash and store (3 PII fields each).

Keys for all subjects are bulk-loaded first (bench/subjects.py), so points measure using keys,
not creating them. The three curves cross at the reference workload (batch 500, 1,000 subjects,
~600 B: the same events), measured once and shared. Baseline at every point, in the same run:
the same events as plain JSON through the same SQLite layout with the same batch size
(bench_e2e.plain_json_sqlite).
"""

from __future__ import annotations

import itertools
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import deployed, subjects
from bench.bench_e2e import plain_json_sqlite
from bench.common import print_scenario, rate, scenario, summarize
from bench.workload import customer, order_placed
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home

REFERENCE = {"batch": 500, "subjects": 1_000, "size": 600}  # the workload every other bench uses
SIZES = {300: (1, 0), 600: (3, 0), 2_000: (22, 0), 8_000: (38, 150)}  # ~bytes -> (items, name length)
_STRIDE = 7919  # a prime: i -> i * _STRIDE % subjects visits every subject before repeating one


def event(i: int, *, subjects_n: int = REFERENCE["subjects"], size: int = REFERENCE["size"]) -> dict[str, Any]:
    """The i-th OrderPlaced of about ``size`` bytes, its customer spread over ``subjects_n``."""
    data = order_placed(i)
    data["customer"] = customer(i * _STRIDE % subjects_n)
    items, name_len = SIZES[size]
    if size < 600:  # the minimal order: no address, tier or phone
        data["customer"] = {k: data["customer"][k] for k in ("id", "name", "email")}
    if items != len(data["items"]) or name_len:
        base = data["items"]
        data["items"] = [dict(base[j % len(base)]) for j in range(items)]
        for j, it in enumerate(data["items"]):
            if name_len:
                it["name"] = f"{it['name']} {'x' * name_len}"[:name_len] + f" #{j}"
    return data


class _Points:
    """Produce + consume runs on one bench home, each on a topic of its own."""

    def __init__(self, home: Home, repeats: int) -> None:
        self.home = home
        self.repeats = repeats
        self._ids = itertools.count()

    def run(self, events: list[dict[str, Any]], batch: int) -> dict[str, float]:
        """events/s of produce + consume (opening the deployment is not timed)."""
        return summarize([len(events) / self._once(events, batch) for _ in range(self.repeats)])

    def _once(self, events: list[dict[str, Any]], batch: int) -> float:
        topic = f"scale.{next(self._ids)}"
        with Deployment.open(self.home) as d:
            _, produce_s = deployed.timed(lambda: deployed.produce(d, events, topic=topic, batch=batch))
            _, consume_s = deployed.timed(lambda: deployed.consume(d, len(events), topic=topic, group=topic))
        return produce_s + consume_s


def _curve(
    name: str,
    x_label: str,
    xs: list[int],
    ref: int,
    make: Callable[[int], tuple[list[dict[str, Any]], int]],
    points: _Points,
    repeats: int,
    reference: dict[str, Any],
    log_x: bool = True,
) -> dict[str, Any]:
    """One scenario: eventward and the plain baseline at every x; the table row is the reference x.

    Every curve passes through the reference workload (batch 500, 1,000 subjects, ~600 B: the
    same events): it is measured once, by the first curve, and shared (``reference``)."""
    ew: dict[int, dict[str, float]] = {}
    plain: dict[int, dict[str, float]] = {}
    sizes: dict[int, int] = {}
    for x in xs:
        if x == ref and reference:
            ew[x], plain[x], sizes[x] = reference["ew"], reference["plain"], reference["events"]
            continue
        events, batch = make(x)
        ew[x] = points.run(events, batch)
        plain[x] = rate(plain_json_sqlite(events, batch), repeats)
        sizes[x] = len(events)
        if x == ref:
            reference.update(ew=ew[x], plain=plain[x], events=sizes[x])
    at = ref if ref in ew else xs[-1]
    return scenario(
        name,
        ew[at],
        {f"plain_json_sqlite (same batch), at {at:,}": plain[at]},
        reference=at,
        events_per_point=sizes,
        points={x: round(ew[x]["median"]) for x in xs},
        plain_points={x: round(plain[x]["median"]) for x in xs},
        curve={
            "x_label": x_label,
            "y_label": "events/s (produce + consume)",
            "log_x": log_x,
            "series": {
                "eventward (everything on)": [[x, ew[x]["median"]] for x in xs],
                "plain JSON in SQLite": [[x, plain[x]["median"]] for x in xs],
            },
        },
    )


def run(quick: bool = False) -> list[dict[str, Any]]:
    if quick:
        n, repeats = 300, 1
        batches, subject_counts, sizes = [10, 500], [10, 1_000], [300, 2_000]
    else:
        n, repeats = 10_000, 3
        batches, subject_counts, sizes = [1, 10, 50, 100, 500, 1_000], [10, 1_000, 100_000], [300, 600, 2_000, 8_000]
    root = Path(tempfile.mkdtemp(prefix="ew-bench-scaling-"))
    try:
        home = deployed.init_home(root / "home")
        subjects.populate_home(home, "cust-{:06d}", max(subject_counts), ("pii",))  # workload.customer ids
        points = _Points(home, repeats)

        def by_batch(b: int) -> tuple[list[dict[str, Any]], int]:
            # Tiny batches are slow (a signature and an fsync each): fewer events, same seconds.
            return [event(i) for i in range(min(n, max(200, 20 * b)))], b

        def by_subjects(s: int) -> tuple[list[dict[str, Any]], int]:
            return [event(i, subjects_n=s) for i in range(n)], REFERENCE["batch"]

        def by_size(z: int) -> tuple[list[dict[str, Any]], int]:
            return [event(i, size=z) for i in range(n)], REFERENCE["batch"]

        shared: dict[str, Any] = {}
        return [
            _curve("scaling: producer batch size", "producer batch size (events per seal)", batches,
                   REFERENCE["batch"], by_batch, points, repeats, shared),
            _curve("scaling: distinct data subjects", "distinct data subjects", subject_counts,
                   REFERENCE["subjects"], by_subjects, points, repeats, shared),
            _curve("scaling: event size", "event data size (bytes of JSON, ~)", sizes,
                   REFERENCE["size"], by_size, points, repeats, shared),
        ]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    for res in run(quick="--quick" in sys.argv[1:]):
        print_scenario(res)
        print(f"    eventward {res['points']}")
        print(f"    plain     {res['plain_points']}")


if __name__ == "__main__":
    main()
