"""The wire form of one sealed batch as ONE broker message (NATS JetStream and Kafka).

One message per batch, not per event: the broker's per-message atomicity and dedup then make
``append`` atomic and idempotent for free, and the seal is stored once instead of once per
event (bench/bench_nats.py measures the alternative). Layout, big-endian:

    b"EWB1" | u16 id_len | u32 n | u32 seal_len | batch id (utf-8) | n x u32 event length
            | seal | events...

Decoding is strict: a message that is not exactly this shape is refused with a
``CorruptedMessage`` (a ``TransportError``) naming where it was found (a foreign or corrupted message in a stream
must never be handed to a consumer as if it were events).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat

from eventward._internal.log.base import Record
from eventward.errors import CorruptedMessage, InputError

MAGIC = b"EWB1"
MAX_BATCH_ID = 200  # same bound as the embedded log, so a batch id valid there is valid here
_HEAD = struct.Struct(">4sHII")
_BYTES = {bytes}
_new = tuple.__new__


@dataclass(frozen=True, slots=True)
class Batch:
    batch_id: str
    events: list[bytes]
    seal: bytes

    def records(
        self, stream: str, first_offset: int, start: int = 0, limit: int | None = None
    ) -> list[Record]:
        """Records of events ``start..`` (index in batch), at most ``limit`` of them.

        Built with ``tuple.__new__`` over zipped columns (what ``Record._make`` does, without
        the generated ``__new__``'s argument parsing per record): a read makes one per event,
        and this is 0.24 ms instead of 0.42 ms per 500."""
        events = self.events
        stop = len(events) if limit is None else min(len(events), start + limit)
        if start >= stop:
            return []
        return list(map(_new, repeat(Record), zip(
            repeat(stream), range(first_offset + start, first_offset + stop),
            events if start == 0 and stop == len(events) else events[start:stop],
            repeat(self.batch_id), range(start, stop), repeat(self.seal),
        )))


def check(batch_id: str, events: Sequence[bytes], seal: bytes) -> None:
    if not isinstance(batch_id, str) or not 0 < len(batch_id) <= MAX_BATCH_ID:
        raise InputError(f"batch id must be 1..{MAX_BATCH_ID} characters")
    if not events or not seal:
        raise InputError("a batch needs at least one event and a seal")
    if {type(e) for e in events} != _BYTES:  # a producer's batch is all bytes: one pass, no isinstance
        for i, e in enumerate(events):
            if not isinstance(e, bytes | bytearray | memoryview):
                raise InputError(f"event {i} of the batch is not bytes")
    if not isinstance(seal, bytes | bytearray | memoryview):
        raise InputError("the seal is not bytes")


def encode(batch_id: str, events: Sequence[bytes], seal: bytes) -> bytes:
    check(batch_id, events, seal)
    bid = batch_id.encode()
    lengths = struct.pack(f">{len(events)}I", *map(len, events))
    return b"".join((_HEAD.pack(MAGIC, len(bid), len(events), len(seal)), bid, lengths, bytes(seal), *events))


def decode(payload: bytes, where: str) -> Batch:
    """Parse one message; ``where`` (stream and position, never content) names it in errors."""
    try:
        magic, id_len, n, seal_len = _HEAD.unpack_from(payload, 0)
        if magic != MAGIC or n == 0 or seal_len == 0:
            raise ValueError
        pos = _HEAD.size
        batch_id = payload[pos : pos + id_len].decode()
        pos += id_len
        lengths = struct.unpack_from(f">{n}I", payload, pos)
        pos += 4 * n
        if pos + seal_len + sum(lengths) != len(payload) or not batch_id:
            raise ValueError
        seal = payload[pos : pos + seal_len]
        pos += seal_len
        events = []
        for length in lengths:
            events.append(payload[pos : pos + length])
            pos += length
    except (struct.error, ValueError, UnicodeDecodeError):
        raise CorruptedMessage(
            f"{where} is not an eventward sealed batch (foreign or corrupted message)"
        ) from None
    return Batch(batch_id, events, seal)
