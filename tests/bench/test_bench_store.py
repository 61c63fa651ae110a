"""The PostgreSQL-vs-SQLite control-plane benchmark runs and produces well-formed scenarios."""

from __future__ import annotations

import psutil
import pytest

from bench import bench_store, run


@pytest.mark.slow
def test_quick_store_bench_is_well_formed_and_stops_its_server() -> None:
    before = {p.pid for p in psutil.process_iter() if p.name() == "postgres"}
    results = bench_store.run(quick=True)
    for res in results:
        run.check_result(res)
    assert len(results) == 5 and all(r["rate"]["median"] > 0 for r in results)
    assert [b["name"] for r in results[:4] for b in r["baselines"]] == ["the same on SQLite"] * 4
    assert "store" in run.AREAS
    leftover = {p.pid for p in psutil.process_iter() if p.name() == "postgres"} - before
    assert not leftover
