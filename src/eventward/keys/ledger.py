"""The erasure ledger's second copy: an append-only, MAC-authenticated file next to the key store.

The store keeps its own ledger table, but a restored backup of the store lacks the newest
entries; this file survives the restore and is re-applied on open, so a backup cannot
resurrect a forgotten subject. Each line carries an HMAC under the KMS's ledger secret: a
forged line could otherwise erase someone, so an unauthenticated line stops the service.
"""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson

from eventward.errors import KeyIntegrityError, KeyStoreUnavailable
from eventward.keys.store_base import Erasure

Mac = Callable[[bytes], bytes]


def _payload(e: Erasure) -> bytes:
    entry = {"s": e.subject_hash, "t": e.time, "c": list(e.classes), "n": e.destroyed}
    return orjson.dumps(entry, option=orjson.OPT_SORT_KEYS)


class ErasureLedger:
    def __init__(self, path: Path, mac: Mac) -> None:
        self.path = path
        self._mac = mac

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
        lines = b"".join(p + b" " + self._mac(p).hex().encode() + b"\n" for p in map(_payload, entries))
        with self._locked() as fd:
            os.write(fd, lines)
            os.fsync(fd)

    def load(self) -> list[Erasure]:
        """Every entry, authenticated. A torn last line (crash mid-append) is cut off; the store
        still holds that entry and the caller re-appends it."""
        with self._locked() as fd:
            size = os.fstat(fd).st_size
            data = os.pread(fd, size, 0) if size else b""
            if data and not data.endswith(b"\n"):
                keep = data.rfind(b"\n") + 1
                os.ftruncate(fd, keep)
                data = data[:keep]
        return [self._parse(n, line) for n, line in enumerate(data.splitlines(), start=1)]

    def _parse(self, n: int, line: bytes) -> Erasure:
        payload, _, tag = line.rpartition(b" ")
        if not hmac.compare_digest(tag, self._mac(payload).hex().encode()):
            raise KeyIntegrityError(f"erasure ledger {self.path} line {n} fails authentication", line=n)
        try:
            d = orjson.loads(payload)
            return Erasure(str(d["s"]), float(d["t"]), tuple(map(str, d["c"])), int(d["n"]))
        except (ValueError, KeyError, TypeError):
            raise KeyIntegrityError(f"erasure ledger {self.path} line {n} is malformed", line=n) from None
