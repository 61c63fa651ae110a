"""The audit seam: components report what happened; the audit log makes it tamper-evident.

Records are metadata only. ``meta`` values must be ids, counts, sizes, key ids, reason
codes: never payloads, never field values, never raw data-subject ids (pass the keyed hash).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

MetaValue = str | int | float | bool | None

OK = "ok"
DENIED = "denied"
ERROR = "error"


@dataclass(frozen=True)
class AuditEvent:
    action: str
    principal: str
    resource: str
    outcome: str
    reason: str = ""
    meta: dict[str, MetaValue] = field(default_factory=dict)


class AuditSink(Protocol):
    def record(
        self,
        action: str,
        *,
        principal: str,
        resource: str,
        outcome: str = OK,
        reason: str = "",
        **meta: MetaValue,
    ) -> None: ...


class NullAudit:
    """For library use without a deployment home: records nothing."""

    def record(
        self, action: str, *, principal: str, resource: str, outcome: str = OK, reason: str = "", **meta: MetaValue
    ) -> None:
        return None


class MemoryAudit:
    """Keeps records in memory; for tests and for the demo's printouts."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def record(
        self, action: str, *, principal: str, resource: str, outcome: str = OK, reason: str = "", **meta: MetaValue
    ) -> None:
        self.events.append(AuditEvent(action, principal, resource, outcome, reason, dict(meta)))
