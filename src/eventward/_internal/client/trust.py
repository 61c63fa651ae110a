"""The trust registry: which signing key (kid) speaks for which producer principal.

Seals are only as good as this binding. Keys rotate (the new key signs, the retired one
still verifies the batches it sealed) and are revoked (every batch it sealed is refused,
reason ``revoked_key``). Changing a binding is an authorized (RotateKeys on the producer)
and audited operation. Private keys live in ``Home.producer_keys`` as 0600 files.

Each key has a purpose. A ``seal`` key seals a producer's batches; a ``dead_letter`` key
only seals the dead-letter entries a consumer writes (``<topic>.dlq``), and verifiers refuse
it on any other stream (``dead_letter_key``), so a consumer's key cannot speak for a topic
even where a policy lets its principal publish. A principal holds at most one active key
per purpose. Keys registered before purposes existed are ``seal`` keys (the column's
default), and a principal without a dead-letter key seals its dead letters with its seal key.

Each key also has a seal suite. ``ed25519`` (the default) seals format v1; ``ed25519+ml-dsa-65``
(opt-in, per producer: ``register``/``rotate`` with ``suite=HYBRID``) adds an ML-DSA-65 key
whose public half is stored next to the Ed25519 one under the same kid (column ``mldsa``, NULL
for classical keys). A hybrid key verifies hybrid seals only, so a seal stripped down to its
Ed25519 signature is refused; producers migrate one at a time (mixed fleets verify).
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from eventward._internal.audit.base import DENIED, OK, AuditSink, NullAudit
from eventward._internal.crypto.seal import ED25519, HYBRID, Signer, check_suite, kid_of
from eventward._internal.home import Home, read_secret, write_secret
from eventward._internal.log.sqlite import connect
from eventward._internal.policy.base import ROTATE_KEYS, Authorizer, check
from eventward._internal.store.migrations import CONTROL_SCHEMA
from eventward._internal.store.sqlcompat import PgTables, open_pg_tables, write
from eventward.errors import AccessDenied, ConfigError, ConflictError, InputError, NotFoundError

TRUST_LOCK = 0x65777472  # pg_advisory_xact_lock key of the trust registry's writes ("ewtr")

ACTIVE = "active"
RETIRED = "retired"  # rotated out: verifies what it sealed, signs nothing new
REVOKED = "revoked"  # refused everywhere

SEAL = "seal"  # seals a producer's batches on its topics
DEAD_LETTER = "dead_letter"  # seals dead-letter entries only (streams <topic>.dlq)
PURPOSES = (SEAL, DEAD_LETTER)

_PRINCIPAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@\-]{0,127}\Z")  # \Z: "$" would accept a trailing newline
_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys(
    kid TEXT PRIMARY KEY, principal TEXT NOT NULL, public BLOB NOT NULL, status TEXT NOT NULL,
    created REAL NOT NULL, changed REAL NOT NULL, changed_by TEXT NOT NULL,
    purpose TEXT NOT NULL DEFAULT 'seal')
"""
# Registries made before key purposes: every existing key keeps sealing (purpose 'seal').
_ADD_PURPOSE = "ALTER TABLE keys ADD COLUMN purpose TEXT NOT NULL DEFAULT 'seal'"
# Registries made before hybrid seals: every existing key is Ed25519 alone (NULL).
_ADD_MLDSA = "ALTER TABLE keys ADD COLUMN mldsa BLOB"
# Where the registry's SQLite tables live on PostgreSQL: (qualified name, key column).
TRUST_TABLES = {"keys": (f"{CONTROL_SCHEMA}.trust_keys", "kid")}
_INFO = (
    "SELECT kid, principal, status, created, changed, changed_by, purpose, "
    f"CASE WHEN mldsa IS NULL THEN '{ED25519}' ELSE '{HYBRID}' END FROM keys"
)


def check_principal(principal: str) -> str:
    """Principals name key files, so they are restricted to a filename-safe alphabet."""
    if not isinstance(principal, str) or not _PRINCIPAL.match(principal):
        raise InputError(f"invalid principal name {str(principal)[:60]!r} (letters, digits, '_.@-'; max 128)")
    return principal


