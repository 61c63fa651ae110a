"""Consumer memory with a million data subjects: bounded, not proportional to the subjects.

    python -m bench.bench_memory [--quick | --subjects N]

consumer_memory_1m_subjects: 1,000,000 distinct data subjects (quick: 20,000), one OrderPlaced
event each, so every event's PII is under a DEK of its own and the consumer's key cache never
hits. Keys and events are written in bulk by worker processes (bench/bulk.py: random DEKs
really wrapped by the local KMS, events sealed the way the Producer builds them). Then a consumer as
deployed (eventward._internal.deployment: Cedar policy, audit log, KeyService with its bounded DEK
cache, seal verification, persisted replay guard, decryption) runs in a fresh process and
reports its own peak RSS as it passes 1k, 10k, 100k, ... subjects: memory grows until the
bounded caches (DEK LRU, dedup window) are full, then stays flat. Every key lookup misses the
caches: per chunk of a read batch, one key-store query, one unwrap per key and one ``key.unwrap``
audit record (counted from the audit log afterwards). The events name their subjects in the order
their keys were made, as a consumer of newly seen subjects meets them (keys made at first use), so
the key store's pages are read in order (bucketed kids, keys/dek.py); subjects named in random
order would cost ~5 us more per key at a million keys.
Rates are wall-clock; ``cpu_ratio`` compares the two processes' CPU times (getrusage), steadier
on a machine other work shares.

Baseline in the same run: a plain reader process over the same log (read + JSON parse; no
seal, replay guard, policy, keys or decryption), i.e. the floor of a Python process reading
SQLite, for both events/s and RSS.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import bulk, deployed, proc
from bench.common import print_scenario, scenario, summarize
from eventward._internal.audit.log import AuditLog
from eventward._internal.config import Config
from eventward._internal.keys.service import KeyServiceConfig

MARKS = (1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000)


def _measure(role: str, home: Path, n: int, marks: list[int]) -> dict[str, Any]:
    # An hour at most: a million events on a loaded machine.
    res = proc.run_role(role, home, "--events", str(n), "--marks", ",".join(map(str, marks)), timeout=3600.0)
    res["rss_mb"] = {int(k): v for k, v in res["rss_mb"].items()}
    res["rate"] = n / (res["last_delivered"] - res["started"])
    return res


def _audit_actions(home: Path, action: str) -> int:
    """How many records of ``action`` the home's audit log holds (read-only, after the run)."""
    log = AuditLog.open_readonly(home / "audit.db")
    try:
        count, start = 0, 0
        while batch := log.since(start, 8192):
            count += sum(1 for r in batch if r.action == action)
            start = batch[-1].index + 1
        return count
    finally:
        log.close()


def run(quick: bool = False, subjects: int | None = None) -> list[dict[str, Any]]:
    """``subjects``: another size than the full (1,000,000) or quick (20,000) one, e.g. 50,000
    for a profile; the scenario keeps its name, its ``subjects`` field says the size."""
    n = subjects if subjects is not None else 20_000 if quick else 1_000_000
    marks = [m for m in MARKS if m < n] + [n]
    root = Path(tempfile.mkdtemp(prefix="ew-bench-memory-"))
    try:
        home = deployed.init_home(root / "home")
        t0 = time.perf_counter()
        bulk.write(home, n)
        setup_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        ew = _measure("consume", home.root, n, marks)
        t2 = time.perf_counter()
        plain = _measure("read", home.root, n, marks)
        load = os.getloadavg()
        phases_s = {  # where the scenario's wall time goes (the setup is not measured)
            "setup: bulk keys + sealed events": round(t1 - t0, 1),
            "eventward consumer process": round(t2 - t1, 1),
            "plain reader process": round(time.perf_counter() - t2, 1),
        }
        unwrap_records = _audit_actions(home.root, "key.unwrap")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rss, floor = ew["rss_mb"], plain["rss_mb"]
    tenth, half = (max(m for m in rss if m <= n // k) for k in (10, 2))
    cache_max, window = KeyServiceConfig().cache_max, Config().consumer.dedup_window
    cpu_ratio = plain["cpu_s"] / ew["cpu_s"] if ew["cpu_s"] > 0 else 0.0
    return [
        scenario(
            "consumer_memory_1m_subjects",
            summarize([ew["rate"]]),
            {"plain reader (read + parse, no checks)": summarize([plain["rate"]])},
            subjects=n,
            events=n,
            rss_mb=rss,
            plain_rss_mb=floor,
            peak_rss_mb=ew["peak_rss_mb"],
            maxrss_mb=ew["maxrss_mb"],
            cpu_ratio=round(cpu_ratio, 3),
            load_avg=[round(x, 2) for x in load],
            consumer_cpu_us_per_event=round(1e6 * ew["cpu_s"] / n, 1),
            plain_cpu_us_per_event=round(1e6 * plain["cpu_s"] / n, 1),
            key_unwrap_audit_records=unwrap_records,
            dek_cache_max=cache_max,
            dedup_window=window,
            setup_seconds=round(setup_s, 1),
            phases_s=phases_s,
            summary=(
                f"consumer peak RSS {rss[tenth]:.0f} MB at {tenth:,} subjects, {rss[half]:.0f} MB at {half:,}, "
                f"{rss[n]:.0f} MB at {n:,} ({rss[n] - rss[half]:+.1f} MB over the last {n - half:,}); "
                f"plain reader {floor[n]:.0f} MB. Bounds: DEK cache {cache_max:,} keys, dedup window {window:,} ids. "
                f"CPU time ratio {cpu_ratio:.3f} ({1e6 * ew['cpu_s'] / n:.0f} vs {1e6 * plain['cpu_s'] / n:.0f} us "
                f"per event); {unwrap_records:,} key.unwrap audit records for {n:,} keys."
            ),
            curve={
                "x_label": "distinct data subjects consumed (one event each)",
                "y_label": "peak RSS (MB)",
                "log_x": True,
                "series": {
                    "eventward consumer": [[m, rss[m]] for m in sorted(rss)],
                    "plain reader": [[m, floor[m]] for m in sorted(floor)],
                },
            },
        )
    ]


def main() -> None:
    args = sys.argv[1:]
    subjects = int(args[args.index("--subjects") + 1]) if "--subjects" in args else None
    for res in run(quick="--quick" in args, subjects=subjects):
        print_scenario(res)
        print(f"    {res['summary']}")
        print(f"    rss_mb {res['rss_mb']}")


if __name__ == "__main__":
    main()
