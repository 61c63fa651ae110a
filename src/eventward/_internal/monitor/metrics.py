"""Prometheus metrics for the whole of eventward (prometheus-client, one registry).

Most security signal already passes through the audit log (publishes per batch, refusals by code,
denials, key releases, dead letters, forgets), so the audit log's one observer hook feeds the
counters: no hot path gets a second bookkeeping. Latencies come from thin proxies around the
transport (per batch, not per event) and the KMS. Cache hit ratios, DLQ depth and consumer lag
are read at scrape or monitor time.

Labels never carry principals, subjects, event ids or free text: every value passes ``label``
(a name-shaped allow-list, else ``_invalid_``) and each family folds label sets past its cap into
``_other_``, so no input can grow the scrape without bound.
"""

from __future__ import annotations

import calendar
import math
import re
import threading
import time
import weakref
from bisect import bisect_left
from collections import Counter as _Tally
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import start_http_server as _prom_http_server
from prometheus_client.utils import floatToGoString

from eventward._internal.client.producer import parse_types_meta

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OTHER = "_other_"
INVALID = "_invalid_"
MAX_SERIES = 200  # per family
# Every label value matches this: names of topics, groups, classes, codes, actions. No spaces,
# no '@' (emails), at most 64 characters.
LABEL_VALUE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}\Z")
LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Acceptance to delivery spans buffering, flushes and consumer lag: up to a quarter of an hour.
E2E_LATENCY = (*LATENCY, 30.0, 60.0, 300.0, 900.0)
UNKNOWN = "_unknown_"  # a Publish record without types (written before records carried them)

disable_created_metrics()  # no *_created series: half the scrape for nothing a rule uses
REGISTRY = CollectorRegistry(auto_describe=True)


def label(value: object) -> str:
    """A label value that is a bounded name, or ``_invalid_``."""
    s = value if isinstance(value, str) else str(value)
    return s if LABEL_VALUE.match(s) else INVALID


class _Capped:
    """A labelled metric whose label sets past ``MAX_SERIES`` fold into ``_other_``."""

    def __init__(self, metric: Any, n_labels: int) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], Any] = {}
        self._other = (OTHER,) * n_labels
        self._lock = threading.Lock()

    def child(self, *values: object) -> Any:
        c = self._children.get(values)  # type: ignore[arg-type]
        if c is not None:
            return c
        key = tuple(label(v) for v in values)
        with self._lock:
            if key not in self._children and len(self._children) >= MAX_SERIES:
                key = self._other
            c = self._children.get(key)
            if c is None:
                c = self._children[key] = self._make(key)
            if len(self._children) < 4 * MAX_SERIES:  # raw aliases too are bounded
                self._children[values] = c  # type: ignore[index]
            return c

    def _make(self, key: tuple[str, ...]) -> Any:
        return self.metric.labels(*key)


class _Series:
    """One label set of a ``_BulkHistogram``: bucket counts (not cumulative) and the sum."""

    __slots__ = ("counts", "lock", "total")

    def __init__(self, n: int) -> None:
        self.counts = [0] * n
        self.total = 0.0
        self.lock = threading.Lock()

    def observe_many(self, index: Sequence[int], total: float) -> None:
        with self.lock:
            counts = self.counts
            for i in index:
                counts[i] += 1
            self.total += total


class _BulkHistogram(_Capped):
    """A labelled histogram fed a batch of values at a time: one lock per batch and series
    instead of prometheus_client's per-value locks, for the per-event delivery latency. Label
    values and the series cap are ``_Capped``'s; the family is rendered at scrape time."""

    def __init__(
        self,
        name: str,
        doc: str,
        labels: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry | None = None,
    ) -> None:
        super().__init__(None, len(labels))
        self.name, self.doc, self.labels = name, doc, list(labels)
        self.bounds = (*buckets, math.inf)
        self._les = [floatToGoString(b) for b in self.bounds]
        self._series: dict[tuple[str, ...], _Series] = {}  # by label values (``_children`` has aliases too)
        (REGISTRY if registry is None else registry).register(self)

    def _make(self, key: tuple[str, ...]) -> _Series:
        series = self._series[key] = _Series(len(self.bounds))  # under _Capped's lock
        return series

    def observe_many(self, values: Sequence[float], *labels: object) -> None:
        bounds = self.bounds
        self.child(*labels).observe_many([bisect_left(bounds, v) for v in values], sum(values))

    def collect(self) -> Iterable[HistogramMetricFamily]:
        fam = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        with self._lock:
            series = sorted(self._series.items())
        for key, c in series:
            with c.lock:
                counts, total = list(c.counts), c.total
            acc, buckets = 0, []
            for le, n in zip(self._les, counts, strict=True):
                acc += n
                buckets.append((le, acc))
            fam.add_metric(list(key), buckets, total)
        yield fam

    def describe(self) -> Iterable[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.doc, labels=self.labels)


