"""The benchmark harness: result checking, the README table, plots, and bench.run end to end.

``make bench-quick`` gives the numbers; these tests pin the harness itself: a malformed
scenario fails its area, a failed or partial run never rewrites the README, ``--out`` may
point anywhere, and the quick run of the new areas produces well-formed JSON.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest
from bench.common import scenario
from benchkit import ROOT, curve_scenario

from bench import report, run, setups
from eventward._internal.client.consumer import CHUNK_EVENTS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_check_result_accepts_what_scenario_builds(doc: dict[str, Any]) -> None:
    for s in doc["scenarios"]:
        run.check_result(s)
    assert doc["scenarios"][1]["baselines"][0]["ratio"] == pytest.approx(0.5)


def _broken(mutate: Any) -> dict[str, Any]:
    s = copy.deepcopy(curve_scenario("broken one"))
    mutate(s)
    return s


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.pop("name"), "with a name"),
        (lambda s: s["rate"].update(min=3_000.0), "min <= median <= max"),
        (lambda s: s["rate"].update(median=float("nan")), "finite numeric"),
        (lambda s: s["rate"].update(max=float("inf")), "finite numeric"),
        (lambda s: s["rate"].update(median=True), "finite numeric"),
        (lambda s: s["baselines"][0].update(ratio=None), "finite numeric ratio"),
        (lambda s: s["baselines"][0].pop("rate"), "numeric rate median"),
        (lambda s: s.update(baselines={"plain": 1}), "baselines must be a list"),
        (lambda s: s.update(unit=7), "unit must be a string"),
        (lambda s: s["curve"].pop("x_label"), "x_label"),
        (lambda s: s["curve"].update(series={}), "at least one series"),
        (lambda s: s["curve"]["series"]["eventward"].append([5]), "numeric points"),
        (lambda s: s["curve"]["series"]["eventward"].append(["a", 1]), "numeric points"),
        (lambda s: s["curve"]["series"]["plain"].append([0, 10.0]), "log axis"),
        (lambda s: s.update(extra=object()), "not JSON-serializable"),
    ],
)
def test_check_result_refuses_malformed_scenarios(mutate: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run.check_result(_broken(mutate))


def test_table_lists_every_baseline_with_its_ratio_summaries_and_plots(doc: dict[str, Any]) -> None:
    text = report.table(doc, "bench")
    assert "| seal_verify | 90,000 | events/s | per_event_ed25519_verify | 4,500 | 20.00x |" in text
    assert "| scaling: batch size | 2,000 | events/s | plain / json | 4,000 | 0.50x |" in text  # pipe escaped
    assert "- seal_verify: one signature per batch" in text
    assert "![scaling: batch size](bench/scaling_batch_size.png)" in text
    assert "load average 0.50 at the start" in text
    assert "seal_verify.png" not in text  # no curve, no plot


def test_table_shows_paired_and_cpu_ratios_beside_the_ratio_of_medians_of_their_own_baseline() -> None:
    """Each recorded shape lands on the row of the baseline it measured, and nowhere else: a
    ratio by baseline-name prefix (paired dict with its CPU median, CPU dict), a bare figure on
    the first baseline only."""
    def one(name: str, **extra: Any) -> dict[str, Any]:
        return scenario(name, {"median": 100.0, "min": 90.0, "max": 110.0},
                        {"in-memory keys (same)": {"median": 125.0, "min": 120.0, "max": 130.0},
                         "raw publish": {"median": 200.0, "min": 190.0, "max": 210.0}}, setup=setups.DEPLOYED,
                        **extra)
    keyed = one("keyed", paired_ratios={"in-memory keys": {"median": 0.93, "each": [0.9, 0.96], "cpu_median": 0.95},
                                        "unrelated": {"median": 9.0}},
                cpu_ratio={"raw": {"median": 0.61, "each": [0.6]}, "note": "text"})
    bare = one("bare", paired_ratios={"median": 0.42, "each": [0.4, 0.44]}, cpu_ratio=0.47)
    text = report.table({"started": "now", "machine": {"cpus": 2, "processor": "x", "python": "3", "system": "y"},
                         "seconds": 60, "scenarios": [keyed, bare]})
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert "| keyed | 100 | events/s | in-memory keys (same) | 125 | 0.80x (paired 0.93x, CPU 0.95x) |" in rows
    assert "| | | | raw publish | 200 | 0.50x (CPU 0.61x) |" in rows
    assert "| bare | 100 | events/s | in-memory keys (same) | 125 | 0.80x (paired 0.42x, CPU 0.47x) |" in rows
    assert rows.count("| | | | raw publish | 200 | 0.50x |") == 1  # the bare figures belong to the first row
    assert "9.00x" not in text


def test_summary_prefers_the_scenarios_own_then_latency_then_curve_points(doc: dict[str, Any]) -> None:
    own, curve = doc["scenarios"]
    assert report.summary(own) == "one signature per batch"
    assert report.summary({**own, "summary": "", "p50_ms": 1.234, "p99_ms": 20.0}) == (
        "latency p50 1.23 ms, p99 20.00 ms"
    )
    assert report.summary(curve) == (
        "events/s at batch 1 / 10 / 500: eventward 500 / 1,500 / 2,000; plain 900 / 4,000 (at 1 / 500)"
    )
    assert report.summary({"name": "x", "unit": "u"}) == ""


def test_report_rerenders_a_saved_run_and_skips_the_readme_for_partial_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, doc: dict[str, Any]
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"{run.README_BEGIN}\n{run.README_END}\n")
    monkeypatch.setattr(run, "ROOT", tmp_path)
    saved = tmp_path / "bench" / "results.json"
    saved.parent.mkdir()
    saved.write_text(json.dumps({**doc, "partial": True}))
    assert report.main([str(saved)]) == 0
    assert (saved.parent / "scaling_batch_size.png").exists()
    assert readme.read_text() == f"{run.README_BEGIN}\n{run.README_END}\n"
    saved.write_text(json.dumps(doc))
    assert report.main([str(saved)]) == 0
    assert "| seal_verify | 90,000 |" in readme.read_text()
    assert "(bench/scaling_batch_size.png)" in readme.read_text()


def test_update_readme_rewrites_only_between_the_markers(tmp_path: Path, doc: dict[str, Any]) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{run.README_BEGIN}\nold numbers\n{run.README_END}\nouttro\n")
    assert report.update_readme(doc, readme, run.README_BEGIN, run.README_END, tmp_path / "bench")
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{run.README_END}\nouttro\n")
    assert "old numbers" not in text and "| seal_verify | 90,000 |" in text
    assert "(bench/scaling_batch_size.png)" in text

    plain = tmp_path / "OTHER.md"
    plain.write_text("no markers here\n")
    assert not report.update_readme(doc, plain, run.README_BEGIN, run.README_END)
    assert plain.read_text() == "no markers here\n"


def test_plots_write_one_png_per_curve(tmp_path: Path, doc: dict[str, Any]) -> None:
    written = report.plots(doc, tmp_path)
    assert [p.name for p in written] == ["scaling_batch_size.png"]
    data = written[0].read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5_000


@pytest.fixture
def fake_areas(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Two in-memory areas: ``good`` returns a curve scenario, ``bad`` a malformed one."""
    modules = {
        "good": lambda quick=False: [curve_scenario("fake curve")],
        "bad": lambda quick=False: [scenario("fake bad", {"median": 1.0, "min": 2.0, "max": 3.0})],
    }
    for name, fn in modules.items():
        monkeypatch.setitem(sys.modules, f"bench.bench_{name}", types.SimpleNamespace(run=fn))
    readme = ROOT / "README.md"
    return {"readme": readme, "before": readme.read_bytes(), "modules": modules}


