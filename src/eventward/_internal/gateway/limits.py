"""Denial-of-service limits: per-principal event quotas, and request bodies read with a cap and a deadline.

Everything here is bounded: a body is refused by its declared length before a byte is read and
cut off the moment a streamed (chunked) body passes the cap, so a client can never make the
gateway buffer more than the limit; quota state is an LRU of at most ``max_principals`` buckets.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from aiohttp import web

from eventward.errors import OversizeError, QuotaExceeded, RequestTimeout, UnsupportedMediaType


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``. One token = one event."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def take(self, n: float, now: float) -> float:
        """Take ``n`` tokens and return 0, or take nothing and return the seconds until they exist."""
        self._refill(now)
        if self.tokens >= n:
            self.tokens -= n
            return 0.0
        return (n - self.tokens) / self.rate

    def debit(self, n: float, now: float) -> None:
        """Charge work already done (events delivered); the balance may go negative."""
        self._refill(now)
        self.tokens -= n


class RateLimiter:
    """Per-principal token buckets, answered with QuotaExceeded carrying an integer Retry-After."""

    def __init__(
        self,
        rate: float,
        burst: float,
        max_principals: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_principals = max_principals
        self.clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def _bucket(self, principal: str, now: float) -> TokenBucket:
        b = self._buckets.get(principal)
        if b is None:
            b = self._buckets[principal] = TokenBucket(self.rate, self.burst, now)
            if len(self._buckets) > self.max_principals:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(principal)
        return b

    def take(self, principal: str, n: int = 1) -> None:
        now = self.clock()
        wait = self._bucket(principal, now).take(n, now)
        if wait > 0:
            retry = max(1, math.ceil(wait))
            raise QuotaExceeded(
                f"principal is over its quota of {self.rate:g} events/s (burst {self.burst:g})",
                retry_after=retry,
            )

    def debit(self, principal: str, n: int) -> None:
        now = self.clock()
        self._bucket(principal, now).debit(n, now)

    def __len__(self) -> int:
        return len(self._buckets)


def check_declared_length(request: web.BaseRequest, max_bytes: int) -> None:
    """Refuse by the headers alone, before any of the body is read."""
    coding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if coding not in ("", "identity"):
        raise UnsupportedMediaType("compressed request bodies are not accepted (no Content-Encoding)")
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise OversizeError(
            f"request body of {declared} bytes exceeds the limit of {max_bytes}",
            size=declared,
            limit=max_bytes,
        )


async def read_body(request: web.BaseRequest, max_bytes: int, timeout_s: float) -> bytes:
    """The whole body, never buffering more than ``max_bytes`` plus one chunk, within ``timeout_s``."""
    check_declared_length(request, max_bytes)
    buf = bytearray()

    async def _read() -> None:
        while True:
            chunk = await request.content.readany()
            if not chunk:
                return
            buf.extend(chunk)
            if len(buf) > max_bytes:
                raise OversizeError(f"request body exceeds the limit of {max_bytes} bytes", limit=max_bytes)

    try:
        await asyncio.wait_for(_read(), timeout_s)
    except TimeoutError:
        raise RequestTimeout(f"request body was not received within {timeout_s:g} s") from None
    return bytes(buf)
