"""The KeyStore seam: where wrapped DEKs, tombstones, legal holds and the erasure ledger live.

A store only ever sees wrapped DEKs and keyed subject hashes, never key bytes or raw subject
ids. Implementations raise KeyStoreUnavailable (never a driver error) and make every write
atomic; ``transaction()`` lets the key service group a KMS call with the writes it guards.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

from eventward._internal.keys.dek import WrappedRow

CLASS_SUBJECT = ""  # subject_hash of a class DEK (data with no data subject); never erasable


@dataclass(frozen=True)
class DekRecord:
    kid: str
    subject_hash: str
    cls: str
    version: int
    kek_id: str
    wrapped: bytes = field(repr=False)
    created: float
    uses: int = 0
    fmt: int = 1  # keys.dek AAD format the DEK was wrapped with (version/created bound from 2 on)
    uses_tag: bytes = field(default=b"", repr=False)  # MAC over (kid, uses); empty for format 1


@dataclass(frozen=True)
class Erasure:
    """One ledger entry: every DEK of ``subject_hash`` created at or before ``time`` is gone."""

    subject_hash: str
    time: float
    classes: tuple[str, ...]
    destroyed: int


@dataclass(frozen=True)
class ClassCounts:
    cls: str
    deks: int
    subjects: int
    tombstones: int


class KeyStore(Protocol):
    """Every method may raise KeyStoreUnavailable (the database did not answer, or the file is not
    the store that was opened: nothing half-written). Lookups of a kid or subject the store does not
    know return None/False/empty, never raise. Thread-safe; several processes may share a store."""

    def transaction(self) -> AbstractContextManager[None]:
        """One atomic write (re-entrant); holds the store's write lock until it ends."""
        ...

    def insert_dek(self, rec: DekRecord) -> bool:
        """False when (subject, class, version) already exists: the caller re-reads and converges."""
        ...

    def get_dek(self, kid: str) -> DekRecord | None:
        """The row of ``kid``; None when the store has no such key (erased, or never issued: ask
        ``tombstone``/``erased`` which)."""
        ...

    def get_deks(self, kids: Iterable[str]) -> dict[str, DekRecord]:
        """The rows of many kids at once (kid -> row; missing kids absent): one query per chunk."""
        ...

    def wrapped_deks(self, kids: Iterable[str]) -> dict[str, WrappedRow]:
        """``get_deks`` for decryption: kid -> the columns dek.WRAPPED_COLUMNS names, as a plain
        tuple (a consumer reads one row per event of a new subject); missing kids absent."""
        ...

    def current_dek(self, subject_hash: str, cls: str) -> DekRecord | None:
        """Highest version of the subject's DEK in ``cls``."""
        ...

    def tombstone(self, kid: str) -> tuple[str, float] | None:
        """(class, destroyed_at) of a destroyed kid, so readers can say "erased" rather than "forged"."""
        ...

    def deks_to_rewrap(self, cls: str, keep_kek: str, after_kid: str, limit: int) -> list[DekRecord]:
        """DEKs of ``cls`` not wrapped under ``keep_kek``, in kid order after ``after_kid``."""
        ...

    def rewrap(self, kid: str, old_kek: str, new_kek: str, wrapped: bytes, fmt: int = 1) -> bool:
        """Replace the wrap of ``kid`` if it is still under ``old_kek`` (compare-and-set); False
        when another process re-wrapped or erased it meanwhile (nothing changed)."""
        ...

    def kek_usage(self, cls: str) -> dict[str, int]:
        """How many DEKs each KEK id of ``cls`` wraps."""
        ...

    def add_uses(self, kid: str, n: int) -> int:
        """Add ``n`` to a DEK's use counter and return the new total (class-DEK rotation); 0 when
        the kid is gone."""
        ...

    def set_uses(self, kid: str, expect: int, uses: int, tag: bytes) -> bool:
        """Compare-and-set a DEK's use counter and its MAC; False if it moved meanwhile."""
        ...

    def store_id(self) -> str:
        """Random id minted when the store was created: tells this store from a stranger."""
        ...

    def erase_subject(self, subject_hash: str, at: float) -> Erasure:
        """Delete and tombstone every DEK of the subject, record the erasure, bump the epoch.

        Raises LegalHoldError (nothing deleted) while the subject is held.
        """
        ...

    def apply_erasure(self, erasure: Erasure) -> int:
        """Re-apply a ledger entry this store does not know yet (restored backup); returns DEKs deleted."""
        ...

    def erasures(self) -> list[Erasure]:
        """The erasure ledger, oldest first (``[]`` when nothing was ever forgotten)."""
        ...

    def erased(self, subject_hash: str) -> bool:
        """Whether the erasure ledger records the subject as forgotten (a reader says "erased")."""
        ...

    def intact(self) -> bool:
        """Whether the store is still the one opened (not removed or replaced while running).
        A key id missing from an intact store was never issued; from a broken one, it is lost."""
        ...

    def pseudonym(self, lookup: str) -> str | None:
        """The random pseudonym of the subject whose keyed lookup is ``lookup`` (None: unknown or
        forgotten). ``erase_subject`` deletes the row: afterwards nothing maps the person to it."""
        ...

    def add_pseudonym(self, lookup: str, pseudonym: str, at: float, kind: int = 2) -> str:
        """Record a pseudonym unless another process did first; returns the one recorded."""
        ...

    def pseudonym_live(self, pseudonym: str) -> bool:
        """Whether a subject still maps to ``pseudonym`` (False once it was forgotten, or never)."""
        ...

    def legacy_subject(self, subject_hash: str) -> bool:
        """Whether keys or holds are keyed by this keyed hash (a store from before pseudonyms)."""
        ...

    def hold(self, subject_hash: str, reason: str, since: float, by: str = "") -> None:
        """Place (or replace) a hold; ``by`` is the principal, named when a forget is refused."""
        ...

    def release(self, subject_hash: str) -> bool:
        """Remove the subject's hold; False when it had none."""
        ...

    def held(self, subject_hash: str) -> str | None:
        """The hold's reason, or None when the subject is not held."""
        ...

    def hold_info(self, subject_hash: str) -> tuple[str, float, str] | None:
        """(reason code, since, placed by) of the subject's hold, or None."""
        ...

    def holds_count(self) -> int:
        """How many subjects are held."""
        ...

    def epoch(self) -> int:
        """Revocation epoch: changes whenever cached keys must be dropped. Must be a cheap read."""
        ...

    def bump_epoch(self) -> int:
        """Advance the revocation epoch (every cache drops its keys); returns the new value."""
        ...

    def counts(self) -> list[ClassCounts]:
        """Per class: live DEKs, distinct subjects and tombstones (classes with any of them)."""
        ...

    def purge(self) -> bool:
        """Make deleted bytes leave every file (WAL checkpoint); False if a reader kept it from finishing."""
        ...

    def close(self) -> None:
        """Close the database; idempotent. The store is not used afterwards."""
        ...
