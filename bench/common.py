"""Measurement helpers shared by every benchmark scenario.

A scenario measures eventward and its baselines in the same run and reports ratios:
machines are noisy, ratios much less so. Results are plain dicts written to JSON.
"""

from __future__ import annotations

import gc
import itertools
import multiprocessing
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any


def rate(fn: Callable[[], int], repeats: int = 3) -> dict[str, float]:
    """Run ``fn`` (which returns how many events it processed) ``repeats`` times.

    Returns events/s as median/min/max.
    """
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        dt = time.perf_counter() - t0
        rates.append(n / dt if dt > 0 else float("inf"))
    return summarize(rates)


def summarize(rates: list[float]) -> dict[str, float]:
    """median/min/max of rates measured some other way (across processes, excluding setup)."""
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}


_since = [time.perf_counter()]


def restart_clock() -> None:
    """Start timing the next scenario now (bench.run calls it as each area starts)."""
    _since[0] = time.perf_counter()


def scenario(
    name: str,
    measured: dict[str, float],
    baselines: dict[str, dict[str, float]] | None = None,
    unit: str = "events/s",
    **extra: Any,
) -> dict[str, Any]:
    """One scenario's result with each baseline's ratio (eventward median / baseline median).

    ``seconds`` is the wall time since the previous scenario was built or its area started
    (setup included), so the slowest parts of a full run can be named; an area that measures
    everything before building its results charges that time to its first scenario."""
    now = time.perf_counter()
    seconds, _since[0] = round(now - _since[0], 1), now
    out: dict[str, Any] = {"name": name, "unit": unit, "rate": measured, "baselines": [], "seconds": seconds}
    for bname, b in (baselines or {}).items():
        out["baselines"].append(
            {"name": bname, "rate": b, "ratio": measured["median"] / b["median"] if b["median"] else None}
        )
    out.update(extra)
    return out


def print_scenario(res: dict[str, Any]) -> None:
    r = res["rate"]
    print(f"{res['name']:<40} {r['median']:>14,.0f} {res['unit']}  (min {r['min']:,.0f}, max {r['max']:,.0f})")
    for b in res["baselines"]:
        print(f"    vs {b['name']:<33} {b['rate']['median']:>14,.0f} {res['unit']}  ratio {b['ratio']:.2f}x")


def in_parallel(fn: Callable[[int, int], int], n: int, workers: int | None = None, min_share: int = 1000) -> int:
    """``fn(start, stop)`` over ``[0, n)`` split across worker processes (one per CPU, at most 4,
    each at least ``min_share`` items); returns the sum of what they return.

    For setup work only (filling stores before a measurement). ``fn`` must be picklable (a
    module-level function or a functools.partial of one). Workers are spawned, not forked, so
    no SQLite handle or lock of this process is inherited.
    """
    workers = max(1, min(workers or os.cpu_count() or 1, 4, n // max(1, min_share)))
    if workers == 1:
        return fn(0, n)
    bounds = [n * w // workers for w in range(workers + 1)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(fn, a, b) for a, b in itertools.pairwise(bounds)]
        return sum(f.result() for f in futures)


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "system": platform.platform(),
    }


@contextmanager
def frozen_inputs() -> Iterator[None]:
    """Move the objects alive now (the scenario's inputs: lists of events, keys, caches made in a
    warm-up) out of the garbage collector's sight while the body runs. A service holds no such
    lists; without this every full collection of every contender walks them, and the one that
    allocates most (eventward, not the plain baselines) pays most. The same for all contenders."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def interleaved(fns: dict[str, Callable[[], int]], rounds: int) -> dict[str, dict[str, float]]:
    """Like common.rate, but one run of each implementation per round, so that noise from
    other work on the machine hits all of them alike. A warm-up run comes first (keys
    created, plans compiled), and the objects alive by then (inputs, keys, caches) are moved
    out of the garbage collector's sight: every measured run is steady state, and none pays
    for traversing the test data the others also hold."""
    for fn in fns.values():
        fn()
    with frozen_inputs():
        samples: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(rounds):
            for name, fn in fns.items():
                samples[name].append(rate(fn, 1)["median"])
    return {k: {"median": statistics.median(v), "min": min(v), "max": max(v)} for k, v in samples.items()}
