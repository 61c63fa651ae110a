"""The Producer: validate, authorize, encrypt, envelope, batch, seal, append, audit.

Everything that can refuse an event (authorization, schema, encryption, size) runs inside
``send``, before the event is buffered, so a refused event leaves nothing behind. A sealed
batch is kept until the transport acknowledges it: a retry after a transport error re-sends
the same batch id and the same bytes, so nothing is duplicated or re-encrypted. Sequence
numbers are per producer instance and stream, dense, and bound into the seal.

A partitioned topic (log/partitions.py) gets one lane per partition: its own buffer, sequence
numbers and sealed batches on the partition's stream. An event's partition is a stable hash of
its data subject (when the schema names one; one subject stays ordered) or else of its id.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from eventward._internal import envelope
from eventward._internal.audit.base import DENIED, AuditSink, NullAudit
from eventward._internal.client.envelopes import EnvelopeBuilder
from eventward._internal.client.gcpause import BatchPause
from eventward._internal.client.types import FieldCipher, SchemaSource
from eventward._internal.crypto import seal as sealing
from eventward._internal.crypto.seal import Signer
from eventward._internal.log.base import Transport
from eventward._internal.log.names import check_stream_name
from eventward._internal.log.partitions import MAX_PARTITIONS, partition_for, partition_stream
from eventward._internal.policy.base import PUBLISH, Authorizer, check
from eventward.errors import (
    AccessDenied,
    ConfigError,
    EnvelopeError,
    EventwardError,
    InputError,
    TransportError,
    ValidationError,
)

if TYPE_CHECKING:
    from eventward._internal.guard.producer_guard import ProducerGuard

log = logging.getLogger("eventward.producer")


def _attributes(
    time_: str | None, dataschema: str | None, ctype: str | None, extensions: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """The caller's optional attributes (nulls unset), refusing what eventward must set itself."""
    given: dict[str, Any] = {k: v for k, v in (extensions or {}).items() if v is not None}
    for name in given:
        if name in _CORE_ATTRIBUTES:
            raise EnvelopeError(f"attribute '{name}' is not an extension; pass it as its own argument")
        if name.startswith(envelope.RESERVED_PREFIX):
            raise EnvelopeError(f"extension attribute '{name[:40]}' is reserved (eventward sets its own)")
    if ctype is not None and not envelope.is_json_type(ctype):
        raise EnvelopeError(
            "attribute 'datacontenttype' must be a JSON media type: event data is JSON the registered "
            "schema validates"
        )
    for name, value in (("time", time_), ("dataschema", dataschema), ("datacontenttype", ctype)):
        if value is not None:
            given[name] = value
    return given or None


_CORE_ATTRIBUTES = frozenset(
    {"specversion", "id", "source", "type", "subject", "time", "dataschema", "datacontenttype", "data", "data_base64"}
)


_TYPES_TEXT = 256  # an audit meta string's limit (audit.records.MAX_TEXT)
_PAUSE_MAX_EVENTS = 4096  # send_many calls up to this size run with the collector paused (gcpause)
_ROUTES = 4096  # data subjects whose partition a producer remembers (then it forgets them all)


def types_meta(counts: Mapping[str, int]) -> str:
    """A batch's event types for its Publish audit record: ``"TypeA:3,TypeB:1"``, most frequent
    first, cut to fit one audit meta string (the rest summed as ``_other_:N``).

    Event types are registered schema names (bounded, never payload), so the record stays
    metadata-only; audit meta values are scalars, hence a string rather than a mapping (as
    the control plane's ``classes``). A type cannot contain ``,``; it may contain ``:``, so a
    reader splits each item at its last ``:`` (``parse_types_meta``)."""
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    left = sum(counts.values())
    out: list[str] = []
    for t, n in items:
        item = f"{t}:{n}"
        tail = len(f",_other_:{left - n}") if left > n else 0
        if len(",".join([*out, item])) + tail > _TYPES_TEXT:
            out.append(f"_other_:{left}")  # fits: the previous step reserved room for it
            break
        out.append(item)
        left -= n
    return ",".join(out)