def is_enrolled(home: Home, principal: str) -> bool:
    """Whether the home's trust registry holds a non-revoked key of ``principal`` (read-only;
    in the shared database with ``store.backend: postgres``, else trust.db)."""
    from eventward._internal.certstore import is_enrolled as in_trust_db
    from eventward._internal.config import Config

    if Config.load(home.config).store.backend != "postgres":
        return in_trust_db(home.trust_db, principal)
    tables = open_pg_tables(home, TRUST_TABLES, TRUST_LOCK)
    try:
        return tables.execute("SELECT 1 FROM keys WHERE principal = ? AND status != 'revoked' LIMIT 1",
                              (principal,)).fetchone() is not None
    finally:
        tables.close()


def active_suites_in_database(home: Home) -> dict[str, int]:
    """Active keys per seal suite in the shared database of a ``store.backend: postgres`` home
    (counts only; ``{}`` when the database cannot be read, as for an unreadable trust.db)."""
    from eventward.errors import EventwardError

    try:
        tables = open_pg_tables(home, TRUST_TABLES, TRUST_LOCK)
    except EventwardError:
        return {}
    try:
        rows = tables.execute(
            f"SELECT CASE WHEN mldsa IS NULL THEN '{ED25519}' ELSE '{HYBRID}' END, COUNT(*) FROM keys "
            "WHERE status = 'active' GROUP BY 1").fetchall()
    except EventwardError:
        return {}
    finally:
        tables.close()
    return {str(suite): int(n) for suite, n in rows if n}


def check_purpose(purpose: str) -> str:
    if purpose not in PURPOSES:
        raise InputError(f"key purpose must be one of {', '.join(PURPOSES)}")
    return purpose


@dataclass(frozen=True)
class KeyInfo:
    kid: str
    principal: str
    status: str
    created: float
    changed: float  # for a retired key: when it stopped signing
    changed_by: str
    purpose: str = SEAL
    suite: str = ED25519


@dataclass(frozen=True)
class TrustedKey:
    """What seal verification needs to know about a kid."""

    kid: str
    principal: str
    public_key: Ed25519PublicKey
    status: str
    changed: float
    purpose: str = SEAL
    pq_public_key: MLDSA65PublicKey | None = None  # set for a hybrid (Ed25519 + ML-DSA-65) key

    @property
    def suite(self) -> str:
        return ED25519 if self.pq_public_key is None else HYBRID


