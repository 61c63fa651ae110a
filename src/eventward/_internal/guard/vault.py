"""Claim check: large or very sensitive fields leave the event for a vault table in the home; the
event carries a random reference in the CloudEvents ``dataref`` attribute.

Each entry is encrypted like a field (AES-256-GCM under the data subject's DEK for its class,
the key service authorizing Encrypt/Decrypt on the class, topic and type), bound to its
reference, and stored with the subject's keyed hash. ``forget(subject)`` shreds the DEK, and
``Deployment.forget`` also deletes the subject's rows (``forget_claims``; SQLite
``secure_delete``, WAL truncated): erased twice over. References are 128 random bits, so one
reference says nothing about another and cannot be guessed.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from eventward._internal.crypto.fields import ERASED, REDACTED
from eventward._internal.fieldspec import FieldRule, FieldSpec, parse_path
from eventward._internal.home import Home, private_file
from eventward.errors import AccessDenied, InputError, KeyServiceError, NotFoundError

DATAREF_PREFIX = "ewvault:"
_SPEC_CACHE: dict[str, FieldSpec] = {}


def vault_path(home: Home) -> Path:
    return home.root / "vault.db"


def _spec(cls: str) -> FieldSpec:
    spec = _SPEC_CACHE.get(cls)
    if spec is None:
        spec = _SPEC_CACHE[cls] = FieldSpec((FieldRule("v", cls),), "s")
    return spec


class Vault:
    """The vault table of one home. Thread-safe; close when done."""

    def __init__(self, home: Home, keys: Any, encryptor: Any) -> None:
        path = vault_path(home)
        private_file(path)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS claims (ref TEXT PRIMARY KEY, subject_hash TEXT NOT NULL, "
            "cls TEXT NOT NULL, body BLOB NOT NULL, created REAL NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS claims_subject ON claims(subject_hash)")
        self._keys = keys
        self._enc = encryptor
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def check_in(self, data: dict[str, Any], paths: list[str], *, subject: str, cls: str, principal: str,
                 topic: str | None = None, event_type: str | None = None) -> tuple[dict[str, Any], str]:
        """Move the top-level-or-nested ``paths`` of ``data`` to the vault; returns the data without
        them and the ``dataref`` to send with the event."""
        out = orjson.loads(orjson.dumps(data))
        taken: dict[str, Any] = {}
        for p in paths:
            segs = parse_path(p)
            if any(is_array for _, is_array in segs):
                raise InputError(f"claim check: {p} goes through an array (check in the whole array)")
            cur = out
            for name, _ in segs[:-1]:
                cur = cur.get(name) if isinstance(cur, dict) else None
            last = segs[-1][0]
            if isinstance(cur, dict) and last in cur:
                taken[p] = cur.pop(last)
        ref = os.urandom(16).hex()
        enc, subject_hash = self._enc.encrypt(ref, {"s": subject, "v": orjson.dumps(taken).decode()}, _spec(cls),
                                              principal=principal, topic=topic, event_type=event_type)
        with self._lock:
            self._db.execute("INSERT INTO claims VALUES (?, ?, ?, ?, ?)",
                             (ref, subject_hash, cls, enc["v"].encode(), time.time()))
        return out, DATAREF_PREFIX + ref

    def check_out(self, dataref: str, *, subject: str, principal: str, topic: str | None = None,
                  event_type: str | None = None) -> dict[str, Any]:
        """The fields a reference holds (path -> value); NotFoundError once forgotten or unknown."""
        if not isinstance(dataref, str) or not dataref.startswith(DATAREF_PREFIX) or len(dataref) != 40:
            raise InputError("not a vault reference")
        ref = dataref[len(DATAREF_PREFIX):]
        with self._lock:
            row = self._db.execute("SELECT subject_hash, cls, body FROM claims WHERE ref = ?", (ref,)).fetchone()
        if row is None:
            raise NotFoundError("no vault entry for this reference (never stored, or forgotten)")
        subject_hash, cls, body = row
        plain, _ = self._enc.decrypt(ref, {"s": subject, "v": bytes(body).decode()}, _spec(cls), subject_hash,
                                     principal=principal, topic=topic, event_type=event_type)
        value = plain["v"]
        if value == REDACTED:
            raise AccessDenied(f"{principal} is not cleared for class {cls}: the vault entry stays closed")
        if value == ERASED:
            raise NotFoundError("the vault entry's subject was forgotten")
        if not isinstance(value, str) or not value.startswith("{"):
            raise KeyServiceError("the vault entry could not be decrypted for this principal")
        return orjson.loads(value)

    def forget(self, subject_hash: str) -> int:
        """Delete every entry of one subject (by keyed hash); returns how many."""
        return forget_claims_db(self._db, subject_hash, self._lock)


def forget_claims_db(db: sqlite3.Connection, subject_hash: str, lock: threading.Lock | None = None) -> int:
    lock = lock or threading.Lock()
    with lock:
        n = db.execute("DELETE FROM claims WHERE subject_hash = ?", (subject_hash,)).rowcount
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return int(n)


def forget_claims(home: Home, subject_hash: str) -> int:
    """``Deployment.forget``'s step: delete the subject's vault entries, if the home has a vault."""
    path = vault_path(home)
    if not path.exists():
        return 0
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA secure_delete=ON")
        return forget_claims_db(db, subject_hash)
    finally:
        db.close()