def _counter(name: str, doc: str, labels: Sequence[str]) -> _Capped:
    return _Capped(Counter(name, doc, labels, registry=REGISTRY), len(labels))


def _gauge(name: str, doc: str, labels: Sequence[str]) -> _Capped:
    return _Capped(Gauge(name, doc, labels, registry=REGISTRY), len(labels))


def _histogram(name: str, doc: str, labels: Sequence[str]) -> _Capped:
    return _Capped(Histogram(name, doc, labels, registry=REGISTRY, buckets=LATENCY), len(labels))


P = "eventward_"
produced = _counter(
    P + "events_produced", "Events published, per topic and event type (counted per sealed batch).",
    ("topic", "event_type"),
)
batches = _counter(P + "batches_produced", "Sealed batches published, per topic.", ("topic",))
append_seconds = _histogram(P + "produce_append_seconds", "Transport append latency per sealed batch.", ("topic",))
read_events = _counter(P + "events_read", "Events read from the log by consumers, per topic.", ("topic",))
read_seconds = _histogram(P + "consume_read_seconds", "Transport read latency per batch read.", ("topic",))
delivered = _counter(
    P + "events_delivered", "Events a consumer handed to its handler, per topic and event type.",
    ("topic", "event_type"),
)
delivery_seconds = _BulkHistogram(
    P + "delivery_latency_seconds",
    "End-to-end latency per topic and event type: producer acceptance (ewtime) to live delivery.",
    ("topic", "event_type"),
    E2E_LATENCY,
)
guard_events = _counter(
    P + "guard_events",
    "Events with untagged PII or secrets the producer guard sent (warn) or refused (block).",
    ("topic", "event_type", "mode"),
)
refused = _counter(
    P + "consume_refusals", "Events a consumer refused, per topic, error code and reason.", ("topic", "code", "reason")
)
seal_failures = _counter(P + "seal_verify_failures", "Seal verification failures by reason.", ("reason",))
replay_refusals = _counter(P + "replay_refusals", "Replay-guard refusals by reason.", ("reason",))
schema_failures = _counter(P + "schema_validation_failures", "Schema/envelope failures by topic.", ("topic", "code"))
dlq_events = _counter(P + "dlq_events", "Dead letters written, per topic and code.", ("topic", "code"))
dlq_depth = _gauge(P + "dlq_depth", "Entries in a topic's dead-letter stream.", ("topic",))
authz = _counter(P + "authz_decisions", "Authorization decisions seen, by action.", ("action", "decision"))
authz_evaluations = _counter(
    P + "authz_evaluations", "Policy evaluations (decision-cache misses), by action.", ("action", "decision")
)
authz_denials = _counter(P + "authz_denials", "Authorization denials per action.", ("action",))
key_releases = _counter(P + "key_releases", "Data keys released, per sensitivity class and operation.", ("class", "op"))
key_denials = _counter(P + "key_release_denials", "Key releases refused, per class and reason.", ("class", "reason"))
kms_seconds = _histogram(P + "kms_seconds", "KMS call latency per operation.", ("op",))
kms_errors = _counter(P + "kms_errors", "KMS call failures per operation and error code.", ("op", "code"))
consumer_lag = _gauge(P + "consumer_lag", "Events not yet consumed, per stream and group.", ("stream", "group"))
forgets = _counter(P + "forgets", "Subjects crypto-shredded (forget), by outcome.", ("outcome",))
forget_seconds = Histogram(
    P + "forget_seconds", "Forget (erasure) latency until acknowledged.", registry=REGISTRY, buckets=LATENCY
)
alerts = _counter(P + "alerts", "Security alerts raised by the anomaly rules.", ("rule", "severity"))
audit_records = _counter(P + "audit_records", "Audit records written, per outcome.", ("outcome",))

_SEAL_CODES = {"bad_seal"}
_REPLAY_CODES = {"replay"}
_SCHEMA_CODES = {"validation", "bad_envelope", "bad_schema", "oversize", "bad_token"}


def _topic(resource: str) -> str:
    return resource[7:] if resource.startswith("Topic::") else resource


