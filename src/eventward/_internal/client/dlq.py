"""Dead letters: refused or failing events, kept exactly as stored, in ``<topic>.dlq``.

An entry is itself a sealed event (signed by the consumer that wrote it) whose data holds
the reason code, where the event was, and the original bytes and seal unchanged (sensitive
fields stay encrypted: nothing is ever re-written in plaintext). Reading the DLQ needs what
reading the topic needs (Subscribe on the source topic). Redrive is authorized (RedriveDLQ),
audited, re-verifies the ORIGINAL seal and goes through the normal consumer path; a
successful redrive appends a sealed resolution marker so the entry leaves the list.
Entry ids are derived from (group, stream, offset, attempt), so a consumer that crashes
after writing an entry and reads the event again never writes it twice.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eventward._internal import envelope
from eventward._internal.audit.base import DENIED, AuditSink, NullAudit
from eventward._internal.client.types import RunStats
from eventward._internal.client.verify import DLQ_SUFFIX, SealVerifier
from eventward._internal.crypto import seal as sealing
from eventward._internal.crypto.seal import Signer
from eventward._internal.log.base import Record, Transport
from eventward._internal.policy.base import REDRIVE_DLQ, SUBSCRIBE, Authorizer, check
from eventward.errors import AccessDenied, ConfigError, EnvelopeError, NotFoundError, SecurityError

if TYPE_CHECKING:
    from eventward._internal.client.consumer import Consumer
    from eventward._internal.client.types import Delivered

DLQ_TYPE = "eventward.deadletter"
RESOLVED_TYPE = "eventward.deadletter.resolved"
MAX_ENTRY_BYTES = 4 * 1024 * 1024  # an entry wraps an event of up to the envelope limit, in base64
_READ_CHUNK = 500


def dlq_stream(topic: str) -> str:
    return f"{topic}{DLQ_SUFFIX}"


@dataclass(frozen=True)
class DeadLetter:
    dlq_offset: int
    code: str  # error category: bad_seal, replay, bad_token, bad_envelope, handler_error...
    reason: str  # precise reason: revoked_key, digest_mismatch, stale, duplicate...
    stream: str
    offset: int
    batch: str
    index: int
    event_id: str | None
    event_type: str | None
    attempts: int
    error: str  # exception class name only: messages may carry data
    at: float
    by: str  # the consumer principal that dead-lettered it
    group: str
    original: bytes = field(repr=False)
    seal: bytes = field(repr=False)

    def record(self) -> Record:
        """The original record, as the transport returned it."""
        return Record(self.stream, self.offset, self.original, self.batch, self.index, self.seal)

    def summary(self) -> dict[str, Any]:
        """Metadata only (no event bytes), for listings."""
        return {k: v for k, v in self.__dict__.items() if k not in ("original", "seal")}


class DeadLetters:
    def __init__(
        self,
        topic: str,
        *,
        transport: Transport,
        verifier: SealVerifier,
        authorizer: Authorizer,
        audit: AuditSink | None = None,
        signer: Signer | Callable[[], Signer] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``signer`` may be a function: it is called once, when the first entry is written
        (Deployment makes a consumer's dead-letter key on first use that way)."""
        self.topic = topic
        self.stream = dlq_stream(topic)
        self._transport = transport
        self._verifier = verifier
        self._authorizer = authorizer
        self._audit = audit or NullAudit()
        self._signer = signer
        self._clock = clock
        self._instance = uuid.uuid4().hex
        self._seq = 0
        self._ready = False

    # --- writing -----------------------------------------------------------------------------
    def put(
        self,
        rec: Record,
        *,
        code: str,
        reason: str,
        group: str,
        attempt: str = "0",
        attempts: int = 0,
        error: str = "",
        event_id: str | None = None,
        event_type: str | None = None,
    ) -> str:
        """Append a sealed entry for ``rec``; returns the entry id (idempotent per attempt)."""
        data = {
            "code": code,
            "reason": reason,
            "stream": rec.stream,
            "offset": rec.offset,
            "batch": rec.batch,
            "index": rec.index,
            "event_id": event_id,
            "event_type": event_type,
            "attempts": attempts,
            "error": error,
            "group": group,
            "original": _b64(rec.data),
            "seal": _b64(rec.seal),
        }
        key = f"{group}\x00{rec.stream}\x00{rec.offset}\x00{attempt}"
        entry_id = "dlq-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]
        self._append(DLQ_TYPE, entry_id, data)
        self._audit.record(
            "dlq.put",
            principal=self._writer().principal,
            resource=f"Topic::{self.topic}",
            code=code,
            reason=reason,
            stream=rec.stream,
            offset=rec.offset,
            entry=entry_id,
        )
        return entry_id

    def resolve(self, entry: DeadLetter, outcome: str) -> None:
        self._append(
            RESOLVED_TYPE, f"res-{entry.dlq_offset}", {"dlq_offset": entry.dlq_offset, "outcome": outcome}
        )

    # --- reading -----------------------------------------------------------------------------
    def list(self, *, principal: str, include_resolved: bool = False) -> list[DeadLetter]:
        """Entries whose DLQ seal verifies; forged or damaged entries are skipped and audited."""
        self._authorize(principal, SUBSCRIBE, "dlq.list")
        entries: dict[int, DeadLetter] = {}
        resolved: set[int] = set()
        offset, end = 0, self._transport.end_offset(self.stream)
        while offset < end:
            records = self._transport.read(self.stream, offset, _READ_CHUNK)
            if not records:
                break
            for rec in records:
                offset = rec.offset + 1
                parsed = self._parse(rec, principal)
                if isinstance(parsed, DeadLetter):
                    entries[rec.offset] = parsed
                elif parsed is not None:
                    resolved.add(parsed)
        return [e for off, e in sorted(entries.items()) if include_resolved or off not in resolved]

    def get(self, dlq_offset: int, *, principal: str) -> DeadLetter:
        for e in self.list(principal=principal, include_resolved=True):
            if e.dlq_offset == dlq_offset:
                return e
        raise NotFoundError(f"no dead letter at offset {dlq_offset} of {self.stream}")

    # --- redrive -----------------------------------------------------------------------------
    def redrive(
        self,
        consumer: Consumer,
        handler: Callable[[Delivered], object],
        ids: Iterable[int] | None = None,
        *,
        principal: str,
    ) -> RunStats:
        """Re-process entries (all unresolved ones, or the given DLQ offsets) through ``consumer``."""
        self._authorize(principal, REDRIVE_DLQ, "dlq.redrive")
        wanted = None if ids is None else set(ids)
        entries = [e for e in self.list(principal=principal) if wanted is None or e.dlq_offset in wanted]
        if wanted is not None:
            missing = wanted - {e.dlq_offset for e in entries}
            if missing:
                raise NotFoundError(
                    f"no unresolved dead letter at offset(s) {sorted(missing)[:10]} of {self.stream}"
                )
        stats = RunStats()
        for e in entries:
            outcome = consumer.redeliver(e, handler, stats)
            if outcome in ("delivered", "processed"):
                self.resolve(e, outcome)
        self._audit.record(
            "RedriveDLQ",
            principal=principal,
            resource=f"Topic::{self.topic}",
            entries=len(entries),
            delivered=stats.delivered,
            refused=sum(stats.refused.values()),
            failed=stats.dead_lettered,
        )
        return stats

    # --- internals ---------------------------------------------------------------------------
    def _authorize(self, principal: str, action: str, what: str) -> None:
        try:
            check(self._authorizer, principal, action, ("Topic", self.topic))
        except AccessDenied:
            self._audit.record(
                what, principal=principal, resource=f"Topic::{self.topic}", outcome=DENIED, reason="forbidden"
            )
            raise

    def _writer(self) -> Signer:
        if self._signer is not None and not isinstance(self._signer, Signer):
            self._signer = self._signer()
        if self._signer is None:
            raise ConfigError(
                f"dead-lettering on {self.topic} needs the consumer's signing key (trust register)"
            )
        return self._signer

    def _append(self, type_: str, entry_id: str, data: dict[str, Any]) -> None:
        signer = self._writer()
        if not self._ready:
            if not self._transport.has_stream(self.stream):
                self._transport.create_stream(self.stream)
            self._ready = True
        seq = self._seq
        env = envelope.make(
            type_,
            f"eventward:dlq:{signer.principal}",
            data,
            id_=entry_id,
            extensions={envelope.EXT_PRODUCER: signer.principal, envelope.EXT_SEQ: seq},
        )
        raw = envelope.encode(env, max_bytes=MAX_ENTRY_BYTES)
        blob = sealing.seal(
            signer,
            instance=self._instance,
            stream=self.stream,
            batch=entry_id,
            first_seq=seq,
            events=[raw],
            time=self._clock(),
        )
        self._transport.append(self.stream, entry_id, [raw], blob)
        self._seq += 1

    def _parse(self, rec: Record, principal: str) -> DeadLetter | int | None:
        try:
            s = self._verifier.verify_record(rec)
            env = envelope.decode(rec.data, max_bytes=MAX_ENTRY_BYTES)
            if env.get(envelope.EXT_PRODUCER) != s.producer:
                raise EnvelopeError("dead letter producer does not match its seal")
            d = env["data"]
            if env["type"] == RESOLVED_TYPE:
                return int(d["dlq_offset"])
            if env["type"] != DLQ_TYPE:
                raise EnvelopeError("not a dead letter")
            return DeadLetter(
                rec.offset,
                str(d["code"]),
                str(d["reason"]),
                str(d["stream"]),
                int(d["offset"]),
                str(d["batch"]),
                int(d["index"]),
                d.get("event_id"),
                d.get("event_type"),
                int(d["attempts"]),
                str(d["error"]),
                s.time,
                s.producer,
                str(d["group"]),
                base64.b64decode(d["original"], validate=True),
                base64.b64decode(d["seal"], validate=True),
            )
        except (SecurityError, EnvelopeError, KeyError, TypeError, ValueError) as e:
            code = getattr(e, "code", "bad_entry")
            self._audit.record(
                "dlq.list",
                principal=principal,
                resource=f"Topic::{self.topic}",
                outcome="error",
                reason=str(code),
                dlq_offset=rec.offset,
            )
            return None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
