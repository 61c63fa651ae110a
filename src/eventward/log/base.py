"""The transport seam: the embedded SQLite log, NATS JetStream and Kafka all implement this.

Transports store *sealed batches*: a batch of exact event bytes plus the seal blob that
authenticates them is appended atomically, and every record read back carries its batch's
seal and its position in it. Nothing above this protocol knows which transport runs.
Offsets are per stream, per event, dense and start at 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Record:
    stream: str
    offset: int
    data: bytes  # exact stored event bytes (what the seal's digest covers)
    batch: str  # transport-independent batch id
    index: int  # position of this event in its batch
    seal: bytes  # the batch's seal blob, shared by all records of the batch


class Transport(Protocol):
    def create_stream(self, stream: str, *, replicas: int = 1) -> None: ...

    def streams(self) -> list[str]: ...

    def has_stream(self, stream: str) -> bool:
        """Does ``stream`` exist? Needs access to that stream only (never the list of all)."""
        ...

    def append(self, stream: str, batch_id: str, events: Sequence[bytes], seal: bytes) -> int:
        """Atomically append one sealed batch; returns the offset of its first event.

        Idempotent on ``batch_id``: appending a batch id that is already stored returns the
        original first offset and stores nothing (producer retries never duplicate).
        """
        ...

    def read(self, stream: str, offset: int, max_records: int) -> list[Record]: ...

    def end_offset(self, stream: str) -> int:
        """Offset the next appended event will get."""
        ...

    def commit(self, group: str, stream: str, offset: int) -> None:
        """Record that ``group`` has processed everything before ``offset``."""
        ...

    def committed(self, group: str, stream: str) -> int | None: ...

    def close(self) -> None: ...
