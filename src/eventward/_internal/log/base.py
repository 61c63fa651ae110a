"""The transport seam: the embedded SQLite log, NATS JetStream and Kafka all implement this.

Transports store *sealed batches*: a batch of exact event bytes plus the seal blob that
authenticates them is appended atomically, and every record read back carries its batch's
seal and its position in it. Nothing above this protocol knows which transport runs.
Offsets are per stream, per event, dense and start at 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol


class Record(NamedTuple):
    """One stored event as a transport reads it back. A NamedTuple (immutable, no per-instance
    dict) rather than a frozen dataclass: every read makes one per event, and a frozen
    dataclass's ``__init__`` (an ``object.__setattr__`` per field) cost 4-5x as much."""

    stream: str
    offset: int
    data: bytes  # exact stored event bytes (what the seal's digest covers)
    batch: str  # transport-independent batch id
    index: int  # position of this event in its batch
    seal: bytes  # the batch's seal blob, shared by all records of the batch


class Transport(Protocol):
    """Every method may raise TransportUnavailable (the log did not answer within its retry budget;
    nothing half-done, safe to retry), AccessDenied (the broker refuses this principal) and
    InputError (a malformed stream, group or batch); stream names are checked by
    ``log.names.check_stream_name``. Implementations are thread-safe."""

    def create_stream(self, stream: str, *, replicas: int = 1) -> None:
        """Create ``stream``; idempotent (an existing stream is left as it is).

        ``replicas`` is the broker's copy count (1, 3 or 5; the embedded log only 1, else
        InputError); an existing stream with another count is a ConflictError on NATS.
        """
        ...

    def streams(self) -> list[str]:
        """Every stream's name, sorted. Lists the whole log: on a broker, an operator's call
        (AccessDenied for a principal that may only see its own topics)."""
        ...

    def has_stream(self, stream: str) -> bool:
        """Does ``stream`` exist? Needs access to that stream only (never the list of all)."""
        ...

    def append(self, stream: str, batch_id: str, events: Sequence[bytes], seal: bytes) -> int:
        """Atomically append one sealed batch; returns the offset of its first event.

        All of the batch is stored, or none of it; returns only once it is durable (on a broker,
        acknowledged by a quorum of replicas). Idempotent on ``batch_id``: appending a batch id
        that is already stored returns the original first offset and stores nothing (producer
        retries never duplicate; on NATS within the stream's duplicate window). Raises
        InputError for an empty batch, a missing seal or non-bytes events, NotFoundError when
        ``stream`` does not exist, OversizeError when the batch exceeds the broker's message size.
        """
        ...

    def read(self, stream: str, offset: int, max_records: int) -> list[Record]:
        """Up to ``max_records`` records from ``offset`` on, in offset order, each with its
        batch's seal and index; may return fewer (one page), so loop until ``end_offset``.

        ``[]`` when ``offset`` is at or past the end or ``max_records <= 0``; a negative
        ``offset`` reads from 0. A missing stream reads as empty (embedded, NATS) or raises
        NotFoundError (Kafka). A read starting inside a batch returns that batch's remaining
        events. Never returns an unacknowledged batch.
        """
        ...

    def end_offset(self, stream: str) -> int:
        """Offset the next appended event will get (0 for an empty or missing stream)."""
        ...

    def commit(self, group: str, stream: str, offset: int) -> None:
        """Record that ``group`` has processed everything before ``offset`` (overwrites, so a
        replay may move it back). InputError for a bad group name or a negative offset."""
        ...

    def committed(self, group: str, stream: str) -> int | None:
        """The offset ``group`` last committed on ``stream`` (the next one it reads), or None
        when it never committed there."""
        ...

    def close(self) -> None:
        """Release connections and files; idempotent. Later calls raise TransportError."""
        ...
