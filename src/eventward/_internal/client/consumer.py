"""The Consumer: read, verify the seal, guard against replay, decrypt per clearance, deliver.

Every record is either delivered to the handler (verified, decrypted as far as this
principal is cleared) or written to the dead-letter stream with a reason code: nothing is
silently dropped and nothing unverified is delivered. Each delivered event is settled in
the group's replay guard right after its handler returns, before offsets are committed, so
a crash between the handler and the commit redelivers the record and the guard skips it:
effectively-once for the handler. A key service that cannot answer stops the run (fail
closed) without committing, so the event is tried again later rather than lost.

Authorization is on what the consumer asks for: Subscribe on the topic (or, with
``types=``, on each declared event type) before any record is touched; events of types it
did not ask for are left in the log for the consumers that did. It is also on who sealed
each event: a valid seal only proves which principal sealed it, so the principal must also
be allowed to Publish that type on this topic under the policy in force, or the event is
dead-lettered as ``unauthorized_producer`` (one decision per producer and type per batch).
Replay state is keyed by that sealing principal, so no producer can touch another's.

A partitioned topic (log/partitions.py) is read partition by partition, round-robin: by default
all of them, or ``partitions=[...]``, or ``partition_of=(member, members)`` for one member of a
group split across processes (partition p goes to member p mod members). Offsets are committed
per partition stream; authorization, policy and dead letters stay per topic.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

from eventward._internal import envelope
from eventward._internal.audit.base import DENIED, ERROR, AuditSink, NullAudit
from eventward._internal.client import replay as rp
from eventward._internal.client.dlq import DeadLetter, DeadLetters
from eventward._internal.client.envelopes import parse_sealed
from eventward._internal.client.gcpause import BatchPause
from eventward._internal.client.replay import ReplayGuard
from eventward._internal.client.types import (
    Delivered,
    FieldCipher,
    RunStats,
    SchemaSource,
    SchemaVersionLike,
    delivered_from_envelope,
)
from eventward._internal.client.verify import SealVerifier
from eventward._internal.crypto.seal import Seal
from eventward._internal.keys.notices import Hook, NoticeBoard, handle_notices
from eventward._internal.log.base import Record, Transport
from eventward._internal.log.names import check_stream_name
from eventward._internal.log.partitions import check_partitions, member_partitions, partition_stream, partition_streams
from eventward._internal.policy.base import PUBLISH, REPLAY, SUBSCRIBE, Authorizer, check
from eventward.errors import (
    AccessDenied,
    EnvelopeError,
    EventwardError,
    InputError,
    NotFoundError,
    ReplayError,
    SealError,
    TokenError,
)

log = logging.getLogger("eventward.consumer")

Handler = Callable[[Delivered], object]

# One delivery as monitoring sees it: (event type, eventward's acceptance time ``ewtime`` for a
# live delivery or None for a replay/redrive, delivery time in epoch seconds).
Delivery = tuple[str, Any, float]
# Called once per read batch with (topic, deliveries) while monitoring is on (monitor.instrument
# registers its observer); while it is empty a consumer keeps no tally at all.
DELIVERY_OBSERVERS: list[Callable[[str, list[Delivery]], None]] = []

# Events of a read batch taken through parse, keys, decrypt and delivery together. A read batch
# of 500 parsed envelopes (~2 MB of dicts and strings) outgrows a core's L2 cache, and every stage
# then walks it from L3: measured on 100,000 subjects, the deployed consumer spent 37 us/event
# with 100 events in flight and 45-49 us with 500 (parsing alone 3 vs 7 us/event). The read, the
# seal checks and the commit stay per read batch.
CHUNK_EVENTS = 100

DELIVERED = "delivered"
REDELIVERED = "redelivered"
PROCESSED = "processed"
SKIPPED = "skipped"
DEAD_LETTERED = "dead_lettered"
REFUSED = "refused"


# One (type, version) of a read batch: (field spec, indexes of its events, their decrypt_many
# items (event id, data, subject hash)).
_Group = tuple[Any, list[int], list[tuple[Any, Any, Any]]]


@dataclass(frozen=True, slots=True)
class _Refusal:
    code: str  # error category
    reason: str  # precise reason code
    settle: bool  # the seal verified and the id is ours to remember
    event_id: str | None = None
    event_type: str | None = None
    seal: Seal | None = None


class Consumer:
    def __init__(
        self,
        topic: str,
        *,
        principal: str,
        transport: Transport,
        verifier: SealVerifier,
        schemas: SchemaSource,
        encryptor: FieldCipher,
        authorizer: Authorizer,
        guard: ReplayGuard,
        dlq: DeadLetters,
        audit: AuditSink | None = None,
        group: str | None = None,
        types: Collection[str] | None = None,
        from_beginning: bool = False,
        uncleared: Literal["redact", "token"] = "redact",
        max_attempts: int = 3,
        backoff: float = 0.05,
        read_batch: int = 500,
        poll_interval: float = 0.05,
        decision_ttl: float = 30.0,
        notices: NoticeBoard | None = None,
        notice_interval: float = 0.5,
        partition_count: int = 1,
        partitions: Collection[int] | None = None,
        partition_of: tuple[int, int] | None = None,
        notice_group: str | None = None,
    ) -> None:
        if max_attempts < 1:
            raise InputError("max_attempts must be at least 1")
        self.topic = check_stream_name(topic)
        if type(partition_count) is not int or partition_count < 1:
            raise InputError("partition_count must be a positive number")
        self.partition_count = partition_count  # the topic's
        if partitions is not None and partition_of is not None:
            raise InputError("give partitions or partition_of, not both")
        if partition_of is not None:
            self.partitions = member_partitions(*partition_of, partition_count)
        else:
            self.partitions = check_partitions(
                list(partitions) if partitions is not None else range(partition_count), partition_count)
        self.streams = [partition_stream(self.topic, p) for p in self.partitions]  # what this consumer reads
        self._topic_streams = frozenset(partition_streams(self.topic, partition_count))
        self.principal = principal
        self.group = group or principal
        # who answers erasure notices: the group, or each member of a group split across processes
        self.notice_group = notice_group or self.group
        self.types = frozenset(types) if types is not None else None
        self._transport = transport
        self._verifier = verifier
        self._schemas = schemas
        self._encryptor = encryptor
        self._authorizer = authorizer
        self._guard = guard
        # The batch path's is_next/settle_next stand for admit/settle: only for a guard that does
        # not redefine those (a subclass that does goes through process, event by event).
        self._plain_guard = type(guard).admit is ReplayGuard.admit and type(guard).settle is ReplayGuard.settle
        self._dlq = dlq
        self._audit = audit or NullAudit()
        self._from_beginning = from_beginning
        self._uncleared: Literal["redact", "token"] = uncleared
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._read_batch = read_batch
        self._poll_interval = poll_interval
        self._ttl = decision_ttl
        self._authorized_until = 0.0
        self._positions: dict[str, int] = {}  # stream -> next offset to read
        self._versions: dict[tuple[str, int], SchemaVersionLike] = {}
        self._sealer_batch: tuple[str, str] | None = None  # (stream, batch) the decisions below are for
        self._sealer_ok: dict[tuple[str, str], bool] = {}  # (producer, type) -> may publish
        self._notices = notices
        self._notice_interval = notice_interval
        self._next_notice = 0.0
        self._forget_hooks: list[Hook] = []
        self._tally: list[Delivery] | None = None  # this read batch's deliveries, for monitoring
        # This read batch's decrypt outcomes worked out ahead (_predecrypt): id(envelope) ->
        # (outcome, stamp), each taken at most once, by the event it belongs to.
        self._pre: dict[int, tuple[Any, Any]] | None = None
        # This read batch's events by (type, version), made as its keys are collected
        # (_want_batch): the field spec, each event's index and its decrypt_many item.
        self._groups: dict[tuple[str, int], _Group | None] | None = None

    def __repr__(self) -> str:
        return f"Consumer(topic={self.topic!r}, principal={self.principal!r}, group={self.group!r})"

    # --- erasure notices -----------------------------------------------------------------
    def on_forget(self, hook: Hook) -> Hook:
        """Register ``hook(subject_pseudonym)``: called once per ``forget`` (the pseudonym is the
        envelope's ``ewsubject``) to purge the application's read models, caches and indexes. A
        hook that raises is reported by its error code and retried; usable as a decorator."""
        self._forget_hooks.append(hook)
        return hook

    def check_notices(self) -> int:
        """Answer this group's due erasure notices now (``run`` does it every ``notice_interval``
        seconds): drop cached keys, run the hooks, acknowledge. Returns how many were answered."""
        if self._notices is None:
            return 0
        self._next_notice = time.monotonic() + self._notice_interval
        return handle_notices(self._notices, self.notice_group, self._forget_hooks, principal=self.principal,
                              drop_keys=getattr(self._encryptor, "clear_cache", None))

    # --- consuming -----------------------------------------------------------------------
    def run(
        self, handler: Handler, *, max_events: int | None = None, idle_timeout: float | None = 1.0
    ) -> RunStats:
        """Deliver events to ``handler`` until ``max_events`` were delivered or nothing new
        arrived for ``idle_timeout`` seconds (None: run until interrupted)."""
        stats = RunStats()
        idle_since = time.monotonic()
        while max_events is None or stats.delivered < max_events:
            if self._notices is not None and time.monotonic() >= self._next_notice:
                self.check_notices()
            self._authorize_topic()
            got = False
            for stream in self.streams:  # round-robin: one read batch per partition and turn
                if max_events is not None and stats.delivered >= max_events:
                    break
                got = self._run_batch(stream, handler, stats, max_events) or got
            if not got:
                if idle_timeout is not None and time.monotonic() - idle_since >= idle_timeout:
                    break
                time.sleep(self._poll_interval)
                continue
            idle_since = time.monotonic()
        return stats

    def _run_batch(self, stream: str, handler: Handler, stats: RunStats, max_events: int | None) -> bool:
        """One read batch of one partition stream, processed and committed; False if it was empty.

        Batch-native: the batch's seals are verified once each (one SHA-256 per event); then, a
        chunk of ``CHUNK_EVENTS`` at a time, its verified events are parsed, their keys resolved
        at once and decrypted ahead, and each event runs one tight path (checks, replay guard,
        decrypt, handler, journal). One commit for the read batch. An event that is anything but
        ordinary (a refusal, a redelivery, a gap, a type not asked for) goes through ``process``,
        which judges it exactly as a record on its own, so both paths decide alike."""
        pos = self._start_position(stream)
        records = self._transport.read(stream, pos, self._read_batch)
        if not records:
            return False
        enc = self._encryptor
        # A remote key source fetches a chunk's keys in one request: there one request per read
        # batch costs less than the cache misses, so its chunk is the whole batch.
        remote = getattr(enc, "prefetch_wanted", None) is not None or getattr(enc, "prefetch", None) is not None
        step = len(records) if remote else CHUNK_EVENTS
        scope = getattr(enc, "reading_batch", None)
        with BatchPause() as pause, self.delivery_batch(), scope() if scope is not None else nullcontext():
            seals = self._verifier.verify_records(records)
            for lo in range(0, len(records), step):
                chunk, chunk_seals = records[lo : lo + step], seals[lo : lo + step]
                envs = self._prepare_chunk(chunk, chunk_seals)
                self._predecrypt(envs)
                try:
                    pos = self._deliver(stream, pos, chunk, chunk_seals, envs, handler, stats, max_events, pause)
                finally:
                    self._pre = None
                if max_events is not None and stats.delivered >= max_events:
                    break
        self._commit(stream, pos)
        return True

    def _deliver(self, stream: str, pos: int, records: Sequence[Record], seals: Sequence[Any],
                 envs: list[dict[str, Any] | None], handler: Handler, stats: RunStats,
                 max_events: int | None, pause: BatchPause) -> int:
        """Each record of a read batch in order; returns the position after the last one handled.

        The ordinary live event runs start to finish here: its seal's producer, sequence number
        and time read once per seal, the sealer's Publish grant once per seal and type, the
        replay guard's ``is_next``, the outcome decrypted ahead when it is still current, the
        handler, ``settle_next``. Anything else (an event that does not parse or verify, a
        producer or sequence not the seal's, a type not asked for, a sealer not allowed, not the
        next event of its producer, no outcome ahead) goes to ``process`` or ``_decrypt``
        before anything is done for it, and is judged there as a record on its own.

        Each event's envelope is dropped from the batch once handled (and its outcome ahead
        with it). ``pause`` (the batch's paused collector) is checked every 32 events, so a
        slow handler resumes the collector after ``gcpause.MAX_PAUSE_S``."""
        guard = self._guard
        is_next = guard.is_next if self._plain_guard else None
        settle_next = guard.settle_next
        types, tally, process = self.types, self._tally, self.process
        pre = self._pre
        current = self._encryptor.batch_current if pre else None  # type: ignore[attr-defined]
        producer = instance = ""
        first_seq = 0
        sealed_at = 0.0
        seal: Seal | None = None
        may: dict[str, bool] = {}  # this seal's sealer: may it Publish the type
        for i, rec in enumerate(records):
            if max_events is not None and stats.delivered >= max_events:
                break
            if not i & 31:
                pause.check()
            offset = rec.offset
            if offset != pos:
                self._report_offset_gap(stream, pos, offset, stats)
            pos = offset + 1
            s = seals[i]
            env = envs[i]  # None: it does not parse, and process() refuses it
            envs[i] = None
            if type(s) is not Seal or env is None:
                process(rec, handler, stats)
                continue
            ahead = pre.pop(id(env), None) if pre else None  # never left behind for another object's id
            if s is not seal:
                seal, may = s, {}
                producer, instance, first_seq, sealed_at = s.producer, s.instance, s.first_seq, s.time_us / 1e6
            seq = env.get(envelope.EXT_SEQ)
            type_ = env["type"]
            if (env.get(envelope.EXT_PRODUCER) != producer or type(seq) is not int or seq != first_seq + rec.index
                    or (types is not None and type_ not in types)):
                process(rec, handler, stats)
                continue
            ok = may.get(type_)
            if ok is None:
                ok = may[type_] = self._sealer_may_publish(rec, producer, type_)
            event_id = env["id"]
            if not ok or is_next is None or not is_next(producer, instance, rec.stream, event_id, seq, sealed_at):
                process(rec, handler, stats)  # a duplicate, a redelivery, a gap, out of order, stale or future
                continue
            if ahead is not None and type(ahead[0]) is tuple and current(ahead[1]):  # type: ignore[misc]
                clear, report = ahead[0]
                event = delivered_from_envelope(env, clear, rec.stream, offset, producer, seq, rec.batch, sealed_at,
                                                report)
            else:
                try:
                    event = self._decrypt_with(rec, s, env, ahead)
                except (TokenError, EnvelopeError, NotFoundError, InputError) as e:
                    self._refuse(rec, _Refusal(e.code, getattr(e, "reason", e.code), True, event_id, type_, s),
                                 stats, rp.LIVE, guard, "0")
                    continue
            try:
                handler(event)
            except Exception as e:
                if self._handler_failed(rec, s, handler, event, e, stats):
                    continue
            settle_next(producer, rec.stream, offset, event_id, instance, seq)
            stats.delivered += 1
            if tally is not None:
                tally.append((type_, env.get(envelope.EXT_RECEIVED), time.time()))
        return pos

    def _handler_failed(self, rec: Record, s: Seal, handler: Handler, event: Delivered, first: Exception,
                        stats: RunStats) -> bool:
        """The handler raised ``first`` on a live event: retried; True if it failed every attempt
        (dead-lettered and settled so), False if a retry succeeded."""
        error = self._call(handler, event, first=first)
        if error is None:
            return False
        event_id, type_ = event.id, event.type
        self._dlq.put(rec, code="handler_error", reason="handler_error", group=self.group, attempt="0",
                      attempts=self._max_attempts, error=type(error).__name__, event_id=event_id, event_type=type_)
        self._guard.settle(producer=s.producer, stream=rec.stream, offset=rec.offset, event_id=event_id,
                           instance=s.instance, seq=event.seq, status=rp.DEAD)
        stats.dead_lettered += 1
        return True

    def _prepare_chunk(self, records: Sequence[Record], seals: Sequence[Any]) -> list[dict[str, Any] | None]:
        """A chunk of a read batch: its records' envelopes, each parsed once (None where a record
        does not parse), with the keys of its verified events resolved at once, inside the read
        batch's ``FieldEncryptor.reading_batch`` scope (each key id and Decrypt decision once per
        read batch). A remote key source (client mode) first fetches the keys in one request;
        if it cannot, the error stops the consumer before the batch, with nothing committed. A
        local one (FieldEncryptor.resolve_wanted) gets every key id at once: one Decrypt
        decision per class, one store query, one unwrap per key, one audit record; an outage
        there is left to the event that needs the key, which stops the consumer right there.
        Only events whose seal verified are looked at: a record nobody sealed asks for no key
        (no unwrap, no audit record) however many key ids it names.

        The parsed events are kept for the chunk rather than parsed again when processed: a
        parse is ~3 us per event here, and keeping them costs the garbage collector less than
        that (1,000 and 40,000 subjects: 9-25% less CPU per event, measured with the test
        inputs frozen out of the collector's sight, as a service holds no such data)."""
        enc = self._encryptor
        envs = self._parse_batch(records)
        want = getattr(enc, "want_keys", None)
        wanted: dict[str | None, dict[tuple[str, str, str | None], None]] = {}
        keys: list[tuple[str, Any, str | None, Any]] = []
        self._groups = None
        if want is not None:
            self._groups = self._want_batch(envs, seals, want, wanted)
            prefetch = getattr(enc, "prefetch_wanted", None)
            if prefetch is not None and wanted:
                prefetch(self.topic, wanted)
        else:
            keys = [k for env, s in zip(envs, seals, strict=True)
                    if type(s) is Seal and (k := self._key_event(env)) is not None]
            if records and (prefetch := getattr(enc, "prefetch", None)) is not None:
                prefetch(self.topic, [r for r, s in zip(records, seals, strict=True) if type(s) is Seal])
        if wanted and (resolve := getattr(enc, "resolve_wanted", None)) is not None:
            resolve(wanted, principal=self.principal, topic=self.topic)
        elif keys and (resolve := getattr(enc, "resolve_batch", None)) is not None:
            resolve(keys, principal=self.principal, topic=self.topic)
        return envs

    def _want_batch(
        self, envs: Sequence[dict[str, Any] | None], seals: Sequence[Any], want: Callable[..., None],
        wanted: dict[str | None, dict[tuple[str, str, str | None], None]],
    ) -> dict[tuple[str, int], _Group | None]:
        """One pass over a chunk's envelopes: each verified event whose keys are worth resolving
        ahead (as ``_key_event`` judges) is handed to ``want``, and grouped for ``_predecrypt``
        by type and version when its schema tags fields. A malformed or unverified event is only
        skipped here, and refused later."""
        groups: dict[tuple[str, int], _Group | None] = {}
        types, schema_of = self.types, self._schema
        last_type: Any = None
        last_version: Any = None
        group: _Group | None = None
        for i, env in enumerate(envs):
            if env is None or type(seals[i]) is not Seal:
                continue
            type_, version, data = env["type"], env.get(envelope.EXT_SCHEMA), env.get("data")
            if type(version) is not int or type(data) is not dict or (types is not None and type_ not in types):
                continue
            if version != last_version or type_ != last_type:
                last_type, last_version = type_, version
                key = (type_, version)
                if key in groups:
                    group = groups[key]
                else:
                    try:
                        spec = schema_of(type_, version).spec
                    except EventwardError:
                        spec = None
                    group = groups[key] = (spec, [], []) if spec is not None and spec.rules else None
            if group is None:
                continue
            shash = env.get(envelope.EXT_SUBJECT)
            if shash is None or type(shash) is str:
                want(wanted, type_, group[0], shash, data)
            group[1].append(i)
            group[2].append((env["id"], data, shash))
        return groups

    def _predecrypt(self, envs: Sequence[dict[str, Any] | None]) -> None:
        """Decrypt a chunk's sealed events ahead, in one ``decrypt_many`` per event type and
        schema version (the groups ``_want_batch`` made as the keys were collected), from the read
        batch's key memo only (no key-source call, so nothing is asked or audited for an event
        that is then not decrypted). Each event still goes through every check in order; where it
        reaches decryption it takes its outcome from here when the memo it came from is still
        current, and otherwise decrypts as before. Only events whose seal verified are
        decrypted: unverified data never reaches a cipher."""
        self._pre = None
        groups, self._groups = self._groups, None
        many = getattr(self._encryptor, "decrypt_many", None)
        if many is None or groups is None:  # an encryptor without want_keys: each event on its own
            return
        pre: dict[int, tuple[Any, Any]] = {}
        for (type_, _), group in groups.items():
            if group is None:
                continue
            spec, idx, items = group  # verified events only (_want_batch)
            outcomes, stamp = many(items, spec, principal=self.principal, uncleared=self._uncleared,
                                   topic=self.topic, event_type=type_)
            if stamp is not None:
                for i, outcome in zip(idx, outcomes, strict=True):
                    if outcome is not None:
                        pre[id(envs[i])] = (outcome, stamp)
        self._pre = pre or None

    def _parse_batch(self, records: Sequence[Record]) -> list[dict[str, Any] | None]:
        """Each record's envelope, or None where it does not parse (refused when processed).
        Nothing is judged here: a record is only trusted once its seal verified."""
        envs: list[dict[str, Any] | None] = []
        for rec in records:
            try:
                envs.append(parse_sealed(rec.data))
            except (EnvelopeError, InputError):
                envs.append(None)
        return envs

    def _key_event(self, env: dict[str, Any] | None) -> tuple[str, Any, str | None, Any] | None:
        """(event type, field spec, subject hash, data) of an event whose keys are worth resolving
        ahead, or None; a malformed or unsealed event is skipped here and refused later."""
        if env is None:
            return None
        type_, version, data = env["type"], env.get(envelope.EXT_SCHEMA), env.get("data")
        shash = env.get(envelope.EXT_SUBJECT)
        types = self.types
        if (types is not None and type_ not in types) or type(version) is not int or (
            type(data) is not dict or not (shash is None or type(shash) is str)
        ):
            return None
        try:
            spec = self._schema(type_, version).spec
        except EventwardError:
            return None
        return (type_, spec, shash, data) if spec.rules else None  # spec.rules: it tags fields

    def _schema(self, type_: str, version: int) -> SchemaVersionLike:
        key = (type_, version)
        schema = self._versions.get(key)
        if schema is None:  # versions are immutable: cache them (bounded)
            if len(self._versions) >= 1024:
                self._versions.clear()
            schema = self._versions[key] = self._schemas.get(*key)
        return schema

    def poll(self, max_events: int = 500) -> list[Delivered]:
        """What is available now (up to ``max_events``), handed over and committed."""
        out: list[Delivered] = []
        self.run(out.append, max_events=max_events, idle_timeout=0.0)
        return out

    def replay(
        self,
        handler: Handler,
        *,
        from_offset: int,
        to_offset: int | None = None,
        by: str | None = None,
        partition: int = 0,
    ) -> RunStats:
        """An authorized, audited re-read of [from_offset, to_offset) of one partition: seals are
        verified as always, the freshness window and sequence order are waived, and the group's
        offsets and replay state are untouched."""
        who = by or self.principal
        resource = f"Topic::{self.topic}"
        stream = partition_stream(self.topic, check_partitions([partition], self.partition_count)[0])
        try:
            check(self._authorizer, who, REPLAY, ("Topic", self.topic))
        except AccessDenied:
            self._audit.record(
                "Replay",
                principal=who,
                resource=resource,
                outcome=DENIED,
                reason="forbidden",
                from_offset=from_offset,
                to_offset=to_offset,
            )
            raise
        self._authorize_topic(force=True)
        end = self._transport.end_offset(stream) if to_offset is None else to_offset
        self._audit.record(
            "Replay",
            principal=who,
            resource=resource,
            from_offset=from_offset,
            to_offset=end,
            group=self.group,
        )
        guard = ReplayGuard.ephemeral(freshness=self._guard.freshness, skew=self._guard.skew)
        stats = RunStats()
        pos = max(0, from_offset)
        while pos < end:
            records = [
                r
                for r in self._transport.read(stream, pos, min(self._read_batch, end - pos))
                if r.offset < end
            ]
            if not records:
                break
            with self.delivery_batch():
                for rec in records:
                    self.process(rec, handler, stats, mode=rp.REPLAY, guard=guard)
                    pos = rec.offset + 1
        self._audit.record(
            "Replay.end",
            principal=who,
            resource=resource,
            from_offset=from_offset,
            to_offset=end,
            delivered=stats.delivered,
            refused=sum(stats.refused.values()),
        )
        return stats

    def redeliver(self, entry: DeadLetter, handler: Handler, stats: RunStats) -> str:
        """One dead letter through the normal path (DeadLetters.redrive authorizes and audits)."""
        if entry.stream not in self._topic_streams:
            raise InputError(f"dead letter belongs to stream {entry.stream!r}, not to topic {self.topic!r}")
        self._authorize_topic()
        with self.delivery_batch():
            outcome = self.process(
                entry.record(), handler, stats, mode=rp.REDRIVE, attempt=f"r{entry.dlq_offset}"
            )
        self._guard.checkpoint()
        return outcome

    def close(self) -> None:
        self._guard.close()

    # --- one record ----------------------------------------------------------------------
    def process(
        self,
        rec: Record,
        handler: Handler,
        stats: RunStats,
        *,
        mode: str = rp.LIVE,
        guard: ReplayGuard | None = None,
        attempt: str = "0",
    ) -> str:
        """Verify, guard, decrypt and hand one record to ``handler``; returns the outcome."""
        guard = guard or self._guard
        checked = self._check(rec, guard, mode)
        if isinstance(checked, _Refusal):
            return self._refuse(rec, checked, stats, mode, guard, attempt)
        if checked is None:
            stats.skipped += 1
            return SKIPPED
        s, env, admission = checked
        if admission.verdict == rp.REDELIVERY:
            stats.redelivered += 1
            return REDELIVERED
        if admission.verdict == rp.PROCESSED:
            return PROCESSED
        if admission.gap is not None:
            self._report_seq_gap(s, admission.gap, stats)
        try:
            event = self._decrypt(rec, s, env)
        except (TokenError, EnvelopeError, NotFoundError, InputError) as e:
            return self._refuse(
                rec,
                _Refusal(e.code, getattr(e, "reason", e.code), True, env["id"], env["type"], s),
                stats,
                mode,
                guard,
                attempt,
            )
        error = self._call(handler, event)
        if error is not None:
            if mode == rp.REDRIVE:  # the entry stays in the DLQ; no second entry
                stats.refuse("handler_error")
                return REFUSED
            self._dlq.put(
                rec,
                code="handler_error",
                reason="handler_error",
                group=self.group,
                attempt=attempt,
                attempts=self._max_attempts,
                error=type(error).__name__,
                event_id=event.id,
                event_type=event.type,
            )
        status = rp.OK if error is None else rp.DEAD
        guard.settle(
            producer=s.producer,
            stream=rec.stream,
            offset=rec.offset,
            event_id=event.id,
            instance=s.instance,
            seq=event.seq,
            status=status,
            mode=mode,
        )
        if error is not None:
            stats.dead_lettered += 1
            return DEAD_LETTERED
        stats.delivered += 1
        tally = self._tally
        if tally is not None:  # monitoring on: two lookups and an append, reported per batch
            tally.append((event.type, env.get(envelope.EXT_RECEIVED) if mode == rp.LIVE else None,
                          time.time()))
        return DELIVERED

    def _check(
        self, rec: Record, guard: ReplayGuard, mode: str
    ) -> tuple[Seal, dict[str, Any], rp.Admission] | _Refusal | None:
        try:
            s = self._verifier.verify_record(rec, fresh=mode == rp.REDRIVE)
        except SealError as e:
            return _Refusal(e.code, e.reason, False)
        try:
            env = parse_sealed(rec.data)
        except (EnvelopeError, InputError) as e:
            return _Refusal(e.code, e.code, False, seal=s)
        event_id, type_ = env["id"], env["type"]
        if env.get(envelope.EXT_PRODUCER) != s.producer:
            return _Refusal("bad_seal", "wrong_producer", False, event_id, type_, s)
        seq = env.get(envelope.EXT_SEQ)
        if type(seq) is not int or seq != s.seq_of(rec.index):
            return _Refusal("bad_seal", "seq_mismatch", False, event_id, type_, s)
        if not self._sealer_may_publish(rec, s.producer, type_):  # before the guard: nothing settled
            return _Refusal(AccessDenied.code, "unauthorized_producer", False, event_id, type_, s)
        try:
            admission = guard.admit(
                producer=s.producer,
                stream=rec.stream,
                offset=rec.offset,
                event_id=event_id,
                instance=s.instance,
                seq=seq,
                sealed_at=s.time,
                mode=mode,
            )
        except ReplayError as e:
            return _Refusal(e.code, e.reason, e.reason != "duplicate", event_id, type_, s)
        if self.types is not None and type_ not in self.types:
            if admission.verdict == rp.NEW:  # keeps the producer's sequence whole: no false gaps
                guard.settle(
                    producer=s.producer,
                    stream=rec.stream,
                    offset=rec.offset,
                    event_id=event_id,
                    instance=s.instance,
                    seq=seq,
                    status=rp.SKIP,
                    mode=mode,
                )
            return None
        return s, env, admission

    def _decrypt(self, rec: Record, s: Seal, env: dict[str, Any]) -> Delivered:
        pre = self._pre
        return self._decrypt_with(rec, s, env, pre.pop(id(env), None) if pre is not None else None)

    def _decrypt_with(self, rec: Record, s: Seal, env: dict[str, Any], ahead: tuple[Any, Any] | None) -> Delivered:
        """``env`` decrypted: from ``ahead`` (its outcome worked out by ``_predecrypt``) while that
        is still current, else by the encryptor now."""
        version = env.get(envelope.EXT_SCHEMA)
        if type(version) is not int:
            raise EnvelopeError("event carries no schema version (ewschema)")
        type_ = env["type"]
        schema = self._versions.get((type_, version)) or self._schema(type_, version)
        data = env.get("data")
        if type(data) is not dict and not isinstance(data, dict):
            raise EnvelopeError("event data must be a JSON object")
        if ahead is not None and self._encryptor.batch_current(ahead[1]):  # type: ignore[attr-defined]
            if type(ahead[0]) is not tuple:
                raise ahead[0]  # the refusal decrypt would raise (TokenError, InputError)
            clear, report = ahead[0]
            return delivered_from_envelope(env, clear, rec.stream, rec.offset, s.producer, s.first_seq + rec.index,
                                           rec.batch, s.time_us / 1_000_000, report)
        # A KeyServiceError propagates: fail closed, commit nothing, the event is tried again later.
        clear, report = self._encryptor.decrypt(
            env["id"],
            data,
            schema.spec,
            env.get(envelope.EXT_SUBJECT),
            principal=self.principal,
            uncleared=self._uncleared,
            topic=self.topic,
            event_type=type_,
        )
        return delivered_from_envelope(env, clear, rec.stream, rec.offset, s.producer, s.first_seq + rec.index,
                                       rec.batch, s.time_us / 1_000_000, report)

    def _call(self, handler: Handler, event: Delivered, first: Exception | None = None) -> Exception | None:
        """Call the handler with retries and exponential backoff; the last error, or None.
        ``first``: the error of a first attempt the caller already made."""
        for attempt in range(self._max_attempts):
            if attempt == 0 and first is not None:
                error = first
            else:
                try:
                    handler(event)
                    return None
                except Exception as e:
                    error = e
            log.warning(
                "handler failed on %s@%d (attempt %d/%d): %s",
                event.stream,
                event.offset,
                attempt + 1,
                self._max_attempts,
                type(error).__name__,
            )
            if attempt + 1 == self._max_attempts:
                return error
            time.sleep(self._backoff * (2**attempt))
        return None

    def _refuse(
        self, rec: Record, r: _Refusal, stats: RunStats, mode: str, guard: ReplayGuard, attempt: str
    ) -> str:
        stats.refuse(r.reason)
        self._audit.record(
            "Subscribe",
            principal=self.principal,
            resource=f"Topic::{self.topic}",
            outcome=ERROR,
            reason=r.reason,
            code=r.code,
            stream=rec.stream,
            offset=rec.offset,
            mode=mode,
            producer=r.seal.producer if r.seal is not None else None,
        )
        if mode == rp.REDRIVE:
            return REFUSED
        self._dlq.put(
            rec,
            code=r.code,
            reason=r.reason,
            group=self.group,
            attempt=attempt if mode == rp.LIVE else f"{mode}-{attempt}",
            event_id=r.event_id,
            event_type=r.event_type,
        )
        if r.settle and r.seal is not None and r.event_id is not None:
            guard.settle(
                producer=r.seal.producer,
                stream=rec.stream,
                offset=rec.offset,
                event_id=r.event_id,
                instance=r.seal.instance,
                seq=r.seal.seq_of(rec.index),
                status=rp.DEAD,
                mode=mode,
            )
        stats.dead_lettered += 1
        return DEAD_LETTERED

    @contextmanager
    def delivery_batch(self) -> Iterator[None]:
        """Scope one batch of ``process`` calls: while monitoring is on, the events delivered in
        it are handed to ``DELIVERY_OBSERVERS`` once at its end (per batch, not per event).
        ``run``, ``replay`` and ``redeliver`` use it; so does a caller driving ``process``
        itself (the gateway's consumer groups)."""
        self._tally = [] if DELIVERY_OBSERVERS else None
        try:
            yield
        finally:
            tally, self._tally = self._tally, None
            if tally:
                for observe in DELIVERY_OBSERVERS:
                    observe(self.topic, tally)

    # --- position, authorization, reports ------------------------------------------------
    def _start_position(self, stream: str) -> int:
        pos = self._positions.get(stream)
        if pos is None:
            committed = self._transport.committed(self.group, stream)
            if committed is not None:
                pos = committed
            elif self._from_beginning:
                pos = 0
            else:
                pos = self._transport.end_offset(stream)
            self._positions[stream] = pos
        return pos

    def _commit(self, stream: str, pos: int) -> None:
        self._guard.checkpoint()  # settled ids are durable before the offset moves past them
        self._transport.commit(self.group, stream, pos)
        self._positions[stream] = pos

    def _authorize_topic(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and self._authorized_until > now:
            return
        contexts: list[dict[str, Any]] = (
            [{}] if self.types is None else [{"event_type": t} for t in sorted(self.types)]
        )
        for ctx in contexts:
            try:
                check(self._authorizer, self.principal, SUBSCRIBE, ("Topic", self.topic), ctx)
            except AccessDenied:
                self._audit.record(
                    "Subscribe",
                    principal=self.principal,
                    resource=f"Topic::{self.topic}",
                    outcome=DENIED,
                    reason="forbidden",
                    event_type=ctx.get("event_type"),
                )
                raise
        self._authorized_until = now + self._ttl

    def _sealer_may_publish(self, rec: Record, producer: str, type_: str) -> bool:
        """Whether the sealing principal may Publish ``type_`` on this topic, asked of the
        authorizer once per (producer, type) per batch (it caches, and drops its cache when
        the policy changes); a denial is audited by the authorizer as that principal's."""
        slot = (rec.stream, rec.batch)
        if slot != self._sealer_batch:
            self._sealer_batch = slot
            self._sealer_ok.clear()
        key = (producer, type_)
        ok = self._sealer_ok.get(key)
        if ok is None:
            try:
                allowed = self._authorizer.decide(
                    producer, PUBLISH, ("Topic", self.topic), {"event_type": type_}
                ).allowed
            except InputError:  # a type no policy can name cannot have been granted
                allowed = False
            ok = self._sealer_ok[key] = allowed
        return ok

    def _report_offset_gap(self, stream: str, expected: int, got: int, stats: RunStats) -> None:
        """Offsets are dense: a hole means stored events were removed behind the log's back."""
        stats.gaps += 1
        log.warning("offsets %d..%d of %s are missing from the log", expected, got - 1, stream)
        self._audit.record(
            "Subscribe",
            principal=self.principal,
            resource=f"Topic::{self.topic}",
            outcome=ERROR,
            reason="offset_gap",
            stream=stream,
            expected=expected,
            got=got,
        )

    def _report_seq_gap(self, s: Seal, gap: tuple[int, int], stats: RunStats) -> None:
        stats.gaps += 1
        log.warning(
            "producer %s instance %s skipped sequence %d..%d in %s",
            s.producer,
            s.instance[:12],
            gap[0],
            gap[1] - 1,
            s.stream,
        )
        self._audit.record(
            "Subscribe",
            principal=self.principal,
            resource=f"Topic::{self.topic}",
            outcome=ERROR,
            reason="sequence_gap",
            stream=s.stream,
            producer=s.producer,
            instance=s.instance,
            expected=gap[0],
            got=gap[1],
        )
