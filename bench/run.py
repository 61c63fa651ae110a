"""One benchmark harness: every scenario, its same-run baselines, JSON, plots and the README table.

    python -m bench.run            full run -> bench/results.json, bench/*.png, README table
    python -m bench.run --quick    small sizes; checks the harness produces well-formed JSON
    python -m bench.run --only fields,audit

Each ``bench/bench_<area>.py`` exposes ``run(quick: bool) -> list[dict]`` (see bench.common).
Machines are noisy, so every scenario reports ratios against baselines measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.common import machine, print_scenario

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
AREAS = (
    "fields", "keys", "keys_hsm", "schema", "policy", "audit", "e2e", "nats", "gateway", "memory", "scaling", "cli",
)
README_BEGIN = "<!-- bench-table:begin -->"
README_END = "<!-- bench-table:end -->"


def discover(only: set[str] | None) -> list[str]:
    present = [a for a in AREAS if (BENCH_DIR / f"bench_{a}.py").exists()]
    return [a for a in present if not only or a in only]


def check_result(res: Any) -> None:
    """Every scenario must be well formed: CI checks the shape, not the numbers."""
    if not isinstance(res, dict) or not isinstance(res.get("name"), str):
        raise ValueError("scenario result must be a dict with a name")
    rate = res.get("rate")
    if not isinstance(rate, dict) or not all(isinstance(rate.get(k), int | float) for k in ("median", "min", "max")):
        raise ValueError(f"scenario {res.get('name')}: rate needs numeric median/min/max")
    if not rate["min"] <= rate["median"] <= rate["max"]:
        raise ValueError(f"scenario {res['name']}: min <= median <= max violated")
    for b in res.get("baselines", []):
        if not isinstance(b.get("name"), str) or not isinstance(b.get("ratio"), int | float):
            raise ValueError(f"scenario {res['name']}: baseline needs a name and a numeric ratio")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes for CI")
    ap.add_argument("--only", default="", help="comma-separated areas")
    ap.add_argument("--out", default=None, help="JSON output path")
    args = ap.parse_args(argv)
    only = {a.strip() for a in args.only.split(",") if a.strip()} or None
    out_path = Path(args.out) if args.out else BENCH_DIR / ("results-quick.json" if args.quick else "results.json")

    results: list[dict[str, Any]] = []
    failures: list[str] = []
    t_start = time.time()
    for area in discover(only):
        print(f"== {area} ==", flush=True)
        try:
            mod = importlib.import_module(f"bench.bench_{area}")
            for res in mod.run(quick=args.quick):
                check_result(res)
                res["area"] = area
                results.append(res)
                print_scenario(res)
        except Exception:
            failures.append(area)
            traceback.print_exc()
    doc = {
        "quick": args.quick,
        "machine": machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
        "seconds": round(time.time() - t_start, 1),
        "scenarios": results,
        "failed_areas": failures,
    }
    out_path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out_path.relative_to(ROOT)} ({len(results)} scenarios)")
    if not args.quick:
        from bench import report

        report.plots(doc, BENCH_DIR)
        report.update_readme(doc, ROOT / "README.md", README_BEGIN, README_END)
    if failures:
        print(f"FAILED areas: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
