"""Consumer groups for HTTP clients: fetch without committing, commit on an explicit ack.

An HTTP client acknowledges with a separate request, so what a fetch delivered must stay
redeliverable until then, while every security check of the SDK consumer still applies. Each
fetch runs the SDK ``Consumer.process`` (seal verification, replay guard, authorization,
decryption per clearance, dead letters) from the group's committed offset, with a
``StagedGuard``: replay state of the fetch is kept apart from the group's durable guard and
moves into it only when the client acks, right before the offset is committed. So:

* un-acked events are delivered again by the next fetch of the group (at-least-once until
  acked), and survive a gateway restart (nothing about them was made durable);
* any ``serve`` replica serves any group: offsets, the durable replay state and the last
  fetch (its staged entries, how far it read) live in the configured store
  (``groupstore.GroupStore``: the home's SQLite or the shared PostgreSQL), so an ack reaching
  another replica than the fetch commits it. A fetch holds the group's lease (one fetch of a
  group and topic at a time across replicas; a concurrent one waits, then gets the same
  events) and records its batch only if no ack moved the group meanwhile (else it reads again
  from the new position), so no acked event is delivered again and no ack is lost;
* acked events are never delivered again, and a replayed copy of one is refused as a
  duplicate, exactly as for SDK consumers;
* records refused before the first delivered one (forged, tampered, replayed) are committed
  at once: they are in the dead-letter stream and must not be re-examined on every poll.

A partitioned topic is read across its partition streams in turns (a share of ``max`` each,
then whatever is left), each in offset order, so one subject's events stay in order; offsets
are committed per partition (an ack names its partition).

Gateway groups are namespaced by principal (``<principal>/<group>`` in the transport and the
replay guard), so no client can move another principal's offsets by naming its group.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from eventward._internal.client import replay as rp
from eventward._internal.client.consumer import Consumer
from eventward._internal.client.replay import Admission, ReplayGuard
from eventward._internal.client.types import Delivered, RunStats
from eventward._internal.gateway.groupstore import Changes, Entry, GroupStore
from eventward._internal.log.base import Transport
from eventward._internal.log.partitions import split_stream
from eventward.errors import ConflictError, EventwardError, InputError

MAX_GROUP_CHARS = 200  # what every transport accepts as a group name
_GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}\Z")
_READ_CHUNK = 500
LEASE_TTL_S = 15.0  # a fetch lease outlives any fetch; a replica killed mid-fetch holds it this long
LEASE_WAIT_S = 5.0  # how long a fetch waits for another replica's fetch of the group to finish
_FETCH_TRIES = 3  # reads of a fetch whose position an ack moved meanwhile


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

    def split(self, clean: Mapping[str, int]) -> tuple[list[Entry], list[Entry]]:
        """The staged entries as (settled now: below ``clean`` of their stream, pending an ack)."""
        rows = [[e["producer"], e["stream"], e["offset"], e["event_id"], e["instance"], e["seq"], e["status"],
                 e["mode"]] for e in self._staged]
        settled = [r for r in rows if r[2] < clean.get(r[1], 0)]
        return settled, [r for r in rows if r[2] >= clean.get(r[1], 0)]


class SharedGuard(ReplayGuard):
    """One replica's copy of a group's durable replay state, caught up from the store (only the
    rows written since ``version``) before each fetch; it is never written here: acks write the
    store, on whichever replica they arrive."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(None, **kw)
        self.version: int | None = None

    @property
    def window(self) -> tuple[float, int]:
        return self._window_seconds, self._window_ids

    def apply(self, changes: Changes) -> None:
        for producer, event_id, stream, offset, status, at in changes.seen:
            self._remember(producer, event_id, stream, offset, status, at)
            if producer == rp.LEGACY:
                self._legacy = True
        for producer, instance, stream, seq in changes.seqs:
            key = (producer, instance, stream)
            if seq > self._seqs.get(key, -1):
                self._seqs[key] = seq
            if producer == rp.LEGACY:
                self._legacy = True
        self.version = changes.version


