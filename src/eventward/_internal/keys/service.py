"""KeyService: per-subject data keys, authorized unwrap, crypto-shredding and rotation.

It implements keys.base.DekSource for field encryption. Unwrap is authorized per sensitivity
class (deny by default) and audited; DEKs are cached bounded in entries and time (DekCache:
first in, first out, no entry past its TTL, never walked by the garbage collector), and the
cache is dropped whenever the store's revocation epoch moves, so a ``forget`` in another
process takes effect here within ``revocation_poll`` seconds. Only the keyed subject hash is
ever stored, logged, audited or put in an error: the raw subject id stays with the caller.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import re
import secrets
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from operator import itemgetter
from pathlib import Path
from types import TracebackType

from eventward._internal.audit.base import DENIED, ERROR, OK, AuditSink, NullAudit, meta_list
from eventward._internal.home import Home
from eventward._internal.keys.cache import DekCache, LruTtlCache
from eventward._internal.keys.dek import (
    AAD_CURRENT,
    AAD_V1,
    DEK_BYTES,
    WrappedRow,
    all_kids,
    dek_aad,
    is_kid,
    new_kid,
    row_aad,
    uses_tag_input,
)
from eventward._internal.keys.kms.base import KMS, MAC_LEDGER, MAC_SUBJECT, parse_kek_id
from eventward._internal.keys.kms.local import LocalKMS
from eventward._internal.keys.ledger import ErasureLedger
from eventward._internal.keys.store_base import CLASS_SUBJECT, DekRecord, Erasure, KeyStore
from eventward._internal.keys.stores import open_key_store
from eventward._internal.policy.base import DECRYPT, ENCRYPT, FORGET, HOLD, ROTATE_KEYS, Authorizer, Resource, check
from eventward.errors import (
    AccessDenied,
    ConfigError,
    ConflictError,
    EventwardError,
    InputError,
    KeyDestroyed,
    KeyIntegrityError,
    KeyNotFound,
    KeyServiceError,
    KeyStoreUnavailable,
    LegalHoldError,
)

log = logging.getLogger("eventward.keys")

DEFAULT_CLASSES = ("pii", "payment", "health")
SUBJECT_HASH_CHARS = 32
PSEUDONYM_LEGACY = 1  # pseudonym rows of subjects keyed by their keyed hash before pseudonyms (kind)
MAX_SUBJECT_CHARS = 1024
MAX_REASON_CHARS = 1000
MAX_IN_DOUBT = 1024  # writes whose COMMIT failed, remembered for a retry to settle (oldest dropped)
REASON_CODE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")  # what a forget/hold reason may be
_CLASS = re.compile(r"^[a-z][a-z0-9_\-]{0,31}$")

Progress = Callable[[int, int], None]


def erasures_log_path(home: Home) -> Path:
    return home.keys_db.with_name("erasures.log")


def _check_class(cls: str) -> str:
    # Class names arrive from token headers (attacker-controlled): refuse without echoing them.
    if not isinstance(cls, str) or not _CLASS.match(cls):
        raise InputError("invalid sensitivity class name (lowercase, 1..32 chars)")
    return cls


def _check_reason(reason: str, *, required: bool) -> str:
    """Reasons are short codes (``gdpr-art17``, ``case-2024-117``), refused as free text at this
    API so every client (SDK, CLI, gateway) gets the same rule: free text invites PII into the
    audit log. Never echoes the reason."""
    if not isinstance(reason, str) or (required and not reason.strip()):
        raise InputError("a reason code is required", path="reason", rule="required")
    if reason and not REASON_CODE.fullmatch(reason):
        raise InputError(
            "a reason must be a short code such as 'gdpr-art17' (1..64 lowercase letters, digits, "
            "'.', '_', '-'), not free text",
            path="reason",
            rule="reason_code",
        )
    return reason


def _check_own_kms(kms: KMS, passphrase: str | None, prepare_home: Callable[[], object]) -> None:
    """A caller-supplied KMS is closed if the service cannot be built around it."""
    try:
        if passphrase is not None:
            raise ConfigError("a passphrase protects the local keyring; it cannot be used with another KMS")
        prepare_home()
    except BaseException:
        kms.close()
        raise


# Random 96-bit GCM nonces under one key stay safe (collision chance below 2^-32) up to about
# 2^32 encryptions (NIST SP 800-38D 8.3); a DEK is retired after 2^30, a quarter of that.
DEK_MAX_NONCES = 2**30


@dataclass(frozen=True)
class KeyServiceConfig:
    """``dek_max_nonces``: encryptions (every field and array item) after which a DEK gets a new
    version, counted across processes; ``class_dek_max_uses`` is the same budget for class DEKs,
    kept lower so they also rotate often. ``uses_flush``: counts kept in memory per DEK before
    they are written (a crash forgets at most that many per DEK and process). Encrypt grants are
    audited as counts per (principal, class, topic, type), written every ``audit_every_s``
    seconds or ``audit_every`` key releases, and at close. A granted Encrypt decision is reused
    for ``decision_ttl`` seconds (a revoked grant stops releases within that time)."""

    cache_max: int = 100_000
    cache_ttl: float = 300.0
    class_dek_max_uses: int = 2**20
    class_dek_max_age: float = 86_400.0
    dek_max_nonces: int = DEK_MAX_NONCES
    uses_flush: int = 65_536
    revocation_poll: float = 0.25
    rewrap_chunk: int = 500
    busy_timeout: float = 5.0
    audit_every: int = 100_000
    audit_every_s: float = 5.0
    decision_ttl: float = 1.0


@dataclass(frozen=True)
class ErasureReceipt:
    """Proof of a crypto-shred. Names the subject only by its pseudonym (``subject_hash``), which
    nothing links to the person once the forget is done.

    ``nothing_to_erase``: the subject had no pseudonym (never seen, or already forgotten): an
    explicit record, its reference random. ``closed_at``/``closed_keks``: ``forget --now``
    rotated the classes at once and destroyed these KEK versions then."""

    subject_hash: str
    time: float
    classes: tuple[str, ...]
    destroyed: int  # DEK versions destroyed, all classes
    kek_epochs: dict[str, int]  # class -> current KEK version when the DEKs were destroyed
    purged: bool  # the WAL was truncated: wrapped bytes left every store file
    nothing_to_erase: bool = False
    closed_at: float | None = None
    closed_keks: tuple[str, ...] = ()

    def epoch_closed(self) -> bool:
        """Whether every KEK version that wrapped the destroyed DEKs is already destroyed."""
        return self.closed_at is not None and all(
            f"{c}.v{v}" in self.closed_keks for c, v in self.kek_epochs.items()
        )

    def statement(self) -> str:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.time))
        if self.nothing_to_erase:
            return (f"{when}: nothing to erase: no keys, hold or pseudonym exist for this subject (never "
                    f"seen, or already forgotten); this record's reference is {self.subject_hash}.")
        if not self.destroyed:
            return f"{when}: subject {self.subject_hash} had no keys; erasure recorded in the ledger."
        epochs = ", ".join(f"{c}.v{v}" for c, v in sorted(self.kek_epochs.items()))
        head = (f"{when}: destroyed {self.destroyed} key(s) of subject {self.subject_hash} in "
                f"{', '.join(self.classes)}, and its pseudonym. ")
        if self.epoch_closed():
            closed = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.closed_at or self.time))
            return head + (f"Residual copies (backups, freed pages, WAL, replicas) are unrecoverable since "
                           f"{closed}: KEK versions {epochs} were destroyed then (epoch closed at once).")
        return head + (f"Residual copies (backups, freed pages, WAL, replicas) become unrecoverable once "
                       f"KEK versions {epochs} are destroyed by rotation (keys rotate --due, or forget --now).")


@dataclass(frozen=True)
class RotationReport:
    cls: str
    new_kek_id: str
    destroyed_kek_ids: tuple[str, ...]
    rewrapped: int
    failed: int  # DEKs that failed to unwrap (tampered); their KEK version is kept, not destroyed
    seconds: float


@dataclass(frozen=True)
class ClassStatus:
    cls: str
    kek_id: str
    epoch: int
    live_keks: tuple[str, ...]
    destroyed_keks: tuple[str, ...]
    deks: int
    subjects: int
    erased_keys: int


@dataclass(frozen=True)
class ServiceStatus:
    classes: tuple[ClassStatus, ...]
    holds: int
    erasures: int
    revocation_epoch: int


@dataclass
class _ClassDek:
    rec: DekRecord
    dek: bytes = field(repr=False)
    pending: int = 0
    exhausted: bool = False


@dataclass
class _Uses:
    """Encryptions under one subject DEK: ``base`` as last read or written, ``pending`` since."""

    base: int
    pending: int = 0


def _context(topic: str | None, event_type: str | None) -> dict[str, str] | None:
    if topic is None and event_type is None:
        return None
    ctx = {}
    if topic is not None:
        ctx["topic"] = topic
    if event_type is not None:
        ctx["event_type"] = event_type
    return ctx


class KeyService:
    """Implements keys.base.DekSource. Build with :meth:`init` (new home) or :meth:`open`."""

    takes_context = True  # FieldEncryptor passes topic, event type, nonce count and subject hash

    def __init__(
        self,
        kms: KMS,
        store: KeyStore,
        ledger: ErasureLedger,
        *,
        authorizer: Authorizer,
        audit: AuditSink | None = None,
        clock: Callable[[], float] = time.time,
        config: KeyServiceConfig | None = None,
    ) -> None:
        self.kms = kms
        self.store = store
        self.ledger = ledger
        self.config = config or KeyServiceConfig()
        self._authz = authorizer
        self._audit = audit or NullAudit()
        self._clock = clock
        # kid -> (class, DEK or None when destroyed)
        self.cache = DekCache(self.config.cache_max, self.config.cache_ttl, clock)
        self._current: LruTtlCache[tuple[str, str], str] = LruTtlCache(
            self.config.cache_max, self.config.cache_ttl, clock
        )  # (subject hash, class) -> kid of the current version
        self._hashes: OrderedDict[str, str] = OrderedDict()  # subject id -> pseudonym, oldest first, bounded
        self._hashes_lock = threading.Lock()
        # (subject hash, class) -> (kid, DEK, until): the current version's key in one lookup
        # instead of two LRU lookups (_current, then cache); set with them in _remember, dropped
        # with them (_drop_caches, close) and whenever a key is found destroyed. Bounded.
        self._hot: dict[tuple[str, str], tuple[str, bytes, float]] = {}
        self._class_deks: dict[str, _ClassDek] = {}
        self._class_lock = threading.Lock()
        self._flush_every = max(1, min(1024, self.config.class_dek_max_uses // 16))
        self._uses: dict[str, _Uses] = {}  # subject kid -> encryptions counted
        self._uses_lock = threading.Lock()
        # (principal, class, topic, type) -> [decision valid until (monotonic), releases not yet audited]
        self._releases: dict[tuple[str, str, str | None, str | None], list[float]] = {}
        self._enc_total = 0
        # One lock with _uses_lock: an event whose key and Encrypt decision are both memoised is
        # counted (release and nonces) under one acquisition (encryption_key's hot path), not two.
        self._enc_lock = self._uses_lock
        self._enc_next = time.monotonic() + self.config.audit_every_s
        # (subject, class, principal, topic, type) -> (kid, DEK, until (monotonic), its _Uses, its
        # _releases slot): encryption_key's hot path in one lookup instead of four (pseudonym, _hot,
        # _uses, _releases) and no clock call but one. Entries are made there from those four, under
        # the lock, and hold nothing they do not: every event that drops or replaces one of them
        # (a forget here or seen by the poll, a key found destroyed, a new current version, _uses or
        # _releases cleared, close) clears the memo (_clear_memo, under the lock) and moves
        # _enc_memo_gen, so an entry made from state read before such a clear is never stored. The
        # decision's TTL and the nonce budget are still checked per call. Only with the default
        # clock: an entry's TTL is kept in monotonic time (a test clock is read per call instead).
        self._enc_memo: dict[
            tuple[str, str, str, str | None, str | None], tuple[str, bytes, float, _Uses, list[float]]
        ] = {}
        self._enc_memo_gen = 0
        self._enc_memo_on = clock is time.time and self.config.cache_max > 0 and self.config.cache_ttl > 0
        # Writes whose COMMIT failed (timeout, lost connection) may still have landed: the DEKs
        # (kid -> principal) and erasures (subject lookup -> (pseudonym, time)) a retry settles.
        self._doubt_lock = threading.Lock()
        self._created_in_doubt: OrderedDict[str, object] = OrderedDict()
        self._erased_in_doubt: OrderedDict[str, object] = OrderedDict()
        # Called with "forget" or "rotate" once the ledger or the KMS changed: the deployment anchors
        # the new key state (ledger head, keyring generation) in the audit log.
        self.on_change: Callable[[str], None] | None = None
        self._check_store_binding()
        self._reconcile_ledger()
        self._end_resurrected_epochs()
        self._epoch = store.epoch()
        self._next_poll = time.monotonic() + self.config.revocation_poll
        # Moves whenever cached keys are dropped (a forget here, or seen by the revocation poll):
        # a caller that memoises released keys (a consumer's read batch) drops its memo then.
        self.revocations = 0

    def __repr__(self) -> str:
        return f"KeyService(store={self.store!r}, kms={self.kms!r})"

    # --- construction -----------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        home: Home,
        *,
        authorizer: Authorizer,
        audit: AuditSink | None = None,
        passphrase: str | None = None,
        clock: Callable[[], float] = time.time,
        config: KeyServiceConfig | None = None,
        kms: KMS | None = None,
    ) -> KeyService:
        """``kms`` replaces the home's keyring (e.g. a Pkcs11KMS.open); the service closes it."""
        if kms is None:
            home.require()
            kms = LocalKMS.open(home.keyring, master_key_path=home.master_key, passphrase=passphrase)
        else:
            _check_own_kms(kms, passphrase, home.require)
        return cls._assemble(home, kms, authorizer, audit, clock, config, create=False)

    @classmethod
    def init(
        cls,
        home: Home,
        *,
        authorizer: Authorizer,
        audit: AuditSink | None = None,
        passphrase: str | None = None,
        classes: tuple[str, ...] = DEFAULT_CLASSES,
        clock: Callable[[], float] = time.time,
        config: KeyServiceConfig | None = None,
        kms: KMS | None = None,
    ) -> KeyService:
        """Create the master key (or use the passphrase), the keyring and the key store. A given
        ``kms`` (e.g. a Pkcs11KMS.create) is used instead of a keyring; the service closes it.

        Refused (ConflictError) where a key store already exists: new KEKs could not unwrap its
        keys, so a missing keyring or token must be restored, never re-made next to the store."""
        if home.keys_db.exists():
            if kms is not None:
                kms.close()
            raise ConflictError(
                f"key store {home.keys_db} already exists: 'init' makes the keys of a new home only; "
                "restore the keyring (or token) that belongs to this store"
            )
        if kms is None:
            home.ensure()
            kms = LocalKMS.create(
                home.keyring,
                master_key_path=None if passphrase is not None else home.master_key,
                passphrase=passphrase,
                classes=classes,
            )
        else:
            _check_own_kms(kms, passphrase, home.ensure)
        return cls._assemble(home, kms, authorizer, audit, clock, config, create=True)

    @classmethod
    def _assemble(
        cls,
        home: Home,
        kms: KMS,
        authorizer: Authorizer,
        audit: AuditSink | None,
        clock: Callable[[], float],
        config: KeyServiceConfig | None,
        *,
        create: bool,
    ) -> KeyService:
        """Only ``init`` (create=True) makes a key store: an existing home whose store is missing
        refuses to open (KeyStoreUnavailable) instead of starting over with no keys."""
        store: KeyStore | None = None
        try:  # SQLite in the home, or PostgreSQL (store.backend in eventward.yaml)
            store = open_key_store(home, create=create, busy_timeout=(config or KeyServiceConfig()).busy_timeout)
            ledger = ErasureLedger(erasures_log_path(home), lambda data: kms.mac(MAC_LEDGER, data))
            svc = cls(kms, store, ledger, authorizer=authorizer, audit=audit, clock=clock, config=config)
            if create:  # every class's first KEK epoch starts now (``keys rotate --due`` ages them)
                for c in kms.classes():
                    store.set_meta_text(f"kek_since:{c}", repr(clock()))
            return svc
        except BaseException:
            if store is not None:
                store.close()
            kms.close()
            raise

    def close(self) -> None:
        """Flush use counts and Encrypt audit counts, drop cached keys, close store and KMS (even
        if a flush fails)."""
        try:
            self.flush_audit()
            with self._class_lock:
                pending = [(st.rec.kid, st.pending) for st in self._class_deks.values() if st.pending]
                self._class_deks.clear()
                for kid, n in pending:
                    self._add_uses(kid, n)
            self._flush_uses()
        finally:
            self._hot.clear()
            self._clear_memo()
            self.cache.clear()
            self._current.clear()
            self._hashes.clear()
            self.store.close()
            self.kms.close()

    def __enter__(self) -> KeyService:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _check_store_binding(self) -> None:
        """The store's random id is MAC'd under the KMS: a key store from another deployment (or
        a fresh one put in its place) is refused instead of read as "every key was forged"."""
        tag = self.kms.mac(MAC_LEDGER, b"eventward-key-store:" + self.store.store_id().encode()).hex()
        found = self.store.meta_text("store_tag")
        if found is None:
            self.store.set_meta_text("store_tag", tag)
        elif not hmac.compare_digest(found, tag):
            raise KeyStoreUnavailable(
                f"key store {self.store.path} does not belong to this deployment's KMS (another home's "
                "store, or a replaced file): restore this deployment's key store"
            )

    def _reconcile_ledger(self) -> None:
        """Re-apply file ledger entries the store lacks (restored backup), and copy store entries
        the file lacks (crash between commit and append). Runs on every open."""
        entries = self.ledger.load()
        deleted = 0
        with self.store.transaction():
            for e in entries:
                deleted += self.store.apply_erasure(e)
        seen = {(e.subject_hash, e.time) for e in entries}
        self.ledger.append(*(e for e in self.store.erasures() if (e.subject_hash, e.time) not in seen))
        if deleted:
            self.store.purge()
            log.warning("re-applied the erasure ledger: %d key(s) of forgotten subjects removed", deleted)

    # --- DekSource --------------------------------------------------------------------------
    def subject_hash(self, subject: str) -> str:
        """The subject's pseudonym: random, made with the subject's first key (or hold), kept in
        the key store and destroyed by ``forget``. Events, DEK rows, the ledger, holds and the
        audit log carry it; only the store's pseudonym row links it to the person (by a keyed
        lookup), so after ``forget`` nothing links the events to the person. Memoised (bounded,
        ``cache_max`` ids, dropped with the key caches): a producer needs it per event."""
        p = self._hashes.get(subject) if type(subject) is str else None
        if p is not None:
            return p
        found = self._pseudonym(subject, create=True)
        assert found is not None
        return found

    def known_subject(self, subject: str) -> str | None:
        """The subject's pseudonym if it has one (keys or a hold), else None: never creates one,
        so a lookup of a forgotten or unknown subject leaves no trace."""
        p = self._hashes.get(subject) if type(subject) is str else None
        return p if p is not None else self._pseudonym(subject, create=False)

    def _lookup(self, subject: str) -> str:
        """Keyed hash of the subject id: the pseudonym row's lookup key, stored nowhere else."""
        if not isinstance(subject, str) or not subject or len(subject) > MAX_SUBJECT_CHARS:
            raise InputError(f"a data-subject id must be a string of 1..{MAX_SUBJECT_CHARS} characters")
        try:
            raw = subject.encode()
        except UnicodeEncodeError:  # lone surrogates, e.g. undecodable bytes from argv or stdin
            raise InputError("a data-subject id must be valid Unicode text") from None
        return self.kms.mac(MAC_SUBJECT, raw).hex()[:SUBJECT_HASH_CHARS]

    def _pseudonym(self, subject: str, *, create: bool) -> str | None:
        h = self._lookup(subject)
        p = self.store.pseudonym(h)
        if p is None:
            if self.store.legacy_subject(h):  # keys made before pseudonyms: their name is the hash
                p = self.store.add_pseudonym(h, h, self._clock(), kind=PSEUDONYM_LEGACY)
            elif not create:
                return None
            else:
                p = self.store.add_pseudonym(h, secrets.token_hex(SUBJECT_HASH_CHARS // 2), self._clock())
        self._memo(subject, p)
        return p

    def _memo(self, subject: str, p: str) -> None:
        if self.config.cache_max > 0:
            with self._hashes_lock:
                if len(self._hashes) >= self.config.cache_max:
                    self._hashes.popitem(last=False)  # the oldest id, in O(1)
                self._hashes[subject] = p

    def subject_hashes(self, subjects: Iterable[str]) -> dict[str, str]:
        """``subject_hash`` for many subjects (a batch): those not memoised are resolved with one
        store query for their pseudonyms, and the new ones recorded in one transaction."""
        out: dict[str, str] = {}
        todo: dict[str, str] = {}  # lookup -> subject
        seen: set[str] = set()
        for subject in subjects:
            p = self._hashes.get(subject) if type(subject) is str else None
            if p is not None:
                out[subject] = p
            elif subject not in seen:
                todo[self._lookup(subject)] = subject
                seen.add(subject)
        if not todo:
            return out
        found = self.store.pseudonyms(todo)
        missing = [lk for lk in todo if lk not in found]
        if missing:
            legacy = self.store.legacy_subjects(missing)  # keys made before pseudonyms: named by the hash
            found.update(self.store.add_pseudonyms(
                [(lk, lk, PSEUDONYM_LEGACY) if lk in legacy else (lk, secrets.token_hex(SUBJECT_HASH_CHARS // 2), 2)
                 for lk in missing],
                self._clock(),
            ))
        for lk, subject in todo.items():
            out[subject] = found[lk]
            self._memo(subject, found[lk])
        return out

    def encryption_key(
        self,
        subject: str | None,
        cls: str,
        *,
        principal: str,
        topic: str | None = None,
        event_type: str | None = None,
        nonces: int = 1,
    ) -> tuple[str, bytes]:
        """The current DEK of (subject, class), or the class DEK, if ``principal`` may Encrypt
        ``cls`` (topic and event type in the Cedar context). ``nonces`` is how many values the
        caller will encrypt with it: counted against the DEK's nonce budget."""
        if type(subject) is str:  # the hot path: decision, pseudonym and key all memoised
            now = time.monotonic()
            if now >= self._next_poll:  # _poll, its test inlined: before the pseudonym (a forget
                self._poll()  # elsewhere drops the memoised one)
                now = time.monotonic()
            cfg = self.config
            lock = self._uses_lock  # is _enc_lock; acquire/release: half the cost of ``with``
            memo_key = (subject, cls, principal, topic, event_type)
            m = self._enc_memo.get(memo_key)
            if m is not None and m[2] > now:  # all four lookups below in one (see _enc_memo)
                u, slot = m[3], m[4]
                lock.acquire()
                try:
                    if slot[0] > now and (
                        u.base + u.pending + nonces <= cfg.dek_max_nonces and u.pending + nonces < cfg.uses_flush
                    ):
                        slot[1] += 1
                        self._enc_total += 1
                        u.pending += nonces
                        due = self._enc_total >= cfg.audit_every or now >= self._enc_next
                    else:
                        due = None
                finally:
                    lock.release()
                if due is not None:
                    if due:
                        self.flush_audit()
                    return m[0], m[1]
            gen = self._enc_memo_gen  # before the reads an entry is made from
            h = self._hashes.get(subject)
            hot = None if h is None else self._hot.get((h, cls))
            if hot is not None and hot[2] > (at := self._clock()):
                # One lock for the release and the nonces when the Encrypt decision and the key's
                # use count are both memoised and no flush is due; else nothing is counted here and
                # the full path (_release, then _spend) runs.
                lock.acquire()
                try:
                    slot = self._releases.get((principal, cls, topic, event_type))
                    u = self._uses.get(hot[0])
                    if slot is not None and slot[0] > now and u is not None and (
                        u.base + u.pending + nonces <= cfg.dek_max_nonces and u.pending + nonces < cfg.uses_flush
                    ):
                        slot[1] += 1
                        self._enc_total += 1
                        u.pending += nonces
                        due = self._enc_total >= cfg.audit_every or now >= self._enc_next
                        if self._enc_memo_on and gen == self._enc_memo_gen and self._hot.get((h, cls)) is hot:
                            if len(self._enc_memo) >= cfg.cache_max:
                                self._clear_memo_locked()
                            self._enc_memo[memo_key] = (hot[0], hot[1], now + (hot[2] - at), u, slot)
                    else:
                        due = None
                finally:
                    lock.release()
                if due is not None:
                    if due:
                        self.flush_audit()
                    return hot[0], hot[1]
        self._release(principal, cls, topic, event_type)
        if subject is None:
            return self._class_key(cls, principal, nonces)
        self._poll()  # before the pseudonym: a forget elsewhere drops the memoised one
        return self._subject_key(self.subject_hash(subject), cls, principal, nonces)

    def unmemoised(self, wanted: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """The (subject, class) pairs whose current key ``encryption_key`` would not find memoised:
        what a batch caller (FieldEncryptor.prepare_many) still resolves with ``encryption_keys``;
        the rest cost it nothing (no release counted for a key the event will ask for anyway).
        A memo a forget elsewhere made stale is still caught by ``encryption_key``'s own poll."""
        hashes, hot, now = self._hashes, self._hot, self._clock()
        out: list[tuple[str, str]] = []
        for subject, cls in wanted:
            h = hashes.get(subject)
            entry = None if h is None else hot.get((h, cls))
            if entry is None or entry[2] <= now:
                out.append((subject, cls))
        return out

    def encryption_keys(
        self,
        wanted: Sequence[tuple[str | None, str, int]],
        *,
        principal: str,
        topic: str | None = None,
        event_type: str | None = None,
    ) -> list[tuple[str, bytes, str | None]]:
        """``encryption_key`` for a whole batch of (subject or None, class, nonces): (kid, DEK,
        subject hash) each, in order. Encrypt is decided for every item before any key is made.
        Subjects and keys not memoised are resolved with one store query each (pseudonyms, then
        current keys, ``IN (...)``), unwrapped in one KMS call where the KMS allows, and the
        missing keys made in one transaction (one fsync) with one ``key.create`` record per class
        (count, first and last kid). Two creators of one key converge on one winner as with
        ``encryption_key`` (UNIQUE subject, class, version; the loser re-reads)."""
        for _, cls, _ in wanted:
            self._release(principal, cls, topic, event_type)
        self._poll()
        hashes = self.subject_hashes(s for s, _, _ in wanted if s is not None)
        out: list[tuple[str, bytes, str | None] | None] = [None] * len(wanted)
        pending: dict[tuple[str, str], list[int]] = {}
        now = self._clock()
        for i, (subject, cls, n) in enumerate(wanted):
            if subject is None:
                out[i] = (*self._class_key(cls, principal, n), None)
                continue
            h = hashes[subject]
            hot = self._hot.get((h, cls))
            if hot is not None and hot[2] > now and self._spend(hot[0], None, n):
                out[i] = (hot[0], hot[1], h)
            else:
                pending.setdefault((h, cls), []).append(i)
        if pending:
            self._resolve_batch(wanted, pending, out, principal)
        return out  # type: ignore[return-value]

    def _resolve_batch(
        self,
        wanted: Sequence[tuple[str | None, str, int]],
        pending: dict[tuple[str, str], list[int]],
        out: list[tuple[str, bytes, str | None] | None],
        principal: str,
    ) -> None:
        """encryption_keys' misses: one store read, one unwrap call, one creating transaction."""
        rows = self.store.current_deks(pending)
        use: list[tuple[tuple[str, str], DekRecord]] = []
        create: dict[tuple[str, str], int] = {}
        for pair, idx in pending.items():
            rec = rows.get(pair)
            need = sum(wanted[i][2] for i in idx)
            if rec is None:
                create[pair] = 1
            elif rec.fmt < AAD_CURRENT or not self._uses_authentic(rec) or (
                rec.uses + need > self.config.dek_max_nonces
            ):
                create[pair] = rec.version + 1  # retired for new data
            else:
                use.append((pair, rec))
        keys: dict[tuple[str, str], tuple[DekRecord, bytes]] = {}
        if use:
            many = getattr(self.kms, "unwrap_many", None)  # LocalKMS: one call for the batch
            if many is not None:
                deks: list[bytes | EventwardError] = many([(r.kek_id, r.wrapped, _row_aad(r)) for _, r in use])
            else:
                deks = [self._unwrap(r) for _, r in use]
            for (pair, rec), dek in zip(use, deks, strict=True):
                if type(dek) is not bytes:
                    raise dek  # type: ignore[misc]
                keys[pair] = (rec, dek)
        if create:
            keys.update(self._create_many(create, principal))
        for pair, idx in pending.items():
            rec, dek = keys[pair]
            if self._created_in_doubt:
                self._settle_create(rec)
            self._remember(rec, dek)
            for i in idx:
                n = wanted[i][2]
                if self._spend(rec.kid, rec, n):
                    out[i] = (rec.kid, dek, pair[0])
                else:  # this process used up the budget meanwhile: the one-key path starts a new version
                    out[i] = (*self._subject_key(pair[0], pair[1], principal, n), pair[0])

    def _create_many(
        self, create: dict[tuple[str, str], int], principal: str
    ) -> dict[tuple[str, str], tuple[DekRecord, bytes]]:
        """``_create`` for many (subject hash, class) -> version in one store transaction."""
        made: dict[tuple[str, str], tuple[DekRecord, bytes]] = {}
        try:
            with self.store.transaction():
                # Wrapped under the store's write lock, as in _create (no DEK under a just-destroyed KEK).
                if len(self.store.live_pseudonyms({h for h, _ in create})) < len({h for h, _ in create}):
                    self._drop_caches()  # forgotten meanwhile: a new key under the old pseudonym would relink
                    raise KeyDestroyed("a subject was forgotten meanwhile; retry to start a new pseudonym")
                at = self._clock()
                for (h, cls), version in create.items():
                    dek = os.urandom(DEK_BYTES)
                    made[h, cls] = (self.wrap_record(new_kid(), h, cls, version, dek, at), dek)
                inserted = self.store.insert_deks(rec for rec, _ in made.values())
        except KeyStoreUnavailable:
            for rec, _ in made.values():  # the COMMIT may land after all: settled on a retry
                self._in_doubt(self._created_in_doubt, rec.kid, principal)
            raise
        losers = [pair for pair, (rec, _) in made.items() if rec.kid not in inserted]
        if losers:  # another process made these first: converge on its keys
            winners = self.store.current_deks(losers)
            for pair in losers:
                w = winners.get(pair)
                if w is None:  # erased in between: nothing to converge on
                    raise KeyDestroyed(f"the keys of subject {pair[0]} in {pair[1]} were destroyed meanwhile")
                made[pair] = (w, self._unwrap(w))
        kids: dict[str, list[str]] = {}
        for (_, cls), (rec, _) in made.items():
            if rec.kid in inserted:
                kids.setdefault(cls, []).append(rec.kid)
        for cls, ks in sorted(kids.items()):
            self._audit.record("key.create", principal=principal, resource=f"class:{cls}", count=len(ks),
                               kid_first=min(ks), kid_last=max(ks))
        log.debug("created %d key(s) in one transaction", sum(map(len, kids.values())))
        return made

    def _subject_key(self, h: str, cls: str, principal: str, nonces: int) -> tuple[str, bytes]:
        """The current DEK of (subject hash, class), made or renewed as needed; nonces counted."""
        hot = self._hot.get((h, cls))
        if hot is not None and hot[2] > self._clock() and self._spend(hot[0], None, nonces):
            return hot[0], hot[1]
        kid = self._current.get((h, cls))
        if kid is not None:
            hit = self.cache.get(kid)
            if hit is not None and hit[1] is not None and self._spend(kid, None, nonces):
                return kid, hit[1]
        rec = self.store.current_dek(h, cls)
        if rec is None:
            rec, dek = self._create(h, cls, 1, principal)
        elif rec.fmt < AAD_CURRENT or not self._uses_authentic(rec) or (
            rec.uses + nonces > self.config.dek_max_nonces
        ):
            rec, dek = self._create(h, cls, rec.version + 1, principal)  # retired for new data
        else:
            dek = self._unwrap(rec)
        if not self._spend(rec.kid, rec, nonces):
            rec, dek = self._create(h, cls, rec.version + 1, principal)
            self._spend(rec.kid, rec, nonces)
        if self._created_in_doubt:
            self._settle_create(rec)
        self._remember(rec, dek)
        return rec.kid, dek

    def _in_doubt(self, book: OrderedDict[str, object], key: str, value: object) -> None:
        with self._doubt_lock:
            book[key] = value
            while len(book) > MAX_IN_DOUBT:
                book.popitem(last=False)

    def _settle_create(self, rec: DekRecord) -> None:
        """A DEK whose creating COMMIT failed but landed (the retry found it): audit its creation now."""
        with self._doubt_lock:
            principal = self._created_in_doubt.pop(rec.kid, None)
        if isinstance(principal, str):
            resource = f"class:{rec.cls}" if rec.subject_hash == CLASS_SUBJECT else f"subject:{rec.subject_hash}"
            self._audit.record("key.create", principal=principal, resource=resource, kid=rec.kid, kek=rec.kek_id,
                               version=rec.version, settled=True)

    def _landed_erasure(self, subject: str) -> Erasure | None:
        """The erasure of ``subject`` whose COMMIT failed in this process, if it landed after all."""
        with self._doubt_lock:
            doubt = self._erased_in_doubt.pop(self._lookup(subject), None) if self._erased_in_doubt else None
        return None if doubt is None else self._landed(doubt)  # type: ignore[arg-type]

    def _landed(self, doubt: tuple[str, float, str, str]) -> Erasure | None:
        """Read under the store's write lock, which the in-doubt transaction held: it has ended, so
        its erasure row is there now or never will be."""
        with self.store.transaction():
            return next((e for e in self.store.erasures() if (e.subject_hash, e.time) == doubt[:2]), None)

    def settle_erasures(self) -> list[tuple[ErasureReceipt, str, str]]:
        """Finish the erasures whose COMMIT failed in this process but landed (ledger, purge, audit),
        whether or not their caller retries here: a retry through another replica finds the subject
        already gone. Returns (receipt, principal, reason) of each; ``serve`` runs this periodically
        (``Deployment.settle_in_doubt`` then issues the erasure certificates)."""
        with self._doubt_lock:
            pending = list(self._erased_in_doubt.items())
        done = []
        for lookup, doubt in pending:
            with self._doubt_lock:
                if self._erased_in_doubt.pop(lookup, None) is None:
                    continue  # a retry of that forget took it meanwhile
            try:
                landed = self._landed(doubt)  # type: ignore[arg-type]
            except KeyServiceError:
                self._in_doubt(self._erased_in_doubt, lookup, doubt)  # the database is still away: later
                raise
            if landed is not None:
                h, _, principal, reason = doubt  # type: ignore[misc]
                done.append((self._finish_erasure(h, landed, principal, reason), principal, reason))
        return done

    def _finish_erasure(self, h: str, erasure: Erasure, principal: str, reason: str) -> ErasureReceipt:
        """What follows a committed erasure: caches dropped, file ledger, purge, the audit record."""
        self._epoch = self.store.epoch()
        self._drop_caches()
        self.ledger.append(erasure)
        purged = self.store.purge()
        kek_epochs = {c: self.kms.epoch(c) for c in erasure.classes}
        receipt = ErasureReceipt(h, erasure.time, erasure.classes, erasure.destroyed, kek_epochs, purged)
        self._audit.record(
            "key.forget", principal=principal, resource=f"subject:{h}", outcome=OK, reason=reason,
            classes=meta_list(erasure.classes), class_count=len(erasure.classes), destroyed=erasure.destroyed,
            purged=purged, kek_epochs=meta_list([f"{c}.v{v}" for c, v in sorted(kek_epochs.items())]),
        )
        log.info("forgot subject %s: %d key(s) destroyed in %s", h, erasure.destroyed, list(erasure.classes))
        if self.on_change is not None:
            self.on_change("forget")
        return receipt

    # --- nonce budget -----------------------------------------------------------------------
    def _spend(self, kid: str, rec: DekRecord | None, n: int) -> bool:
        """Count ``n`` encryptions under a subject DEK; False when they would exceed its budget
        (the caller starts a new version). Counts reach the store every ``uses_flush`` per DEK,
        so every process's encryptions add up to one total."""
        cfg = self.config
        with self._uses_lock:
            u = self._uses.get(kid)
            if u is None:
                if rec is None:
                    return False  # not counted in this process yet: the caller re-reads the row
                if len(self._uses) >= max(1, cfg.cache_max):
                    self._flush_uses_locked()
                u = self._uses[kid] = _Uses(rec.uses)
            elif rec is not None:
                u.base = max(u.base, rec.uses)  # other processes' counts, as last written
            if u.base + u.pending + n > cfg.dek_max_nonces:
                return False
            u.pending += n
            if u.pending >= cfg.uses_flush:
                u.base, u.pending = self._add_uses(kid, u.pending), 0
        return True

    def _flush_uses(self) -> None:
        with self._uses_lock:
            self._flush_uses_locked()

    def _flush_uses_locked(self) -> None:
        """Write every pending count in one store transaction (one fsync, not one per DEK)."""
        pending = [(kid, u.pending) for kid, u in self._uses.items() if u.pending]
        self._uses.clear()
        self._clear_memo_locked()  # its entries count into these _Uses
        if pending:
            with self.store.transaction():
                for kid, n in pending:
                    self._add_uses(kid, n)

    def _uses_authentic(self, rec: DekRecord) -> bool:
        """The row's use counter carries a valid MAC (format-1 rows have none: never trusted)."""
        if rec.fmt < AAD_CURRENT:
            return False
        want = self.kms.mac(MAC_LEDGER, uses_tag_input(rec.kid, rec.uses))
        return hmac.compare_digest(rec.uses_tag, want)

    def _add_uses(self, kid: str, n: int) -> int:
        """Add ``n`` to a DEK's authenticated use counter; returns the new total. A counter whose
        MAC does not verify (edited in the database) counts as exhausted: the DEK is retired."""
        with self.store.transaction():
            rec = self.store.get_dek(kid)
            if rec is None:
                return 0
            if not self._uses_authentic(rec):
                log.error("use counter of key %s fails authentication; retiring the key", kid)
                return max(self.config.dek_max_nonces, self.config.class_dek_max_uses)
            total = rec.uses + n
            tag = self.kms.mac(MAC_LEDGER, uses_tag_input(kid, total))
            self.store.set_uses(kid, rec.uses, total, tag)
            return total

    # --- Encrypt audit ----------------------------------------------------------------------
    def _release(self, principal: str, cls: str, topic: str | None, event_type: str | None) -> None:
        """Authorize Encrypt (a granted decision is reused for ``decision_ttl`` seconds, as the
        producer does for Publish) and count the release for the batched audit record."""
        key = (principal, cls, topic, event_type)
        now = time.monotonic()
        with self._enc_lock:
            slot = self._releases.get(key)
            if slot is not None and slot[0] > now:
                slot[1] += 1
                self._enc_total += 1
                due = self._enc_total >= self.config.audit_every or now >= self._enc_next
            else:
                slot = None
        if slot is None:
            _check_class(cls)
            try:
                check(self._authz, principal, ENCRYPT, ("Class", cls), _context(topic, event_type))
            except AccessDenied:
                self._audit.record("key.encrypt", principal=principal, resource=f"class:{cls}", outcome=DENIED,
                                   reason="not_authorized", topic=topic or "", event_type=event_type or "")
                raise
            with self._enc_lock:
                slot = self._releases.setdefault(key, [0.0, 0])
                slot[0] = now + self.config.decision_ttl
                slot[1] += 1
                self._enc_total += 1
                due = self._enc_total >= self.config.audit_every or now >= self._enc_next or len(
                    self._releases) >= 10_000
        if due:
            self.flush_audit()

    def flush_audit(self) -> None:
        """Write the Encrypt key releases counted since the last flush: one audit record per
        (principal, class, topic, type) with its count, never one per call."""
        with self._enc_lock:
            counts = [(k, int(v[1])) for k, v in self._releases.items() if v[1]]
            if len(self._releases) >= 10_000:
                self._releases.clear()
                self._clear_memo_locked()  # its entries count into these slots
            else:
                for v in self._releases.values():
                    v[1] = 0
            self._enc_total = 0
            self._enc_next = time.monotonic() + self.config.audit_every_s
        for (principal, cls, topic, event_type), n in sorted(counts, key=lambda kv: tuple(map(str, kv[0]))):
            self._audit.record("key.encrypt", principal=principal, resource=f"class:{cls}", outcome=OK,
                               count=n, topic=topic or "", event_type=event_type or "")

    def decryption_key(
        self,
        kid: str,
        cls: str,
        *,
        principal: str,
        topic: str | None = None,
        event_type: str | None = None,
        subject_hash: str | None = None,
    ) -> bytes:
        """The DEK ``kid`` if ``principal`` may Decrypt ``cls`` (topic and event type in the Cedar
        context). A kid the store lacks is KeyDestroyed when a tombstone or the erasure ledger
        (for ``subject_hash``) says so, KeyStoreUnavailable when the store is not the one opened
        (nothing may then be judged forged), and KeyNotFound only from an intact store."""
        if not is_kid(kid):
            raise KeyNotFound("malformed key id")
        _check_class(cls)
        resource = f"class:{cls}"
        self._authorize(principal, DECRYPT, ("Class", cls), "key.unwrap", resource,
                        _context(topic, event_type), kid=kid)
        self._poll()
        hit = self.cache.get(kid)
        if hit is not None:
            if hit[0] != cls:
                raise KeyNotFound(f"no key {kid} in class {cls}")
            if hit[1] is None:
                raise KeyDestroyed(f"key {kid} was destroyed (crypto-shredded)")
            return hit[1]
        rec = self.store.get_dek(kid)
        if rec is None or rec.cls != cls:
            self._absent(kid, cls, subject_hash, rec, principal)
        assert rec is not None
        try:
            dek = self._unwrap(rec)
        except (KeyDestroyed, KeyNotFound, KeyIntegrityError) as e:
            self._audit.record("key.unwrap", principal=principal, resource=resource, outcome=DENIED,
                               reason=e.code, kid=kid, kek=rec.kek_id)
            raise
        self.cache.put(kid, (cls, dek))
        self._audit.record("key.unwrap", principal=principal, resource=resource, outcome=OK,
                           kid=kid, kek=rec.kek_id)
        return dek

    def decryption_keys(
        self,
        wanted: Iterable[tuple[str, str, str | None]],
        *,
        principal: str,
        topic: str | None = None,
        event_type: str | None = None,
    ) -> dict[tuple[str, str], bytes | EventwardError]:
        """``decryption_key`` for a whole read batch: each (kid, class, subject hash) wanted, by
        (kid, class), is the DEK or the refusal ``decryption_key`` would raise (AccessDenied,
        KeyDestroyed, KeyNotFound, KeyIntegrityError, InputError for a malformed class).

        Batch-native: Decrypt is decided once per class, the keys not cached are read with one
        ``SELECT ... IN`` per chunk and unwrapped once each, and the releases are audited as one
        ``key.unwrap`` record per class (count, keys unwrapped, first and last kid in sort order,
        topic, type) instead of one per key; a refusal is one record per class and reason too.
        KeyServiceError (KMS or store unavailable) propagates: the caller fails closed."""
        out: dict[tuple[str, str], bytes | EventwardError] = {}
        items = list(dict.fromkeys(wanted))
        decisions: dict[str, AccessDenied | InputError | None] = {}
        refused: dict[tuple[str, str], list[str]] = {}  # (class, reason) -> kids
        for cls in dict.fromkeys([it[1] for it in items]):  # each class once, in order of appearance
            try:
                _check_class(cls)
                check(self._authz, principal, DECRYPT, ("Class", cls), _context(topic, event_type))
                decisions[cls] = None
            except (InputError, AccessDenied) as e:
                decisions[cls] = e
        kids = [it[0] for it in items]
        if any(decisions.values()) or not all_kids(kids):
            todo: list[tuple[str, str, str | None]] = []
            for item in items:  # per key: a refused class or a malformed kid among them
                kid, cls, _ = item
                denial = decisions[cls]
                if isinstance(denial, InputError):
                    out[kid, cls] = denial
                elif not is_kid(kid):
                    out[kid, cls] = KeyNotFound("malformed key id")
                elif denial is not None:
                    out[kid, cls] = denial
                    refused.setdefault((cls, "not_authorized"), []).append(kid)
                else:
                    todo.append(item)
            kids = [it[0] for it in todo]
        else:
            todo = items  # the common batch: every class granted, every kid well formed
        self._poll()
        released: dict[str, list[str]] = {}
        unwrapped: dict[str, int] = {}
        hits = self.cache.get_many(kids)
        if hits.count(None) == len(hits):
            misses = todo  # a consumer of many subjects: nothing cached
        else:
            misses = []
            for item, hit in zip(todo, hits, strict=True):
                kid, cls, _ = item
                if hit is None:
                    misses.append(item)
                elif hit[0] != cls:
                    out[kid, cls] = KeyNotFound(f"no key {kid} in class {cls}")
                elif hit[1] is None:
                    out[kid, cls] = KeyDestroyed(f"key {kid} was destroyed (crypto-shredded)")
                else:
                    out[kid, cls] = hit[1]
                    released.setdefault(cls, []).append(kid)
            kids = [it[0] for it in misses]
        rows = self._wrapped_rows(kids) if misses else {}
        batch = getattr(self.kms, "unwrap_batch", None)  # LocalKMS: the keyring checked once, not per key
        try:
            with batch() if batch is not None and misses else contextlib.nullcontext():
                self._unwrap_rows(misses, rows, principal, out, released, unwrapped, refused)
        finally:  # an outage half way: what was unwrapped (and cached) is on record all the same
            self._audit_batch(principal, refused, released, unwrapped,
                              {"topic": topic or "", "event_type": event_type or ""})
        return out

    def _wrapped_rows(self, kids: list[str]) -> dict[str, WrappedRow]:
        """The store's rows of ``kids`` as dek.WrappedRow tuples: ``wrapped_deks`` (one query, no
        DekRecord per row), or ``get_deks`` of a store without it."""
        fetch = getattr(self.store, "wrapped_deks", None)
        if fetch is not None:
            return fetch(kids)  # type: ignore[no-any-return]
        return {k: (r.kid, r.cls, r.subject_hash, r.version, r.kek_id, r.wrapped, r.created, r.fmt)
                for k, r in self.store.get_deks(kids).items()}

    def _unwrap_rows(
        self,
        misses: list[tuple[str, str, str | None]],
        rows: dict[str, WrappedRow],
        principal: str,
        out: dict[tuple[str, str], bytes | EventwardError],
        released: dict[str, list[str]],
        unwrapped: dict[str, int],
        refused: dict[tuple[str, str], list[str]],
    ) -> None:
        """decryption_keys' store misses: each row unwrapped once (one ``unwrap_many`` call when
        the KMS has it), its outcome in ``out``; what was unwrapped is cached even when an
        outage stops the loop half way. A row whose columns do not even have their types (a
        tampered store) is refused as KeyIntegrityError, like a wrapped key that fails to open."""
        fresh: list[tuple[str, tuple[str, bytes | None]]] = []
        try:
            found: list[tuple[str, str, WrappedRow]] = []
            for kid, cls, shash in misses:
                row = rows.get(kid)
                if row is None or row[1] != cls:
                    try:  # raises; its refusal is audited there
                        self._absent(kid, cls, shash, None if row is None else _FOUND, principal)
                    except (KeyDestroyed, KeyNotFound) as e:
                        out[kid, cls] = e
                    continue
                found.append((kid, cls, row))
            items = _unwrap_items(found)
            many = getattr(self.kms, "unwrap_many", None)  # LocalKMS, PKCS#11: one call for the batch
            opened: list[bytes | EventwardError] | None = None
            if many is not None and items and all(type(it) is tuple for it in items):
                opened = many(items)
                if all(type(d) is bytes for d in opened):  # every key opened: bookkeeping per class
                    self._opened(found, opened, out, fresh, released, unwrapped)  # type: ignore[arg-type]
                    return
            good = [it for it in items if type(it) is tuple]
            deks: Iterable[bytes | EventwardError]
            if opened is not None:
                deks = iter(opened)
            elif many is not None:
                deks = iter(many(good)) if good else iter(())
            else:
                deks = (self._kms_unwrap_or_refusal(*it) for it in good)
            for (kid, cls, _), item in zip(found, items, strict=True):
                dek = next(deks) if type(item) is tuple else item
                if type(dek) is not bytes:
                    out[kid, cls] = dek  # type: ignore[assignment]
                    refused.setdefault((cls, dek.code), []).append(kid)  # type: ignore[union-attr]
                    continue
                fresh.append((kid, (cls, dek)))
                out[kid, cls] = dek
                released.setdefault(cls, []).append(kid)
                unwrapped[cls] = unwrapped.get(cls, 0) + 1
        finally:
            self.cache.put_many(fresh)

    def _opened(
        self,
        found: list[tuple[str, str, WrappedRow]],
        deks: list[bytes],
        out: dict[tuple[str, str], bytes | EventwardError],
        fresh: list[tuple[str, tuple[str, bytes | None]]],
        released: dict[str, list[str]],
        unwrapped: dict[str, int],
    ) -> None:
        """_unwrap_rows' outcome when every found row's DEK opened (a consumer's usual batch): the
        same entries as its loop, filled a class at a time instead of a key at a time (the cache's
        too, when the batch is of one class)."""
        kids = list(map(_FIRST, found))
        classes = list(map(_SECOND, found))
        out.update(zip(zip(kids, classes, strict=True), deks, strict=True))
        one = classes[0]
        if classes.count(one) == len(classes):
            self.cache.put_class(one, kids, deks)
            released.setdefault(one, []).extend(kids)
            unwrapped[one] = unwrapped.get(one, 0) + len(kids)
            return
        fresh.extend(zip(kids, zip(classes, deks, strict=True), strict=True))
        for kid, cls in zip(kids, classes, strict=True):
            released.setdefault(cls, []).append(kid)
            unwrapped[cls] = unwrapped.get(cls, 0) + 1

    def _kms_unwrap_or_refusal(self, kek_id: str, wrapped: bytes, aad: bytes) -> bytes | EventwardError:
        """``kms.unwrap``, or the refusal it raised; an outage propagates."""
        try:
            return self.kms.unwrap(kek_id, wrapped, aad)
        except (KeyDestroyed, KeyNotFound, KeyIntegrityError) as e:
            return e

    def _audit_batch(self, principal: str, refused: dict[tuple[str, str], list[str]],
                     released: dict[str, list[str]], unwrapped: dict[str, int], where: dict[str, str]) -> None:
        for (cls, reason), kids in sorted(refused.items()):
            self._audit.record("key.unwrap", principal=principal, resource=f"class:{cls}", outcome=DENIED,
                               reason=reason, count=len(kids), kid_first=min(kids), kid_last=max(kids), **where)
        for cls, kids in sorted(released.items()):
            self._audit.record("key.unwrap", principal=principal, resource=f"class:{cls}", outcome=OK,
                               count=len(kids), unwrapped=unwrapped.get(cls, 0), kid_first=min(kids),
                               kid_last=max(kids), **where)

    def _absent(self, kid: str, cls: str, subject_hash: str | None, rec: object | None, principal: str) -> None:
        """Judge a kid the store has no row of (in ``cls``): KeyDestroyed when a tombstone or the
        erasure ledger says so, KeyStoreUnavailable when the store is not the one opened,
        KeyNotFound (forged) otherwise. Always raises; audits the refusal."""
        resource = f"class:{cls}"
        tomb = self.store.tombstone(kid) if rec is None else None
        erased = rec is None and tomb is None and subject_hash is not None and self.store.erased(subject_hash)
        if (tomb is not None and tomb[0] == cls) or erased:
            self.cache.put(kid, (cls, None))
            self._hot.clear()  # it may be a current key here: never served from the hot entries again
            self._clear_memo()
            self._audit.record("key.unwrap", principal=principal, resource=resource, outcome=DENIED,
                               reason="destroyed", kid=kid)
            raise KeyDestroyed(f"key {kid} was destroyed (crypto-shredded)")
        if not self.store.intact():
            self._audit.record("key.unwrap", principal=principal, resource=resource, outcome=ERROR,
                               reason="keystore_unavailable", kid=kid)
            raise KeyStoreUnavailable(
                f"key store {self.store.path} was removed or replaced while in use: key {kid} cannot be "
                "judged; reopen the deployment once the store is restored"
            )
        self._audit.record("key.unwrap", principal=principal, resource=resource, outcome=DENIED,
                           reason="not_found", kid=kid)
        raise KeyNotFound(f"no key {kid} in class {cls}")

    # --- keys -------------------------------------------------------------------------------
    def _unwrap(self, rec: DekRecord) -> bytes:
        return self.kms.unwrap(rec.kek_id, rec.wrapped, _row_aad(rec))

    def _remember(self, rec: DekRecord, dek: bytes) -> None:
        self.cache.put(rec.kid, (rec.cls, dek))
        self._current.put((rec.subject_hash, rec.cls), rec.kid)
        cfg = self.config
        if cfg.cache_max > 0 and cfg.cache_ttl > 0:
            if len(self._hot) >= cfg.cache_max:
                self._hot.clear()
            key = (rec.subject_hash, rec.cls)
            old = self._hot.get(key)
            self._hot[key] = (rec.kid, dek, self._clock() + cfg.cache_ttl)
            if old is not None and old[0] != rec.kid:  # a new current version: no memo entry keeps the old
                self._clear_memo()

    def _create(self, h: str, cls: str, version: int, principal: str) -> tuple[DekRecord, bytes]:
        """New DEK version; converges on the winner if another process created it first."""
        kid, dek = new_kid(), os.urandom(DEK_BYTES)
        try:
            with self.store.transaction():
                # Wrapped under the store's write lock: a concurrent KEK rotation destroys old versions
                # under the same lock, so this never stores a DEK under a just-destroyed KEK.
                if h != CLASS_SUBJECT and not self.store.pseudonym_live(h):
                    # forgotten meanwhile: a new key under the old pseudonym would relink its events
                    self._drop_caches()
                    raise KeyDestroyed("the subject was forgotten meanwhile; retry to start a new pseudonym")
                rec = self.wrap_record(kid, h, cls, version, dek, self._clock())
                inserted = self.store.insert_dek(rec)
        except KeyStoreUnavailable:
            # The COMMIT may land after all: a retry converges on that row (unique per subject, class
            # and version, under the write lock) and audits its creation then (_settle_create).
            self._in_doubt(self._created_in_doubt, kid, principal)
            raise
        if not inserted:
            winner = self.store.current_dek(h, cls)
            if winner is None:  # erased in between: nothing to converge on
                raise KeyDestroyed(f"the keys of subject {h} in {cls} were destroyed meanwhile")
            return winner, self._unwrap(winner)
        resource = f"class:{cls}" if h == CLASS_SUBJECT else f"subject:{h}"
        self._audit.record("key.create", principal=principal, resource=resource, kid=kid, kek=rec.kek_id,
                           version=version)
        log.debug("created key %s (%s v%d) for %s", kid, cls, version, resource)
        return rec, dek

    def wrap_record(self, kid: str, h: str, cls: str, version: int, dek: bytes, created: float) -> DekRecord:
        """The store row of a new DEK: wrapped in the current AAD format (kid, class, subject,
        version and creation time bound), with an authenticated zero use counter. Also for bulk
        loads (benchmarks, imports), which insert the rows themselves."""
        aad = dek_aad(kid, cls, h, version, created, fmt=AAD_CURRENT)
        kek, wrapped = self.kms.wrap(cls, dek, aad)
        tag = self.kms.mac(MAC_LEDGER, uses_tag_input(kid, 0))
        return DekRecord(kid, h, cls, version, kek, wrapped, created, 0, AAD_CURRENT, tag)

    def _class_key(self, cls: str, principal: str, nonces: int = 1) -> tuple[str, bytes]:
        """Class DEK for data without a subject; a new version after N encryptions or T seconds."""
        cfg = self.config
        with self._class_lock:
            st = self._class_deks.get(cls)
            if st is None or st.exhausted or self._clock() - st.rec.created >= cfg.class_dek_max_age or (
                st.rec.uses + st.pending + nonces > cfg.class_dek_max_uses
            ):
                st = self._load_class_dek(cls, principal, st, nonces)
                self._class_deks[cls] = st
            st.pending += nonces
            if st.pending >= self._flush_every:
                total = self._add_uses(st.rec.kid, st.pending)
                st.rec = replace(st.rec, uses=total)
                st.pending = 0
                st.exhausted = total >= cfg.class_dek_max_uses
            return st.rec.kid, st.dek

    def _load_class_dek(self, cls: str, principal: str, old: _ClassDek | None, nonces: int = 1) -> _ClassDek:
        cfg = self.config
        if old is not None and old.pending:
            self._add_uses(old.rec.kid, old.pending)
        rec = self.store.current_dek(CLASS_SUBJECT, cls)
        fresh = rec is not None and rec.uses + nonces <= cfg.class_dek_max_uses and (
            self._clock() - rec.created < cfg.class_dek_max_age
        ) and self._uses_authentic(rec)
        if rec is not None and fresh:
            dek = self._unwrap(rec)
        else:
            rec, dek = self._create(CLASS_SUBJECT, cls, rec.version + 1 if rec else 1, principal)
        self.cache.put(rec.kid, (cls, dek))
        return _ClassDek(rec, dek)

    def rotate_dek(self, subject: str, cls: str, *, principal: str) -> str:
        """New DEK version for new events of the subject; old versions still decrypt old events.
        Other processes switch to it when their cached current-version entry expires (cache TTL)."""
        _check_class(cls)
        h = self.subject_hash(subject)
        self._authorize(principal, ROTATE_KEYS, ("Class", cls), "key.rotate_dek", f"subject:{h}")
        cur = self.store.current_dek(h, cls)
        rec, dek = self._create(h, cls, cur.version + 1 if cur else 1, principal)
        self._remember(rec, dek)
        return rec.kid

    # --- crypto-shredding -------------------------------------------------------------------
    def forget(
        self, subject: str, *, principal: str, reason: str = "", close_epoch: bool = False
    ) -> ErasureReceipt:
        """Destroy every DEK of the subject in every class, and its pseudonym; refused while a
        legal hold stands. A subject with no pseudonym (never seen, or forgotten already) gets an
        explicit "nothing to erase" receipt under a random reference. ``close_epoch`` (``forget
        --now``) then rotates the subject's classes at once, destroying the KEK versions that
        wrapped its keys, so residual copies are unrecoverable from that moment."""
        _check_reason(reason, required=False)
        if close_epoch:
            for c in self.kms.classes():  # refused before anything is erased, not half way
                self._authorize(principal, ROTATE_KEYS, ("Class", c), "key.rotate_kek", f"class:{c}")
        landed = self._landed_erasure(subject)  # a retry after an ambiguous COMMIT: finish that one
        known = landed.subject_hash if landed is not None else self.known_subject(subject)
        h = known if known is not None else secrets.token_hex(SUBJECT_HASH_CHARS // 2)
        resource = f"subject:{h}"
        self._authorize(principal, FORGET, ("Subject", h), "key.forget", resource)
        if known is None:
            self._audit.record("key.forget", principal=principal, resource=resource, outcome=OK, reason=reason,
                               nothing_to_erase=True, destroyed=0)
            return ErasureReceipt(h, self._clock(), (), 0, {}, False, nothing_to_erase=True)
        at = self._clock()
        try:
            erasure = landed if landed is not None else self.store.erase_subject(h, at)
        except (LegalHoldError, KeyServiceError) as e:
            if isinstance(e, KeyStoreUnavailable):  # the erasure may land after all: settled later
                self._in_doubt(self._erased_in_doubt, self._lookup(subject), (h, at, principal, reason))
            outcome = DENIED if isinstance(e, LegalHoldError) else ERROR
            self._audit.record("key.forget", principal=principal, resource=resource, outcome=outcome,
                               reason=e.code)
            raise
        receipt = self._finish_erasure(h, erasure, principal, reason)
        if close_epoch and erasure.classes:
            closed: list[str] = []
            for c in erasure.classes:
                closed.extend(self.rotate_kek(c, principal=principal).destroyed_kek_ids)
            receipt = replace(receipt, closed_at=self._clock(), closed_keks=tuple(closed))
        return receipt

    def hold(self, subject: str, *, principal: str, reason: str) -> None:
        """A hold names the subject's pseudonym (made here if the subject has none yet)."""
        _check_reason(reason, required=True)
        h = self.subject_hash(subject)
        self._authorize(principal, HOLD, ("Subject", h), "key.hold", f"subject:{h}")
        self.store.hold(h, reason, self._clock(), by=principal)
        self._audit.record("key.hold", principal=principal, resource=f"subject:{h}", reason=reason)

    def release(self, subject: str, *, principal: str) -> bool:
        h = self.known_subject(subject)
        if h is None:
            return False
        self._authorize(principal, HOLD, ("Subject", h), "key.release", f"subject:{h}")
        released = self.store.release(h)
        self._audit.record("key.release", principal=principal, resource=f"subject:{h}", released=released)
        return released

    def is_held(self, subject: str) -> bool:
        h = self.known_subject(subject)
        return h is not None and self.store.held(h) is not None

    # --- KEK epochs ---------------------------------------------------------------------------
    def kek_since(self, cls: str) -> float | None:
        """When the current KEK epoch of ``cls`` began (None: before epochs were recorded)."""
        raw = self.store.meta_text(f"kek_since:{cls}")
        try:
            return None if raw is None else float(raw)
        except ValueError:
            return None

    def due_classes(self, max_age: float) -> list[str]:
        """Classes whose KEK epoch is older than ``max_age`` seconds (or of unknown age)."""
        now = self._clock()
        out = []
        for c in sorted(self.kms.classes()):
            since = self.kek_since(c)
            if since is None or now - since >= max_age:
                out.append(c)
        return out

    def rotate_due(
        self, max_age: float, *, principal: str, progress: Progress | None = None, scheduled: bool = False
    ) -> list[RotationReport]:
        """End every KEK epoch older than ``max_age`` seconds: rotate the class, re-wrap its live
        DEKs, destroy the old versions in the KMS (``keys rotate --due`` and ``serve``'s task)."""
        if not max_age > 0:
            raise InputError("the KEK rotation period must be a positive number of seconds")
        return [self.rotate_kek(c, principal=principal, progress=progress, scheduled=scheduled)
                for c in self.due_classes(max_age)]

    # --- KEK rotation -----------------------------------------------------------------------
    def rotate_kek(
        self, cls: str, *, principal: str, progress: Progress | None = None, scheduled: bool = False
    ) -> RotationReport:
        """New KEK version, every DEK of the class re-wrapped under it, old versions destroyed.
        No event is rewritten: DEKs keep their bytes, only their wrapping changes. ``scheduled``:
        the control plane's own epoch schedule (configured in eventward.yaml), audited under
        ``principal`` without a policy decision."""
        _check_class(cls)
        resource = f"class:{cls}"
        if not scheduled:
            self._authorize(principal, ROTATE_KEYS, ("Class", cls), "key.rotate_kek", resource)
        if cls not in self.kms.classes():  # a typo must not mint a new class
            raise KeyNotFound(f"no KEK for class {cls!r}: nothing to rotate")
        t0 = time.monotonic()
        new = self.kms.rotate(cls)
        total = sum(n for k, n in self.store.kek_usage(cls).items() if k != new)
        done = failed = 0
        if progress:
            progress(0, total)
        after = ""
        while True:
            with self.store.transaction():
                rows = self.store.deks_to_rewrap(cls, self.kms.current(cls), after, self.config.rewrap_chunk)
                ok, bad = self._rewrap_rows(rows)
            if not rows:
                break
            after = rows[-1].kid
            done, failed = done + ok, failed + bad
            if progress:
                progress(min(done + failed, total), total)
        destroyed, late = self._destroy_unused_keks(cls)
        done += late
        self.store.set_meta_text(f"kek_since:{cls}", repr(self._clock()))
        self.store.purge()
        report = RotationReport(cls, new, destroyed, done, failed, time.monotonic() - t0)
        self._audit.record(
            "key.rotate_kek", principal=principal, resource=resource, kek=new,
            destroyed=meta_list(destroyed), destroyed_count=len(destroyed), rewrapped=done, failed=failed,
        )
        log.info("rotated %s to %s: %d re-wrapped, %d failed, destroyed %s", cls, new, done, failed,
                 list(destroyed))
        if self.on_change is not None:
            self.on_change("rotate")
        return report

    def _rewrap_rows(self, rows: list[DekRecord]) -> tuple[int, int]:
        ok = bad = 0
        for r in rows:
            try:
                dek = self.kms.unwrap(r.kek_id, r.wrapped, _row_aad(r))
            except (KeyIntegrityError, KeyDestroyed, KeyNotFound):
                bad += 1
                log.error("key %s (%s) cannot be unwrapped under %s; left as is", r.kid, r.cls, r.kek_id)
                continue
            # Re-wrapped in the current AAD format: a rotation upgrades format-1 rows.
            aad = dek_aad(r.kid, r.cls, r.subject_hash, r.version, r.created, fmt=AAD_CURRENT)
            kek, wrapped = self.kms.wrap(r.cls, dek, aad)
            ok += self.store.rewrap(r.kid, r.kek_id, kek, wrapped, AAD_CURRENT)
        return ok, bad

    def _destroy_unused_keks(self, cls: str) -> tuple[tuple[str, ...], int]:
        """Under the store's write lock: sweep DEKs another process wrapped under an old version
        meanwhile, then destroy every old version no DEK uses any more."""
        destroyed = []
        late = 0
        with self.store.transaction():
            current = self.kms.current(cls)
            after = ""
            while rows := self.store.deks_to_rewrap(cls, current, after, self.config.rewrap_chunk):
                late += self._rewrap_rows(rows)[0]
                after = rows[-1].kid
            in_use = self.store.kek_usage(cls)
            for k in self.kms.versions(cls):
                if k != current and k not in in_use:
                    self.kms.destroy(k)
                    destroyed.append(k)
            if destroyed:  # the ended epochs, so a keyring copied back by hand is caught at open
                upto = max(parse_kek_id(k)[1] for k in destroyed)
                if upto > self._destroyed_upto(cls):
                    self.store.set_meta_text(f"kek_destroyed:{cls}", str(upto))
        return tuple(destroyed), late

    def _destroyed_upto(self, cls: str) -> int:
        raw = self.store.meta_text(f"kek_destroyed:{cls}")
        return int(raw) if raw is not None and raw.isdigit() else 0

    def _end_resurrected_epochs(self) -> None:
        """A KMS whose current KEK is a version the key store records as destroyed was rolled back
        (a keyring file copied back by hand): refused. An older version it still holds is destroyed
        again, unless a DEK still uses it (logged by KEK id). Runs on every open; a few KMS reads."""
        for cls in self.kms.classes():
            upto = self._destroyed_upto(cls)
            if not upto:
                continue
            current = self.kms.current(cls)
            if parse_kek_id(current)[1] <= upto:
                raise KeyStoreUnavailable(
                    f"the KMS's current KEK of {cls} ({current}) is a version the key store records as "
                    f"destroyed (epochs up to {cls}.v{upto} ended): the keyring or KMS was rolled back to a "
                    "copy older than the key store; restore the current keyring (eventward restore refuses "
                    "such backups)"
                )
            stale = [k for k in self.kms.versions(cls) if k != current and parse_kek_id(k)[1] <= upto]
            if not stale:
                continue
            with self.store.transaction():
                in_use = self.store.kek_usage(cls)
                for k in stale:
                    if k not in in_use:
                        self.kms.destroy(k)
                        log.warning("KEK %s was destroyed before but the KMS held it again (a restored "
                                    "keyring?): destroyed again", k)
                        self._audit.record("key.rotate_kek", principal="eventward.keys", resource=f"class:{cls}",
                                           reason="resurrected_kek", destroyed=k)

    # --- status, authorization, cache ---------------------------------------------------------
    def status(self) -> ServiceStatus:
        counts = {c.cls: c for c in self.store.counts()}
        out = []
        for c in sorted(set(self.kms.classes()) | set(counts)):
            n = counts.get(c)
            known = c in self.kms.classes()
            out.append(ClassStatus(
                cls=c,
                kek_id=self.kms.current(c) if known else "-",
                epoch=self.kms.epoch(c) if known else 0,
                live_keks=tuple(self.kms.versions(c)) if known else (),
                destroyed_keks=tuple(self.kms.destroyed(c)) if known else (),
                deks=n.deks if n else 0,
                subjects=n.subjects if n else 0,
                erased_keys=n.tombstones if n else 0,
            ))
        erasures = len(self.store.erasures())
        return ServiceStatus(tuple(out), self.store.holds_count(), erasures, self.store.epoch())

    def _authorize(self, principal: str, action: str, res: Resource, event: str, resource: str,
                   context: dict[str, str] | None = None, **meta: str) -> None:
        try:
            check(self._authz, principal, action, res, context)
        except AccessDenied:
            self._audit.record(event, principal=principal, resource=resource, outcome=DENIED,
                               reason="not_authorized", **meta)
            raise

    def _poll(self) -> None:
        """Drop cached keys when the revocation epoch moved (a forget anywhere). A cheap read,
        at most every ``revocation_poll`` seconds."""
        now = time.monotonic()
        if now < self._next_poll:
            return
        self._next_poll = now + self.config.revocation_poll
        epoch = self.store.epoch()
        if epoch != self._epoch:
            self._epoch = epoch
            self._drop_caches()

    def _clear_memo(self) -> None:
        with self._uses_lock:
            self._clear_memo_locked()

    def _clear_memo_locked(self) -> None:
        """Drop encryption_key's one-lookup memo (the caller holds _uses_lock): an entry being
        made from state read before this is not stored (_enc_memo_gen moved)."""
        self._enc_memo.clear()
        self._enc_memo_gen += 1

    def _drop_caches(self) -> None:
        self.revocations += 1  # read-batch memos built on the old state are dropped (FieldEncryptor)
        self._hot.clear()
        self._clear_memo()
        self.cache.clear()
        self._current.clear()
        with self._hashes_lock:
            self._hashes.clear()  # raw subject ids are not kept past a forget


_FOUND = object()  # _absent's "the store has a row of this kid" (in another class)
_FIRST, _SECOND = itemgetter(0), itemgetter(1)
_ROW_ERRORS = (AttributeError, TypeError, ValueError, UnicodeError, struct.error)


def _unwrap_items(found: list[tuple[str, str, WrappedRow]]) -> list[tuple[str, bytes, bytes] | EventwardError]:
    """(kek id, wrapped, AAD) for each found row's unwrap, in one comprehension; a row whose
    columns have the wrong types (written by hand into the store) is its KeyIntegrityError."""
    try:
        items = [(r[4], r[5], row_aad(r)) for _, _, r in found]
        if all(type(k) is str and type(w) is bytes for k, w, _ in items):
            return items  # type: ignore[return-value]
    except _ROW_ERRORS:
        pass
    out: list[tuple[str, bytes, bytes] | EventwardError] = []
    for kid, _, r in found:
        try:
            if type(r[4]) is not str or type(r[5]) is not bytes:
                raise TypeError
            out.append((r[4], r[5], row_aad(r)))
        except _ROW_ERRORS:
            out.append(KeyIntegrityError(f"the key store's row of key {kid} is malformed"))
    return out


def _row_aad(rec: DekRecord) -> bytes:
    """The associated data a stored DEK row was wrapped with, in the row's format."""
    if rec.fmt == AAD_V1:
        return dek_aad(rec.kid, rec.cls, rec.subject_hash)
    return dek_aad(rec.kid, rec.cls, rec.subject_hash, rec.version, rec.created, fmt=rec.fmt)
