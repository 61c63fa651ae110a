"""The cyclic collector paused around one batch (gcpause): restored however the batch ends,
counted across holders, never turned on when the application turned it off, bounded in time
by a slow handler, and off entirely with EVENTWARD_GC_PAUSE=0."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from eventward._internal.client import gcpause
from eventward._internal.client.gcpause import BatchPause
from eventward.errors import ValidationError

from .client_world import TYPE, customer


@pytest.fixture(autouse=True)
def _collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    assert gcpause._holders == 0, "a holder was left behind"
    gc.enable() if was else gc.disable()


def test_a_batch_pauses_the_collector_and_resumes_it_after():
    with BatchPause():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_an_exception_in_the_batch_still_resumes_the_collector():
    with pytest.raises(RuntimeError), BatchPause():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_a_collector_the_application_turned_off_stays_off():
    gc.disable()
    with BatchPause():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_holders_are_counted_the_last_one_out_resumes():
    a, b = BatchPause().__enter__(), BatchPause().__enter__()
    a.release()
    assert not gc.isenabled(), "b still holds the pause"
    a.release()  # idempotent: a second release does not take b's hold
    assert not gc.isenabled()
    b.release()
    assert gc.isenabled()


def test_threads_share_the_count():
    entered, leave = threading.Barrier(3), threading.Event()

    def hold() -> None:
        with BatchPause():
            entered.wait()
            leave.wait(5)

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for t in threads:
        t.start()
    entered.wait()
    assert not gc.isenabled() and gcpause._holders == 2
    leave.set()
    for t in threads:
        t.join()
    assert gc.isenabled()


def test_check_past_the_deadline_resumes_early(monkeypatch):
    p = BatchPause().__enter__()
    p.check()
    assert not gc.isenabled(), "within its deadline the pause holds"
    p.deadline = 0.0
    p.check()
    assert gc.isenabled()
    p.release()
    assert gc.isenabled()


def test_turned_off_by_the_environment_switch_the_collector_is_never_touched(monkeypatch):
    monkeypatch.setattr(gcpause, "ENABLED", False)
    with BatchPause():
        assert gc.isenabled()
    gc.disable()
    with BatchPause():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_the_consumer_delivers_its_batch_paused_and_resumes(world):
    p = world.producer()
    p.send_many(TYPE, [customer(i) for i in range(20)])
    p.close()
    seen: list[bool] = []
    got = world.consumer().run(lambda e: seen.append(gc.isenabled()), max_events=20, idle_timeout=0.0)
    assert got.delivered == 20 and seen == [False] * 20
    assert gc.isenabled()


def test_a_slow_batch_resumes_the_collector_before_it_ends(world, monkeypatch):
    monkeypatch.setattr(gcpause, "MAX_PAUSE_S", 0.0)  # every check is past the deadline
    p = world.producer()
    p.send_many(TYPE, [customer(i) for i in range(40)])
    p.close()
    seen: list[bool] = []
    world.consumer().run(lambda e: seen.append(gc.isenabled()), max_events=40, idle_timeout=0.0)
    assert seen == [True] * 40, "checked before the first event: resumed at once"
    assert gc.isenabled()


def test_a_handler_that_raises_leaves_the_collector_running(world):
    p = world.producer()
    p.send_many(TYPE, [customer(i) for i in range(3)])
    p.close()

    def handler(event: Any) -> None:
        raise KeyboardInterrupt  # not retried: it escapes run()

    with pytest.raises(KeyboardInterrupt):
        world.consumer().run(handler, max_events=3, idle_timeout=0.0)
    assert gc.isenabled() and gcpause._holders == 0


def test_send_many_resumes_the_collector_after_a_refused_call(world):
    p = world.producer()
    with pytest.raises(ValidationError):
        p.send_many(TYPE, [customer(0), {"id": 1}])
    assert gc.isenabled()
    assert len(p.send_many(TYPE, [customer(i) for i in range(5)])) == 5
    assert gc.isenabled()
    p.close()


def test_a_large_send_many_call_is_not_paused(world, monkeypatch):
    from eventward._internal.client import producer as producer_mod

    monkeypatch.setattr(producer_mod, "_PAUSE_MAX_EVENTS", 3)
    seen: list[bool] = []
    p = world.producer()
    real = p._send_many

    def spy(*a: Any) -> list[str]:
        seen.append(gc.isenabled())
        return real(*a)

    monkeypatch.setattr(p, "_send_many", spy)
    p.send_many(TYPE, [customer(i) for i in range(3)])
    p.send_many(TYPE, [customer(i) for i in range(4)])
    p.close()
    assert seen == [False, True]
