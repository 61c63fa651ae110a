"""Data-key ids and the context a wrapped DEK is bound to.

A kid is 16 random bytes (base64url, 22 chars): it names a key without saying whose it is. New
kids share their first 4 bytes with the kids created next to them in time (``KidSource``), so a
reader's batch of keys sits in a few regions of the store's kid index, not on 500 random pages.
The wrap's associated data binds the DEK's row: kid, class, subject hash and, from format 2
on, its version and creation time, so a wrapped DEK copied to another row (another subject,
another class) fails to unwrap, and a database writer cannot renumber an old DEK to make it
current again. Format 2 length-prefixes every part; format 1 (``\\x00``-joined, no version)
is only read, for DEKs wrapped before it existed, and is upgraded on the next KEK rotation.
"""

from __future__ import annotations

import base64
import functools
import os
import re
import secrets
import struct
import threading
import time
import weakref
from collections.abc import Callable

DEK_BYTES = 32
KID_LEN = 22  # new_kid: 16 bytes (4 of bucket prefix, 12 of tail, all random) in base64url
KID_BUCKET_BYTES = 4  # the prefix shared by the kids of one bucket
KID_BUCKET_SECONDS = 1.0  # a bucket older than this is not used again
KID_BUCKET_SIZE = 4096  # kids per bucket at most
KID_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
KID_RE = re.compile(r"[A-Za-z0-9_\-]{22}\Z")  # KID_LEN characters of KID_ALPHABET
AAD_V1 = 1
AAD_V2 = 2
AAD_CURRENT = AAD_V2
_AAD_V1 = b"eventward-dek-v1\x00"
_AAD_V2 = b"eventward-dek-v2"
_U32 = struct.Struct(">I").pack
_TAIL = struct.Struct(">IQId").pack  # length-prefixed version (u64) and creation time (f64)


class KidSource:
    """New kids, those created together sharing a random prefix: B-tree-local, not time-stamped.

    A kid is base64url (no padding) of 16 bytes: a 4-byte bucket prefix and 12 bytes drawn fresh
    for each kid. The prefix is 4 random bytes drawn again once the bucket is older than
    ``max_age`` seconds (by ``clock``) or has named ``size`` kids, whichever comes first. Why: a
    consumer reads the events of many subjects, every key a cache miss; with fully random kids
    each of its index probes lands on a random page of the kid index (at a million keys, most
    outside SQLite's page cache: a ``pread`` each). Keys created together are read together
    (events written together are read together), and with a shared prefix they sit on a few
    neighbouring pages (docs/DESIGN.md, "Key ids are bucketed").

    What a prefix tells a reader of the log: only that two keys were made by one process within
    about a second, which where their subjects' first events sit in the log already says. It is
    not a timestamp: no kid says when it was created (a subject's tenure), nor which process
    made it. Uniqueness: two kids of one bucket differ in 96 random bits, of two buckets in all
    128 (a prefix may recur; a duplicate kid is then still 96-bit improbable, and the store's
    primary key refuses one anyway). Old kids (``secrets.token_urlsafe(16)``) have the same
    form: every check of a kid accepts both.

    Thread-safe (the bucket is taken under a lock) and fork-safe: a child process starts a new
    bucket of its own, never continuing its parent's (``os.register_at_fork``; each source
    registers a hook for good, so a process makes one, ``new_kid``'s, and tests a few)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        max_age: float = KID_BUCKET_SECONDS,
        size: int = KID_BUCKET_SIZE,
    ) -> None:
        self._clock = clock
        self._max_age = max_age
        self._size = size
        self._reset()
        os.register_at_fork(after_in_child=functools.partial(_reset_source, weakref.ref(self)))

    def _reset(self) -> None:
        """No bucket (the next kid starts one) and a new lock: in a forked child the parent's lock
        may have been held by a thread that does not exist there."""
        self._lock = threading.Lock()
        self._prefix = b""
        self._started = 0.0
        self._left = 0

    def __call__(self) -> str:
        tail = secrets.token_bytes(16 - KID_BUCKET_BYTES)
        with self._lock:
            now = self._clock()
            if self._left <= 0 or not 0.0 <= now - self._started <= self._max_age:
                self._prefix = secrets.token_bytes(KID_BUCKET_BYTES)
                self._started, self._left = now, self._size
            self._left -= 1
            prefix = self._prefix
        return base64.urlsafe_b64encode(prefix + tail)[:KID_LEN].decode()  # drops the "==" padding


def _reset_source(ref: weakref.ReferenceType[KidSource]) -> None:
    source = ref()
    if source is not None:
        source._reset()


_KIDS = KidSource()


def new_kid() -> str:
    """A new kid for a stored DEK, from this process's ``KidSource``."""
    return _KIDS()


