"""Anomaly rules over the audit log: the same engine live (``serve``) and offline (``eventward monitor``).

The rules read audit records only (metadata, never payloads), with the records' own times, so a
replay of the log raises exactly the alerts the live monitor raised. Every rule is stateful and
bounded: per-key state is capped (``MAX_KEYS``), windows are deques of timestamps.

Episodes: a burst rule fires once when its window count reaches the threshold and re-arms only
when the count falls below half of it; the rate-spike rule fires once per spike and re-arms on a
window back under the factor. New-producer and new-reader rules fire once per new pair.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from eventward._internal.audit.records import AuditRecord
from eventward.errors import ConfigError

ALERT_ACTION = "monitor.alert"
MONITOR_PRINCIPAL = "eventward-monitor"
MAX_KEYS = 10_000
SEVERITIES = ("low", "medium", "high", "critical")
_SCHEMA_CODES = frozenset({"validation", "bad_envelope", "bad_schema", "oversize", "bad_token"})
_DEFAULTS: dict[str, dict[str, Any]] = {}


@dataclass(frozen=True)
class Alert:
    """One alert: what fired, on what, why, and the audit record that tipped it."""

    rule: str
    severity: str
    time: float
    resource: str
    reason: str
    trigger: int = -1  # audit index of the record that fired it (-1: not from the audit log)
    meta: Mapping[str, str | int | float] = field(default_factory=dict)

    def key(self) -> tuple[str, int, str]:
        return (self.rule, self.trigger, self.resource)


def default_rules_text() -> str:
    return resources.files("eventward._internal.monitor").joinpath("default_rules.yaml").read_text()


def load_rules(path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Rule settings: the shipped defaults, overridden per rule by ``path`` (YAML)."""
    base = _parse(default_rules_text(), "default rules")
    if path is None:
        return base
    try:
        text = Path(path).read_text()
    except OSError:
        raise ConfigError(f"cannot read rules file {path}") from None
    for name, cfg in _parse(text, str(path)).items():
        base[name] = {**base.get(name, {}), **cfg}
    return base


def _parse(text: str, what: str) -> dict[str, dict[str, Any]]:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"{what}: not valid YAML") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("rules"), dict):
        raise ConfigError(f"{what}: expected a mapping with 'rules'")
    out: dict[str, dict[str, Any]] = {}
    for name, cfg in doc["rules"].items():
        if name not in RULES:
            raise ConfigError(f"{what}: unknown rule {name!r} (known: {', '.join(sorted(RULES))})")
        cfg = cfg or {}
        if not isinstance(cfg, dict):
            raise ConfigError(f"{what}: rule {name} must be a mapping")
        for k, v in cfg.items():
            if k in ("severity",):
                if v not in SEVERITIES:
                    raise ConfigError(f"{what}: {name}.severity must be one of {', '.join(SEVERITIES)}")
            elif k in ("actions",):
                if not isinstance(v, list) or not all(isinstance(a, str) for a in v):
                    raise ConfigError(f"{what}: {name}.actions must be a list of action names")
            elif k in ("enabled", "weekends"):
                if not isinstance(v, bool):
                    raise ConfigError(f"{what}: {name}.{k} must be true or false")
            elif isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"{what}: {name}.{k} must be a non-negative number")
        out[name] = dict(cfg)
    return out