def test_a_malformed_area_fails_the_run_and_leaves_the_readme(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_areas: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(run, "discover", lambda only: ["good", "bad"])
    out = tmp_path / "elsewhere" / "results.json"  # outside the repository, parent missing
    assert run.main(["--out", str(out)]) == 1
    doc = json.loads(out.read_text())
    assert doc["failed_areas"] == ["bad"] and doc["partial"] is False
    assert [s["name"] for s in doc["scenarios"]] == ["fake curve"]
    assert (out.parent / "fake_curve.png").read_bytes().startswith(PNG_MAGIC)
    printed = capsys.readouterr().out
    assert f"wrote {out} (1 scenarios" in printed  # the path as given, no relative_to crash
    assert "README table left as is" in printed
    assert fake_areas["readme"].read_bytes() == fake_areas["before"]


def test_a_failed_full_run_leaves_the_published_results_and_plots_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_areas: dict[str, Any]
) -> None:
    """results.json and the plots are what the README table was drawn from: a failed run writes
    beside them (results-failed.json) so that the three never disagree."""
    monkeypatch.setattr(run, "discover", lambda only: ["good", "bad"])
    monkeypatch.setattr(run, "BENCH_DIR", tmp_path)
    published = tmp_path / "results.json"
    published.write_text('{"published": true}\n')
    assert run.main([]) == 1
    assert published.read_text() == '{"published": true}\n'
    doc = json.loads((tmp_path / "results-failed.json").read_text())
    assert doc["failed_areas"] == ["bad"] and [s["name"] for s in doc["scenarios"]] == ["fake curve"]
    assert not list(tmp_path.glob("*.png"))
    assert fake_areas["readme"].read_bytes() == fake_areas["before"]


def test_an_unknown_area_is_refused_by_name() -> None:
    with pytest.raises(SystemExit, match="unknown area"):
        run.discover({"fields", "nope"})


