"""The audit seam: components report what happened; the audit log makes it tamper-evident.

Records are metadata only. ``meta`` values must be ids, counts, sizes, key ids, reason
codes: never payloads, never field values, never raw data-subject ids (pass the keyed hash).
"""

from __future__ import annotations

from collections.abc import Sequence
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


META_LIST_CHARS = 200  # below the audit log's 256-character cap on a meta string, with room to spare


def meta_list(items: Sequence[str], limit: int = META_LIST_CHARS) -> str:
    """Comma-joined ids that always fit one audit meta string.

    Lists of ids (destroyed KEK versions, deciding policies) grow with a deployment, and an
    oversize meta value fails the record *after* the audited work was done. Ids that do not fit
    are dropped whole (a cut id could name another one) and counted in a ``+N more`` marker;
    record the full count in a meta key of its own.
    """
    joined = ",".join(items)
    if len(joined) <= limit:
        return joined
    room = limit - len(f",+{len(items)} more")
    kept: list[str] = []
    used = -1  # no comma before the first id
    for item in items:
        if used + 1 + len(item) > room:
            break
        kept.append(item)
        used += 1 + len(item)
    return ",".join([*kept, f"+{len(items) - len(kept)} more"])


def meta_text(text: str, limit: int = META_LIST_CHARS) -> str:
    """Text a caller chose (a requested id, a YAML path) as a string the audit log accepts.

    The log refuses control characters and oversize strings, and refusing at that point would
    turn the audited denial or error into another one: escape them and cut with a marker instead.
    """
    if not text.isprintable():
        text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
