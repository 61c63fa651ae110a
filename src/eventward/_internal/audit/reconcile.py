"""Publish records for stored batches whose producer died before its audit buffer was written.

A producer appends a sealed batch, then records ``Publish`` through the buffered audit log
(flushed every ``flush_ms`` or 512 records). A ``kill -9`` between the two leaves a stored
batch with no record. ``reconcile`` walks each stream from a per-stream watermark kept in the
audit database and, for every batch that has no Publish record, appends one derived only from
the batch's seal: the producer principal the seal names, stream, batch id, event count,
sequence range, first offset, key id and seal time. Never payloads: the events are not parsed.
The record says ``reconciled: true`` and whether the seal verified (``outcome`` ``ok``, or
``error`` with the seal's reason code, e.g. for a batch injected behind the producers' back).

A batch sealed less than ``grace_s`` ago may belong to a live producer whose record is still
buffered, so the walk stops there; the next reconcile resumes. If such a producer's record
lands later anyway (its audit database was busy for longer than ``grace_s``), the batch has
two records, the reconciled one marked as such.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from eventward._internal.audit.base import ERROR, OK, AuditEvent, MetaValue, meta_text
from eventward._internal.audit.log import PUBLISHED_ACTION, AuditLog
from eventward._internal.crypto import seal as sealing
from eventward._internal.crypto.seal import Seal
from eventward._internal.log.base import Record, Transport
from eventward.errors import SealError

DEFAULT_GRACE_S = 60.0  # well beyond the audit buffer's flush_ms and its busy timeout
CLOCK_SKEW_S = 300.0  # a seal dated further ahead than this cannot hold the walk back forever
_CHUNK = 2000
_DLQ_SUFFIX = ".dlq"  # dead-letter streams are audited by dlq.put records of their own

SealCheck = Callable[[bytes, str, str], Seal]  # (seal blob, stream, batch) -> verified seal


@dataclass(frozen=True)
class Reconciled:
    """What one reconcile pass did: batches examined and records added, per stream."""

    batches_checked: int
    records_added: int
    held_back: int  # streams whose walk stopped at a batch younger than the grace period


@dataclass(frozen=True)
class _Batch:
    first_offset: int
    end_offset: int
    batch: str
    seal: bytes


def reconcile(
    audit: AuditLog,
    transport: Transport,
    *,
    source: str,
    verify: SealCheck | None = None,
    grace_s: float = DEFAULT_GRACE_S,
    now: float | None = None,
    streams: Iterable[str] | None = None,
    topic_of: Callable[[str], str] | None = None,
) -> Reconciled:
    """Add the missing Publish records for ``streams`` (default: every stream of ``transport``).

    ``source`` names the log (the transport kind), so watermarks of one log never apply to
    another. ``verify`` checks the seal against the trust registry; without it the record says
    ``seal: "unchecked"``. Pass ``grace_s=0`` only when no producer is running. ``topic_of``
    names the topic of a partition stream (the record's resource, as the producer writes it).
    """
    now = time.time() if now is None else now
    checked = added = held = 0
    for stream in transport.streams() if streams is None else streams:
        if stream.endswith(_DLQ_SUFFIX):
            continue
        start = audit.watermark(source, stream)
        if start >= transport.end_offset(stream):
            continue
        batches = list(_batches(transport, stream, start))
        checked += len(batches)
        missing = set(audit.unpublished(stream, [b.batch for b in batches]))
        events: list[AuditEvent] = []
        upto = start
        for b in batches:
            if b.batch in missing:
                s = _parse(b.seal)
                if s is not None and now - grace_s < s.time <= now + CLOCK_SKEW_S:
                    held += 1
                    break  # may be a live producer's batch with its record still buffered
                events.append(_record(stream, b, s, verify, topic_of(stream) if topic_of else stream))
            upto = b.end_offset
        added += audit.reconcile(source, stream, upto, events)
    return Reconciled(checked, added, held)


def _batches(transport: Transport, stream: str, offset: int) -> Iterator[_Batch]:
    """Stored batches from ``offset`` on, one per batch, read a chunk of events at a time."""
    end = transport.end_offset(stream)
    while offset < end:
        records = transport.read(stream, offset, _CHUNK)
        if not records:
            return
        i = 0
        while i < len(records):
            first = records[i]
            extent = max(_extent(first, records, i), first.offset + 1)
            yield _Batch(first.offset, extent, first.batch, first.seal)
            offset = extent
            while i < len(records) and records[i].offset < extent:
                i += 1


def _extent(first: Record, records: list[Record], at: int) -> int:
    """Offset after the last event of ``first``'s batch: from its seal, else from the records read."""
    s = _parse(first.seal)
    if s is not None and first.index < s.count:
        return first.offset - first.index + s.count
    n = 0
    for r in records[at:]:
        if r.batch != first.batch or r.seal != first.seal:
            break
        n += 1
    return first.offset + n


def _parse(blob: bytes) -> Seal | None:
    try:
        return sealing.parse(blob)
    except SealError:
        return None


def _record(stream: str, b: _Batch, s: Seal | None, verify: SealCheck | None, topic: str) -> AuditEvent:
    """Metadata of the seal only; strings the seal carries are escaped and cut to fit."""
    meta: dict[str, MetaValue] = {
        "stream": stream,
        "batch": meta_text(b.batch),
        "first_offset": b.first_offset,
        "count": b.end_offset - b.first_offset,
        "reconciled": True,
    }
    if s is None:
        meta["seal"] = "malformed"
        return AuditEvent(PUBLISHED_ACTION, "unknown", f"Topic::{topic}", ERROR, "malformed", meta)
    meta.update(
        first_seq=s.first_seq,
        last_seq=s.last_seq,
        count=s.count,
        kid=meta_text(s.kid),
        instance=meta_text(s.instance),
        sealed_us=s.time_us,
    )
    outcome, reason = OK, ""
    if verify is None:
        meta["seal"] = "unchecked"
    else:
        try:
            verify(b.seal, stream, b.batch)
            meta["seal"] = "verified"
        except SealError as e:
            outcome, reason = ERROR, e.reason
            meta["seal"] = "refused"
    principal = meta_text(s.producer) or "unknown"
    return AuditEvent(PUBLISHED_ACTION, principal, f"Topic::{topic}", outcome, reason, meta)
