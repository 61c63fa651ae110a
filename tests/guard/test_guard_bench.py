"""bench/bench_guard.py runs and produces well-formed scenarios (CI checks shapes, not numbers)."""

from __future__ import annotations

from bench import bench_guard, run


def test_guard_bench_scenarios_are_well_formed() -> None:
    results = bench_guard.run(quick=True, sizes=(300, 200, 60))
    assert [r["name"] for r in results] == ["guard_scan", "guard_warn_producer", "guard_pipeline"]
    for r in results:
        run.check_result(r)
    assert 0 < results[0]["events_with_findings"] <= 300
    assert results[1]["goal_overhead"] == 0.15
    assert "guard" in run.AREAS