def record_time(r: AuditRecord) -> float:
    return datetime.strptime(r.time, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


class _Burst:
    """Counts events in a sliding window; fires once per episode (hysteresis at half the threshold)."""

    def __init__(self, window_s: float, threshold: int) -> None:
        self.window_s, self.threshold = window_s, max(1, int(threshold))
        self.times: deque[float] = deque()
        self.active = False

    def _prune(self, now: float) -> None:
        while self.times and self.times[0] <= now - self.window_s:
            self.times.popleft()
        if self.active and len(self.times) < self.threshold / 2:
            self.active = False

    def add(self, now: float, n: int = 1) -> bool:
        self._prune(now)
        self.times.extend([now] * min(n, self.threshold * 2))  # bounded
        while len(self.times) > self.threshold * 2:
            self.times.popleft()
        if not self.active and len(self.times) >= self.threshold:
            self.active = True
            return True
        return False

    def tick(self, now: float) -> None:
        self._prune(now)


class _Rate:
    """A producer's events per window against its own EWMA of earlier windows."""

    def __init__(self) -> None:
        self.window = -1
        self.count = 0
        self.ewma = 0.0
        self.windows = 0
        self.active = False


class RuleEngine:
    """Feed audit records in index order (``feed``); get alerts back. ``tick`` ages windows."""

    def __init__(self, rules: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.rules = {k: dict(v) for k, v in (rules or load_rules()).items()}
        self.producers: dict[str, set[str]] = {}
        self.reads: dict[str, set[str]] = {}
        self.rates: dict[str, _Rate] = {}
        self.bursts: dict[str, _Burst] = {}
        self.lagging: set[tuple[str, str]] = set()

    def _on(self, name: str) -> dict[str, Any] | None:
        cfg = self.rules.get(name)
        return cfg if cfg is not None and cfg.get("enabled", True) else None

    def _alert(self, name: str, now: float, resource: str, reason: str, trigger: int, **meta: Any) -> Alert:
        sev = str(self.rules.get(name, {}).get("severity", "medium"))
        return Alert(name, sev, now, resource, reason, trigger, {k: v for k, v in meta.items() if v is not None})

    def _burst(self, name: str, now: float, n: int, r: AuditRecord, resource: str) -> list[Alert]:
        cfg = self._on(name)
        if cfg is None:
            return []
        b = self.bursts.get(name)
        if b is None:
            b = self.bursts[name] = _Burst(float(cfg.get("window_s", 60)), int(cfg.get("threshold", 10)))
        if b.add(now, n):
            return [self._alert(name, now, resource, "burst", r.index, count=len(b.times), threshold=b.threshold,
                                window_s=b.window_s, audit_action=r.action)]
        return []

    def feed(self, r: AuditRecord) -> list[Alert]:
        if r.action == ALERT_ACTION:
            return []
        now = record_time(r)
        out: list[Alert] = []
        a, outcome, meta = r.action, r.outcome, r.meta
        if a == "Publish" and outcome == "ok":
            topic = r.resource
            out += self._new_producer(r, now, topic)
            out += self._rate(r, now, int(meta.get("count") or 0))  # type: ignore[arg-type]
        elif a == "key.unwrap" and outcome == "ok":
            out += self._new_reader(r, now)
        elif a == "dlq.put":
            out += self._burst("dlq_growth", now, 1, r, r.resource)
        elif a == "Subscribe" and outcome == "error":
            code = meta.get("code")
            if code == "bad_seal":
                out += self._burst("seal_failure_burst", now, 1, r, r.resource)
            elif code in _SCHEMA_CODES:
                out += self._burst("schema_failure_burst", now, 1, r, r.resource)
            elif code == "forbidden":
                out += self._burst("denial_burst", now, 1, r, r.resource)
        elif a == "key.forget" and outcome == "ok":
            out += self._burst("forget_storm", now, 1, r, "Keys::store")
        if outcome == "denied":
            out += self._burst("denial_burst", now, 1, r, r.resource)
        out += self._off_hours(r, now)
        return out

    def tick(self, now: float) -> None:
        for b in self.bursts.values():
            b.tick(now)

    def feed_all(self, records: Iterable[AuditRecord]) -> list[Alert]:
        out: list[Alert] = []
        for r in records:
            out += self.feed(r)
        return out

    # --- rules -------------------------------------------------------------------------------
    def _new_producer(self, r: AuditRecord, now: float, topic: str) -> list[Alert]:
        known = self.producers.get(topic)
        if known is None:
            if len(self.producers) < MAX_KEYS:
                self.producers[topic] = {r.principal}  # a topic's first producer is its baseline
            return []
        if r.principal in known or len(known) >= MAX_KEYS:
            return []
        known.add(r.principal)
        if self._on("new_producer") is None:
            return []
        return [self._alert("new_producer", now, topic, "producer_never_seen", r.index, producer=r.principal)]

    def _new_reader(self, r: AuditRecord, now: float) -> list[Alert]:
        cls = r.resource
        seen = self.reads.get(r.principal)
        if seen is None:
            if len(self.reads) < MAX_KEYS:
                self.reads[r.principal] = {cls}
            return []
        if cls in seen or len(seen) >= 1000:
            return []
        seen.add(cls)
        if self._on("new_class_reader") is None:
            return []
        return [self._alert("new_class_reader", now, cls, "class_never_read", r.index, reader=r.principal)]

    def _rate(self, r: AuditRecord, now: float, n: int) -> list[Alert]:
        cfg = self._on("rate_spike")
        if cfg is None:
            return []
        window_s = float(cfg.get("window_s", 60)) or 60.0
        alpha, factor = float(cfg.get("alpha", 0.3)), float(cfg.get("factor", 5))
        min_events, warmup = int(cfg.get("min_events", 200)), int(cfg.get("warmup_windows", 3))
        st = self.rates.get(r.principal)
        if st is None:
            if len(self.rates) >= MAX_KEYS:
                return []
            st = self.rates[r.principal] = _Rate()
        w = int(now // window_s)
        if st.window < 0:
            st.window = w
        elif w > st.window:  # close the windows that ended, empty ones included (at most 100)
            closed = [st.count] + [0] * min(w - st.window - 1, 100)
            for c in closed:
                spiking = st.windows >= warmup and c > factor * max(st.ewma, 1.0)
                if not spiking:
                    st.ewma = c if st.windows == 0 else alpha * c + (1 - alpha) * st.ewma
                    st.windows += 1
                    st.active = False
            st.window, st.count = w, 0
        st.count += n
        if (not st.active and st.windows >= warmup and st.count >= min_events
                and st.count > factor * max(st.ewma, 1.0)):
            st.active = True
            return [self._alert("rate_spike", now, r.resource, "rate_over_baseline", r.index, producer=r.principal,
                                count=st.count, baseline=round(st.ewma, 1), factor=factor)]
        return []

    def _off_hours(self, r: AuditRecord, now: float) -> list[Alert]:
        cfg = self._on("off_hours_admin")
        if cfg is None or r.action not in cfg.get("actions", ()):
            return []
        t = datetime.fromtimestamp(now, UTC)
        start, end = int(cfg.get("start_hour", 7)), int(cfg.get("end_hour", 19))
        off = not start <= t.hour < end or (bool(cfg.get("weekends", True)) and t.weekday() >= 5)
        if not off:
            return []
        return [self._alert("off_hours_admin", now, r.resource, "admin_action_off_hours", r.index, actor=r.principal,
                            audit_action=r.action, hour=t.hour)]

    def lag(self, now: float, lags: Iterable[tuple[str, str, int]]) -> list[Alert]:
        """Consumer-lag alerts from a snapshot of (stream, group, lag); once per episode per group."""
        cfg = self._on("consumer_lag")
        if cfg is None:
            return []
        threshold = int(cfg.get("threshold", 10000))
        out: list[Alert] = []
        for stream, group, lag in lags:
            key = (stream, group)
            if lag >= threshold and key not in self.lagging:
                self.lagging.add(key)
                out.append(self._alert("consumer_lag", now, f"Topic::{stream}", "group_behind", -1, group=group,
                                       lag=lag, threshold=threshold))
            elif lag < threshold / 2:
                self.lagging.discard(key)
        return out


RULES = frozenset({
    "new_producer", "new_class_reader", "rate_spike", "denial_burst", "schema_failure_burst",
    "seal_failure_burst", "dlq_growth", "off_hours_admin", "forget_storm", "consumer_lag",
})
