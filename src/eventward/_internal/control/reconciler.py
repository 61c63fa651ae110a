"""Publish and consume audited on the direct path: the control plane reads the streams back.

Client-mode producers publish sealed batches straight to NATS and hold no audit key, so nothing
they do lands in the audit log by itself. A sealed batch is non-repudiable (an Ed25519 signature
by a key the trust registry binds to one principal), so its metadata is evidence enough: this
thread in ``eventward serve`` tails every topic stream with its own durable JetStream consumer
(``AckNone``: read-only, it never writes to a stream), verifies each batch (seal against the
trust registry, event digests against the seal, the sealer's ``Publish`` grant for each event
type, and the types its key was enrolled for) and appends:

* one ``Publish`` record per verified batch, attributed to the principal of the trust entry that
  signed it (batch id, count, first/last sequence, offsets, kid, event-type counts; never
  payloads), marked ``via: direct`` and ``reconciled``;
* for a batch that does not verify or whose sealer is not granted, a ``publish.refused`` record
  by ``eventward.reconciler`` (reason code, batch, sequence, kid; attributed to nobody, since the
  seal's claim is exactly what failed) and a critical ``monitor.alert``;
* ``subscribe.progress`` records: each consumer group's committed offset per stream, when it
  moved (groups keep exact event offsets in the ``EW_OFFSETS`` bucket, not in JetStream ack
  floors, because a group may stop inside a batch).

Idempotent across restarts. The last stream sequence processed is kept per stream in the
control database (``direct_tail``) and written after the records; the durable consumer's server
position is only a cursor: at start and after a failed pass, one that ran ahead of the database
(delivered, never recorded) is deleted and re-created from the remembered sequence. A redelivered
batch whose id already has a Publish record adds nothing (the audit log's ``published`` index),
refusals are remembered by (stream, sequence), and the offline watermark (``audit reconcile``)
moves with it so that command never re-audits what this thread did.

A batch sealed by a key the control plane did not enroll (a home-mode producer, which writes
its own buffered Publish record) is held for ``grace_s`` after its seal time while it has no
record, as the offline reconcile does, so its producer's own record is not duplicated.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, cast

import orjson

from eventward._internal.audit.base import DENIED, OK, AuditEvent, MetaValue, meta_text
from eventward._internal.audit.log import PUBLISHED_ACTION
from eventward._internal.audit.reconcile import CLOCK_SKEW_S
from eventward._internal.client.producer import types_meta
from eventward._internal.crypto import seal as sealing
from eventward._internal.crypto.seal import Seal
from eventward._internal.deployment import Deployment
from eventward._internal.log.nats import TailedBatch
from eventward._internal.log.sqlite import connect
from eventward._internal.monitor.alerts import record_alert
from eventward._internal.monitor.rules import Alert
from eventward._internal.policy.base import PUBLISH
from eventward._internal.store.leader import AdvisoryLeader
from eventward._internal.store.migrations import CONTROL_SCHEMA
from eventward._internal.store.sqlcompat import write
from eventward.errors import EventwardError, SealError

_log = logging.getLogger("eventward.control.reconciler")

RECONCILER = "eventward.reconciler"  # the principal of refusal and progress records
DURABLE = "ew-audit"  # the durable consumer's name on every stream
LEADER_LOCK = 0x6577726c  # pg advisory lock key: the replica that runs the passes ("ewrl")
WRITE_LOCK = 0x65777277  # pg_advisory_xact_lock key of its position writes ("ewrw"; not the leader's)
REFUSED_ACTION = "publish.refused"
PROGRESS_ACTION = "subscribe.progress"
ALERT_RULE = "direct_publish_refused"
SOURCE = "nats"  # the offline reconcile's watermark source for this log
_DLQ = ".dlq"  # dead letters are audited by dlq.put records of their own

_TABLES = ("direct_tail", "direct_refused", "direct_progress")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS direct_tail (stream TEXT PRIMARY KEY, last_seq INTEGER NOT NULL,
    end_offset INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS direct_refused (stream TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (stream, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS direct_progress (grp TEXT NOT NULL, stream TEXT NOT NULL, committed INTEGER NOT NULL,
    PRIMARY KEY (grp, stream)) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Pass:
    """What one pass wrote: Publish records, refusals, batches held back, progress records."""

    published: int = 0
    refused: int = 0
    held: int = 0
    progress: int = 0

    def __add__(self, o: Pass) -> Pass:
        return Pass(self.published + o.published, self.refused + o.refused, self.held + o.held,
                    self.progress + o.progress)


@dataclass(frozen=True)
class _Verdict:
    event: AuditEvent | None  # the Publish record, or None when refused or held
    reason: str = ""  # refusal reason code
    kid: str = ""
    held: bool = False


class DirectAuditor:
    """The background reconciler of ``serve`` over a NATS deployment (see the module docstring).

    ``run_once`` does one pass (tests and ``start``'s thread call it); ``start``/``stop`` run it
    every ``interval_s``. Failures of one pass (broker or database unavailable, permissions) are
    logged by code and retried on the next; nothing is skipped.
    """

    def __init__(
        self,
        dep: Deployment,
        *,
        interval_s: float = 1.0,
        grace_s: float = 60.0,
        progress_s: float = 10.0,
        max_batches: int = 64,
        wait_s: float = 0.2,
        durable: str = DURABLE,
    ) -> None:
        if not hasattr(dep.transport, "tail"):
            raise TypeError("the direct-path reconciler needs the NATS transport")
        self.dep = dep
        self.transport: Any = dep.transport
        self.interval_s, self.grace_s, self.progress_s = interval_s, grace_s, progress_s
        self.max_batches, self.wait_s, self.durable = max_batches, wait_s, durable
        # Positions and seal grants: control.db in the home, or with store.backend: postgres the
        # database every serve replica shares (migrations 4 and 6), where one replica at a time
        # runs the passes (store/leader.py), so another host can take over where it stopped.
        self._db: Any
        self._grants_db: Any = None
        self.leader: AdvisoryLeader | None = None
        if dep.config.store.backend == "postgres":
            from eventward._internal.control.plane import CONTROL_TABLES
            from eventward._internal.store.sqlcompat import open_pg_tables

            tables = {**CONTROL_TABLES, **{t: (f"{CONTROL_SCHEMA}.{t}", "") for t in _TABLES}}
            self._db = self._grants_db = open_pg_tables(dep.home, tables, WRITE_LOCK)
            db = self._db.db
            self.leader = AdvisoryLeader(db.dsn, LEADER_LOCK, connect_timeout=db.connect_timeout,
                                         statement_timeout=db.statement_timeout)
        else:
            self._db = connect(dep.home.root / "control.db", synchronous="FULL")
            self._db.executescript(_SCHEMA)
        self._held: dict[str, list[TailedBatch]] = {}  # delivered, waiting for an earlier batch's grace
        self._checked: set[str] = set()  # streams whose durable position was checked against the db
        self._last_progress = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_error = ""
        self._stream_errors: dict[str, str] = {}

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> DirectAuditor:
        self._thread = threading.Thread(target=self._loop, name="eventward-reconciler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10 + self.wait_s)
        self._db.close()
        if self.leader is not None:
            self.leader.release()

    def _lead(self) -> bool:
        """Whether this replica runs the next pass. Taking over (first time, or after another
        replica led) starts as a restart does: the durable cursor is checked against the recorded
        floor and nothing held from an earlier term is trusted."""
        if self.leader is None:
            return True
        was = self.leader.held
        if not self.leader.lead():
            return False
        if not was:
            self._held.clear()
            self._checked.clear()
            _log.info("direct-path audit: this replica leads")
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self._lead():  # another replica runs the passes (or the database is away)
                self._stop.wait(self.interval_s)
                continue
            try:
                self.run_once()
                self._last_error = ""
            except EventwardError as e:  # retried next pass; logged once per distinct failure
                if e.code != self._last_error:
                    _log.warning("direct-path audit pass failed (%s); retrying every %.1fs", e.code, self.interval_s)
                self._last_error = e.code
            except Exception as e:  # never let the thread die silently: it is the audit of a data path
                _log.error("direct-path audit pass failed (%s)", type(e).__name__)
            self._stop.wait(self.interval_s)

    # --- one pass ---------------------------------------------------------------------------
    def run_once(self, now: float | None = None) -> Pass:
        """Reconcile every topic stream once, then record group progress if ``progress_s`` passed."""
        total = Pass()
        grants = self._enrolled()
        failed: EventwardError | None = None
        for stream in self.transport.streams():
            if stream.endswith(_DLQ) or self._stop.is_set():
                continue
            try:  # one stream this identity may not read (or a broken one) does not stop the others
                total += self._stream(stream, grants, time.time() if now is None else now)
            except EventwardError as e:
                if self._stream_errors.get(stream) != e.code:  # logged once per stream and failure
                    _log.warning("direct-path audit of stream %s failed (%s); retried every pass", stream, e.code)
                self._stream_errors[stream] = e.code
                failed = failed or e
            else:
                self._stream_errors.pop(stream, None)
        if failed is not None:
            raise failed
        if time.monotonic() - self._last_progress >= self.progress_s:
            total += Pass(progress=self._progress())
            self._last_progress = time.monotonic()
        return total

    def _stream(self, stream: str, grants: dict[str, dict[str, list[str]]], now: float) -> Pass:
        floor = self._floor(stream)
        if stream not in self._checked:
            pos = self.transport.tail_position(stream, self.durable)
            if pos is not None and pos > floor[0]:  # delivered but never recorded: replay from the db
                self.transport.drop_tail(stream, self.durable)
            self._checked.add(stream)
        batches = self._held.pop(stream, None) or self.transport.tail(
            stream, self.durable, start_seq=floor[0] + 1, max_batches=self.max_batches, wait_s=self.wait_s)
        published = refused = 0
        pending: list[AuditEvent] = []
        last_seq, end = floor
        try:
            for i, b in enumerate(batches):
                if b.seq <= floor[0]:
                    continue  # recorded before a restart
                v = self._verdict(b, grants, now)
                if v.held:
                    self._held[stream] = batches[i:]
                    break
                if v.event is not None:
                    pending.append(v.event)
                else:
                    published += self._flush(stream, pending, last_seq, end)
                    pending = []
                    refused += self._refuse(b, v)
                last_seq = b.seq
                end = max(end, b.first_offset + (len(b.batch.events) if b.batch else 0))
            published += self._flush(stream, pending, last_seq, end)
        except BaseException:  # delivered but unrecorded: the next pass re-creates the cursor at the floor
            self._held.pop(stream, None)
            self._checked.discard(stream)
            raise
        return Pass(published, refused, len(self._held.get(stream, ())))

    def _verdict(self, b: TailedBatch, grants: dict[str, dict[str, list[str]]], now: float) -> _Verdict:
        if b.batch is None:
            return _Verdict(None, "malformed")
        try:
            s = sealing.parse(b.batch.seal)
        except SealError:
            return _Verdict(None, "malformed")
        kid = meta_text(s.kid)
        try:  # SealError is a refusal; any other failure (trust store down) ends the pass, retried
            self.dep.verifier.verify_seal(b.batch.seal, b.stream, b.batch.batch_id, fresh=True)
        except SealError as e:
            return _Verdict(None, e.reason or "seal_refused", kid)
        if s.count != len(b.batch.events) or [sealing.digest(e) for e in b.batch.events] != list(s.digests):
            return _Verdict(None, "digest_mismatch", kid)
        counted: Counter[str | None] = Counter(map(_event_type, b.batch.events))
        if None in counted:
            return _Verdict(None, "malformed_event", kid)
        types = cast("Counter[str]", counted)
        enrolled = grants.get(s.kid)
        topic = self.dep.policy.topic_of(b.stream)  # a partition stream is decided as its topic
        for t in types:
            allowed = self.dep.policy.decide(s.producer, PUBLISH, ("Topic", topic), {"event_type": t}).allowed
            if not allowed or (enrolled is not None and t not in enrolled.get(topic, ())):
                return _Verdict(None, "unauthorized_producer", kid)
        if enrolled is None and now - self.grace_s < s.time <= now + CLOCK_SKEW_S \
                and self.dep.audit.unpublished(b.stream, [b.batch.batch_id]):
            return _Verdict(None, held=True)  # a home-mode producer's own record may still be buffered
        return _Verdict(_publish_record(b, s, types, topic), kid=kid)

    def _flush(self, stream: str, events: list[AuditEvent], last_seq: int, end: int) -> int:
        """Publish records (those whose batch has none yet), the offline watermark, then the floor."""
        if last_seq <= self._floor(stream)[0]:
            return 0
        added = self.dep.audit.reconcile(SOURCE, stream, end, events)
        greatest = "max" if self._grants_db is None else "GREATEST"  # SQLite's two-argument max
        with write(self._db, "record the direct-path audit position") as db:
            db.execute("INSERT INTO direct_tail (stream, last_seq, end_offset) VALUES (?, ?, ?) "
                       f"ON CONFLICT (stream) DO UPDATE SET last_seq = {greatest}(direct_tail.last_seq, "
                       f"excluded.last_seq), end_offset = {greatest}(direct_tail.end_offset, excluded.end_offset)",
                       (stream, last_seq, end))
        return added

    def _refuse(self, b: TailedBatch, v: _Verdict) -> int:
        if self._db.execute("SELECT 1 FROM direct_refused WHERE stream = ? AND seq = ?", (b.stream, b.seq)).fetchone():
            return 0
        meta: dict[str, MetaValue] = {"stream": b.stream, "seq": b.seq, "via": "direct"}
        if b.batch is not None:
            meta.update(batch=meta_text(b.batch.batch_id), first_offset=b.first_offset, count=len(b.batch.events))
        if v.kid:
            meta["kid"] = v.kid
        resource = f"Topic::{self.dep.policy.topic_of(b.stream)}"
        self.dep.audit.record(REFUSED_ACTION, principal=RECONCILER, resource=resource, outcome=DENIED,
                              reason=v.reason, **meta)
        record_alert(self.dep.audit, Alert(ALERT_RULE, "critical", time.time(), resource, v.reason,
                                           meta={k: val for k, val in meta.items() if isinstance(val, str | int)}))
        self.dep.audit.flush()
        with write(self._db, "remember a refused batch") as db:
            db.execute("INSERT OR IGNORE INTO direct_refused (stream, seq) VALUES (?, ?)", (b.stream, b.seq))
        return 1

    def _floor(self, stream: str) -> tuple[int, int]:
        row = self._db.execute("SELECT last_seq, end_offset FROM direct_tail WHERE stream = ?", (stream,)).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def _enrolled(self) -> dict[str, dict[str, list[str]]]:
        """kid -> {topic: [types]} of keys the control plane enrolled (client-mode services)."""
        if self._grants_db is not None:  # where ControlPlane records them (StoreUnavailable: pass retried)
            rows = self._db.execute("SELECT kid, grants FROM seal_grants").fetchall()
            return {str(kid): orjson.loads(doc) for kid, doc in rows}
        try:
            rows = self._db.execute("SELECT kid, grants FROM seal_grants").fetchall()
        except sqlite3.OperationalError:  # no service enrolled yet: the table is made by ControlPlane
            return {}
        return {str(kid): orjson.loads(doc) for kid, doc in rows}

    def _progress(self) -> int:
        """One ``subscribe.progress`` record per (group, stream) whose committed offset moved."""
        written = 0
        for g in self.transport.group_offsets():
            if g.stream.endswith(_DLQ):
                continue
            row = self._db.execute("SELECT committed FROM direct_progress WHERE grp = ? AND stream = ?",
                                   (g.group, g.stream)).fetchone()
            if row is not None and int(row[0]) == g.committed:
                continue
            topic = self.dep.policy.topic_of(g.stream)  # a partition's progress is its topic's, by stream
            extra: dict[str, MetaValue] = {"stream": g.stream} if topic != g.stream else {}
            self.dep.audit.record(PROGRESS_ACTION, principal=RECONCILER, resource=f"Topic::{topic}", outcome=OK,
                                  group=meta_text(g.group), committed=g.committed, **extra,
                                  previous=int(row[0]) if row else 0, via="direct")
            self.dep.audit.flush()
            with write(self._db, "remember a group's progress") as db:
                db.execute("INSERT INTO direct_progress (grp, stream, committed) VALUES (?, ?, ?) ON CONFLICT (grp, "
                           "stream) DO UPDATE SET committed = excluded.committed", (g.group, g.stream, g.committed))
            written += 1
        return written


def _event_type(raw: bytes) -> str | None:
    """The envelope's routing ``type`` (plaintext metadata); None when the event is not an envelope.

    A whole parse, as the consumer's: reading the bytes for the first ``"type"`` would let an event
    with a duplicate or nested ``type`` key be audited under a type its consumers never see."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    t = doc.get("type") if doc.__class__ is dict else None
    return t if t.__class__ is str and t else None


def _publish_record(b: TailedBatch, s: Seal, types: Counter[str], topic: str) -> AuditEvent:
    """Metadata of the verified seal only; the principal is the one the trust entry binds to its key."""
    assert b.batch is not None
    meta: dict[str, MetaValue] = {
        "stream": b.stream, "batch": meta_text(b.batch.batch_id), "first_offset": b.first_offset,
        "count": s.count, "first_seq": s.first_seq, "last_seq": s.last_seq, "kid": meta_text(s.kid),
        "instance": meta_text(s.instance), "sealed_us": s.time_us, "seq": b.seq, "types": meta_text(types_meta(types)),
        "seal": "verified", "reconciled": True, "via": "direct",
    }
    return AuditEvent(PUBLISHED_ACTION, s.producer, f"Topic::{topic}", OK, "", meta)
