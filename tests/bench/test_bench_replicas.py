"""The 1-vs-2 ``serve`` replicas benchmark: registered for full runs only (too slow for --quick),
and its quick size produces well-formed scenarios and stops every process it started."""

from __future__ import annotations

import psutil
import pytest

from bench import bench_replicas, run, setups


def test_replicas_area_runs_in_full_runs_only() -> None:
    assert "replicas" in run.AREAS and "replicas" in run.FULL_ONLY
    assert setups.setup_of("replicas", "replicated serve: schema fetch") != setups.UNDECLARED


@pytest.mark.slow
def test_quick_replicas_bench_is_well_formed_and_stops_its_processes() -> None:
    def ours() -> set[int]:
        return {p.pid for p in psutil.process_iter(["name", "cmdline"])
                if p.info["name"] == "postgres" or "serve" in (p.info["cmdline"] or [])}

    before = ours()
    results = bench_replicas.run(quick=True)
    for res in results:
        run.check_result(res)
    assert [r["name"].split(",")[0] for r in results] == [
        "replicated serve: DEK get-or-create", "replicated serve: batched unwrap (100 kids/request)",
        "replicated serve: schema fetch"]
    assert all(r["rate"]["median"] > 0 and r["baselines"][0]["name"] == "1 replica, same clients" for r in results)
    assert not ours() - before
