"""The replay guard of one consumer group: duplicate ids, sequence order, freshness.

State per group: the ids of recently settled events (bounded: ``window_ids`` ids and
``window_seconds``) with the stream offset they were read at, and the highest sequence
number settled per (producer instance, stream). Reading the *same* stored record again is a
redelivery (at-least-once after a crash) and is skipped quietly; the same id at another
position is a replay and is refused.

All of it is keyed by the producer principal of the verified seal first: instance ids,
sequence numbers and event ids are chosen by the sender, so without the principal one
producer could claim another's instance with a huge sequence number (its next genuine batch
refused as ``out_of_order``) or pre-claim its event ids (refused as ``duplicate``).
State written before this keying (schema v1, journal lines of 7 fields) is kept under the
producer ``""`` and still applies to every producer (the old, global behaviour: its ids until
they age out of the window, its sequence floors for as long as they are kept), so an upgrade
neither forgets nor redelivers anything.

Durability: each settled event is appended to a per-group journal with one ``write`` (it
survives kill -9, which is what makes a handler effectively-once); ``checkpoint`` folds the
journal into SQLite before the consumer commits its offset, as one row per checkpoint (its
entries, replayed in order on open) rather than one row per event. Neither is fsynced per event:
after a power loss the last settled events may be delivered again (at-least-once). The
journal is flock'ed, so one process at a time runs a group.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from eventward._internal.home import Home
from eventward._internal.log.sqlite import connect, write_txn
from eventward.errors import ConfigError, ConflictError, ReplayError

log = logging.getLogger("eventward.replay")
_dumps = orjson.dumps

LIVE = "live"  # normal consumption: every check applies
REPLAY = "replay"  # an authorized replay: freshness and order waived, duplicates within the run refused
REDRIVE = "redrive"  # an authorized DLQ redrive: a dead-lettered id may be processed once

OK = "ok"
DEAD = "dlq"
SKIP = "skip"  # verified, but of a type this consumer did not ask for

NEW = "new"
REDELIVERY = "redelivery"
PROCESSED = "processed"  # redrive of an event that has since been processed: nothing to do

LEGACY = ""  # the producer of state written before replay state was keyed by producer

SCHEMA_VERSION = 3
# Schema v3 checkpoints settled ids as one ``seen_log`` row per checkpoint (the journal's entries,
# at = the newest entry's time), replayed in order on open: one insert per read batch instead of
# one B-tree insert per event. ``seen`` keeps what v2 wrote (older than every seen_log row).
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS seen(producer TEXT NOT NULL, id TEXT NOT NULL, stream TEXT NOT NULL, "
    "offset INTEGER NOT NULL, status TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY(producer, id))",
    "CREATE INDEX IF NOT EXISTS seen_at ON seen(at)",
    "CREATE TABLE IF NOT EXISTS seqs(producer TEXT NOT NULL, instance TEXT NOT NULL, stream TEXT NOT NULL, "
    "seq INTEGER NOT NULL, PRIMARY KEY(producer, instance, stream))",
    "CREATE TABLE IF NOT EXISTS seen_log(n INTEGER PRIMARY KEY, at REAL NOT NULL, count INTEGER NOT NULL, "
    "entries BLOB NOT NULL)",
)
# Schema v1 had neither producer column: its rows move over under LEGACY, in one transaction.
_MIGRATE_V1 = (
    "ALTER TABLE seen RENAME TO seen_v1",
    "ALTER TABLE seqs RENAME TO seqs_v1",
    "DROP INDEX IF EXISTS seen_at",
    *_SCHEMA,
    "INSERT INTO seen(producer, id, stream, offset, status, at) SELECT '', id, stream, offset, status, at "
    "FROM seen_v1",
    "INSERT INTO seqs(producer, instance, stream, seq) SELECT '', instance, stream, seq FROM seqs_v1",
    "DROP TABLE seen_v1",
    "DROP TABLE seqs_v1",
)


@dataclass(frozen=True, slots=True)
class Admission:
    verdict: str  # NEW, REDELIVERY or PROCESSED
    gap: tuple[int, int] | None = None  # (expected seq, seq seen) when events of a producer went missing


def group_dir(home: Home) -> Path:
    return home.root / "consumers"


class ReplayGuard:
    def __init__(
        self,
        path: Path | None,
        *,
        window_ids: int = 100_000,
        window_seconds: float = 48 * 3600,
        freshness: float = 24 * 3600,
        skew: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if freshness + skew > window_seconds:
            raise ConfigError("the dedup window must outlast the freshness window (or old ids could replay)")
        self.freshness, self.skew = freshness, skew
        self._window_ids, self._window_seconds = window_ids, window_seconds
        self._clock = clock
        # (producer, event id) -> (stream, offset, status, at); (producer, instance, stream) -> seq
        self._ids: OrderedDict[tuple[str, str], tuple[str, int, str, float]] = OrderedDict()
        self._seqs: dict[tuple[str, str, str], int] = {}
        self._legacy = False  # state from before the producer keying is still held
        self._pending: list[list[Any]] = []
        self._fd: int | None = None
        self._db: sqlite3.Connection | None = None
        self._checkpoints = 0
        if path is not None:
            self._open(path)

    @classmethod
    def open(cls, home: Home, group: str, **kw: Any) -> ReplayGuard:
        """The persisted guard of ``group`` (ConflictError if another process runs the group)."""
        name = hashlib.sha256(group.encode("utf-8")).hexdigest()[:32]
        return cls(group_dir(home.ensure()) / name, **kw)

    @classmethod
    def ephemeral(cls, **kw: Any) -> ReplayGuard:
        """An in-memory guard for one replay run."""
        return cls(None, **kw)

    # --- checks ------------------------------------------------------------------------------
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
        mode: str = LIVE,
    ) -> Admission:
        """Decide whether a verified event may be processed; ReplayError (reason) if not.

        ``producer`` is the principal of the verified seal: ids and sequences are its own."""
        seen = self._ids.get((producer, event_id))
        if seen is None and self._legacy:
            seen = self._ids.get((LEGACY, event_id))
        if seen is not None:
            if seen[0] != stream or seen[1] != offset:
                raise ReplayError(
                    f"event id already seen at {seen[0]}@{seen[1]}; refused at {stream}@{offset}",
                    reason="duplicate",
                    stream=stream,
                    offset=offset,
                )
            if mode == REDRIVE:
                return Admission(PROCESSED if seen[2] == OK else NEW)
            return Admission(REDELIVERY)
        if mode != LIVE:
            return Admission(NEW)
        now = self._clock()
        if sealed_at < now - self.freshness:
            raise ReplayError(
                f"event at {stream}@{offset} was sealed {int(now - sealed_at)} s ago; freshness window is "
                f"{int(self.freshness)} s (use an authorized replay)",
                reason="stale",
                stream=stream,
                offset=offset,
            )
        if sealed_at > now + self.skew:
            raise ReplayError(
                f"event at {stream}@{offset} is sealed in the future",
                reason="future",
                stream=stream,
                offset=offset,
            )
        last = self._seqs.get((producer, instance, stream))
        if last is None and self._legacy:
            last = self._seqs.get((LEGACY, instance, stream))
        if last is not None and seq <= last:
            raise ReplayError(
                f"sequence {seq} of producer instance {instance[:40]} in {stream} is not after {last}",
                reason="out_of_order",
                stream=stream,
                offset=offset,
            )
        gap = (last + 1, seq) if last is not None and seq > last + 1 else None
        return Admission(NEW, gap)

    def is_next(self, producer: str, instance: str, stream: str, event_id: str, seq: int, sealed_at: float) -> bool:
        """True exactly when a live ``admit`` would answer NEW with no gap: an id not seen, sealed
        within the freshness window, the next sequence number of its producer instance (or its
        first). Anything else is False, for ``admit`` to judge and word. The consumer's hot path."""
        ids = self._ids
        if (producer, event_id) in ids or (self._legacy and (LEGACY, event_id) in ids):
            return False
        now = self._clock()
        if sealed_at < now - self.freshness or sealed_at > now + self.skew:
            return False
        last = self._seqs.get((producer, instance, stream))
        if last is None and self._legacy:
            last = self._seqs.get((LEGACY, instance, stream))
        return last is None or seq == last + 1

    # --- recording ---------------------------------------------------------------------------
    def settle_next(self, producer: str, stream: str, offset: int, event_id: str, instance: str, seq: int) -> None:
        """``settle(status=OK, mode=LIVE)`` of an event ``is_next`` admitted (its id is new, its
        seq the next): the same state and the same one journal ``write``, fewer steps."""
        now = self._clock()
        ids = self._ids
        ids[producer, event_id] = (stream, offset, OK, now)
        if len(ids) > self._window_ids:
            ids.popitem(last=False)
        key = (producer, instance, stream)
        if seq > self._seqs.get(key, -1):
            self._seqs[key] = seq
        if self._fd is not None:
            entry = [event_id, stream, offset, OK, now, instance, seq, producer]
            os.write(self._fd, _dumps(entry) + b"\n")
            self._pending.append(entry)

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
        mode: str = LIVE,
    ) -> None:
        """Remember a handled event (delivered or dead-lettered); survives a crash of this process."""
        now = self._clock()
        self._remember(producer, event_id, stream, offset, status, now)
        if mode == LIVE:
            key = (producer, instance, stream)
            if seq > self._seqs.get(key, -1):
                self._seqs[key] = seq
        if self._fd is not None:
            entry = [event_id, stream, offset, status, now, instance if mode == LIVE else "", seq, producer]
            os.write(self._fd, orjson.dumps(entry) + b"\n")
            self._pending.append(entry)

    def checkpoint(self) -> None:
        """Fold journalled entries into SQLite, then empty the journal. Call before committing offsets."""
        if self._db is None or not self._pending:
            return
        self._store(self._pending)
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
        self._pending.clear()

    def status(self, event_id: str, producer: str) -> str | None:
        seen = self._ids.get((producer, event_id))
        if seen is None and self._legacy:
            seen = self._ids.get((LEGACY, event_id))
        return seen[2] if seen else None

    def close(self) -> None:
        if self._fd is not None:
            self.checkpoint()
            os.close(self._fd)  # releases the flock
            self._fd = None
        if self._db is not None:
            self._db.close()
            self._db = None

    # --- internals ---------------------------------------------------------------------------
    def _remember(self, producer: str, event_id: str, stream: str, offset: int, status: str, at: float) -> None:
        key = (producer, event_id)
        self._ids[key] = (stream, offset, status, at)
        self._ids.move_to_end(key)
        while len(self._ids) > self._window_ids:
            self._ids.popitem(last=False)

    def _open(self, base: Path) -> None:
        base.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        journal = base.with_suffix(".journal")
        fd = os.open(journal, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConflictError("this consumer group is already running in another process") from None
        self._fd = fd
        self._db = connect(base.with_suffix(".db"), synchronous="NORMAL")
        with write_txn(self._db, "create replay guard schema") as db:
            columns = {r[1] for r in db.execute("PRAGMA table_info(seen)")}
            if columns and "producer" not in columns:
                for stmt in _MIGRATE_V1:
                    db.execute(stmt)
                log.info("replay guard state migrated to per-producer keys (earlier state kept as legacy)")
            else:
                for stmt in _SCHEMA:
                    db.execute(stmt)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        horizon = self._clock() - self._window_seconds
        rows = self._db.execute(
            "SELECT producer, id, stream, offset, status, at FROM seen WHERE at >= ? ORDER BY at DESC LIMIT ?",
            (horizon, self._window_ids),
        ).fetchall()
        for producer, event_id, stream, offset, status, at in reversed(rows):
            self._ids[(producer, event_id)] = (stream, offset, status, at)
        for entry in self._logged(horizon):
            if entry[4] >= horizon:
                self._remember(entry[7], entry[0], entry[1], entry[2], entry[3], entry[4])
        self._seqs = {
            (p, i, s): q for p, i, s, q in self._db.execute("SELECT producer, instance, stream, seq FROM seqs")
        }
        self._legacy = any(k[0] == LEGACY for k in self._ids) or any(k[0] == LEGACY for k in self._seqs)
        self._recover(journal)

    def _recover(self, journal: Path) -> None:
        """Apply what a crashed run settled after its last checkpoint (a torn last line is dropped)."""
        raw = journal.read_bytes()
        if not raw:
            return
        entries = []
        for line in raw.split(b"\n"):
            try:
                entries.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
        entries = [_current(e) for e in entries if isinstance(e, list) and len(e) in (7, 8)]
        for event_id, stream, offset, status, at, instance, seq, producer in entries:
            self._remember(producer, event_id, stream, offset, status, at)
            if producer == LEGACY:
                self._legacy = True
            key = (producer, instance, stream)
            if instance and seq > self._seqs.get(key, -1):
                self._seqs[key] = seq
        log.info("replay guard recovered %d journalled entries", len(entries))
        self._store(entries)
        if self._fd is not None:
            os.ftruncate(self._fd, 0)

    def _store(self, entries: list[list[Any]]) -> None:
        assert self._db is not None
        seqs: dict[tuple[str, str, str], int] = {}
        for _, stream, _, _, _, instance, seq, producer in entries:
            key = (producer, instance, stream)
            if instance and seq > seqs.get(key, -1):
                seqs[key] = seq
        with write_txn(self._db, "replay guard checkpoint") as db:
            if entries:
                db.execute(
                    "INSERT INTO seen_log(at, count, entries) VALUES (?, ?, ?)",
                    (max(e[4] for e in entries), len(entries), _dumps(entries)),
                )
            db.executemany(
                "INSERT INTO seqs(producer, instance, stream, seq) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(producer, instance, stream) DO UPDATE SET seq = max(seq, excluded.seq)",
                [(p, i, s, q) for (p, i, s), q in seqs.items()],
            )
            self._checkpoints += 1
            if self._checkpoints % 64 == 1:
                self._prune(db)

    def _prune(self, db: sqlite3.Connection) -> None:
        horizon = self._clock() - self._window_seconds
        db.execute("DELETE FROM seen WHERE at < ?", (horizon,))
        db.execute(
            "DELETE FROM seen WHERE at < (SELECT at FROM seen ORDER BY at DESC LIMIT 1 OFFSET ?)",
            (self._window_ids,),
        )
        db.execute("DELETE FROM seen_log WHERE at < ?", (horizon,))
        kept = 0
        for n, count in db.execute("SELECT n, count FROM seen_log ORDER BY n DESC").fetchall():
            kept += count
            if kept >= self._window_ids:  # rows before this one hold only ids past the window
                db.execute("DELETE FROM seen_log WHERE n < ?", (n,))
                break

    def _logged(self, horizon: float) -> list[list[Any]]:
        """The journal entries of the ``seen_log`` rows that may still be in the window (newest
        rows back to ``window_ids`` entries, none older than ``horizon``), oldest first."""
        assert self._db is not None
        rows, kept = [], 0
        for count, blob in self._db.execute(
            "SELECT count, entries FROM seen_log WHERE at >= ? ORDER BY n DESC", (horizon,)
        ):
            rows.append(blob)
            kept += count
            if kept >= self._window_ids:
                break
        out: list[list[Any]] = []
        for blob in reversed(rows):
            try:
                entries = orjson.loads(blob)
            except orjson.JSONDecodeError:
                continue
            out += [_current(e) for e in entries if isinstance(e, list) and len(e) in (7, 8)
                    and type(e[4]) in (int, float)]
        return out


def _current(entry: list[Any]) -> list[Any]:
    """A journal line of schema v1 (7 fields, no producer) as a current one, under LEGACY."""
    return entry if len(entry) == 8 else [*entry, LEGACY]
