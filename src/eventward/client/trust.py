"""The trust registry: which signing key (kid) speaks for which producer principal.

Seals are only as good as this binding. Keys rotate (the new key signs, the retired one
still verifies the batches it sealed) and are revoked (every batch it sealed is refused,
reason ``revoked_key``). Changing a binding is an authorized (RotateKeys on the producer)
and audited operation. Private keys live in ``Home.producer_keys`` as 0600 files.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from eventward.audit.base import DENIED, OK, AuditSink, NullAudit
from eventward.crypto.seal import Signer, kid_of
from eventward.errors import AccessDenied, ConfigError, ConflictError, InputError, NotFoundError
from eventward.home import Home, read_secret, write_secret
from eventward.log.sqlite import connect, write_txn
from eventward.policy.base import ROTATE_KEYS, Authorizer, check

ACTIVE = "active"
RETIRED = "retired"  # rotated out: verifies what it sealed, signs nothing new
REVOKED = "revoked"  # refused everywhere

_PRINCIPAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@\-]{0,127}\Z")  # \Z: "$" would accept a trailing newline
_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys(
    kid TEXT PRIMARY KEY, principal TEXT NOT NULL, public BLOB NOT NULL, status TEXT NOT NULL,
    created REAL NOT NULL, changed REAL NOT NULL, changed_by TEXT NOT NULL)
"""


def check_principal(principal: str) -> str:
    """Principals name key files, so they are restricted to a filename-safe alphabet."""
    if not isinstance(principal, str) or not _PRINCIPAL.match(principal):
        raise InputError(f"invalid principal name {str(principal)[:60]!r} (letters, digits, '_.@-'; max 128)")
    return principal


@dataclass(frozen=True)
class KeyInfo:
    kid: str
    principal: str
    status: str
    created: float
    changed: float  # for a retired key: when it stopped signing
    changed_by: str


@dataclass(frozen=True)
class TrustedKey:
    """What seal verification needs to know about a kid."""

    kid: str
    principal: str
    public_key: Ed25519PublicKey
    status: str
    changed: float


