"""Alerts are audit records (``monitor.alert``) and a metric (via the audit observer)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from eventward._internal.audit.log import AuditLog
from eventward._internal.audit.records import AuditRecord, format_time
from eventward._internal.monitor.rules import ALERT_ACTION, MONITOR_PRINCIPAL, Alert, record_time

_RESERVED = frozenset({"rule", "severity", "trigger", "at", "action", "principal", "resource", "outcome", "reason"})


def record_alert(audit: Any, alert: Alert) -> None:
    """Write one alert to the audit log (principal ``eventward-monitor``, outcome ``alert``)."""
    audit.record(
        ALERT_ACTION,
        principal=MONITOR_PRINCIPAL,
        resource=alert.resource,
        outcome="alert",
        reason=alert.reason,
        rule=alert.rule,
        severity=alert.severity,
        trigger=alert.trigger,
        at=format_time(alert.time),
        **{k: v for k, v in alert.meta.items() if k not in _RESERVED},
    )


def alert_of(r: AuditRecord) -> Alert:
    """An alert back from its audit record."""
    meta = dict(r.meta)
    rule, sev = str(meta.pop("rule", "")), str(meta.pop("severity", ""))
    trigger = meta.pop("trigger", -1)
    meta.pop("at", None)
    return Alert(rule, sev, record_time(r), r.resource, r.reason, int(trigger) if isinstance(trigger, int) else -1,
                 {k: v for k, v in meta.items() if isinstance(v, str | int | float)})


def recorded_alerts(log: AuditLog, start: int = 0) -> list[tuple[int, Alert]]:
    """(audit index, alert) of every recorded alert from ``start`` on."""
    out: list[tuple[int, Alert]] = []
    pos = start
    while batch := log.since(pos, 4096):
        out += [(r.index, alert_of(r)) for r in batch if r.action == ALERT_ACTION]
        pos = batch[-1].index + 1
    return out


def as_json(index: int | None, a: Alert) -> dict[str, Any]:
    return {"index": index, "rule": a.rule, "severity": a.severity, "time": format_time(a.time),
            "resource": a.resource, "reason": a.reason, "trigger": a.trigger, "meta": dict(a.meta)}


def new_alerts(recorded: Iterable[Alert], found: Iterable[Alert]) -> list[Alert]:
    """Alerts in ``found`` not already recorded (same rule, trigger record and resource)."""
    seen = {a.key() for a in recorded}
    return [a for a in found if a.key() not in seen]