class TrustRegistry:
    """The kid -> principal bindings: ``trust.db`` in the home, or with ``store.backend: postgres``
    the ``eventward_control.trust_keys`` table every replica shares (same statements, see
    store.sqlcompat). Private key files stay in the home either way."""

    def __init__(
        self, home: Home, authorizer: Authorizer, audit: AuditSink | None = None, *, db: PgTables | None = None
    ) -> None:
        self.home = home
        self._authorizer = authorizer
        self._audit = audit or NullAudit()
        self._lock = threading.Lock()
        if db is not None:  # the schema is the database's (migration 4)
            self._db: sqlite3.Connection | PgTables = db
            home.ensure()
            return
        self._db = connect(home.ensure().trust_db, synchronous="FULL")
        with self._lock, write(self._db, "create trust schema") as conn:
            conn.execute(_SCHEMA)
            columns = {r[1] for r in conn.execute("PRAGMA table_info(keys)")}
            if "purpose" not in columns:
                conn.execute(_ADD_PURPOSE)
            if "mldsa" not in columns:
                conn.execute(_ADD_MLDSA)

    @classmethod
    def open(cls, home: Home, authorizer: Authorizer, audit: AuditSink | None = None) -> TrustRegistry:
        """The home's trust registry, on the backend ``store.backend`` names."""
        from eventward._internal.config import Config

        if Config.load(home.config).store.backend == "postgres":
            return cls(home, authorizer, audit, db=open_pg_tables(home, TRUST_TABLES, TRUST_LOCK))
        return cls(home, authorizer, audit)

    # --- changing bindings (authorized, audited) -------------------------------------------
    def register(self, principal: str, *, by: str, purpose: str = SEAL, suite: str = ED25519) -> Signer:
        """First key of ``principal`` for ``purpose``; ConflictError if it already has one (rotate it)."""
        check_purpose(purpose)
        check_suite(suite)
        self._authorize(by, principal, "trust.register")
        if self._active_kid(principal, purpose):
            raise ConflictError(
                f"{principal} already has an active {purpose} key; rotate it instead"
            )
        return self._new_key(principal, by, "trust.register", purpose, suite, exclusive=True)

    def rotate(self, principal: str, *, by: str, purpose: str = SEAL, suite: str = ED25519) -> Signer:
        """A new active key; the previous one of that purpose is retired (still verifies what it sealed).

        Rotating with ``suite=HYBRID`` is how a producer migrates to hybrid seals."""
        check_purpose(purpose)
        check_suite(suite)
        self._authorize(by, principal, "trust.rotate")
        return self._new_key(principal, by, "trust.rotate", purpose, suite)

    def ensure(self, principal: str, *, by: str, purpose: str = SEAL) -> Signer:
        """The active signer for ``purpose``, registering a first key if there is none (still authorized)."""
        if self._active_kid(check_principal(principal), check_purpose(purpose)):
            return self.signer_for(principal, purpose)
        return self.register(principal, by=by, purpose=purpose)

    def revoke(self, kid: str, *, by: str) -> None:
        info = self.info(kid)
        self._authorize(by, info.principal, "trust.revoke")
        now = time.time()
        with self._lock, write(self._db, "revoke key") as db:
            db.execute(
                "UPDATE keys SET status = ?, changed = ?, changed_by = ? WHERE kid = ?",
                (REVOKED, now, by, kid),
            )
        self._key_file(info.principal, kid).unlink(missing_ok=True)
        self._pq_key_file(info.principal, kid).unlink(missing_ok=True)
        self._audit.record("trust.revoke", principal=by, resource=f"Producer::{info.principal}", kid=kid)

    # --- lookups ---------------------------------------------------------------------------
    def public_key(self, kid: str) -> tuple[str, Ed25519PublicKey, str]:
        """(principal, public key, status); NotFoundError for a kid nobody registered."""
        k = self.resolve(kid)
        return k.principal, k.public_key, k.status

    def resolve(self, kid: str) -> TrustedKey:
        with self._lock:
            row = self._db.execute(
                "SELECT principal, public, status, changed, purpose, mldsa FROM keys WHERE kid = ?", (kid,)
            ).fetchone()
        if row is None:
            raise NotFoundError(f"signing key {kid[:80]!r} is not in the trust registry")
        pq = None if row[5] is None else MLDSA65PublicKey.from_public_bytes(row[5])
        return TrustedKey(kid, row[0], Ed25519PublicKey.from_public_bytes(row[1]), row[2], row[3], row[4], pq)

    def info(self, kid: str) -> KeyInfo:
        with self._lock:
            row = self._db.execute(_INFO + " WHERE kid = ?", (kid,)).fetchone()
        if row is None:
            raise NotFoundError(f"signing key {kid[:80]!r} is not in the trust registry")
        return KeyInfo(*row)

    def list(self, principal: str | None = None) -> list[KeyInfo]:
        q = _INFO
        args: tuple[str, ...] = ()
        if principal is not None:
            q, args = q + " WHERE principal = ?", (principal,)
        with self._lock:
            return [KeyInfo(*r) for r in self._db.execute(q + " ORDER BY principal, created", args)]

    def signer_for(self, principal: str, purpose: str = SEAL) -> Signer:
        """The active key of ``principal`` for ``purpose`` (NotFoundError if it has none)."""
        kid = self._active_kid(check_principal(principal), check_purpose(purpose))
        if kid is None:
            flag = "" if purpose == SEAL else f" --purpose {purpose}"
            raise NotFoundError(
                f"{principal} has no active {purpose} key (eventward trust register {principal}{flag})"
            )
        raw = read_secret(self._key_file(principal, kid))
        try:
            key = Ed25519PrivateKey.from_private_bytes(raw)
        except ValueError:
            raise ConfigError(f"signing key file for {principal} ({kid}) is corrupt") from None
        pq_key = self._load_pq_key(principal, kid)
        signer = Signer(principal, key, pq_key)
        if signer.kid != kid:
            raise ConfigError(f"signing key file for {principal} does not hold key {kid}")
        return signer

    def _load_pq_key(self, principal: str, kid: str) -> MLDSA65PrivateKey | None:
        """The ML-DSA-65 half of a hybrid key (None for a classical one), checked against the
        public key the registry binds to ``kid``: a swapped seed file never signs."""
        with self._lock:
            row = self._db.execute("SELECT mldsa FROM keys WHERE kid = ?", (kid,)).fetchone()
        if row is None or row[0] is None:
            return None
        try:
            pq_key = MLDSA65PrivateKey.from_seed_bytes(read_secret(self._pq_key_file(principal, kid)))
        except ValueError:
            raise ConfigError(f"ML-DSA key file for {principal} ({kid}) is corrupt") from None
        if pq_key.public_key().public_bytes_raw() != row[0]:
            raise ConfigError(f"ML-DSA key file for {principal} does not hold the ML-DSA half of key {kid}")
        return pq_key

    def dead_letter_signer(self, principal: str) -> Signer:
        """The key a consumer seals its dead letters with: its dead-letter key, or for a
        principal registered before key purposes (or one that also produces) its seal key."""
        if self._active_kid(check_principal(principal), DEAD_LETTER):
            return self.signer_for(principal, DEAD_LETTER)
        if self._active_kid(principal, SEAL):
            return self.signer_for(principal, SEAL)
        raise NotFoundError(
            f"{principal} has no signing key for dead letters "
            f"(eventward trust register {principal} --purpose {DEAD_LETTER})"
        )

    def first_dead_letter_key(self, principal: str) -> Signer:
        """The key ``principal`` seals its dead letters with, made on first use if it has none.

        Not gated by RotateKeys: callers only write dead letters inside an operation the policy
        already allowed (Subscribe, replay, redrive), and a ``dead_letter`` key seals nothing but
        ``<topic>.dlq`` entries, so making it grants no more than consuming does. Audited as
        ``trust.register`` by the principal itself. Race-safe: in one write transaction, a key
        another process made meanwhile wins and this one is discarded."""
        try:
            return self.dead_letter_signer(principal)
        except NotFoundError:
            pass
        key = Ed25519PrivateKey.generate()
        pub = key.public_key()
        kid = kid_of(pub)
        write_secret(  # on disk before the registry names it, as in _new_key
            self._key_file(principal, kid), key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        )
        now = time.time()
        with self._lock, write(self._db, "first dead-letter key") as db:
            raced = db.execute(
                "SELECT 1 FROM keys WHERE principal = ? AND status = ? AND purpose IN (?, ?)",
                (principal, ACTIVE, DEAD_LETTER, SEAL),
            ).fetchone()
            if raced is None:
                db.execute(
                    "INSERT INTO keys(kid, principal, public, status, created, changed, changed_by, purpose) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (kid, principal, pub.public_bytes(Encoding.Raw, PublicFormat.Raw), ACTIVE, now, now,
                     principal, DEAD_LETTER),
                )
        if raced is not None:
            self._key_file(principal, kid).unlink(missing_ok=True)
            return self.dead_letter_signer(principal)
        self._audit.record(
            "trust.register",
            principal=principal,
            resource=f"Producer::{principal}",
            outcome=OK,
            reason="first_use",
            kid=kid,
            purpose=DEAD_LETTER,
        )
        return Signer(principal, key)

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

    def _active_kid(self, principal: str, purpose: str = SEAL) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT kid FROM keys WHERE principal = ? AND status = ? AND purpose = ? "
                "ORDER BY created DESC LIMIT 1",
                (principal, ACTIVE, purpose),
            ).fetchone()
        return row[0] if row else None

    def _key_file(self, principal: str, kid: str) -> Path:
        return self.home.producer_keys / f"{principal}.{kid}.key"

    def _pq_key_file(self, principal: str, kid: str) -> Path:
        return self.home.producer_keys / f"{principal}.{kid}.mldsa.key"

    def _new_key(
        self, principal: str, by: str, action: str, purpose: str, suite: str = ED25519, *, exclusive: bool = False
    ) -> Signer:
        key = Ed25519PrivateKey.generate()
        kid = kid_of(key.public_key())
        pq_key = MLDSA65PrivateKey.generate() if suite == HYBRID else None
        # The private keys are on disk before the registry names them: a crash in between leaves
        # orphan files, never a registered key nobody can sign with.
        write_secret(
            self._key_file(principal, kid), key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        )
        if pq_key is not None:
            write_secret(self._pq_key_file(principal, kid), pq_key.private_bytes_raw())  # the 32-byte seed
        try:
            self._install(principal, key.public_key(), by, action, purpose,
                          None if pq_key is None else pq_key.public_key(), exclusive=exclusive)
        except ConflictError:  # another writer won (register raced): this key was never trusted
            self._key_file(principal, kid).unlink(missing_ok=True)
            self._pq_key_file(principal, kid).unlink(missing_ok=True)
            raise
        return Signer(principal, key, pq_key)

    def enroll(
        self,
        principal: str,
        public_key: Ed25519PublicKey,
        *,
        by: str,
        purpose: str = SEAL,
        pq_public_key: MLDSA65PublicKey | None = None,
    ) -> str:
        """Trust a key whose private half never left its service (client mode); returns its kid.
        The previous active key of that purpose is retired, as by ``rotate``. With
        ``pq_public_key`` the key is hybrid: it verifies hybrid seals only."""
        check_purpose(purpose)
        self._authorize(by, principal, "trust.enroll")
        kid = kid_of(public_key)
        with self._lock:
            if self._db.execute("SELECT 1 FROM keys WHERE kid = ?", (kid,)).fetchone():
                raise ConflictError(f"key {kid} is already registered")
        self._install(principal, public_key, by, "trust.enroll", purpose, pq_public_key)
        return kid

    def _install(
        self,
        principal: str,
        pub: Ed25519PublicKey,
        by: str,
        action: str,
        purpose: str,
        pq_pub: MLDSA65PublicKey | None = None,
        *,
        exclusive: bool = False,
    ) -> None:
        """Bind ``pub`` as the active key, retiring the previous one, in one write transaction.
        The checks are repeated under the write lock, so of two writers racing (two replicas
        enrolling one key, or registering a first key) one wins and the other gets ConflictError."""
        kid = kid_of(pub)
        pq_raw = None if pq_pub is None else pq_pub.public_bytes_raw()
        now = time.time()
        with self._lock, write(self._db, "register key") as db:
            old = [
                r[0]
                for r in db.execute(
                    "SELECT kid FROM keys WHERE principal = ? AND status = ? AND purpose = ?",
                    (principal, ACTIVE, purpose),
                )
            ]
            if db.execute("SELECT 1 FROM keys WHERE kid = ?", (kid,)).fetchone():
                raise ConflictError(f"key {kid} is already registered")
            if exclusive and old:
                raise ConflictError(f"{principal} already has an active {purpose} key; rotate it instead")
            db.execute(
                "UPDATE keys SET status = ?, changed = ?, changed_by = ? "
                "WHERE principal = ? AND status = ? AND purpose = ?",
                (RETIRED, now, by, principal, ACTIVE, purpose),
            )
            db.execute(
                "INSERT INTO keys(kid, principal, public, status, created, changed, changed_by, purpose, mldsa) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (kid, principal, pub.public_bytes(Encoding.Raw, PublicFormat.Raw), ACTIVE, now, now, by, purpose,
                 pq_raw),
            )
        for retired in old:  # a retired key never signs again, so its private halves go
            self._key_file(principal, retired).unlink(missing_ok=True)
            self._pq_key_file(principal, retired).unlink(missing_ok=True)
        self._audit.record(
            action,
            principal=by,
            resource=f"Producer::{principal}",
            outcome=OK,
            kid=kid,
            purpose=purpose,
            suite=ED25519 if pq_pub is None else HYBRID,
            retired=",".join(old) or None,
        )