class TrustRegistry:
    def __init__(self, home: Home, authorizer: Authorizer, audit: AuditSink | None = None) -> None:
        self.home = home
        self._authorizer = authorizer
        self._audit = audit or NullAudit()
        self._lock = threading.Lock()
        self._db = connect(home.ensure().trust_db, synchronous="FULL")
        with self._lock, write_txn(self._db, "create trust schema") as db:
            db.execute(_SCHEMA)

    @classmethod
    def open(cls, home: Home, authorizer: Authorizer, audit: AuditSink | None = None) -> TrustRegistry:
        return cls(home, authorizer, audit)

    # --- changing bindings (authorized, audited) -------------------------------------------
    def register(self, principal: str, *, by: str) -> Signer:
        """First signing key of ``principal``; ConflictError if it already has one (rotate it)."""
        self._authorize(by, principal, "trust.register")
        if self._active_kid(principal):
            raise ConflictError(f"producer {principal} already has an active signing key; rotate it instead")
        return self._new_key(principal, by, "trust.register")

    def rotate(self, principal: str, *, by: str) -> Signer:
        """A new active key; the previous one is retired (still verifies what it sealed)."""
        self._authorize(by, principal, "trust.rotate")
        return self._new_key(principal, by, "trust.rotate")

    def ensure(self, principal: str, *, by: str) -> Signer:
        """The active signer, registering a first key if there is none (still authorized)."""
        if self._active_kid(check_principal(principal)):
            return self.signer_for(principal)
        return self.register(principal, by=by)

    def revoke(self, kid: str, *, by: str) -> None:
        info = self.info(kid)
        self._authorize(by, info.principal, "trust.revoke")
        now = time.time()
        with self._lock, write_txn(self._db, "revoke key") as db:
            db.execute(
                "UPDATE keys SET status = ?, changed = ?, changed_by = ? WHERE kid = ?",
                (REVOKED, now, by, kid),
            )
        self._key_file(info.principal, kid).unlink(missing_ok=True)
        self._audit.record("trust.revoke", principal=by, resource=f"Producer::{info.principal}", kid=kid)

    # --- lookups ---------------------------------------------------------------------------
    def public_key(self, kid: str) -> tuple[str, Ed25519PublicKey, str]:
        """(principal, public key, status); NotFoundError for a kid nobody registered."""
        k = self.resolve(kid)
        return k.principal, k.public_key, k.status

    def resolve(self, kid: str) -> TrustedKey:
        with self._lock:
            row = self._db.execute(
                "SELECT principal, public, status, changed FROM keys WHERE kid = ?", (kid,)
            ).fetchone()
        if row is None:
            raise NotFoundError(f"signing key {kid[:80]!r} is not in the trust registry")
        return TrustedKey(kid, row[0], Ed25519PublicKey.from_public_bytes(row[1]), row[2], row[3])

    def info(self, kid: str) -> KeyInfo:
        with self._lock:
            row = self._db.execute(
                "SELECT kid, principal, status, created, changed, changed_by FROM keys WHERE kid = ?", (kid,)
            ).fetchone()
        if row is None:
            raise NotFoundError(f"signing key {kid[:80]!r} is not in the trust registry")
        return KeyInfo(*row)

    def list(self, principal: str | None = None) -> list[KeyInfo]:
        q = "SELECT kid, principal, status, created, changed, changed_by FROM keys"
        args: tuple[str, ...] = ()
        if principal is not None:
            q, args = q + " WHERE principal = ?", (principal,)
        with self._lock:
            return [KeyInfo(*r) for r in self._db.execute(q + " ORDER BY principal, created", args)]

    def signer_for(self, principal: str) -> Signer:
        kid = self._active_kid(check_principal(principal))
        if kid is None:
            raise NotFoundError(
                f"producer {principal} has no active signing key (eventward trust register {principal})"
            )
        raw = read_secret(self._key_file(principal, kid))
        try:
            key = Ed25519PrivateKey.from_private_bytes(raw)
        except ValueError:
            raise ConfigError(f"signing key file for {principal} ({kid}) is corrupt") from None
        signer = Signer(principal, key)
        if signer.kid != kid:
            raise ConfigError(f"signing key file for {principal} does not hold key {kid}")
        return signer

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- internals -------------------------------------------------------------------------
    def _authorize(self, by: str, principal: str, action: str) -> None:
        check_principal(principal)
        try:
            check(self._authorizer, by, ROTATE_KEYS, ("Producer", principal))
        except AccessDenied:
            self._audit.record(
                action, principal=by, resource=f"Producer::{principal}", outcome=DENIED, reason="forbidden"
            )
            raise

    def _active_kid(self, principal: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT kid FROM keys WHERE principal = ? AND status = ? ORDER BY created DESC LIMIT 1",
                (principal, ACTIVE),
            ).fetchone()
        return row[0] if row else None

    def _key_file(self, principal: str, kid: str) -> Path:
        return self.home.producer_keys / f"{principal}.{kid}.key"

    def _new_key(self, principal: str, by: str, action: str) -> Signer:
        key = Ed25519PrivateKey.generate()
        pub = key.public_key()
        kid = kid_of(pub)
        # The private key is on disk before the registry names it: a crash in between leaves an
        # orphan file, never a registered key nobody can sign with.
        write_secret(
            self._key_file(principal, kid), key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        )
        now = time.time()
        with self._lock, write_txn(self._db, "register key") as db:
            old = [
                r[0]
                for r in db.execute(
                    "SELECT kid FROM keys WHERE principal = ? AND status = ?", (principal, ACTIVE)
                )
            ]
            db.execute(
                "UPDATE keys SET status = ?, changed = ?, changed_by = ? WHERE principal = ? AND status = ?",
                (RETIRED, now, by, principal, ACTIVE),
            )
            db.execute(
                "INSERT INTO keys VALUES (?, ?, ?, ?, ?, ?, ?)",
                (kid, principal, pub.public_bytes(Encoding.Raw, PublicFormat.Raw), ACTIVE, now, now, by),
            )
        for retired in old:  # a retired key never signs again, so its private half goes
            self._key_file(principal, retired).unlink(missing_ok=True)
        self._audit.record(
            action,
            principal=by,
            resource=f"Producer::{principal}",
            outcome=OK,
            kid=kid,
            retired=",".join(old) or None,
        )
        return Signer(principal, key)