def parse_types_meta(text: object) -> dict[str, int]:
    """The inverse of ``types_meta``; anything malformed is skipped (it comes from a log)."""
    out: dict[str, int] = {}
    if not isinstance(text, str):
        return out
    for item in text.split(","):
        t, sep, n = item.rpartition(":")
        if sep and t and n.isdigit():
            out[t] = out.get(t, 0) + int(n)
    return out


@dataclass(frozen=True)
class _Batch:
    batch_id: str
    first_seq: int
    ids: tuple[str, ...]
    events: tuple[bytes, ...]
    seal: bytes
    types: Mapping[str, int]  # events per event type, for the Publish audit record


@dataclass
class _Lane:
    """One partition's state: buffered events, dense sequence numbers, the batch in flight."""

    partition: int
    stream: str
    buffer: list[tuple[str, bytes, str]] = field(default_factory=list)  # (event id, envelope bytes, type)
    since: float = 0.0  # when the oldest buffered event was buffered
    next_seq: int = 0
    pending: _Batch | None = None  # sealed, not yet acknowledged
    ready: bool = False  # the stream is known to exist


class Producer:
    def __init__(
        self,
        topic: str,
        *,
        principal: str,
        transport: Transport,
        signer: Signer,
        schemas: SchemaSource,
        encryptor: FieldCipher,
        authorizer: Authorizer,
        audit: AuditSink | None = None,
        source: str | None = None,
        max_batch: int = 500,
        max_delay_ms: float = 50.0,
        background: bool = False,
        decision_ttl: float = 30.0,
        clock: Callable[[], float] = time.time,
        guard: ProducerGuard | None = None,
        partitions: int = 1,
    ) -> None:
        if signer.principal != principal:
            raise ConfigError(f"signer belongs to {signer.principal}, not to producer {principal}")
        if not 1 <= max_batch <= sealing.MAX_EVENTS:
            raise ConfigError(f"max_batch must be 1..{sealing.MAX_EVENTS}")
        if type(partitions) is not int or not 1 <= partitions <= MAX_PARTITIONS:
            raise ConfigError(f"partitions must be 1..{MAX_PARTITIONS}")
        self.topic = check_stream_name(topic)
        self.partitions = partitions
        self.principal = principal
        self.instance = uuid.uuid4().hex
        self.source = source or f"eventward:producer:{principal}"
        self._transport = transport
        self._signer = signer
        self._schemas = schemas
        self._encryptor = encryptor
        self._authorizer = authorizer
        self._audit = audit or NullAudit()
        self._max_batch = max_batch
        self._max_delay = max_delay_ms / 1000
        self._ttl = decision_ttl
        self._clock = clock
        self._guard = guard  # untagged PII/secrets: off, warn or block (eventward._internal.guard)
        self._guard_later = guard.deferred() if guard is not None else None  # warn mode: settled in flush()
        self._allowed: dict[str, float] = {}  # event type -> when the Publish decision expires
        self._lock = threading.Lock()  # buffers and sequence numbers
        self._flush_lock = threading.Lock()  # one flush at a time, in sequence order
        self._lanes = [_Lane(p, partition_stream(self.topic, p)) for p in range(partitions)]
        self._routes: dict[str, int] = {}  # subject pseudonym -> partition (see _partition_of)
        self._envelopes = EnvelopeBuilder(principal)
        self.last_error: EventwardError | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._flush_loop, name="eventward-producer", daemon=True)
            self._thread.start()

    def __repr__(self) -> str:
        return f"Producer(topic={self.topic!r}, principal={self.principal!r}, instance={self.instance!r})"

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- sending -------------------------------------------------------------------------
    def send(
        self,
        type_: str,
        data: Any,
        *,
        id: str | None = None,
        source: str | None = None,
        subject: str | None = None,
        time: str | None = None,
        dataschema: str | None = None,
        datacontenttype: str | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> str:
        """Buffer one event and return its id; raises (buffering nothing) if it is refused.

        CloudEvents attributes the caller sets (``time``, ``dataschema``, a JSON
        ``datacontenttype``, extensions such as ``traceparent``) are kept as given; eventward's
        own ``ew*`` extensions cannot be set, and its acceptance time goes in ``ewtime``.

        A full buffer is flushed here; if the log is down the sealed batch waits for the next
        flush (``last_error`` says why) and, once another full batch is waiting, ``send``
        raises the transport error instead of buffering more: memory stays bounded.
        """
        if any(ln.pending is not None and len(ln.buffer) >= self._max_batch for ln in self._lanes):
            self.flush()
        attributes = _attributes(time, dataschema, datacontenttype, extensions)
        self._authorize(type_)
        schema = self._schemas.active(type_)
        schema.validate(data)
        event_id = id or self._envelopes.new_id()
        if self._guard is not None:
            self._guard.check(self.topic, type_, schema, data, self.principal, later=self._guard_later)
        enc, subject_hash = self._encryptor.encrypt(
            event_id, data, schema.spec, principal=self.principal, topic=self.topic, event_type=type_
        )
        lane = self._lanes[self._partition_of(event_id, subject_hash)]
        full = False
        with self._lock:
            now = self._clock()
            env = self._envelopes.build(
                type_,
                source or self.source,
                enc,
                id_=event_id,
                seq=lane.next_seq,
                schema_version=schema.version,
                subject_hash=subject_hash,
                subject=subject,
                now=now,
                attributes=attributes,
            )
            try:
                raw = envelope.encode(env, max_bytes=schema.max_event_bytes)
            except orjson.JSONEncodeError:
                raise InputError(f"event data of type {type_} is not JSON-serializable") from None
            if not lane.buffer:
                lane.since = now
            lane.buffer.append((event_id, raw, type_))
            lane.next_seq += 1
            full = len(lane.buffer) >= self._max_batch or now - lane.since >= self._max_delay
        if full:
            try:
                self.flush()
            except TransportError as e:
                self.last_error = e
                log.warning("flush failed (%s); the sealed batch is kept and retried", e.code)
        return event_id

    def send_many(self, type_: str, events: Iterable[Any], *, source: str | None = None) -> list[str]:
        """Buffer many events of one type and return their ids, all or nothing: every event is
        authorized, validated and encrypted before any is buffered, so a refused event raises
        and leaves none of the call behind (no sequence number used).

        The per-batch path: the Publish decision and the schema are looked up once per call, and
        envelopes are built and encoded under one lock acquisition. What is buffered is sealed
        and appended in batches of at most ``max_batch`` once a batch is full, as with ``send``;
        if the log is down, the sealed batch waits and the rest stays buffered (bounded by the
        caller's input) until the next flush.

        A call of at most ``_PAUSE_MAX_EVENTS`` events runs with the cyclic collector paused
        (``gcpause``): its copies die by reference count instead of being promoted."""
        events = list(events)
        if len(events) > _PAUSE_MAX_EVENTS:
            return self._send_many(type_, events, source)
        with BatchPause():
            return self._send_many(type_, events, source)

    def _send_many(self, type_: str, events: list[Any], source: str | None) -> list[str]:
        if any(ln.pending is not None and len(ln.buffer) >= self._max_batch for ln in self._lanes):
            self.flush()
        self._authorize(type_)
        schema = self._schemas.active(type_)
        spec, principal, topic = schema.spec, self.principal, self.topic
        validate_many = getattr(schema, "validate_many", None)  # the call's loop in the schema, lookups hoisted
        try:
            if validate_many is not None:
                validate_many(events)
            else:
                for data in events:
                    schema.validate(data)
        except ValidationError as e:
            raise _indexed(schema, events, e) from None
        if self._guard is not None:  # untagged PII/secrets, as in send(), all events' values pre-checked together
            self._guard.check_many(topic, type_, schema, events, principal)
        prepare = getattr(self._encryptor, "prepare_many", None)
        if prepare is not None:  # the call's keys in one request (client mode) or one key-service call (home)
            prepare(topic, type_, spec, events, principal=principal)
        ids = self._envelopes.new_ids(len(events))
        encrypt_many = getattr(self._encryptor, "encrypt_many", None)
        if encrypt_many is not None:  # FieldEncryptor: encrypt's work per event, the call's work once
            encrypted = encrypt_many(ids, events, spec, principal=principal, topic=topic, event_type=type_)
        else:
            encrypt = self._encryptor.encrypt
            encrypted = [
                encrypt(event_id, data, spec, principal=principal, topic=topic, event_type=type_)
                for event_id, data in zip(ids, events, strict=True)
            ]
        if not encrypted:
            return []
        src = source or self.source
        one = self.partitions == 1
        lanes = [0] * len(ids) if one else [self._partition_of(i, e[1]) for i, e in zip(ids, encrypted, strict=True)]
        with self._lock:  # one acquisition; sequence numbers stay dense with concurrent sends
            now = self._clock()
            if one:
                seq = self._lanes[0].next_seq
                items = [(i, seq + n, e[1], e[0]) for n, (i, e) in enumerate(zip(ids, encrypted, strict=True))]
                seqs = {0: seq + len(items)}
            else:
                seqs = {ln.partition: ln.next_seq for ln in self._lanes}
                items = []
                for p, event_id, (enc, subject_hash) in zip(lanes, ids, encrypted, strict=True):
                    seq = seqs[p]
                    items.append((event_id, seq, subject_hash, enc))
                    seqs[p] = seq + 1
            try:  # the call's shared envelope members are encoded once (EnvelopeBuilder.encode_many)
                encoded = self._envelopes.encode_many(type_, src, schema.version, now, items, schema.max_event_bytes)
            except orjson.JSONEncodeError:
                raise InputError(f"event data of type {type_} is not JSON-serializable") from None
            if one:
                per_lane = {0: list(zip(ids, encoded, [type_] * len(ids), strict=True))}
            else:
                per_lane = {}
                for p, event_id, data in zip(lanes, ids, encoded, strict=True):
                    per_lane.setdefault(p, []).append((event_id, data, type_))
            full = False
            for p, raws in per_lane.items():  # nothing is buffered before every event encoded
                lane = self._lanes[p]
                if not lane.buffer:
                    lane.since = now
                lane.buffer.extend(raws)
                lane.next_seq = seqs[p]
                full = full or len(lane.buffer) >= self._max_batch or now - lane.since >= self._max_delay
        if full:
            try:
                self.flush()
            except TransportError as e:
                self.last_error = e
                log.warning("flush failed (%s); the sealed batch is kept and retried", e.code)
        return ids

    def flush(self) -> list[str]:
        """Seal and append what is buffered; returns the ids the transport acknowledged.

        On a transport error the sealed batch is kept and re-sent unchanged by the next flush.
        """
        with self._flush_lock:
            if self._guard_later is not None:
                self._guard_later.settle()  # warn-mode records and counts before anything is sealed
            acked: list[str] = []
            for lane in self._lanes:
                acked += self._flush_lane(lane)
            return acked

    def _flush_lane(self, lane: _Lane) -> list[str]:
        acked: list[str] = []
        if lane.pending is not None:
            acked += self._append(lane, lane.pending)
        with self._lock:
            left = len(lane.buffer)  # what is buffered now, sealed in batches of max_batch
        while left > 0:
            with self._lock:
                buf = lane.buffer[: min(left, self._max_batch)]
                first_seq = lane.next_seq - len(lane.buffer)
            lane.pending = self._seal(lane, buf, first_seq)
            with self._lock:  # sends may have appended meanwhile; they stay buffered
                del lane.buffer[: len(buf)]
            left -= len(buf)
            acked += self._append(lane, lane.pending)
        return acked

    def discard(self) -> int:
        """Drop buffered events that were not sealed yet (e.g. the rest of a rejected input
        chunk); their sequence numbers are reused, so consumers see no gap."""
        n = 0
        with self._flush_lock, self._lock:  # never while a flush is sealing the buffer
            for lane in self._lanes:
                n += len(lane.buffer)
                lane.next_seq -= len(lane.buffer)
                lane.buffer.clear()
        return n

    def pending(self) -> int:
        """Events buffered or sealed but not yet acknowledged."""
        with self._lock:
            return sum(len(ln.buffer) + (len(ln.pending.ids) if ln.pending else 0) for ln in self._lanes)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()

    # --- internals -----------------------------------------------------------------------
    def _partition_of(self, event_id: str, subject_hash: str | None) -> int:
        """The subject's pseudonym keeps one subject's events in one partition, in order.

        A subject's partition is remembered (up to ``_ROUTES`` subjects, then all are forgotten at
        once): a subject sends many events, and its SHA-256 was a microsecond of each (issue 16).
        Event ids are unique, so an event without a subject is hashed every time."""
        if self.partitions == 1:
            return 0
        if subject_hash is None:
            return partition_for(event_id, self.partitions)
        p = self._routes.get(subject_hash)
        if p is None:
            if len(self._routes) >= _ROUTES:
                self._routes.clear()
            p = self._routes[subject_hash] = partition_for(subject_hash, self.partitions)
        return p

    def _authorize(self, type_: str) -> None:
        now = time.monotonic()
        if self._allowed.get(type_, 0.0) > now:
            return
        try:
            check(self._authorizer, self.principal, PUBLISH, ("Topic", self.topic), {"event_type": type_})
        except AccessDenied:
            self._audit.record(
                "Publish",
                principal=self.principal,
                resource=f"Topic::{self.topic}",
                outcome=DENIED,
                reason="forbidden",
                event_type=type_,
            )
            raise
        self._allowed[type_] = now + self._ttl

    def _seal(self, lane: _Lane, buf: list[tuple[str, bytes, str]], first_seq: int) -> _Batch:
        ids, events, kinds = zip(*buf, strict=True)  # the buffer's columns (buf is never empty here)
        lane_id = self.instance if lane.partition == 0 else f"{self.instance}-p{lane.partition}"
        batch_id = f"{lane_id}-{first_seq}"
        blob = sealing.seal(
            self._signer,
            instance=self.instance,
            stream=lane.stream,  # the partition's stream: a batch moved to another is refused
            batch=batch_id,
            first_seq=first_seq,
            events=events,
            time=self._clock(),
        )
        if kinds.count(kinds[0]) == len(kinds):  # one event type (send_many's batches): no loop
            types = {kinds[0]: len(kinds)}
        else:
            types = {}
            for t in kinds:
                types[t] = types.get(t, 0) + 1
        return _Batch(batch_id, first_seq, ids, events, blob, types)

    def _append(self, lane: _Lane, b: _Batch) -> list[str]:
        if not lane.ready:
            if not self._transport.has_stream(lane.stream):
                self._transport.create_stream(lane.stream)
            lane.ready = True
        first_offset = self._transport.append(lane.stream, b.batch_id, b.events, b.seal)
        lane.pending = None
        self._audit.record(
            "Publish",
            principal=self.principal,
            resource=f"Topic::{self.topic}",
            stream=lane.stream,
            batch=b.batch_id,
            count=len(b.events),
            bytes=sum(map(len, b.events)),
            first_seq=b.first_seq,
            last_seq=b.first_seq + len(b.events) - 1,
            first_offset=first_offset,
            kid=self._signer.kid,
            types=types_meta(b.types),
        )
        return list(b.ids)

    def _flush_loop(self) -> None:
        """Background flusher: bounds how long an event waits in the buffer when sends stop."""
        while not self._stop.wait(self._max_delay / 2 or 0.01):
            with self._lock:
                now = self._clock()
                due = any(ln.buffer and now - ln.since >= self._max_delay for ln in self._lanes)
                due = due or any(ln.pending is not None for ln in self._lanes)
            if due:
                try:
                    self.flush()
                    self.last_error = None
                except EventwardError as e:  # kept for the next flush/close to retry and raise
                    self.last_error = e
                    log.warning("background flush failed (%s); the batch is kept and retried", e.code)


def _indexed(schema: Any, events: list[Any], first: ValidationError) -> ValidationError:
    """The batch's first invalid event as ``validate`` words it, named by its 0-based index in
    the call (``details["index"]``), so the caller knows which event to fix: found by validating
    one by one, on the refusal path only. Metadata only, as every error: index, path and rule."""
    for i, data in enumerate(events):
        try:
            schema.validate(data)
        except ValidationError as e:
            extra = {k: v for k, v in e.details.items() if k not in ("path", "rule", "index")}
            return ValidationError(f"event {i} of {len(events)}: {e.message}", e.path, e.rule, index=i, **extra)
    return first
