"""The erasure ledger's second copy: an append-only, MAC-authenticated file next to the key store.

The store keeps its own ledger table, but a restored backup of the store lacks the newest
entries; this file survives the restore and is re-applied on open, so a backup cannot
resurrect a forgotten subject. Each line carries an HMAC under the KMS's ledger secret: a
forged line could otherwise erase someone, so an unauthenticated line stops the service.

The lines are hash-chained: each new line names the head before it (``p``), and the head after
line i is SHA-256(head before || line i's payload), from 32 zero bytes. ``head()`` is what the
audit log anchors (see ``eventward._internal.backup``), so a ledger with entries removed from the end (a
restored copy) is shorter than the anchored head and one with entries removed or reordered in
the middle breaks the chain. Lines written before the chain existed carry no ``p`` and are
chained all the same.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from eventward._internal.keys.store_base import Erasure
from eventward.errors import KeyIntegrityError, KeyStoreUnavailable

Mac = Callable[[bytes], bytes]


GENESIS = "00" * 32


def _payload(e: Erasure, prev: str) -> bytes:
    entry = {"s": e.subject_hash, "t": e.time, "c": list(e.classes), "n": e.destroyed, "p": prev}
    return orjson.dumps(entry, option=orjson.OPT_SORT_KEYS)


def _next(head: str, payload: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(head) + payload).hexdigest()


@dataclass(frozen=True)
class LedgerHead:
    """How many entries the ledger holds and the chain hash after the last (GENESIS when empty);
    ``heads[i]`` is the head after entry i, so a longer ledger can be shown to extend a shorter."""

    entries: int
    head: str
    heads: tuple[str, ...] = ()

    def extends(self, other: LedgerHead) -> bool:
        """Whether this ledger starts with exactly ``other``'s entries."""
        if other.entries == 0:
            return True
        return other.entries <= self.entries and self.heads[other.entries - 1] == other.head


class ErasureLedger:
    def __init__(self, path: Path, mac: Mac) -> None:
        self.path = path
        self._mac = mac
        # (device, inode, offset, entries, head) after the last scan: appends and current() read only
        # what was written since, so forgetting stays O(1) in the ledger's length.
        self._at: tuple[int, int, int, int, str] | None = None

    def __repr__(self) -> str:
        return f"ErasureLedger({str(self.path)!r})"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as e:
            raise KeyStoreUnavailable(f"erasure ledger {self.path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        except OSError as e:
            raise KeyStoreUnavailable(f"erasure ledger {self.path}: {e.strerror}") from None
        finally:
            os.close(fd)

    def append(self, *entries: Erasure) -> None:
        if not entries:
            return
        with self._locked() as fd:
            count, head = self._tail(fd)
            lines = []
            for e in entries:
                p = _payload(e, head)
                head = _next(head, p)
                lines.append(p + b" " + self._mac(p).hex().encode() + b"\n")
            data = b"".join(lines)
            os.write(fd, data)
            os.fsync(fd)
            st = os.fstat(fd)
            self._at = (st.st_dev, st.st_ino, st.st_size, count + len(lines), head)

    def load(self) -> list[Erasure]:
        """Every entry, authenticated. A torn last line (crash mid-append) is cut off; the store
        still holds that entry and the caller re-appends it."""
        with self._locked() as fd:
            data = self._read_from(fd, 0)
            entries, full = self._scan(data)
            self._remember(fd, len(data), full.entries, full.head)
            return entries

    def head(self) -> LedgerHead:
        """The chain head with every entry's head, from a full scan (every line authenticated and
        chained on the way): for restores, which compare ledgers."""
        with self._locked() as fd:
            data = self._read_from(fd, 0)
            full = self._scan(data)[1]
            self._remember(fd, len(data), full.entries, full.head)
            return full

    def current(self) -> LedgerHead:
        """(entries, head) without the per-entry heads, reading only what was appended since the
        last scan by this object (what every forget anchors)."""
        with self._locked() as fd:
            entries, head = self._tail(fd)
            return LedgerHead(entries, head)

    def _remember(self, fd: int, end: int, entries: int, head: str) -> None:
        st = os.fstat(fd)
        self._at = (st.st_dev, st.st_ino, end, entries, head)

    def _tail(self, fd: int) -> tuple[int, str]:
        st = os.fstat(fd)
        at = self._at
        if at is None or (at[0], at[1]) != (st.st_dev, st.st_ino) or at[2] > st.st_size:
            at = (st.st_dev, st.st_ino, 0, 0, GENESIS)  # a new or replaced file: scanned in full
        data = self._read_from(fd, at[2])
        _, tail = self._scan(data, first=at[3], head=at[4], keep_heads=False)
        self._remember(fd, at[2] + len(data), tail.entries, tail.head)
        return tail.entries, tail.head

    @staticmethod
    def _read_from(fd: int, offset: int) -> bytes:
        size = os.fstat(fd).st_size
        data = os.pread(fd, size - offset, offset) if size > offset else b""
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            os.ftruncate(fd, offset + keep)
            data = data[:keep]
        return data

    def _scan(
        self, data: bytes, *, first: int = 0, head: str = GENESIS, keep_heads: bool = True
    ) -> tuple[list[Erasure], LedgerHead]:
        """Parse and chain the lines in ``data``, which follow ``first`` entries ending in ``head``."""
        entries: list[Erasure] = []
        heads: list[str] = []
        for n, line in enumerate(data.splitlines(), start=first + 1):
            payload, erasure, prev = self._parse(n, line)
            if prev is not None and prev != head:
                raise KeyIntegrityError(
                    f"erasure ledger {self.path} line {n} does not follow line {n - 1} (entries were removed "
                    "or reordered)",
                    line=n,
                )
            head = _next(head, payload)
            entries.append(erasure)
            if keep_heads:
                heads.append(head)
        return entries, LedgerHead(first + len(entries), head, tuple(heads))

    def _parse(self, n: int, line: bytes) -> tuple[bytes, Erasure, str | None]:
        payload, _, tag = line.rpartition(b" ")
        if not hmac.compare_digest(tag, self._mac(payload).hex().encode()):
            raise KeyIntegrityError(f"erasure ledger {self.path} line {n} fails authentication", line=n)
        try:
            d = orjson.loads(payload)
            prev = d.get("p")
            if prev is not None and not isinstance(prev, str):
                raise TypeError
            return payload, Erasure(str(d["s"]), float(d["t"]), tuple(map(str, d["c"])), int(d["n"])), prev
        except (ValueError, KeyError, TypeError, AttributeError):
            raise KeyIntegrityError(f"erasure ledger {self.path} line {n} is malformed", line=n) from None