def observe_audit(action: str, resource: str, outcome: str, reason: str, meta: Mapping[str, Any]) -> None:
    """The audit log's observer: one record, a few counter increments. Never raises.

    It gets no principal: nothing identifying can reach a label."""
    try:
        audit_records.child(outcome).inc()
        if action == "Publish":
            if outcome == "ok":
                topic = _topic(resource)
                types = _types(meta.get("types"))
                if types:
                    for t, n in types:
                        produced.child(topic, t).inc(n)
                else:
                    produced.child(topic, UNKNOWN).inc(meta.get("count") or 0)
                batches.child(topic).inc()
            else:
                authz.child("Publish", "deny").inc()
                authz_denials.child("Publish").inc()
        elif action == "Subscribe" and outcome == "error":
            topic, code = _topic(resource), meta.get("code") or reason
            refused.child(topic, code, reason).inc()
            if code in _SEAL_CODES:
                seal_failures.child(reason).inc()
            elif code in _REPLAY_CODES:
                replay_refusals.child(reason).inc()
            elif code in _SCHEMA_CODES:
                schema_failures.child(topic, code).inc()
            elif code == "forbidden":
                authz_denials.child("Publish").inc()
        elif action == "dlq.put":
            dlq_events.child(_topic(resource), meta.get("code") or "unknown").inc()
        elif action == "key.encrypt" or action == "key.unwrap":
            op = "encrypt" if action == "key.encrypt" else "decrypt"
            cls = resource[6:] if resource.startswith("class:") else meta.get("class") or "unknown"
            if outcome == "ok":
                key_releases.child(cls, op).inc(meta.get("count") or 1)
                authz.child(op, "allow").inc()
            else:
                key_denials.child(cls, reason).inc()
                authz.child(op, "deny").inc()
                authz_denials.child(op).inc()
        elif action == "key.forget":
            forgets.child(outcome).inc()
        elif action == "guard.warn" or action == "guard.block":  # eventward._internal.guard.producer_guard
            guard_events.child(_topic(resource), meta.get("event_type") or "unknown", action[6:]).inc()
        elif outcome == "denied":
            act = meta.get("requested") if action == "authorize" else action
            authz.child(act or action, "deny").inc()
            authz_denials.child(act or action).inc()
        elif action == "monitor.alert":
            alerts.child(meta.get("rule") or "unknown", meta.get("severity") or "unknown").inc()
    except Exception:  # noqa: S110 - metrics must never break the audit path
        pass


_TYPES_CACHE: dict[str, tuple[tuple[str, int], ...]] = {}


def _types(text: object) -> tuple[tuple[str, int], ...]:
    """A Publish record's ``types`` (``"A:3,B:1"``), parsed once per distinct string (a producer
    repeats the same few); the cache is bounded."""
    if not isinstance(text, str):
        return ()
    out = _TYPES_CACHE.get(text)
    if out is None:
        if len(_TYPES_CACHE) >= 1024:
            _TYPES_CACHE.clear()
        out = _TYPES_CACHE[text] = tuple(parse_types_meta(text).items())
    return out


_EPOCH: dict[str, float] = {}  # "YYYY-MM-DDTHH:MM:SS" -> epoch seconds
_MINUTE: dict[str, float] = {}  # "YYYY-MM-DDTHH:MM:" -> epoch seconds