def test_run_area_refuses_an_empty_result(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bench.bench_empty", types.SimpleNamespace(run=lambda quick=False: []))
    with pytest.raises(ValueError, match="non-empty list"):
        run.run_area("empty", quick=True)


@pytest.mark.slow  # `make bench` runs it (every area at its quick size)
def test_quick_run_of_the_new_areas_writes_well_formed_json(tmp_path: Path) -> None:
    """The real thing in a subprocess, as CI runs it: memory (a consumer process of its own) and
    the scaling curves, with the output outside the repository."""
    out = tmp_path / "quick.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--only", "memory,scaling", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=100,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"wrote {out}" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["quick"] is True and doc["partial"] is True and doc["failed_areas"] == []
    assert set(doc["area_seconds"]) == {"memory", "scaling"}
    names = [s["name"] for s in doc["scenarios"]]
    assert names == [
        "consumer_memory_1m_subjects",
        "scaling: producer batch size",
        "scaling: distinct data subjects",
        "scaling: event size",
    ]
    for s in doc["scenarios"]:
        run.check_result(s)
        assert s["rate"]["median"] > 0 and s["baselines"] and s["curve"]["series"]
    mem = doc["scenarios"][0]
    assert mem["subjects"] == 20_000 and set(mem["rss_mb"]) >= {"1000", "20000"}
    assert 20 < mem["rss_mb"]["20000"] < 1_000  # a real process's MiB, not KiB or bytes
    # keys resolved per read batch: one key.unwrap audit record per batch of 500, not one per key
    # one key.unwrap record per chunk of a read batch, not one per key
    assert 0 < mem["key_unwrap_audit_records"] <= 20_000 // CHUNK_EVENTS and 0 < mem["cpu_ratio"] < 1
    assert not list(tmp_path.glob("*.png"))  # quick runs draw no plots


def test_every_area_declares_what_its_scenarios_run_on() -> None:
    assert set(setups.SETUPS) == set(run.AREAS)
    assert setups.setup_of("e2e", "e2e_embedded") == setups.DEPLOYED
    assert setups.setup_of("e2e", "e2e_embedded_pipelined") == setups.DEPLOYED
    assert setups.setup_of("e2e", "e2e_embedded ablation: SDK wiring (x)").startswith("ablation: SDK wiring")
    assert setups.is_deployed(setups.setup_of("nats", "nats e2e: Producer + Consumer, everything on"))
    assert not setups.is_deployed(setups.setup_of("nats", "nats append: sealed batch per message"))
    assert setups.setup_of("fields", "field_encrypt").startswith("ablation:")
    # a scenario nobody declared is never shown as deployed
    assert setups.setup_of("e2e", "e2e_new thing") == setups.UNDECLARED
    assert setups.setup_of("nope", "x") == setups.UNDECLARED
    assert not setups.is_deployed(setups.UNDECLARED)


def test_table_shows_deployed_rows_first_and_labels_every_ablation(doc: dict[str, Any]) -> None:
    deployed = scenario("e2e_embedded", {"median": 5_000.0, "min": 4_000.0, "max": 6_000.0},
                        {"plain": {"median": 20_000.0, "min": 1.0, "max": 30_000.0}}, setup=setups.DEPLOYED)
    text = report.table({**doc, "scenarios": [*doc["scenarios"], deployed]})
    first, second = text.split("Ablations", 1)
    assert "| e2e_embedded | 5,000 | events/s | plain | 20,000 | 0.25x |" in first
    assert "seal_verify" not in first  # no setup recorded or declared: not claimed as deployed
    assert "| seal_verify | 90,000 | events/s | per_event_ed25519_verify | 4,500 | 20.00x | ablation? " in second
    # a re-rendered run recorded before setups existed takes them from bench/setups.py by area
    old = {**doc["scenarios"][0], "area": "e2e"}
    text = report.table({**doc, "scenarios": [old]})
    assert "| per_event_ed25519_verify | 4,500 | 20.00x | seal verifier alone |" in text


def test_a_run_records_each_scenarios_wall_time_cpu_time_and_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_areas: dict[str, Any]
) -> None:
    def slow_then_fast(quick: bool = False) -> list[dict[str, Any]]:
        deadline = time.process_time() + 0.25
        while time.process_time() < deadline:  # busy: CPU time (and at least as much wall time)
            pass
        return [curve_scenario("slow one"), curve_scenario("fast one")]

    monkeypatch.setitem(sys.modules, "bench.bench_good", types.SimpleNamespace(run=slow_then_fast))
    monkeypatch.setattr(run, "discover", lambda only: ["good"])
    out = tmp_path / "results.json"
    assert run.main(["--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    slow, fast = doc["scenarios"]
    assert slow["seconds"] >= 0.2 and slow["seconds"] > fast["seconds"]
    assert [r["name"] for r in doc["slowest"]] == ["slow one", "fast one"]
    assert doc["area_cpu_seconds"]["good"] >= 0.2 and doc["cpu_seconds"] >= 0.2
    assert set(doc["load_average"]["area_start"]) == {"good"}
    assert slow["setup"] == setups.UNDECLARED  # "good" is no real area: nothing declared for it
    assert "Slowest scenarios of this run" in report.table(doc)
