"""The anchors' paired rounds: deployed vs in-memory keys as a ratio per pair of short rounds.

A ratio of medians over full rounds seconds apart swings with the host's speed (0.70x in one
full run, 1.19x in another); these pin what makes the paired ratio steady: both sides of a
pair run over the same events back to back, the order swaps every pair, and the ratio is
deployed over in-memory, reported beside CSFLE's in ``paired_ratios``.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from benchkit import ROOT  # noqa: F401 - puts the repository's bench package on the path

from bench import bench_anchors, run


class Clock:
    """perf_counter and process_time that the fake rounds advance."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    def perf_counter(self) -> float:
        return self.wall

    def process_time(self) -> float:
        return self.cpu


def fake_side(who: str, per_event: float, stolen: float, clock: Clock, calls: list[tuple[str, str, int, int]]
              ) -> tuple[Callable[..., int], Callable[..., int]]:
    """(encrypt, decrypt) whose round of k events costs k * per_event of CPU (twice that to
    decrypt) and, in wall time, ``stolen`` more per round: a time slice other work took."""
    def op(name: str) -> Callable[..., int]:
        def fn(lo: int, hi: int) -> int:
            calls.append((who, name, lo, hi))
            spent = (hi - lo) * per_event * (2 if name == "decrypt" else 1)
            clock.cpu += spent
            clock.wall += spent + stolen
            return hi - lo
        return fn
    return op("encrypt"), op("decrypt")


def fake_time(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(bench_anchors, "time",
                        types.SimpleNamespace(perf_counter=clock.perf_counter, process_time=clock.process_time))
    return clock


def test_paired_key_ratios_is_deployed_over_in_memory_per_pair_with_the_order_swapped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = fake_time(monkeypatch)
    calls: list[tuple[str, str, int, int]] = []
    # the deployed side does twice the work, and loses 40 ms of wall time a round to other work
    dep = fake_side("dep", 2e-5, 0.04, clock, calls)
    mem = fake_side("mem", 1e-5, 0.0, clock, calls)
    got = bench_anchors.paired_key_ratios(dep, mem, n=20_000, pairs=4)
    assert got["cpu"]["encrypt"] == pytest.approx([0.5] * 4) and got["cpu"]["decrypt"] == pytest.approx([0.5] * 4)
    assert got["wall"]["encrypt"] == pytest.approx([0.02 / 0.08] * 4)
    assert got["wall"]["decrypt"] == pytest.approx([0.04 / 0.12] * 4)
    assert len(calls) == 4 * 4
    for i in range(4):
        pair = calls[4 * i: 4 * i + 4]
        first = "dep" if i % 2 == 0 else "mem"
        assert [c[0] for c in pair] == [first, {"dep": "mem", "mem": "dep"}[first]] * 2
        assert [c[1] for c in pair] == ["encrypt", "encrypt", "decrypt", "decrypt"]
        # every call of a pair covers the same events, a short round, not the whole run
        assert len({(lo, hi) for *_, lo, hi in pair}) == 1
        lo, hi = pair[0][2:]
        assert hi - lo == bench_anchors.PAIR_EW and lo >= 0 and hi <= 20_000
    assert len({c[2] for c in calls}) == 4  # the pairs move over the events


def test_paired_key_ratios_stays_within_a_run_shorter_than_one_round(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = fake_time(monkeypatch)
    calls: list[tuple[str, str, int, int]] = []
    got = bench_anchors.paired_key_ratios(fake_side("dep", 1e-5, 0.0, clock, calls),
                                          fake_side("mem", 1e-5, 0.0, clock, calls), n=1_500, pairs=3)
    assert got["wall"]["encrypt"] == pytest.approx([1.0] * 3) and got["cpu"]["decrypt"] == pytest.approx([1.0] * 3)
    assert {(lo, hi) for *_, lo, hi in calls} == {(0, 1_500)}


@pytest.mark.slow  # `make bench` runs it: a deployed home and the quick rounds (~10 s)
def test_quick_anchors_report_the_in_memory_paired_ratio_without_csfle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without CSFLE's virtualenv the anchors still pair deployed with in-memory keys."""
    monkeypatch.setattr(bench_anchors, "CSFLE_PYTHON", Path("/nonexistent/python"))
    results: list[dict[str, Any]] = bench_anchors.run(quick=True)
    names = [f"anchor: field {op} + JSON, deployed keys" for op in ("encrypt", "decrypt")]
    assert [s["name"] for s in results] == names
    for s in results:
        run.check_result(s)
        assert "csfle_skipped" in s and "ratio_per_round" not in s
        assert set(s["paired_ratios"]) == {"in-memory keys"}
        got = s["paired_ratios"]["in-memory keys"]
        assert len(got["each"]) == 5 and all(r > 0 for r in got["each"])
        assert min(got["each"]) <= got["median"] <= max(got["each"])
        assert len(got["cpu_each"]) == 5 and min(got["cpu_each"]) <= got["cpu_median"] <= max(got["cpu_each"])
        assert s["target_ratio"]["in-memory keys"] == 0.9


class FakeCsfle:
    """Csfle.op in rounds of its own: a fixed rate per op, or None once it stopped."""

    def __init__(self, rates: dict[str, float | None], calls: list[tuple[str, str, int, int]]) -> None:
        self.rates, self.calls = rates, calls

    def op(self, kind: str, op: str, count: int) -> float | None:
        self.calls.append(("csfle", op, 0, count))
        return self.rates[op]


def test_paired_ratios_pair_eventward_and_the_floor_with_csfle_in_the_same_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each pair times eventward, then the floor, over the same events, then one CSFLE round: the
    floor's ratio is the ceiling measured at the same machine speed as eventward's."""
    clock = fake_time(monkeypatch)
    calls: list[tuple[str, str, int, int]] = []
    theirs = FakeCsfle({"encrypt": 1_000.0, "decrypt": 2_000.0}, calls)
    got = bench_anchors.paired_ratios(fake_side("ew", 1e-4, 0.0, clock, calls),
                                      fake_side("floor", 2.5e-5, 0.0, clock, calls),
                                      theirs, n=4_000, theirs_n=5_000, pairs=2)  # type: ignore[arg-type]
    assert got["ew"]["encrypt"] == pytest.approx([10.0, 10.0])  # 10,000/s over 1,000/s
    assert got["floor"]["encrypt"] == pytest.approx([40.0, 40.0])
    assert got["ew"]["decrypt"] == pytest.approx([2.5, 2.5])  # 5,000/s over 2,000/s
    assert got["floor"]["decrypt"] == pytest.approx([10.0, 10.0])
    assert calls[:3] == [("ew", "encrypt", 0, 2_000), ("floor", "encrypt", 0, 2_000),
                         ("csfle", "encrypt", 0, bench_anchors.PAIR_CSFLE)]
    assert {(who, lo, hi) for who, _, lo, hi in calls if who != "csfle"} == {
        (w, lo, lo + 2_000) for w in ("ew", "floor") for lo in (0, 2_000)}


def test_paired_ratios_are_empty_once_csfle_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = fake_time(monkeypatch)
    calls: list[tuple[str, str, int, int]] = []
    got = bench_anchors.paired_ratios(fake_side("ew", 1e-4, 0.0, clock, calls),
                                      fake_side("floor", 1e-5, 0.0, clock, calls),
                                      FakeCsfle({"encrypt": None, "decrypt": 1.0}, calls),  # type: ignore[arg-type]
                                      n=4_000, theirs_n=5_000, pairs=3)
    assert got == {"ew": {"encrypt": [], "decrypt": []}, "floor": {"encrypt": [], "decrypt": []}}
