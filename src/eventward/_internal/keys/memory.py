"""An in-memory DekSource: field encryption without a deployment home, and a test double.

DEKs are random 256-bit keys per (data subject, class), held only in this process: nothing
is wrapped or persisted, so losing the process loses the data (by design of a memory key
source, not a bug). Deployments use ``keys.service.KeyService``; this class keeps the same
contract (keys/base.py DekSource) so code and tests written against it carry over.
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
from dataclasses import dataclass, field

from eventward._internal.crypto.tokens import DEK_BYTES
from eventward._internal.fieldspec import check_class
from eventward._internal.policy.base import DECRYPT, Authorizer, check
from eventward.errors import InputError, KeyDestroyed, KeyNotFound

_HASH_CACHE = 65536


@dataclass(slots=True)
class _Key:
    cls: str
    subject_hash: str | None
    dek: bytes | None = field(repr=False)  # None once destroyed


class MemoryKeys:
    """Per-(subject, class) DEKs with a clearance check and crypto-shredding.

    ``authorizer``: if given, ``decryption_key`` requires ``Decrypt`` on ``Class::<cls>``
    (deny by default, e.g. an ``AllowList``); without one every caller is cleared, which
    suits single-principal library use and tests only. Encrypting needs no clearance: a
    producer must be able to seal a class it may not read.

    Subject hashes are HMAC-SHA256 under a random per-instance key. Recent raw ids are
    memoised (bounded, in memory only, dropped by ``forget``) because the field encryptor
    and ``encryption_key`` both hash every event's subject.
    """

    def __init__(self, authorizer: Authorizer | None = None, *, hmac_key: bytes | None = None) -> None:
        if hmac_key is not None and len(hmac_key) < 32:
            raise InputError("the subject-hash key must be at least 32 bytes")
        self._mac_key = hmac_key or os.urandom(32)
        self._authorizer = authorizer
        self._hashes: dict[str, str] = {}
        self._keys: dict[str, _Key] = {}
        self._current: dict[tuple[str | None, str], str] = {}
        self._by_subject: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        live = sum(1 for k in self._keys.values() if k.dek is not None)
        return f"MemoryKeys({live} live keys, {len(self._keys) - live} destroyed)"

    def subject_hash(self, subject: str) -> str:
        if not isinstance(subject, str) or not subject:
            raise InputError("a data-subject id must be a non-empty string")
        h = self._hashes.get(subject)
        if h is None:
            h = hmac.digest(self._mac_key, subject.encode("utf-8"), "sha256").hex()
            with self._lock:
                if len(self._hashes) >= _HASH_CACHE:
                    self._hashes.pop(next(iter(self._hashes)), None)
                self._hashes[subject] = h
        return h

    def encryption_key(self, subject: str | None, cls: str, *, principal: str) -> tuple[str, bytes]:
        """The current DEK of (subject, cls), created on first use. A forgotten subject seen
        again starts a new key: erasure covers the data that existed, not future events."""
        slot = (None if subject is None else self.subject_hash(subject), cls)
        while True:
            kid = self._current.get(slot) or self._new_key(slot)
            dek = self._keys[kid].dek
            if dek is not None:  # None only if forgotten between the two lookups
                return kid, dek

    def decryption_key(self, kid: str, cls: str, *, principal: str) -> bytes:
        # Clearance first: an uncleared caller learns nothing about the key, not even erasure.
        if self._authorizer is not None:
            check(self._authorizer, principal, DECRYPT, ("Class", cls))
        key = self._keys.get(kid)
        if key is None or key.cls != cls:
            # A kid of another class is as good as forged: never hand a pii DEK to a "public" read.
            raise KeyNotFound(f"no data key of class {cls!r} with this key id")
        if key.dek is None:
            raise KeyDestroyed(f"data key of class {cls!r} was destroyed")
        return key.dek

    def rotate(self, subject: str | None, cls: str) -> str:
        """Start a new DEK version for new data; older versions still decrypt old data."""
        slot = (None if subject is None else self.subject_hash(subject), cls)
        with self._lock:
            self._current.pop(slot, None)
        return self._new_key(slot)

    def forget(self, subject: str) -> int:
        """Crypto-shred: destroy every DEK of ``subject``; returns how many were destroyed.

        Reads of its fields then see KeyDestroyed. (Python cannot wipe the old bytes objects;
        they are unreferenced here and left to the allocator.)
        """
        shash = self.subject_hash(subject)
        with self._lock:
            self._hashes.pop(subject, None)
            kids = self._by_subject.pop(shash, [])
            for kid in kids:
                self._keys[kid].dek = None
            for slot in [s for s in self._current if s[0] == shash]:
                del self._current[slot]
        return len(kids)

    def _new_key(self, slot: tuple[str | None, str]) -> str:
        shash, cls = slot
        check_class(cls)
        with self._lock:
            kid = self._current.get(slot)
            if kid is not None and self._keys[kid].dek is not None:
                return kid  # another thread created it meanwhile
            kid = secrets.token_urlsafe(18)  # 24 chars of [A-Za-z0-9_-]: a valid token key id
            self._keys[kid] = _Key(cls, shash, secrets.token_bytes(DEK_BYTES))
            self._current[slot] = kid
            if shash is not None:
                self._by_subject.setdefault(shash, []).append(kid)
        return kid
