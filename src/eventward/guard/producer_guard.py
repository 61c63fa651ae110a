"""The producer guard: untagged PII or secrets in an event are refused (``block``) or sent with
an audit record and a counter (``warn``), per event type and topic (``x-eventward-guard``,
guard/modes.py).

The Producer calls ``check`` once per event after schema validation and before anything is
encrypted or buffered (``check_many`` once per ``send_many`` call, after validating all of its
events), so a refused event leaves nothing behind. Errors and audit records name
field paths and kinds, never the values. With the guard off (the default) the call costs a
dict lookup.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from eventward.audit.base import DENIED, AuditSink, NullAudit, meta_list
from eventward.client.types import SchemaVersionLike
from eventward.errors import SensitiveDataRefused
from eventward.guard.detectors import Detectors
from eventward.guard.modes import BLOCK, OFF, mode_for
from eventward.guard.scan import findings_for, findings_many

WARN_ACTION = "guard.warn"
BLOCK_ACTION = "guard.block"


class ProducerGuard:
    """Injected into a Producer (``Deployment.producer`` does it); one per producer or shared."""

    def __init__(self, audit: AuditSink | None = None, *, detectors: Detectors | None = None) -> None:
        self._audit = audit or NullAudit()
        self._detectors = detectors
        self._modes: dict[tuple[str, int, str], str] = {}
        self._lock = threading.Lock()
        #: warned events per (topic, event type, path, kind): the guard's metric
        self.warned: Counter[tuple[str, str, str, str]] = Counter()
        #: refused events per (topic, event type)
        self.blocked: Counter[tuple[str, str]] = Counter()

    def mode(self, topic: str, schema: SchemaVersionLike) -> str:
        key = (schema.type, schema.version, topic)
        mode = self._modes.get(key)
        if mode is None:
            document: dict[str, Any] = getattr(schema, "document", None) or {}
            mode = self._modes[key] = mode_for(document, topic)
        return mode

    def check(self, topic: str, type_: str, schema: SchemaVersionLike, data: Any, principal: str) -> None:
        """Raise SensitiveDataRefused (``block``) or audit and count (``warn``); nothing when clean."""
        mode = self.mode(topic, schema)
        if mode == OFF:
            return
        found = findings_for(schema, data, self._detectors)
        if found:
            self._act(mode, topic, type_, schema, found, principal)

    def check_many(self, topic: str, type_: str, schema: SchemaVersionLike, events: list[Any], principal: str) -> None:
        """``check`` of each event of one call, in order (``block``: the first event with a finding
        raises), their candidate values pre-checked together (``scan.findings_many``)."""
        mode = self.mode(topic, schema)
        if mode == OFF:
            return
        for found in findings_many(schema, events, self._detectors):
            if found:
                self._act(mode, topic, type_, schema, found, principal)

    def _act(self, mode: str, topic: str, type_: str, schema: SchemaVersionLike, found: list[tuple[str, str]],
             principal: str) -> None:
        pairs = tuple(sorted(set(found)))
        described = ", ".join(f"{p} ({k})" for p, k in pairs[:8]) + (" ..." if len(pairs) > 8 else "")
        meta = {
            "event_type": type_,
            "schema_version": schema.version,
            "paths": meta_list(sorted({p for p, _ in pairs})),
            "kinds": meta_list(sorted({k for _, k in pairs})),
        }
        if mode == BLOCK:
            with self._lock:
                self.blocked[(topic, type_)] += 1
            self._audit.record(
                BLOCK_ACTION, principal=principal, resource=f"Topic::{topic}", outcome=DENIED,
                reason="untagged_sensitive_data", **meta,
            )
            raise SensitiveDataRefused(
                f"event of type {type_} carries untagged sensitive data in {described}: tag these fields "
                "in the schema (eventward schema suggest-tags) or remove them",
                findings=pairs,
            )
        with self._lock:
            for p, k in pairs:
                self.warned[(topic, type_, p, k)] += 1
        self._audit.record(
            WARN_ACTION, principal=principal, resource=f"Topic::{topic}", reason="untagged_sensitive_data", **meta
        )
