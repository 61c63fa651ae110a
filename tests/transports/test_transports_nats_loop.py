"""The NATS transport's hand-off to its event loop thread (``_LoopThread.run``): results and
typed errors come back to the caller, a call that outlives its timeout is cancelled on the loop
(nothing keeps running for a caller that gave up) and reported as TransportUnavailable."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from eventward._internal.log.nats import _LoopThread
from eventward.errors import NotFoundError, TransportError, TransportUnavailable


@pytest.fixture
def loop() -> Iterator[_LoopThread]:
    lt = _LoopThread()
    try:
        yield lt
    finally:
        lt.stop()


def test_result_and_typed_error_come_back(loop: _LoopThread) -> None:
    async def value() -> int:
        await asyncio.sleep(0)
        return 42

    async def missing() -> int:
        raise NotFoundError("no such stream")

    assert loop.run(value(), 5, "value") == 42
    with pytest.raises(NotFoundError, match="no such stream"):
        loop.run(missing(), 5, "missing")
    assert loop.run(value(), 5, "again") == 42  # a failed call leaves the loop usable


def test_a_call_past_its_timeout_is_cancelled_on_the_loop(loop: _LoopThread) -> None:
    cancelled = threading.Event()

    async def hang() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    t0 = time.monotonic()
    with pytest.raises(TransportUnavailable, match="no answer within"):
        loop.run(hang(), 0.2, "hang")
    assert time.monotonic() - t0 < 5
    assert cancelled.wait(5), "the abandoned coroutine kept running on the loop"


def test_a_call_cancelled_under_the_caller_is_transport_unavailable(loop: _LoopThread) -> None:
    async def cancel_self() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(1)

    with pytest.raises(TransportUnavailable, match="cancelled"):
        loop.run(cancel_self(), 5, "cancelled")


def test_a_call_from_the_loop_thread_is_refused_not_deadlocked(loop: _LoopThread) -> None:
    async def inner() -> int:
        return 1

    async def outer() -> str:
        coro = inner()
        try:
            loop.run(coro, 1, "nested")
        except TransportError as e:
            return str(e)
        return "ran"

    assert "would deadlock" in loop.run(outer(), 5, "outer")
