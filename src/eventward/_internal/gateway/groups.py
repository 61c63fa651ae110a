"""Consumer groups for HTTP clients: fetch without committing, commit on an explicit ack.

An HTTP client acknowledges with a separate request, so what a fetch delivered must stay
redeliverable until then, while every security check of the SDK consumer still applies. Each
fetch runs the SDK ``Consumer.process`` (seal verification, replay guard, authorization,
decryption per clearance, dead letters) from the group's committed offset, with a
``StagedGuard``: replay state of the fetch is kept apart from the group's durable guard and
moves into it only when the client acks, right before the offset is committed. So:

* un-acked events are delivered again by the next fetch of the group (at-least-once until
  acked), and survive a gateway restart (nothing about them was made durable);
* acked events are never delivered again, and a replayed copy of one is refused as a
  duplicate, exactly as for SDK consumers;
* records refused before the first delivered one (forged, tampered, replayed) are committed
  at once: they are in the dead-letter stream and must not be re-examined on every poll.

Gateway groups are namespaced by principal (``<principal>/<group>`` in the transport and the
replay guard), so no client can move another principal's offsets by naming its group.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from eventward._internal.client import replay as rp
from eventward._internal.client.consumer import Consumer
from eventward._internal.client.replay import Admission, ReplayGuard
from eventward._internal.client.types import Delivered, RunStats
from eventward._internal.log.base import Transport
from eventward.errors import ConflictError, InputError

MAX_GROUP_CHARS = 200  # what every transport accepts as a group name
_GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}\Z")
_READ_CHUNK = 500


def group_id(principal: str, group: str) -> str:
    """The transport/guard name of a gateway group: ``<principal>/<group>``, the principal owns it
    (group names cannot contain '/', so it splits back at the last one). Past the transports'
    200 characters, a SHA-256 of both names stands in."""
    if not isinstance(group, str) or not _GROUP.match(group):
        raise InputError("group must be 1..200 letters, digits, '.', '_' or '-'", path="group")
    gid = f"{principal}/{group}"
    if len(gid) > MAX_GROUP_CHARS:
        digest = hashlib.sha256(f"{principal}\x00{group}".encode()).hexdigest()
        gid = f"sha256:{digest}"
    return gid


class StagedGuard(ReplayGuard):
    """The replay state of one fetch, layered over the group's durable guard.

    ``admit`` refuses what the durable guard refuses (ids already acked, stale, out of order
    against acked events) and what this fetch already settled (a replayed copy later in the
    same fetch). ``settle`` only stages; ``commit(upto)`` moves staged entries below ``upto``
    into the durable guard and checkpoints it.
    """

    def __init__(self, durable: ReplayGuard) -> None:
        super().__init__(
            None,
            freshness=durable.freshness,
            skew=durable.skew,
            window_seconds=durable.freshness + durable.skew,
        )
        self.durable = durable
        self._staged: list[dict[str, Any]] = []
        self._seen_instances: set[tuple[str, str, str]] = set()  # (producer, instance, stream)

    def admit(
        self,
        *,
        producer: str,
        stream: str,
        offset: int,
        event_id: str,
        instance: str,
        seq: int,
        sealed_at: float,
        mode: str = rp.LIVE,
    ) -> Admission:
        kw = {
            "producer": producer,
            "stream": stream,
            "offset": offset,
            "event_id": event_id,
            "instance": instance,
            "seq": seq,
        }
        durable = self.durable.admit(**kw, sealed_at=sealed_at, mode=mode)
        if durable.verdict != rp.NEW:
            return durable  # settled durably at this very offset (acked or dead-lettered): skip quietly
        staged = super().admit(**kw, sealed_at=sealed_at, mode=mode)
        gap = staged.gap if (producer, instance, stream) in self._seen_instances else durable.gap
        return Admission(staged.verdict, gap)

    def settle(
        self,
        *,
        producer: str,
        stream: str,
        offset: int,
        event_id: str,
        instance: str,
        seq: int,
        status: str,
        mode: str = rp.LIVE,
    ) -> None:
        entry = {
            "producer": producer,
            "stream": stream,
            "offset": offset,
            "event_id": event_id,
            "instance": instance,
            "seq": seq,
            "status": status,
            "mode": mode,
        }
        super().settle(**entry)
        if mode == rp.LIVE:
            self._seen_instances.add((producer, instance, stream))
        self._staged.append(entry)

    def commit(self, upto: int) -> None:
        """Make everything staged below offset ``upto`` durable (call before committing ``upto``)."""
        done = [e for e in self._staged if e["offset"] < upto]
        for e in done:
            self.durable.settle(**e)
        self.durable.checkpoint()
        self._staged = [e for e in self._staged if e["offset"] >= upto]


@dataclass
class Fetched:
    deliveries: list[Delivered]
    position: int  # offset after the last record this fetch examined
    lag: int
    stats: RunStats


@dataclass
class _Group:
    """One gateway group: its durable guard, a consumer per topic, the last fetch per topic."""

    guard: ReplayGuard
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False
    consumers: dict[str, Consumer] = field(default_factory=dict)
    staged: dict[str, tuple[StagedGuard, int]] = field(default_factory=dict)  # topic -> (stage, fetched upto)


class ConsumerGroups:
    """The groups one gateway serves, at most ``max_groups`` open at a time (idle ones are
    closed first: their un-acked state is in memory only, so closing one just means redelivery)."""

    def __init__(
        self,
        transport: Transport,
        open_guard: Callable[[str], ReplayGuard],
        make_consumer: Callable[[str, str, str, ReplayGuard], Consumer],
        *,
        max_groups: int = 256,
    ) -> None:
        self._transport = transport
        self._open_guard = open_guard
        self._make_consumer = make_consumer
        self._max = max_groups
        self._groups: OrderedDict[str, _Group] = OrderedDict()
        self._lock = threading.Lock()

    # --- fetch and ack ----------------------------------------------------------------------
    def fetch(self, principal: str, topic: str, group: str, max_events: int) -> Fetched:
        """Up to ``max_events`` deliveries from the group's committed offset; commits nothing
        the client has not seen (only a leading run of refused records)."""
        gid = group_id(principal, group)
        with self._locked(gid) as g:
            consumer = g.consumers.get(topic)
            if consumer is None:
                consumer = self._make_consumer(principal, topic, gid, g.guard)
                if getattr(consumer, "partition_count", 1) > 1:  # one offset per group here, not one per partition
                    raise InputError(
                        f"topic {topic!r} is partitioned: gateway consumer groups read unpartitioned topics only "
                        "(consume it with the SDK: Consumer(partitions=...) or partition_of=(member, members))",
                        path="topic",
                    )
                g.consumers[topic] = consumer
            start = self._transport.committed(gid, topic) or 0
            stage = StagedGuard(g.guard)
            out: list[Delivered] = []
            stats = RunStats()
            pos = start
            while len(out) < max_events:
                records = self._transport.read(topic, pos, _READ_CHUNK)
                if not records:
                    break
                with consumer.delivery_batch():  # per-type delivery metrics, as in Consumer.run
                    for rec in records:
                        if len(out) >= max_events:
                            break
                        consumer.process(rec, out.append, stats, guard=stage)
                        pos = rec.offset + 1
            clean = out[0].offset if out else pos  # everything before it was refused or skipped
            if clean > start:
                stage.commit(clean)
                self._transport.commit(gid, topic, clean)
            g.staged[topic] = (stage, pos)
            lag = max(0, self._transport.end_offset(topic) - pos)
        return Fetched(out, pos, lag, stats)

    def ack(self, principal: str, topic: str, group: str, offset: int) -> int:
        """Commit ``offset`` (everything before it is processed); returns the committed offset."""
        gid = group_id(principal, group)
        with self._locked(gid) as g:
            committed = self._transport.committed(gid, topic) or 0
            if offset <= committed:
                return committed  # already acked: acks are idempotent, and never move back
            stage, upto = g.staged.get(topic, (None, committed))
            if stage is None or offset > upto:
                raise ConflictError(
                    f"offset {offset} was not delivered to group {group!r} since its last commit "
                    f"(committed {committed}, delivered up to {upto}); consume first",
                    path="offset",
                )
            stage.commit(offset)
            self._transport.commit(gid, topic, offset)
            return offset

    # --- lifecycle --------------------------------------------------------------------------
    @contextmanager
    def _locked(self, gid: str) -> Iterator[_Group]:
        """The group with its lock held; one closed by eviction meanwhile is opened again."""
        while True:
            g = self._group(gid)
            with g.lock:
                if not g.closed:
                    yield g
                    return

    def _group(self, gid: str) -> _Group:
        with self._lock:
            g = self._groups.get(gid)
            if g is not None:
                self._groups.move_to_end(gid)
                return g
            if len(self._groups) >= self._max:
                self._evict_idle()
            g = self._groups[gid] = _Group(self._open_guard(gid))
            return g

    def _evict_idle(self) -> None:
        for gid, g in list(self._groups.items()):  # least recently used first
            if g.lock.acquire(blocking=False):
                try:
                    g.closed = True
                    g.guard.close()
                finally:
                    g.lock.release()
                del self._groups[gid]
                return
        raise ConflictError(f"all {self._max} consumer groups of this gateway are busy; retry shortly")

    def close(self) -> None:
        with self._lock:
            for g in self._groups.values():
                with g.lock, suppress(Exception):
                    g.closed = True
                    g.guard.close()
            self._groups.clear()
