"""The producer guard: untagged PII or secrets in an event are refused (``block``) or sent with
an audit record and a counter (``warn``), per event type and topic (``x-eventward-guard``,
guard/modes.py).

The Producer calls ``check`` once per event after schema validation and before anything is
encrypted or buffered (``check_many`` once per ``send_many`` call, after validating all of its
events), so a refused event leaves nothing behind. In ``warn`` mode a producer's ``send`` only
collects the values to look at (``Deferred``); the detectors run over all of them together when
the producer flushes, before its buffer is sealed: the audit record and the count still come
before the event is stored, for one joint RE2 pre-check per few dozen events instead of a few
per event. Errors and audit records name
field paths and kinds, never the values. With the guard off (the default) the call costs a
dict lookup.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from eventward._internal.audit.base import DENIED, AuditSink, NullAudit, meta_list
from eventward._internal.client.types import SchemaVersionLike
from eventward._internal.guard.detectors import Detectors, default_detectors
from eventward._internal.guard.modes import BLOCK, OFF, WARN, mode_for
from eventward._internal.guard.scan import candidates_for, findings_for, findings_many, settle
from eventward.errors import SensitiveDataRefused

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

    def deferred(self) -> Deferred:
        """A producer's pending ``warn``-mode checks (``check(..., later=)``), settled by its flush."""
        return Deferred(self)

    def check(self, topic: str, type_: str, schema: SchemaVersionLike, data: Any, principal: str,
              later: Deferred | None = None) -> None:
        """Raise SensitiveDataRefused (``block``) or audit and count (``warn``); nothing when clean.

        ``later``: in ``warn`` mode, only collect the values to look at into it; the audit and
        count happen at ``later.settle()``, which the producer calls before sealing its buffer."""
        mode = self.mode(topic, schema)
        if mode == OFF:
            return
        if later is not None and mode != BLOCK:
            later.add(topic, type_, schema, data, principal)
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


class Deferred:
    """``warn``-mode checks of one producer's buffered events, waiting for its next flush.

    ``add`` takes the values to look at out of the event at ``send`` (the caller may change its
    dict afterwards); ``settle`` runs the detectors over all of them at once (``scan.settle``) and
    writes each offending event's ``guard.warn`` record and count, as ``check`` would have."""

    def __init__(self, guard: ProducerGuard) -> None:
        self._guard = guard
        self._detectors = guard._detectors  # built on first use: most producers never warn, and
        # default_detectors() imports detect_secrets and compiles its patterns (a few hundred ms)
        self._lock = threading.Lock()
        self._items: list[tuple[str, str, SchemaVersionLike, str, tuple[list[tuple[str, str]],
                                                                         list[tuple[str, str]]]]] = []

    def __len__(self) -> int:
        return len(self._items)

    @property
    def _det(self) -> Detectors:
        det = self._detectors
        if det is None:
            with self._lock:
                det = self._detectors
                if det is None:
                    det = self._detectors = default_detectors()
        return det

    def add(self, topic: str, type_: str, schema: SchemaVersionLike, data: Any, principal: str) -> None:
        found = candidates_for(schema, data, self._det)
        if found[0] or found[1]:  # most events: every value memoized clean, nothing to keep
            with self._lock:
                self._items.append((topic, type_, schema, principal, found))

    def settle(self) -> None:
        """Detect, then audit and count each event with findings; pending items are dropped only
        once all are recorded (an audit failure raises and leaves them for the next flush)."""
        with self._lock:
            items = list(self._items)
        if not items:
            return
        settle([found for *_, found in items], self._det)
        for topic, type_, schema, principal, (out, _) in items:
            if out:
                self._guard._act(WARN, topic, type_, schema, out, principal)
        with self._lock:
            del self._items[: len(items)]