def _epoch(ts: object) -> float | None:
    """eventward's ``ewtime`` (RFC 3339 UTC, microseconds, fixed width) as epoch seconds, checked
    strictly, with each second parsed once (and its minute remembered for ``_latencies``); None
    for anything else."""
    if type(ts) is not str or len(ts) != 27 or ts[19] != "." or ts[26] != "Z":
        return None
    head = ts[:19]
    sec = _EPOCH.get(head)
    if sec is None:
        try:
            sec = float(calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S")))
        except ValueError:
            return None
        if len(_EPOCH) >= 4096:
            _EPOCH.clear()
            _MINUTE.clear()
        _EPOCH[head] = sec
        _MINUTE[ts[:17]] = sec - int(ts[17:19])
    frac = ts[20:26]
    return sec + int(frac) * 1e-6 if frac.isdigit() else None


def _latencies(received: Sequence[Any], at: Sequence[float]) -> list[float | None]:
    """Delivery time minus ``ewtime`` per event (0 if the consumer's clock is behind), None where
    there is no ewtime (a replay or redrive) or it is not one.

    The common case, every ewtime of a minute seen before, is one comprehension (a cached minute
    plus ``float`` of "SS.ffffff"); anything else (None, a new minute, a malformed value, a
    non-finite result) takes the strict per-event path."""
    minute = _MINUTE.get
    try:
        t0s: list[float | None] = [minute(r[:17]) + float(r[17:26]) for r in received]  # type: ignore[operator]
        if math.isfinite(sum(t0s)):  # type: ignore[arg-type]
            return [a - t if a > t else 0.0 for a, t in zip(at, t0s, strict=True)]  # type: ignore[operator]
    except (TypeError, ValueError, IndexError):
        pass
    t0s = [_epoch(r) for r in received]
    return [None if t is None else a - t if a > t else 0.0 for a, t in zip(at, t0s, strict=True)]


def observe_deliveries(topic: str, deliveries: Sequence[tuple[str, Any, float]]) -> None:
    """The consumers' observer (``consumer.DELIVERY_OBSERVERS``), called once per read batch with
    (event type, ``ewtime`` or None, delivery time) per delivered event: counts per type, and the
    acceptance-to-delivery latency of live deliveries. Never raises."""
    try:
        types, received, at = zip(*deliveries, strict=True)
        counts = _Tally(types)
        for type_, n in counts.items():
            delivered.child(topic, type_).inc(n)
        latencies = _latencies(received, at)
        if len(counts) == 1 and None not in latencies:  # one type, all live: the common batch
            delivery_seconds.observe_many(latencies, topic, types[0])  # type: ignore[arg-type]
            return
        by_type: dict[str, list[float]] = {}
        for type_, lat in zip(types, latencies, strict=True):
            if lat is not None:
                by_type.setdefault(type_, []).append(lat)
        for type_, values in by_type.items():
            delivery_seconds.observe_many(values, topic, type_)
    except Exception:  # noqa: S110 - metrics must never break a consumer
        pass


def instrument_transport(transport: Any) -> Any:
    """Time ``append`` and ``read`` per batch on this transport instance (its class is unchanged,
    so ``isinstance`` checks elsewhere still hold). Idempotent."""
    if getattr(transport, "_ew_instrumented", False):
        return transport
    append, read = transport.append, transport.read

    def timed_append(stream: str, batch_id: str, events: Sequence[bytes], seal: bytes) -> int:
        t = time.perf_counter()
        out = append(stream, batch_id, events, seal)
        append_seconds.child(stream).observe(time.perf_counter() - t)
        return out  # type: ignore[no-any-return]

    def timed_read(stream: str, offset: int, max_records: int) -> list[Any]:
        t = time.perf_counter()
        out = read(stream, offset, max_records)
        read_seconds.child(stream).observe(time.perf_counter() - t)
        read_events.child(stream).inc(len(out))
        return out  # type: ignore[no-any-return]

    transport.append, transport.read = timed_append, timed_read
    transport._ew_instrumented = True
    return transport


def instrument_kms(kms: Any) -> Any:
    """Time this KMS instance's calls and count its failures by error code. Idempotent."""
    if kms is None or getattr(kms, "_ew_instrumented", False):
        return kms
    for op in ("wrap", "unwrap", "unwrap_many", "mac", "rotate", "destroy"):  # unwrap_many: one per read batch
        fn = getattr(kms, op, None)
        if callable(fn):
            setattr(kms, op, _timed(op, fn))
    kms._ew_instrumented = True
    return kms


def _timed(op: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    hist, errors = kms_seconds.child(op), kms_errors

    def timed(*a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        except Exception as e:
            errors.child(op, getattr(e, "code", "error")).inc()
            raise
        finally:
            hist.observe(time.perf_counter() - t)

    return timed


class _CacheRatios:
    """Hit ratios of the live key caches, read at scrape time (no cost on the lookup path)."""

    def __init__(self) -> None:
        self.caches: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        g = GaugeMetricFamily(P + "cache_hit_ratio", "Hit ratio of a key cache since start.", labels=["cache"])
        for name, cache in list(self.caches.items()):
            rate = getattr(cache, "hit_rate", None)
            if callable(rate):
                g.add_metric([label(name)], float(rate()))
        yield g

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return self.collect()


cache_ratios = _CacheRatios()
REGISTRY.register(cache_ratios)


def track_cache(name: str, cache: object) -> None:
    cache_ratios.caches[name] = cache


def timed_forget(fn: Callable[[], Any]) -> Any:
    """Run a forget and observe its latency until the erasure is acknowledged."""
    t = time.perf_counter()
    try:
        return fn()
    finally:
        forget_seconds.observe(time.perf_counter() - t)


def render() -> bytes:
    """The registry in the Prometheus text format (0.0.4)."""
    return generate_latest(REGISTRY)


def start_http_server(port: int, addr: str = "127.0.0.1") -> tuple[Any, Any]:
    """Expose /metrics from an SDK process, on loopback unless told otherwise; (server, thread)."""
    return _prom_http_server(port, addr=addr, registry=REGISTRY)  # type: ignore[no-any-return]
