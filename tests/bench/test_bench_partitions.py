"""Partitions over NATS: one vs two worker processes, each run on a nats-server of its own.

The embedded-log comparison runs in every ``make bench``; these pin the NATS variant's
plumbing: the homes really use the server, its CPU time is counted, and a run that fails
half way still stops the server it started (nothing left listening on the machine).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from benchkit import ROOT  # noqa: F401 - puts the repository's bench package on the path

from bench import bench_partitions, run, setups


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_run_that_fails_half_way_stops_its_nats_server(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[int] = []
    real_start = bench_partitions.natsserver.start_all

    def start_all(*args: Any, **kwargs: Any) -> Any:
        nodes = real_start(*args, **kwargs)
        started.append(int(nodes[0].pid_file.read_text()))
        return nodes

    def broken_home(*_: Any) -> Any:
        raise RuntimeError("home setup failed")

    monkeypatch.setattr(bench_partitions.natsserver, "start_all", start_all)
    monkeypatch.setattr(bench_partitions, "make_home", broken_home)
    with pytest.raises(RuntimeError, match="home setup failed"):
        bench_partitions.run_processes(1, 10, nats=True)
    assert len(started) == 1 and not _alive(started[0])


def test_the_nats_scenario_is_declared_deployed_with_its_transport() -> None:
    got = setups.setup_of("partitions", "e2e_partitions over NATS: 2 processes on 2 partitions")
    assert setups.is_deployed(got) and "NATS" in got
    assert setups.setup_of("partitions", "e2e_partitions: 2 processes on 2 partitions") == (
        f"{setups.DEPLOYED} (+ topic partitions)")


@pytest.mark.slow  # `make bench` runs it: two fresh nats-servers and three worker processes (~20 s)
def test_quick_nats_partitions_count_the_servers_work_and_deliver_every_event() -> None:
    s = bench_partitions._over_nats(500, 1)
    run.check_result(s)
    assert s["name"] == "e2e_partitions over NATS: 2 processes on 2 partitions"
    assert s["rate"]["median"] > 0 and s["baselines"][0]["rate"]["median"] > 0
    assert s["target_ratio"] == {"1 process on 1 partition": 1.7}
    cpu = s["cpu_us_per_event"]
    # the server did the transport's work: JetStream stores and serves every batch
    assert cpu["nats-server, 1 process"] > 0 and cpu["nats-server, 2 processes"] > 0
    assert 0 < s["cores_used"]["nats-server, 2 processes"] < 2
    assert "NATS JetStream" in s["wiring"]
