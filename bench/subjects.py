"""Key stores loaded in bulk, for benchmarks at up to a million data subjects.

Creating keys one ``encryption_key`` call at a time costs one fsync'ed transaction per
subject (an hour at a million). Here every DEK is still random and really wrapped by the
service's KMS with the associated data KeyService uses, so the service unwraps them as its
own; only the inserts are grouped, tens of thousands of rows per transaction.
"""

from __future__ import annotations

import functools
import itertools
import os
import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import in_parallel
from eventward._internal.home import Home
from eventward._internal.keys.dek import DEK_BYTES, new_kid
from eventward._internal.keys.service import DEFAULT_CLASSES, SUBJECT_HASH_CHARS, KeyService
from eventward._internal.keys.sqlite_store import SQLiteKeyStore
from eventward._internal.keys.store_base import DekRecord
from eventward._internal.policy.base import AllowList

CHUNK = 20_000
PSEUDONYM_RANDOM = 2  # pseudonyms.kind of a random pseudonym (KeyStore.add_pseudonym's default)
# Rows per transaction when processes load one store together. Every key's kid, pseudonym and
# (subject, class) index entries are random, so a transaction dirties about one index page per
# row and writes each to the WAL with an fsync: fewer, larger transactions write far less (at
# 200k subjects x 3 classes, 30,000 rather than 5,000 rows cut the load's CPU by a quarter and
# its wall time by 40%). The other loaders wait for the lock meanwhile (patient).
SHARED_CHUNK = 30_000
BULK_BUSY_TIMEOUT_MS = 600_000
BULK_CACHE_KB = 256 * 1024  # SQLite page cache of a loader's connection: the indexes' hot pages


def patient(svc: KeyService) -> None:
    """Let a bulk loader wait minutes for the key store's write lock, not the service's 5 s:
    worker processes share one store, and on a machine other work loads, one worker's commit
    (a fully synchronous transaction of thousands of rows) can outlast 5 s and fail the run.
    Also a large page cache: random index inserts otherwise read most pages back from the OS."""
    svc.store._db.execute(f"PRAGMA busy_timeout = {BULK_BUSY_TIMEOUT_MS}")  # type: ignore[attr-defined]
    svc.store._db.execute(f"PRAGMA cache_size = -{BULK_CACHE_KB}")  # type: ignore[attr-defined]
    svc.store._db.execute("PRAGMA synchronous = OFF")  # type: ignore[attr-defined]  # setup: no fsync waits


@dataclass(frozen=True)
class Loaded:
    """One key as loaded: who it belongs to and the DEK itself (so callers need not unwrap it)."""

    subject: str
    subject_hash: str
    cls: str
    kid: str
    dek: bytes = field(repr=False)


def load(
    svc: KeyService, subjects: Iterable[str], classes: Iterable[str] = DEFAULT_CLASSES, chunk: int = CHUNK
) -> Iterator[list[Loaded]]:
    """Give every subject one v1 DEK per class; yields each chunk after it is committed."""
    classes = tuple(classes)
    now = time.time()
    pending: list[Loaded] = []
    records: list[DekRecord] = []
    for subject, h in _pseudonyms(svc, subjects, max(1, chunk // max(1, len(classes)))):
        for cls in classes:
            kid, dek = new_kid(), os.urandom(DEK_BYTES)
            records.append(svc.wrap_record(kid, h, cls, 1, dek, now))
            pending.append(Loaded(subject, h, cls, kid, dek))
        if len(records) >= chunk:
            yield _commit(svc, records, pending)
            records, pending = [], []
    if records:
        yield _commit(svc, records, pending)
    svc.store.purge()


def _pseudonyms(svc: KeyService, subjects: Iterable[str], per_tx: int) -> Iterator[tuple[str, str]]:
    """(subject, pseudonym), the pseudonym rows written ``per_tx`` to a transaction (one fsync).

    On the SQLite key store the rows of new subjects go in with one ``executemany`` per
    transaction: the keyed lookup the service computes (``KeyService._lookup``), a random
    pseudonym and the row ``add_pseudonym`` would write, without its per-subject SELECTs (a third
    of the load time at a million). If any subject already had a row (or the store is another
    kind), that transaction falls back to ``subject_hash`` per subject, the service's own path."""
    it = iter(subjects)
    fast = isinstance(svc.store, SQLiteKeyStore)
    while batch := list(itertools.islice(it, per_tx)):
        with svc.store.transaction():
            pairs = _new_pseudonyms(svc, batch) if fast else None
            if pairs is None:
                pairs = [(s, svc.subject_hash(s)) for s in batch]
        yield from pairs


def _new_pseudonyms(svc: KeyService, batch: list[str]) -> list[tuple[str, str]] | None:
    """Pseudonym rows for subjects none of which has one yet, inside the caller's transaction;
    None (nothing written) if one of them had a row already."""
    lookups = [svc._lookup(s) for s in batch]
    pseudonyms = [secrets.token_hex(SUBJECT_HASH_CHARS // 2) for _ in batch]
    db = svc.store._db  # type: ignore[attr-defined]
    db.execute("SAVEPOINT bulk_pseudonyms")
    written = db.executemany(
        "INSERT OR IGNORE INTO pseudonyms (lookup, pseudonym, created, kind) VALUES (?, ?, ?, ?)",
        [(h, p, svc._clock(), PSEUDONYM_RANDOM) for h, p in zip(lookups, pseudonyms, strict=True)],
    ).rowcount
    if written != len(batch):
        db.execute("ROLLBACK TO bulk_pseudonyms")
        db.execute("RELEASE bulk_pseudonyms")
        return None
    db.execute("RELEASE bulk_pseudonyms")
    return list(zip(batch, pseudonyms, strict=True))


def _commit(svc: KeyService, records: list[DekRecord], loaded: list[Loaded]) -> list[Loaded]:
    # Kid order: fewer kid-index pages touched per chunk. Kids made in one burst share a random
    # bucket prefix (keys/dek.py new_kid), so a chunk's keys sit together in the kid index as its
    # rows do in the table (rowid order): a consumer reading the events (subject order, as keys
    # made at first use are read) finds the next keys on pages it just read. Subjects read in
    # random order would not: 7.4 vs 2.3 us CPU per key at a million keys (wrapped_deks, batches
    # of 500), measured when the buckets came in.
    records.sort(key=lambda r: r.kid)
    inserted = svc.store.insert_many(records)
    if inserted != len(records):
        raise RuntimeError(f"bulk load stored {inserted} of {len(records)} keys (store not empty?)")
    return loaded


def populate(
    svc: KeyService, subjects: Iterable[str], classes: Iterable[str] = DEFAULT_CLASSES, chunk: int = CHUNK
) -> int:
    """Bulk-load keys and drop them from memory; returns how many DEKs were stored."""
    return sum(len(c) for c in load(svc, subjects, classes, chunk))


def populate_range(root: Path, pattern: str, classes: tuple[str, ...], start: int, stop: int) -> int:
    """``populate`` for subjects ``pattern.format(i)``, ``start <= i < stop``, in a home's key store."""
    with KeyService.open(Home(root), authorizer=AllowList()) as svc:  # loading needs no grant
        patient(svc)
        return populate(svc, (pattern.format(i) for i in range(start, stop)), classes, SHARED_CHUNK)


def populate_home(home: Home, pattern: str, n: int, classes: tuple[str, ...] = DEFAULT_CLASSES) -> int:
    """Subjects ``pattern.format(i)`` for ``i < n``, loaded by worker processes in parallel."""
    return in_parallel(functools.partial(populate_range, home.root, pattern, classes), n)
