"""Bounded retries with exponential backoff and full jitter, for every broker call.

A JetStream leader election or a Kafka partition move takes seconds; callers should ride
that out, but never wait forever: after the budget the caller gets TransportUnavailable and
decides (the producer keeps its batch and retries later with the same batch id).
Full jitter (a random delay in [0, backoff]) keeps many clients from retrying in lockstep.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from eventward.errors import TransportUnavailable

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    base_s: float = 0.05
    cap_s: float = 1.0
    budget_s: float = 15.0

    def delays(self) -> Iterator[float]:
        """Jittered delays to sleep between attempts; stops when the budget would be exceeded.

        The budget starts now (not at the first failure)."""
        return self._delays(time.monotonic() + self.budget_s)

    def _delays(self, deadline: float) -> Iterator[float]:
        ceiling = self.base_s
        while True:
            delay = random.uniform(0, ceiling)
            if time.monotonic() + delay > deadline:
                return
            yield delay
            ceiling = min(ceiling * 2, self.cap_s)


class Retry(Exception):
    """Raised by an attempt to ask for another one (a control-flow signal, never escapes
    ``retry_*``); ``reason`` is metadata only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _give_up(what: str, attempts: int, started: float, reason: str) -> TransportUnavailable:
    took = time.monotonic() - started
    return TransportUnavailable(
        f"{what}: still failing after {attempts} attempts in {took:.1f}s ({reason})", attempts=attempts
    )


def retry_sync(what: str, attempt: Callable[[], T], backoff: Backoff) -> T:
    """Call ``attempt`` until it returns; it raises ``Retry`` for a transient failure."""
    started, n = time.monotonic(), 0
    delays = backoff.delays()
    while True:
        n += 1
        try:
            return attempt()
        except Retry as r:
            delay = next(delays, None)
            if delay is None:
                raise _give_up(what, n, started, r.reason) from None
            time.sleep(delay)


async def retry_async(what: str, attempt: Callable[[], Awaitable[T]], backoff: Backoff) -> T:
    started, n = time.monotonic(), 0
    delays = backoff.delays()
    while True:
        n += 1
        try:
            return await attempt()
        except Retry as r:
            delay = next(delays, None)
            if delay is None:
                raise _give_up(what, n, started, r.reason) from None
            await asyncio.sleep(delay)