def legacy_state(guard: ReplayGuard) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """What a group's replay guard file (before the group store) holds, as store rows."""
    seen = list(guard.seen_entries())
    return seen, [(p, i, s, q) for (p, i, s), q in guard._seqs.items()]


@dataclass
class Fetched:
    deliveries: list[Delivered]
    positions: dict[str, int]  # per stream: the offset after the last record this fetch examined
    lag: int
    stats: RunStats


def partition_of(topic: str, stream: str) -> int:
    """The partition number of ``stream`` (one of ``topic``'s streams)."""
    if stream == topic:
        return 0
    parts = split_stream(stream)
    return parts[1] if parts is not None else 0


@dataclass
class _Group:
    """One gateway group on this replica: its replay state copy and a consumer per topic."""

    guard: SharedGuard
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False
    consumers: dict[str, Consumer] = field(default_factory=dict)


class ConsumerGroups:
    """The groups this gateway serves, at most ``max_groups`` cached at a time (least recently
    used ones are dropped first: everything about a group is in the store)."""

    def __init__(
        self,
        transport: Transport,
        store: GroupStore,
        new_guard: Callable[[], SharedGuard],
        make_consumer: Callable[[str, str, str, ReplayGuard], Consumer],
        *,
        legacy: Callable[[str], tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]] | None] | None = None,
        max_groups: int = 256,
        lease_ttl: float = LEASE_TTL_S,
        lease_wait: float = LEASE_WAIT_S,
    ) -> None:
        self._transport = transport
        self._store = store
        self._new_guard = new_guard
        store.window = new_guard().window  # prune the store's replay rows as the guards forget them
        self._make_consumer = make_consumer
        self._legacy = legacy
        self._max = max_groups
        self._ttl, self._wait = lease_ttl, lease_wait
        self._replica = uuid.uuid4().hex[:12]
        self._groups: OrderedDict[str, _Group] = OrderedDict()
        self._lock = threading.Lock()

    # --- fetch and ack ----------------------------------------------------------------------
    def fetch(self, principal: str, topic: str, group: str, max_events: int) -> Fetched:
        """Up to ``max_events`` deliveries from the group's committed offsets; commits nothing
        the client has not seen (only a leading run of refused records per stream)."""
        gid = group_id(principal, group)
        with self._locked(gid) as g:
            consumer = g.consumers.get(topic)
            if consumer is None:
                consumer = g.consumers[topic] = self._make_consumer(principal, topic, gid, g.guard)
            streams = list(consumer.streams)
            raw = self._store.committed(gid, streams)
            start = self._start(gid, raw)
            ends = {s: self._transport.end_offset(s) for s in streams}
            if all(start[s] >= ends[s] for s in streams):  # nothing to read: no lease, no write
                return Fetched([], start, 0, RunStats())
            if g.guard.version is None and self._legacy is not None and not self._store.exists(gid):
                state = self._legacy(gid)  # a group from before the store: its replay state, once
                if state is not None:
                    self._store.import_state(gid, *state)
            holder = f"{self._replica}-{uuid.uuid4().hex[:12]}"
            self._lease(gid, topic, holder, group)
            try:
                for _ in range(_FETCH_TRIES):
                    self._catch_up(gid, g.guard)
                    out, stage, pos, stats = self._read(consumer, g.guard, streams, start, max_events)
                    clean = {s: min((d.offset for d in out if d.stream == s), default=pos[s]) for s in streams}
                    settled, pending = stage.split(clean)
                    if self._store.finish_fetch(
                        gid, topic, holder, expected=raw, commit={s: clean[s] for s in streams if clean[s] > start[s]},
                        settled=settled, pending=pending, upto=pos, mirror=self._mirror(gid),
                    ):
                        lag = sum(max(0, self._transport.end_offset(s) - pos[s]) for s in streams)
                        return Fetched(out, pos, lag, stats)
                    raw = self._store.committed(gid, streams)  # an ack moved the group: read again from there
                    start = self._start(gid, raw)
            except BaseException:
                with suppress(EventwardError):
                    self._store.release(gid, topic, holder)
                raise
            self._store.release(gid, topic, holder)
            raise ConflictError(f"group {group!r} kept moving while it was fetched (concurrent acks); retry")

    def ack(self, principal: str, topic: str, group: str, offset: int, stream: str | None = None) -> int:
        """Commit ``offset`` of ``stream`` (default: the topic's own, partition 0): everything
        before it is processed. Returns the committed offset; any replica may take it."""
        gid = group_id(principal, group)
        stream = stream or topic
        return self._store.ack(
            gid, topic, stream, offset, initial=self._transport.committed(gid, stream), mirror=self._mirror(gid),
            group=group,
        )

    # --- internals --------------------------------------------------------------------------
    def _start(self, gid: str, raw: Mapping[str, int | None]) -> dict[str, int]:
        """Where each stream is read from: the store's offset, else (a group from before the
        store) the transport's, else 0."""
        return {s: v if v is not None else (self._transport.committed(gid, s) or 0) for s, v in raw.items()}

    def _mirror(self, gid: str) -> Callable[[str, int], None]:
        """Offsets are also written to the transport, where ``eventward lag`` and the reconciler's
        progress records read every group's position."""
        return lambda stream, offset: self._transport.commit(gid, stream, offset)

    def _lease(self, gid: str, topic: str, holder: str, group: str) -> None:
        deadline = time.monotonic() + self._wait
        delay = 0.01
        while not self._store.try_lease(gid, topic, holder, self._ttl):
            if time.monotonic() >= deadline:
                raise ConflictError(
                    f"group {group!r} is being fetched by another gateway replica; retry (a replica that "
                    f"died mid-fetch holds it at most {self._ttl:g} s)"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _catch_up(self, gid: str, guard: SharedGuard) -> None:
        seconds, ids = guard.window
        guard.apply(self._store.changes(gid, guard.version, horizon=time.time() - seconds, limit=ids))

    def _read(
        self, consumer: Consumer, guard: SharedGuard, streams: list[str], start: Mapping[str, int], max_events: int
    ) -> tuple[list[Delivered], StagedGuard, dict[str, int], RunStats]:
        """Process records from ``start`` until ``max_events`` deliveries: in turns over the
        streams, each turn a fair share of what is left per stream, each stream in order."""
        stage = StagedGuard(guard)
        out: list[Delivered] = []
        stats = RunStats()
        pos = dict(start)
        active = list(streams)
        share = max(1, -(-max_events // len(streams)))
        while active and len(out) < max_events:
            more: list[str] = []
            for stream in active:
                room = min(share, max_events - len(out))
                if room <= 0:
                    break
                # a turn takes ``room`` deliveries: read about that many (refused records cost a turn more)
                records = self._transport.read(stream, pos[stream], min(_READ_CHUNK, room + 32))
                if not records:
                    continue
                got = len(out)
                with consumer.delivery_batch():  # per-type delivery metrics, as in Consumer.run
                    for rec in records:
                        if len(out) - got >= room:
                            break
                        consumer.process(rec, out.append, stats, guard=stage)
                        pos[stream] = rec.offset + 1
                more.append(stream)
            active = more
        return out, stage, pos, stats

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
            g = self._groups[gid] = _Group(self._new_guard())
            return g

    def _evict_idle(self) -> None:
        for gid, g in list(self._groups.items()):  # least recently used first
            if g.lock.acquire(blocking=False):
                try:
                    g.closed = True
                finally:
                    g.lock.release()
                del self._groups[gid]
                return
        raise ConflictError(f"all {self._max} consumer groups of this gateway are busy; retry shortly")

    def close(self) -> None:
        with self._lock:
            for g in self._groups.values():
                with g.lock:
                    g.closed = True
            self._groups.clear()
        self._store.close()
