"""Turn bench results into PNG scaling plots and the README's results table."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bench import setups


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:,.2f}"


def _cell(text: str) -> str:
    """Table cells may not contain a pipe or a newline."""
    return text.replace("|", "/").replace("\n", " ")


def plot_name(scenario_name: str) -> str:
    """A file name for a scenario's plot: lowercase, words joined by underscores."""
    return re.sub(r"[^a-z0-9]+", "_", scenario_name.lower()).strip("_") + ".png"


def setup(s: dict[str, Any]) -> str:
    """The scenario's setup as the run recorded it, else as bench/setups.py declares it."""
    return str(s.get("setup") or setups.setup_of(s.get("area"), s["name"]))


def _median(v: Any) -> float | None:
    """A recorded ratio: a number, or a dict with its ``median``."""
    if isinstance(v, dict):
        v = v.get("median")
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _for_baseline(got: Any, baseline: str, first: bool) -> Any:
    """A recorded ratio's entry for ``baseline``: keyed by a prefix of its name, or one bare figure
    (a number, or a dict with its ``median``) that belongs to the first baseline."""
    if isinstance(got, dict) and "median" not in got:
        return next((v for k, v in got.items() if baseline.startswith(k)), None)
    return got if first else None


def _steadier(s: dict[str, Any], baseline: str, first: bool) -> str:
    """The steadier ratios a scenario recorded against ``baseline`` besides the ratio of medians:
    ``paired_ratios`` (short alternating rounds) and ``cpu_ratio`` (process CPU time). On a host
    whose speed drifts 2x within seconds the ratio of medians compares rounds run at different
    speeds; these do not, so the table shows them beside it."""
    paired = _for_baseline(s.get("paired_ratios"), baseline, first)
    cpu = _median(_for_baseline(s.get("cpu_ratio"), baseline, first))
    if cpu is None and isinstance(paired, dict):  # paired rounds timed in CPU time too
        cpu = _median(paired.get("cpu_median"))
    parts = [f"{label} {m:.2f}x" for label, m in (("paired", _median(paired)), ("CPU", cpu)) if m is not None]
    return f" ({', '.join(parts)})" if parts else ""


def _rows(s: dict[str, Any], label: str | None) -> list[str]:
    """A scenario's table rows, one per baseline; ``label`` (ablations) ends its first row."""
    rate = _fmt(s["rate"]["median"])
    name = _cell(s["name"])
    tail = "" if label is None else f" {_cell(label)} |"
    if not s["baselines"]:
        return [f"| {name} | {rate} | {s['unit']} | | | |{tail}"]
    rows = []
    for i, b in enumerate(s["baselines"]):
        head = f"| {name} | {rate} | {s['unit']}" if i == 0 else "| | |"
        end = tail if i == 0 else ("" if label is None else " |")
        ratio = f"{b['ratio']:.2f}x{_steadier(s, b['name'], i == 0)}"
        rows.append(f"{head} | {_cell(b['name'])} | {_fmt(b['rate']['median'])} | {ratio} |{end}")
    return rows


def _load(doc: dict[str, Any]) -> str:
    """The load average at the start, and its range over the areas' starts when recorded."""
    la = doc.get("load_average", {})
    if not la.get("before"):
        return ""
    text = f", load average {la['before'][0]:.2f} at the start"
    per_area = list(la.get("area_start", {}).values())
    if per_area:
        text += f" ({min(per_area):.2f}-{max(per_area):.2f} as areas started)"
    return text


def _cpu(doc: dict[str, Any]) -> str:
    return f", {doc['cpu_seconds'] / 60:.0f} CPU-min" if doc.get("cpu_seconds") else ""


