"""Turn bench results into PNG scaling plots and the README's results table."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:,.2f}"


def table(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        f"Measured {doc['started']} on {m['cpus']} CPUs, {m['processor']}, Python {m['python']} "
        f"({m['system']}); medians of repeated runs, ratios against baselines of the same run.",
        "",
        "| scenario | eventward | unit | baseline | baseline rate | ratio |",
        "|---|---:|---|---|---:|---:|",
    ]
    for s in doc["scenarios"]:
        rate = _fmt(s["rate"]["median"])
        if not s["baselines"]:
            lines.append(f"| {s['name']} | {rate} | {s['unit']} | | | |")
        for i, b in enumerate(s["baselines"]):
            head = f"| {s['name']} | {rate} | {s['unit']}" if i == 0 else "| | |"
            lines.append(f"{head} | {b['name']} | {_fmt(b['rate']['median'])} | {b['ratio']:.2f}x |")
    extras = [s for s in doc["scenarios"] if s.get("summary")]
    if extras:
        lines.append("")
        lines.extend(f"- {s['name']}: {s['summary']}" for s in extras)
    return "\n".join(lines)


def update_readme(doc: dict[str, Any], readme: Path, begin: str, end: str) -> None:
    text = readme.read_text()
    if begin not in text or end not in text:
        return
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{begin}\n{table(doc)}\n{end}{tail}")


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
        ax.set_title(s["name"])
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"{s['name']}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
