"""SIEM export: audit records as OCSF API Activity (6003), alerts as OCSF Detection Finding (2004).

OCSF version 1.5.0 (https://schema.ocsf.io/1.5.0). Tests validate every line against the JSON
Schemas generated from the OCSF 1.5.0 definitions shipped by the ``ocsf-json-schema`` package.
The mapping is in docs/monitoring.md. Audit records are metadata only, so the export is too: the
principal is the actor's user name (as in the audit log), subjects appear only as keyed hashes,
and eventward's own record fields go under ``unmapped``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from eventward._internal.audit.records import AuditRecord
from eventward._internal.monitor.alerts import alert_of
from eventward._internal.monitor.rules import ALERT_ACTION, Alert, record_time
from eventward.errors import ConfigError, TransportUnavailable

OCSF_VERSION = "1.5.0"
PRODUCT = {"name": "eventward", "vendor_name": "eventward"}
API_ACTIVITY, DETECTION_FINDING = 6003, 2004
# OCSF API Activity activity_id: 1 Create, 2 Read, 3 Update, 4 Delete, 99 Other
_CREATE = {"Publish", "key.create", "trust.register", "schema.propose", "dlq.put", "backup.create", "control.enroll"}
_READ = {"Subscribe", "Replay", "Replay.end", "key.unwrap", "key.encrypt", "audit.read", "dlq.list", "authorize"}
_UPDATE = {"policy.apply", "schema.approve", "schema.activate", "schema.reject", "trust.rotate", "key.rotate",
           "key.hold", "key.release", "RedriveDLQ", "backup.restore", "keys.anchor"}
_DELETE = {"key.forget", "trust.revoke", "erasure.certificate"}
_SEVERITY = {"low": 2, "medium": 3, "high": 4, "critical": 5}


def _activity(action: str) -> int:
    if action in _CREATE:
        return 1
    if action in _READ:
        return 2
    if action in _UPDATE:
        return 3
    if action in _DELETE:
        return 4
    return 99


def _ms(t: float) -> int:
    return round(t * 1000)


def _resource(resource: str) -> dict[str, str]:
    kind, sep, name = resource.partition("::")
    if not sep:
        kind, sep, name = resource.partition(":")
    return {"name": name, "type": kind} if sep and name else {"name": resource}


def api_activity(r: AuditRecord) -> dict[str, Any]:
    """One audit record as an OCSF 1.5.0 API Activity event."""
    activity = _activity(r.action)
    ok = r.outcome == "ok"
    doc: dict[str, Any] = {
        "class_uid": API_ACTIVITY,
        "class_name": "API Activity",
        "category_uid": 6,
        "category_name": "Application Activity",
        "activity_id": activity,
        "type_uid": API_ACTIVITY * 100 + activity,
        "time": _ms(record_time(r)),
        "severity_id": 1 if ok else 3 if r.outcome == "denied" else 2,
        "status_id": 1 if ok else 2,
        "status": "Success" if ok else "Failure",
        "message": f"{r.action} {r.outcome}",
        "actor": {"user": {"name": r.principal}},
        "api": {"operation": r.action, "service": {"name": "eventward"}},
        "src_endpoint": {"svc_name": "eventward"},
        "resources": [_resource(r.resource)],
        "metadata": {
            "product": PRODUCT,
            "version": OCSF_VERSION,
            "uid": f"audit-{r.index}",
            "sequence": r.index,
            "log_name": "eventward-audit",
        },
        "unmapped": {"outcome": r.outcome, "meta": dict(r.meta)},
    }
    if activity == 99:
        doc["activity_name"] = r.action
    if r.reason:
        doc["status_detail"] = r.reason
    return doc


def detection_finding(a: Alert, index: int | None = None) -> dict[str, Any]:
    """One alert as an OCSF 1.5.0 Detection Finding (activity Create, status New)."""
    uid = f"alert-{index}" if index is not None else f"alert-{a.rule}-{_ms(a.time)}"
    return {
        "class_uid": DETECTION_FINDING,
        "class_name": "Detection Finding",
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": 1,
        "type_uid": DETECTION_FINDING * 100 + 1,
        "time": _ms(a.time),
        "severity_id": _SEVERITY.get(a.severity, 99),
        "status_id": 1,
        "is_alert": True,
        "message": f"{a.rule}: {a.reason} on {a.resource}",
        "finding_info": {
            "uid": uid,
            "title": a.rule,
            "desc": a.reason,
            "types": ["eventward-anomaly", a.rule],
            "created_time": _ms(a.time),
            "analytic": {"name": a.rule, "type_id": 1, "type": "Rule"},
        },
        "resources": [_resource(a.resource)],
        "metadata": {
            "product": PRODUCT,
            "version": OCSF_VERSION,
            "uid": uid,
            "log_name": "eventward-alerts",
        },
        "unmapped": {"trigger": a.trigger, "meta": dict(a.meta)},
    }


def to_ocsf(r: AuditRecord) -> dict[str, Any]:
    """A record as OCSF: alerts become Detection Findings, everything else API Activity."""
    return detection_finding(alert_of(r), r.index) if r.action == ALERT_ACTION else api_activity(r)


def lines(records: Iterable[AuditRecord]) -> Iterator[bytes]:
    for r in records:
        yield orjson.dumps(to_ocsf(r)) + b"\n"


class Sink:
    """Where OCSF lines go: ``-`` (stdout), a file path (appended), or ``nats://host:port/subject``."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._fh: IO[bytes] | None = None
        self._nats: tuple[str, str] | None = None
        self._buf: list[bytes] = []
        if target == "-":
            self._fh = sys.stdout.buffer
        elif target.startswith("nats://"):
            rest = target[len("nats://"):]
            hostport, sep, subject = rest.partition("/")
            if not sep or not subject or not hostport or " " in subject:
                raise ConfigError("a NATS SIEM target is nats://HOST:PORT/SUBJECT")
            self._nats = (f"nats://{hostport}", subject)
        else:
            try:
                self._fh = Path(target).open("ab")  # noqa: SIM115 - closed in close()
            except OSError:
                raise ConfigError(f"cannot open SIEM export file {target}") from None

    def write(self, line: bytes) -> None:
        if self._fh is not None:
            self._fh.write(line)
        else:
            self._buf.append(line)

    def close(self) -> None:
        if self._nats is not None:
            self._publish(*self._nats)
        if self._fh is not None:
            self._fh.flush()
            if self._fh is not sys.stdout.buffer:
                self._fh.close()

    def _publish(self, url: str, subject: str) -> None:
        import nats

        async def run() -> None:
            nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0, allow_reconnect=False)
            try:
                for line in self._buf:
                    await nc.publish(subject, line.rstrip(b"\n"))
                await nc.flush(timeout=5)
            finally:
                await nc.close()

        try:
            asyncio.run(run())
        except Exception as e:
            raise TransportUnavailable(f"cannot publish the SIEM export to {url} ({type(e).__name__})") from None
        self._buf.clear()
