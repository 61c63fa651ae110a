"""One benchmark harness: every scenario, its same-run baselines, JSON, plots and the README table.

    python -m bench.run            full run -> bench/results.json, bench/*.png, README table
    python -m bench.run --quick    small sizes; checks the harness produces well-formed JSON
    python -m bench.run --only fields,audit --out /tmp/partial.json

Each ``bench/bench_<area>.py`` exposes ``run(quick: bool) -> list[dict]`` (see bench.common).
Machines are noisy, so every scenario reports ratios against baselines measured in the same
run, and the JSON records the load average around the run. Plots go next to the JSON; the
README table is rewritten only by a complete full run (every area, default output, no failure),
so a partial or failed run never replaces published numbers.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.common import machine, print_scenario, restart_clock
from bench.setups import setup_of

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
AREAS = (
    "fields", "anchors", "keys", "keys_hsm", "schema", "policy", "seals", "audit", "e2e", "nats", "gateway", "memory",
    "scaling", "guard", "control", "monitor", "store", "partitions", "replicas",
)
# Areas too slow for --quick (a database server and several processes to start): full runs, or --only.
FULL_ONLY = frozenset({"replicas"})
README_BEGIN = "<!-- bench-table:begin -->"
README_END = "<!-- bench-table:end -->"


def discover(only: set[str] | None) -> list[str]:
    """Areas whose module exists, in AREAS order; an unknown name in ``only`` is an error."""
    unknown = sorted((only or set()) - set(AREAS))
    if unknown:
        raise SystemExit(f"unknown area(s): {', '.join(unknown)} (known: {', '.join(AREAS)})")
    present = [a for a in AREAS if (BENCH_DIR / f"bench_{a}.py").exists()]
    return [a for a in present if not only or a in only]


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def check_result(res: Any) -> None:
    """Every scenario must be well formed: CI checks the shape, not the numbers."""
    if not isinstance(res, dict) or not isinstance(res.get("name"), str) or not res["name"]:
        raise ValueError("scenario result must be a dict with a name")
    name = res["name"]
    if not isinstance(res.get("unit"), str):
        raise ValueError(f"scenario {name}: unit must be a string")
    rate = res.get("rate")
    if not isinstance(rate, dict) or not all(_number(rate.get(k)) for k in ("median", "min", "max")):
        raise ValueError(f"scenario {name}: rate needs finite numeric median/min/max")
    if not rate["min"] <= rate["median"] <= rate["max"]:
        raise ValueError(f"scenario {name}: min <= median <= max violated")
    baselines = res.get("baselines")
    if not isinstance(baselines, list):
        raise ValueError(f"scenario {name}: baselines must be a list")
    for b in baselines:
        if not isinstance(b, dict) or not isinstance(b.get("name"), str) or not _number(b.get("ratio")):
            raise ValueError(f"scenario {name}: baseline needs a name and a finite numeric ratio")
        if not isinstance(b.get("rate"), dict) or not _number(b["rate"].get("median")):
            raise ValueError(f"scenario {name}: baseline {b['name']} needs a numeric rate median")
    if "curve" in res:
        check_curve(name, res["curve"])
    try:
        json.dumps(res, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"scenario {name}: not JSON-serializable ({e})") from None


def check_curve(name: str, curve: Any) -> None:
    """A curve is {x_label, y_label?, log_x?, series: {name: [[x, y], ...]}} with numeric points."""
    if not isinstance(curve, dict) or not isinstance(curve.get("x_label"), str):
        raise ValueError(f"scenario {name}: curve needs an x_label")
    series = curve.get("series")
    if not isinstance(series, dict) or not series:
        raise ValueError(f"scenario {name}: curve needs at least one series")
    for sname, pts in series.items():
        ok = isinstance(pts, list) and pts and all(
            isinstance(p, list | tuple) and len(p) == 2 and _number(p[0]) and _number(p[1]) for p in pts
        )
        if not ok:
            raise ValueError(f"scenario {name}: curve series {sname!r} needs [[x, y], ...] numeric points")
        if curve.get("log_x") and any(p[0] <= 0 for p in pts):
            raise ValueError(f"scenario {name}: curve series {sname!r} has x <= 0 on a log axis")


def run_area(area: str, quick: bool) -> list[dict[str, Any]]:
    """One area's checked scenarios; raises if the module fails or returns a malformed result."""
    mod = importlib.import_module(f"bench.bench_{area}")
    results = mod.run(quick=quick)
    if not isinstance(results, list) or not results:
        raise ValueError(f"bench_{area}.run() must return a non-empty list of scenarios")
    for res in results:
        check_result(res)
        res["area"] = area
        res.setdefault("setup", setup_of(area, res["name"]))
    return results