def is_kid(kid: object) -> bool:
    return isinstance(kid, str) and KID_RE.match(kid) is not None


def all_kids(kids: list[str]) -> bool:
    """Every one of ``kids`` is a well-formed kid (True means ``is_kid`` of each is True), checked
    for a whole read batch at once: lengths, then the joined alphabet (bytes.translate deleting
    KID_ALPHABET leaves nothing) instead of one regex match per key. False (a non-string, a wrong
    length or character anywhere) sends the caller to ``is_kid`` key by key."""
    try:
        joined = "".join(kids)
    except TypeError:
        return False
    return (set(map(len, kids)) <= {KID_LEN} and joined.isascii()
            and not joined.encode().translate(None, KID_ALPHABET))


def _lp(part: bytes) -> bytes:
    return struct.pack(">I", len(part)) + part


def dek_aad(
    kid: str, cls: str, subject_hash: str, version: int = 0, created: float = 0.0, *, fmt: int = AAD_V1
) -> bytes:
    """The wrap's associated data for a DEK row, in the row's AAD format."""
    if fmt == AAD_V1:
        return b"\x00".join((_AAD_V1, kid.encode(), cls.encode(), subject_hash.encode()))
    k, c, h = kid.encode(), cls.encode(), subject_hash.encode()
    # The same bytes as _lp over each part, with the fixed-size version and time packed at once
    # (every unwrap of a consumer's read batch builds one).
    return b"".join((_AAD_V2, _U32(len(k)), k, _U32(len(c)), c, _U32(len(h)), h, _TAIL(8, version, 8, created)))


def uses_tag_input(kid: str, uses: int) -> bytes:
    """What the MAC over a DEK's use counter covers (kid and count, length-prefixed)."""
    return b"eventward-dek-uses-v1" + _lp(kid.encode()) + struct.pack(">Q", uses)


# What a decryption reads of a DEK row (KeyStore.wrapped_deks), in this order: a plain tuple
# per row, no DekRecord (a consumer of many subjects reads one row per event).
WRAPPED_COLUMNS = ("kid", "class", "subject_hash", "version", "kek_id", "wrapped", "created", "fmt")
WrappedRow = tuple[str, str, str, int, str, bytes, float, int]


def row_aad(row: WrappedRow) -> bytes:
    """``dek_aad`` of a WrappedRow, in the row's format (the same bytes). Raises AttributeError,
    TypeError or struct.error for a row whose columns have the wrong types (a tampered store):
    the caller refuses that key. Format 2 is one ``pack`` of a Struct made for the parts' lengths
    (a consumer of many subjects builds one per event; four packs and a join cost twice as much)."""
    k, c, h = row[0].encode(), row[1].encode(), row[2].encode()
    if row[7] == AAD_V1:
        return b"\x00".join((_AAD_V1, k, c, h))
    lk, lc, lh = len(k), len(c), len(h)
    pack = _AAD_V2_PACKS.get((lk, lc, lh)) or _aad_v2_pack(lk, lc, lh)
    return pack(_AAD_V2, lk, k, lc, c, lh, h, 8, row[3], 8, row[6])


# Struct.pack of the format 2 AAD by (kid, class, subject hash) lengths: few in a deployment (a
# kid is 22 characters, a subject hash 32 or empty, a class 1-32), bounded all the same.
_AAD_V2_PACKS: dict[tuple[int, int, int], Callable[..., bytes]] = {}


def _aad_v2_pack(lk: int, lc: int, lh: int) -> Callable[..., bytes]:
    # Each "Ns" is given exactly N bytes (its length is the prefix before it): no padding.
    pack = struct.Struct(f">{len(_AAD_V2)}sI{lk}sI{lc}sI{lh}sIQId").pack
    if len(_AAD_V2_PACKS) < 256:
        _AAD_V2_PACKS[lk, lc, lh] = pack
    return pack