def table(doc: dict[str, Any], plot_dir: str | None = None) -> str:
    """The Markdown results tables (deployed configuration first, then labelled ablations);
    ``plot_dir`` (relative to the README) adds the plots below them."""
    m = doc["machine"]
    lines = [
        f"Measured {doc['started']} on {m['cpus']} CPUs, {m['processor']}, Python {m['python']} "
        f"({m['system']}){_load(doc)}; medians of repeated runs, ratios against baselines of the same run; in "
        "brackets where measured, the median ratio of short alternating rounds (paired) and of CPU time (CPU), "
        "steadier than the ratio of medians on a host whose speed drifts.",
        "",
        f"Reproduce: `make bench` (this run took {doc['seconds'] / 60:.0f} min{_cpu(doc)}; `make bench-quick` only "
        "checks the harness); `python -m bench.bench_<area>` runs one area; `python -m bench.report` redraws this "
        "table and the plots from `bench/results.json`.",
    ]
    deployed = [s for s in doc["scenarios"] if setups.is_deployed(setup(s))]
    ablations = [s for s in doc["scenarios"] if not setups.is_deployed(setup(s))]
    if deployed:
        lines += [
            "",
            "Deployed configuration (`eventward init` + the example policy: Cedar, audit log, KeyService + "
            "local KMS):",
            "",
            "| scenario | eventward | unit | baseline | baseline rate | ratio (paired, CPU) |",
            "|---|---:|---|---|---:|---:|",
        ]
        for s in deployed:
            extra = setup(s).removeprefix(setups.DEPLOYED).strip()
            lines += _rows({**s, "name": f"{s['name']} {extra}" if extra else s["name"]}, None)
    if ablations:
        lines += [
            "",
            "Ablations (lighter setups: a component alone, the SDK's own wiring, or a bench policy; not what "
            "a deployment runs):",
            "",
            "| scenario | eventward | unit | baseline | baseline rate | ratio (paired, CPU) | setup |",
            "|---|---:|---|---|---:|---:|---|",
        ]
        for s in ablations:
            lines += _rows(s, setup(s).removeprefix("ablation: "))
    notes = [(s["name"], note) for s in doc["scenarios"] if (note := summary(s))]
    if notes:
        lines.append("")
        lines.extend(f"- {name}: {note}" for name, note in notes)
    slow = doc.get("slowest")
    if slow:
        lines.append("")
        lines.append("Slowest scenarios of this run (wall time, setup included): "
                     + "; ".join(f"{_cell(r['name'])} {r['seconds']:.0f} s" for r in slow[:5]) + ".")
    curves = [s for s in doc["scenarios"] if s.get("curve")]
    if plot_dir is not None and curves:
        lines.append("")
        lines.extend(f"![{s['name']}]({plot_dir}/{plot_name(s['name'])})" for s in curves)
    return "\n".join(lines)


def summary(s: dict[str, Any]) -> str:
    """The scenario's own summary, else its latency percentiles, else its curve's points."""
    if s.get("summary"):
        return str(s["summary"])
    if "p50_ms" in s and "p99_ms" in s:
        return f"latency p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms"
    curve = s.get("curve")
    if not curve:
        return ""
    series = list(curve["series"].items())
    shared = [x for x, _ in series[0][1]]

    def xs(pts: list[list[float]]) -> str:
        return " / ".join(f"{x:,}" for x, _ in pts)

    parts = []
    for name, pts in series:
        ys = " / ".join(_fmt(y) for _, y in pts)
        parts.append(f"{name} {ys}" if [x for x, _ in pts] == shared else f"{name} {ys} (at {xs(pts)})")
    return f"{curve.get('y_label', s['unit'])} at {curve['x_label']} {xs(series[0][1])}: " + "; ".join(parts)


def update_readme(doc: dict[str, Any], readme: Path, begin: str, end: str, plots_in: Path | None = None) -> bool:
    """Rewrite what is between the markers; False (file untouched) if a marker is missing."""
    text = readme.read_text()
    if begin not in text or end not in text:
        return False
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    plot_dir = None
    if plots_in is not None:
        try:
            plot_dir = plots_in.resolve().relative_to(readme.resolve().parent).as_posix()
        except ValueError:
            plot_dir = None  # plots outside the README's tree: do not link them
    readme.write_text(f"{head}{begin}\n{table(doc, plot_dir)}\n{end}{tail}")
    return True


def plots(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    """One PNG per scenario that carries a ``curve`` ({x_label, y_label, series: {name: [[x, y]...]}})."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for s in doc["scenarios"]:
        curve = s.get("curve")
        if not curve:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
        for name, pts in curve["series"].items():
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", label=name)
        if curve.get("log_x"):
            ax.set_xscale("log")
        ax.set_xlabel(curve["x_label"])
        ax.set_ylabel(curve.get("y_label", s["unit"]))
        ax.set_ylim(bottom=0)
        ax.set_title(s["name"])
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / plot_name(s["name"])
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """Re-render plots and the README table from a saved results file, without measuring again."""
    import argparse
    import json

    from bench import run

    ap = argparse.ArgumentParser(prog="python -m bench.report", description=main.__doc__)
    ap.add_argument("results", nargs="?", type=Path, default=run.BENCH_DIR / "results.json")
    args = ap.parse_args(argv)
    doc = json.loads(args.results.read_text())
    for path in plots(doc, args.results.parent):
        print(f"wrote {run.shown(path)}")
    if doc.get("quick") or doc.get("partial") or doc.get("failed_areas"):
        print("README table left as is (quick, partial or failed run)")
    elif update_readme(doc, run.ROOT / "README.md", run.README_BEGIN, run.README_END, args.results.parent):
        print("updated the README results table")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