def cpu_seconds() -> float:
    """User + system CPU of this process and of the children it has waited for (worker pools,
    consumer processes, servers it stopped)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def slowest(results: list[dict[str, Any]], k: int = 8) -> list[dict[str, Any]]:
    """The ``k`` scenarios that took the most wall time (``seconds``, setup included)."""
    timed = [r for r in results if _number(r.get("seconds"))]
    timed.sort(key=lambda r: r["seconds"], reverse=True)
    return [{"area": r["area"], "name": r["name"], "seconds": r["seconds"]} for r in timed[:k]]


def shown(path: Path) -> str:
    """The path relative to the repository when it is inside it, else as it is."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes for CI")
    ap.add_argument("--only", default="", help="comma-separated areas")
    ap.add_argument("--out", default=None, help="JSON output path (plots are written next to it)")
    args = ap.parse_args(argv)
    only = {a.strip() for a in args.only.split(",") if a.strip()} or None
    default_out = BENCH_DIR / ("results-quick.json" if args.quick else "results.json")
    out_path = Path(args.out) if args.out else default_out

    results: list[dict[str, Any]] = []
    failures: list[str] = []
    area_seconds: dict[str, float] = {}
    area_load: dict[str, float] = {}  # the 1-minute load average as each area starts
    area_cpu: dict[str, float] = {}  # CPU seconds of this process and its waited-for children
    load_before = os.getloadavg()
    t_start = time.time()
    for area in [a for a in discover(only) if not (args.quick and only is None and a in FULL_ONLY)]:
        area_load[area] = round(os.getloadavg()[0], 2)
        print(f"== {area} == (load {area_load[area]:.2f})", flush=True)
        t0, c0 = time.time(), cpu_seconds()
        restart_clock()
        try:
            for res in run_area(area, args.quick):
                results.append(res)
                print_scenario(res)
        except Exception:
            failures.append(area)
            traceback.print_exc()
        area_seconds[area] = round(time.time() - t0, 1)
        area_cpu[area] = round(cpu_seconds() - c0, 1)
        print(f"   ({area}: {area_seconds[area]} s, {area_cpu[area]} CPU-s)", flush=True)
    doc = {
        "quick": args.quick,
        "partial": only is not None,
        "machine": machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
        "seconds": round(time.time() - t_start, 1),
        "area_seconds": area_seconds,
        # on a shared machine wall time is mostly other people's load; CPU time is the run's own
        "cpu_seconds": round(sum(area_cpu.values()), 1),
        "area_cpu_seconds": area_cpu,
        "slowest": slowest(results),
        "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()],
                         "area_start": area_load},
        "scenarios": results,
        "failed_areas": failures,
    }
    # A failed run into the default place writes beside the published results, not over them: the
    # README table, results.json and the plots stay those of one complete run.
    keep_published = bool(failures) and args.out is None
    if keep_published:
        out_path = default_out.with_name(f"{default_out.stem}-failed.json")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    print(f"wrote {shown(out_path)} ({len(results)} scenarios in {doc['seconds']} s)")
    print("slowest: " + "; ".join(f"{r['name']} {r['seconds']} s" for r in doc["slowest"]))
    if not args.quick:
        from bench import report

        for png in [] if keep_published else report.plots(doc, out_path.parent):
            print(f"wrote {shown(png)}")
        if only is None and out_path == default_out and not failures:
            report.update_readme(doc, ROOT / "README.md", README_BEGIN, README_END, BENCH_DIR)
            print("updated the README results table")
        else:
            print("README table left as is (partial run, other output, or a failed area)")
    if failures:
        print(f"FAILED areas: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
