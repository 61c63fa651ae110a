"""Deadline polls for tests: wait for a condition instead of sleeping a fixed time and hoping.

A fixed sleep before an assertion either wastes time or races on a loaded machine; polling
returns as soon as the condition holds and fails with a clear message when it never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.01, what: str = "") -> T:
    """Call ``predicate`` until it returns something truthy and return that; AssertionError after
    ``timeout`` seconds (exceptions from the predicate propagate: a broken check fails fast)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s: {what or predicate!r}")
        time.sleep(interval)


async def async_wait_until(
    predicate: Callable[[], T | Awaitable[T]], timeout: float = 10.0, interval: float = 0.01, what: str = ""
) -> T:
    """``wait_until`` for asyncio tests; ``predicate`` may be a coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result  # type: ignore[misc]
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s: {what or predicate!r}")
        await asyncio.sleep(interval)


def _all_threads_stopped(pid: int) -> bool:
    """True when every thread of ``pid`` is stopped (T, t) or gone (Z, X): none can run user code."""
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread exited meanwhile
        if state not in ("T", "t", "Z", "X"):
            return False
    return True


@contextlib.contextmanager
def frozen(*pids: int, timeout: float = 10.0) -> Iterator[None]:
    """SIGSTOP ``pids`` (a server hung, as its clients see it) and wait until every thread of each
    has stopped; SIGCONT them on exit. kill() returns before the stop takes effect: the kernel stops
    the other threads only once the thread the signal went to runs, so on a loaded machine a
    multi-threaded server (Go: OpenBao) still answers requests for milliseconds after kill()."""
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        for pid in pids:
            wait_until(lambda pid=pid: _all_threads_stopped(pid), timeout, 0.001, f"process {pid} stopped")
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
