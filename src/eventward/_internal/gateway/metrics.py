"""Prometheus text exposition (format 0.0.4) for the gateway, small and dependency-free.

Label values come from routes, reason codes and names of topics/groups that exist, never from
payloads or principals. Each family caps its series: label sets past the cap fold into
``_other_``, so a client inventing group names cannot grow memory or the scrape without bound.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OTHER = "_other_"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


class _Family(Generic[T]):
    kind = "untyped"

    def __init__(self, name: str, help_: str, labels: Sequence[str], max_series: int) -> None:
        self.name = name
        self.help = help_
        self.labels = tuple(labels)
        self.max_series = max_series
        self.series: dict[tuple[str, ...], T] = {}

    def _key(self, values: Sequence[str]) -> tuple[str, ...]:
        key = tuple(values)
        if len(key) != len(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}")
        if key not in self.series and len(self.series) >= self.max_series:
            return (OTHER,) * len(self.labels)
        return key

    def _labelstr(self, key: tuple[str, ...], extra: tuple[tuple[str, str], ...] = ()) -> str:
        pairs = [*zip(self.labels, key, strict=True), *extra]
        if not pairs:
            return ""
        return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Family[float]):
    kind = "counter"

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        key = self._key(labels)
        self.series[key] = self.series.get(key, 0.0) + amount

    def value(self, *labels: str) -> float:
        return self.series.get(tuple(labels), 0.0)

    def render(self) -> list[str]:
        return [
            *self.header(),
            *(f"{self.name}{self._labelstr(k)} {_fmt(v)}" for k, v in self.series.items()),
        ]


class Gauge(Counter):
    kind = "gauge"

    def set(self, *labels: str, value: float) -> None:
        self.series[self._key(labels)] = float(value)


@dataclass
class _Buckets:
    counts: list[int]
    total: float = 0.0
    n: int = 0


class Histogram(_Family[_Buckets]):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_: str,
        labels: Sequence[str],
        max_series: int,
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        super().__init__(name, help_, labels, max_series)
        self.buckets = tuple(sorted(buckets))

    def observe(self, *labels: str, value: float) -> None:
        key = self._key(labels)
        s = self.series.get(key)
        if s is None:
            s = self.series[key] = _Buckets([0] * len(self.buckets))
        i = bisect.bisect_left(self.buckets, value)
        if i < len(s.counts):
            s.counts[i] += 1
        s.total += value
        s.n += 1

    def count(self, *labels: str) -> int:
        s = self.series.get(tuple(labels))
        return 0 if s is None else s.n

    def render(self) -> list[str]:
        out = self.header()
        for key, s in self.series.items():
            cum = 0
            for bound, c in zip(self.buckets, s.counts, strict=True):
                cum += c
                out.append(f"{self.name}_bucket{self._labelstr(key, (('le', _fmt(bound)),))} {cum}")
            out.append(f"{self.name}_bucket{self._labelstr(key, (('le', '+Inf'),))} {s.n}")
            out.append(f"{self.name}_sum{self._labelstr(key)} {_fmt(s.total)}")
            out.append(f"{self.name}_count{self._labelstr(key)} {s.n}")
        return out


class GatewayMetrics:
    """The gateway's metric families (requests, denials, events, latency, consumer lag)."""

    def __init__(self, max_series: int = 1000) -> None:
        p = "eventward_gateway_"
        self.requests = Counter(
            p + "requests_total",
            "HTTP requests by route and status.",
            ("route", "method", "status"),
            max_series,
        )
        self.denials = Counter(
            p + "denials_total", "Refused requests by reason code.", ("reason",), max_series
        )
        self.events_in = Counter(
            p + "events_in_total", "Events accepted for publishing.", ("topic",), max_series
        )
        self.events_out = Counter(
            p + "events_out_total", "Events delivered to consumers.", ("topic",), max_series
        )
        self.latency = Histogram(p + "request_duration_seconds", "Request latency.", ("route",), max_series)
        self.lag = Gauge(
            p + "consumer_lag",
            "Events not yet consumed, per topic and group.",
            ("topic", "group"),
            max_series,
        )
        self.cert_expiring = Counter(
            p + "certificates_expiring_total",
            "Certificates of the deployment CA found expiring within gateway.tls.expiry_warn_days.",
            ("kind",),
            max_series,
        )
        self.families: tuple[Counter | Histogram, ...] = (
            self.cert_expiring,
            self.requests,
            self.denials,
            self.events_in,
            self.events_out,
            self.latency,
            self.lag,
        )

    def render(self) -> str:
        """The gateway's families, then the process-wide eventward families (eventward._internal.monitor).

        A bridge, not a move: these request-level families stay dependency-free and capped as
        they are, and ``serve``'s /metrics shows both on one page (names never overlap:
        ``eventward_gateway_*`` here, ``eventward_*`` there)."""
        lines: list[str] = []
        for f in self.families:
            lines.extend(f.render())
        from eventward._internal.monitor.metrics import render as process_metrics

        return "\n".join(lines) + "\n" + process_metrics().decode()
