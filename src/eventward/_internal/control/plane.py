"""What only the control plane can answer, over the home it alone opens.

Every method takes the *authenticated* principal (from mTLS or a JWT at the HTTP layer, never
from the request body), decides with the deployment's Cedar policy, and audits before it answers.
Key releases are audited once per request with counts per class (never a row per event, never a
key id list that would grow with traffic); refusals name the class, never the key.
"""

from __future__ import annotations

import base64
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from eventward._internal.audit.base import DENIED, OK
from eventward._internal.audit.log import AUDIT_RESOURCE
from eventward._internal.certstore import record_if_managed
from eventward._internal.client.trust import REVOKED, check_principal
from eventward._internal.control.anchor import ANCHOR_FILE, Anchor
from eventward._internal.control.identity import EnrollmentRequest
from eventward._internal.crypto.seal import kid_of
from eventward._internal.deployment import Deployment
from eventward._internal.fieldspec import check_class
from eventward._internal.keys.notices import ERROR_CODE
from eventward._internal.log.sqlite import connect
from eventward._internal.pki import certify_csr, open_ca
from eventward._internal.policy.base import PUBLISH, READ_AUDIT, READ_SCHEMA, ROTATE_KEYS, SUBSCRIBE, check
from eventward._internal.store.migrations import CONTROL_SCHEMA, SCHEMA
from eventward._internal.store.sqlcompat import PgTables, open_pg_tables, write
from eventward.errors import (
    AccessDenied,
    ConfigError,
    ConflictError,
    InputError,
    KeyDestroyed,
    KeyNotFound,
    NotFoundError,
)

_SCHEMA = "CREATE TABLE IF NOT EXISTS seal_grants(kid TEXT PRIMARY KEY, grants TEXT NOT NULL)"
CONTROL_TABLES = {"seal_grants": (f"{CONTROL_SCHEMA}.seal_grants", "kid"), "meta": (f"{SCHEMA}.meta", "key")}
_ANCHOR_META = "control_anchor"  # the anchor's public key, recorded by the first replica
CONTROL_LOCK = 0x65776370  # pg_advisory_xact_lock key of the control plane's writes ("ewcp")
MAX_KEYS_PER_REQUEST = 1000
MAX_NOTICE_WAIT_S = 25.0
MAX_ERASURES_PER_NOTICE = 2000


@dataclass(frozen=True)
class Released:
    """One data key handed to an authorized client: what its FieldEncryptor needs."""

    kid: str
    dek: bytes
    subject_hash: str | None

    def __repr__(self) -> str:  # never the key
        return f"Released(kid={self.kid!r})"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


class ControlPlane:
    """The control API's logic; ``gateway`` exposes it over HTTP, tests call it directly."""

    def __init__(self, dep: Deployment, anchor: Anchor) -> None:
        self.dep = dep
        self.anchor = anchor
        self._lock = threading.Lock()
        if dep.config.store.backend == "postgres":  # shared by every replica (migration 4)
            self._db: sqlite3.Connection | PgTables = open_pg_tables(dep.home, CONTROL_TABLES, CONTROL_LOCK)
            try:
                self._check_anchor(self._db)
            except BaseException:
                self._db.close()
                raise
        else:
            self._db = connect(dep.home.root / "control.db", synchronous="FULL")
            with self._lock, write(self._db, "create control schema") as db:
                db.execute(_SCHEMA)

    def _check_anchor(self, db: PgTables) -> None:
        """Replicas must all sign with one anchor key: services verify every grant and trust
        statement against the key in their grant. The first replica records its public key in
        the database; a replica whose home holds another key is refused before it serves."""
        with db.write("record the control anchor") as txn:
            txn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                        (_ANCHOR_META, self.anchor.public_text))
            row = txn.execute("SELECT value FROM meta WHERE key = ?", (_ANCHOR_META,)).fetchone()
        if row is None or row[0] != self.anchor.public_text:
            raise ConfigError(
                f"{self.dep.home.root / 'control-anchor.key'} is not the anchor key of this deployment's other "
                f"control-plane replicas (public key {str(row[0] if row else '')[:16]}...): copy control-anchor.key "
                "from the home that made it; services verify every grant and trust statement against that key"
            )

    @classmethod
    def open(cls, dep: Deployment) -> ControlPlane:
        """The control plane of ``dep``'s home, its anchor key created on first use."""
        return cls(dep, Anchor.load_or_create(dep.home.root / ANCHOR_FILE))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- key releases ------------------------------------------------------------------
    def encryption_keys(
        self, principal: str, topic: str, event_type: str, wanted: Sequence[tuple[str | None, str, int]]
    ) -> list[Released]:
        """Current DEKs for (subject or None for the class key, class, nonces), if ``principal`` may
        Publish ``event_type`` on ``topic`` and Encrypt each class there."""
        _bounded(wanted, "keys")
        self._allow(principal, PUBLISH, ("Topic", topic), {"event_type": event_type}, "control.encrypt_keys")
        out: list[Released] = []
        classes: Counter[str] = Counter()
        try:
            for _, cls, _ in wanted:
                check_class(cls)
            items = [(subject, cls, max(1, nonces)) for subject, cls, nonces in wanted]
            batch = getattr(self.dep.keys, "encryption_keys", None)
            if batch is not None:  # KeyService: one store query and one creating transaction per request
                got = batch(items, principal=principal, topic=topic, event_type=event_type)
            else:
                got = [(*self.dep.keys.encryption_key(subject, cls, principal=principal, topic=topic,
                                                      event_type=event_type, nonces=n),
                        None if subject is None else self.dep.keys.subject_hash(subject))
                       for subject, cls, n in items]
            for (_, cls, _), (kid, dek, shash) in zip(items, got, strict=True):
                out.append(Released(kid, dek, shash))
                classes[cls] += 1
        except AccessDenied as e:
            self._audit("control.encrypt_keys", principal, topic, event_type, classes, DENIED, "forbidden")
            raise AccessDenied(f"{principal} may not Encrypt a requested class on {topic}",
                               explanation=e.details.get("explanation")) from None
        self._audit("control.encrypt_keys", principal, topic, event_type, classes, OK)
        return out

    def decryption_keys(
        self, principal: str, topic: str, event_type: str, wanted: Sequence[tuple[str, str, str | None]]
    ) -> dict[str, bytes | str]:
        """For each (kid, class, subject hash): the DEK, or an error code (``forbidden``, ``erased``,
        ``not_found``). A consumer not cleared for a class gets ``forbidden`` for each of its keys."""
        _bounded(wanted, "keys")
        self._allow(principal, SUBSCRIBE, ("Topic", topic), {"event_type": event_type}, "control.decrypt_keys")
        out: dict[str, bytes | str] = {}
        released: Counter[str] = Counter()
        refused: Counter[str] = Counter()
        for _, cls, _ in wanted:
            check_class(cls)
        # One batch: one Decrypt decision per class, one store query, one unwrap per key, one
        # key.unwrap record per class. KeyServiceError (KMS or store unavailable) propagates, as
        # does a tampered key row: the client stops, it does not guess.
        got = self.dep.keys.decryption_keys(wanted, principal=principal, topic=topic, event_type=event_type)
        for kid, cls, _ in wanted:
            res = got[kid, cls]
            if isinstance(res, bytes):
                out[kid] = res
                released[cls] += 1
            elif isinstance(res, AccessDenied):
                out[kid] = "forbidden"
                refused[cls] += 1
            elif isinstance(res, KeyDestroyed):
                out[kid] = "erased"
            elif isinstance(res, KeyNotFound):
                out[kid] = "not_found"
            else:
                raise res
        if refused:
            self._audit("control.decrypt_keys", principal, topic, event_type, refused, DENIED, "forbidden")
        self._audit("control.decrypt_keys", principal, topic, event_type, released, OK)
        return out

    # --- schemas -----------------------------------------------------------------------
    def schema(self, principal: str, topic: str, event_type: str, version: int | None = None) -> dict[str, Any]:
        """A schema version as stored (the client recompiles it and checks the fingerprint), for a
        principal that reads schemas or may publish or subscribe to ``event_type`` on ``topic``."""
        check_principal(principal)
        ctx = {"event_type": event_type}
        if not any(self.dep.policy.decide(principal, action, resource, ctx).allowed for action, resource in (
                (PUBLISH, ("Topic", topic)), (SUBSCRIBE, ("Topic", topic)), (READ_SCHEMA, ("Schema", event_type)))):
            self.dep.audit.record("control.schema", principal=principal, resource=f"Schema::{event_type}",
                                  outcome=DENIED, reason="forbidden")
            raise AccessDenied(f"{principal} may not read schema {event_type} (no read, publish or subscribe "
                               f"grant on {topic})")
        sv = self.dep.registry.get(event_type, version) if version is not None else self.dep.registry.active(
            event_type)
        return {"type": sv.type, "version": sv.version, "format": sv.fmt, "fingerprint": sv.fingerprint,
                "document": _b64(sv.compiled.raw), "report": sv.report.to_dict()}

    def topic(self, principal: str, topic: str) -> dict[str, Any]:
        """How ``topic`` is laid out (its partition count), for a principal that may publish or
        subscribe to it: a client-mode producer routes by it and a consumer reads every partition."""
        check_principal(principal)
        decide, res = self.dep.policy.decide, ("Topic", topic)
        if not (decide(principal, SUBSCRIBE, res, {}).allowed or decide(principal, PUBLISH, res, {}).allowed
                or self._may_seal_on(principal, topic)):  # publish grants are often limited to event types
            self.dep.audit.record("control.topic", principal=principal, resource=f"Topic::{topic}",
                                  outcome=DENIED, reason="forbidden")
            raise AccessDenied(f"{principal} may not publish or subscribe to {topic}")
        return {"topic": topic, "partitions": self.dep.policy.partitions(topic)}

    # --- trust -------------------------------------------------------------------------
    def trust_entries(self, principal: str) -> list[dict[str, str]]:
        """Every known signing key as a statement signed by the anchor: consumers verify offline."""
        check_principal(principal)
        grants = self._grants()
        out = []
        for info in self.dep.trust.list():
            key = self.dep.trust.resolve(info.kid)
            pq = None if key.pq_public_key is None else _raw_b64(key.pq_public_key)
            out.append(self.anchor.sign("trust", {
                "kid": info.kid, "principal": key.principal, "status": key.status, "purpose": key.purpose,
                "public": _raw_b64(key.public_key),
                "mldsa": pq, "changed": key.changed, "may_seal": grants.get(info.kid),
            }))
        return out

    # --- audit: what a verifier outside the home needs -----------------------------------
    def audit_consistency(self, principal: str, from_size: int) -> dict[str, Any]:
        """The audit log's latest signed checkpoint (a note, c2sp.org/tlog-checkpoint) and an RFC 9162
        consistency proof from ``from_size``, the tree the caller verified last (0: first use), for
        ``audit verify`` in client mode, which checks both against the audit key it pinned. Needs
        ReadAudit; recorded before it is answered. No proof when ``from_size`` is 0, equal to the
        tree, or past it: the caller's verifier then sees the rollback itself."""
        self._allow(principal, READ_AUDIT, AUDIT_RESOURCE, {}, "control.audit_consistency")
        if not isinstance(from_size, int) or isinstance(from_size, bool) or from_size < 0:
            raise InputError("from_size must be a tree size (an integer >= 0)")
        log = self.dep.audit
        log.record("control.audit_consistency", principal=principal,
                   resource=f"{AUDIT_RESOURCE[0]}::{AUDIT_RESOURCE[1]}", outcome=OK, from_size=from_size)
        cp = log.checkpoint()
        proof = log.consistency(from_size, cp.size) if 0 < from_size < cp.size else None
        return {"checkpoint": cp.text, "proof": None if proof is None else proof.to_dict()}

    def _may_seal_on(self, principal: str, topic: str) -> bool:
        """Whether one of ``principal``'s active keys was enrolled to seal some type on ``topic``
        (checked against the policy at enrollment)."""
        mine = {i.kid for i in self.dep.trust.list() if i.principal == principal and i.status != REVOKED}
        return any(topic in grants for kid, grants in self._grants().items() if kid in mine)

    def _grants(self) -> dict[str, dict[str, list[str]]]:
        """kid -> {topic: [event types]} recorded at enrollment."""
        with self._lock:
            return {kid: orjson.loads(doc) for kid, doc in self._db.execute("SELECT kid, grants FROM seal_grants")}

    def enroll(
        self, by: str, principal: str, seal_key: Ed25519PublicKey, dead_letter_key: Ed25519PublicKey,
        may_seal: dict[str, list[str]],
    ) -> dict[str, str]:
        """Trust a service's own keys (their private halves never left it), after checking that the
        policy lets ``principal`` publish every (topic, type) it is enrolled to seal."""
        self._check_enrollment(by, principal, seal_key, dead_letter_key, may_seal)
        kids = {purpose: self.dep.trust.enroll(principal, key, by=by, purpose=purpose)
                for purpose, key in (("seal", seal_key), ("dead_letter", dead_letter_key))}
        with self._lock, write(self._db, "record seal grants") as db:
            db.execute("INSERT OR REPLACE INTO seal_grants(kid, grants) VALUES (?, ?)",
                       (kids["seal"], orjson.dumps({t: sorted(set(ts)) for t, ts in sorted(may_seal.items())})))
        self.dep.audit.record("control.enroll", principal=by, resource=f"Producer::{principal}", outcome=OK,
                              kid=kids["seal"], topics=len(may_seal))
        return kids

    def _check_enrollment(
        self, by: str, principal: str, seal_key: Ed25519PublicKey, dead_letter_key: Ed25519PublicKey,
        may_seal: dict[str, list[str]],
    ) -> None:
        """Everything an enrollment must pass, run before anything is signed or stored: an enrollment
        lands whole or not at all."""
        check_principal(principal)
        check(self.dep.policy, by, ROTATE_KEYS, ("Producer", principal))
        for topic, types in may_seal.items():
            for t in types:
                if not self.dep.policy.decide(principal, PUBLISH, ("Topic", topic), {"event_type": t}).allowed:
                    raise AccessDenied(f"{principal} may not Publish {t} on {topic}: the policy must allow what "
                                       "a key is enrolled to seal")
        for key in (seal_key, dead_letter_key):
            try:
                self.dep.trust.info(kid_of(key))
            except NotFoundError:
                continue
            raise ConflictError("a key of this enrollment is already registered")

    def approve(
        self, by: str, request_raw: bytes, may_seal: dict[str, list[str]], *, days: int = 30,
        control_urls: Sequence[str] = (), nats_servers: Sequence[str] = (),
    ) -> bytes:
        """Approve an enrollment request: trust its keys, certify its TLS key, and return the grant
        (signed by the anchor) that the service installs: where the control plane and the broker
        are, and what it may seal. Nothing changes if any check fails."""
        req = EnrollmentRequest.parse(request_raw)
        # Authorized and checked before the CA signs: a refused approver must not leave a certificate behind.
        self._check_enrollment(by, req.principal, req.seal_key, req.dead_letter_key, may_seal)
        ca = open_ca(self.dep.home.certs, create=True)  # signs where pki.ca_key says (file, token, KMS)
        try:
            cert = certify_csr(ca, req.csr_pem, req.principal, days=days)
        finally:
            ca.close()
        record_if_managed(self.dep.home.certs, cert, exclusive=True)  # one certificate per approved key
        kids = self.enroll(by, req.principal, req.seal_key, req.dead_letter_key, may_seal)
        body = {
            "principal": req.principal, "kids": kids, "may_seal": may_seal,
            "certificate": cert.public_bytes(Encoding.PEM).decode(), "ca": ca.cert.public_bytes(Encoding.PEM).decode(),
            "control_urls": list(control_urls), "nats_servers": list(nats_servers),
        }
        return orjson.dumps({"anchor": self.anchor.public_text, "statement": self.anchor.sign("grant", body)})

    # --- notices -----------------------------------------------------------------------
    def notices(self, principal: str, after: float, wait: float = 0.0) -> dict[str, str]:
        """What changed since ``after`` (erasure time): erased subject hashes, revoked kids, the
        key-store epoch and policy version, signed. Waits up to ``wait`` seconds for a change."""
        check_principal(principal)
        wait = max(0.0, min(float(wait), MAX_NOTICE_WAIT_S))
        store = self.dep.keys.store
        start_epoch = store.epoch()
        deadline = time.monotonic() + wait
        while wait and time.monotonic() < deadline and store.epoch() == start_epoch and not self.erased_after(after):
            time.sleep(0.05)
        erased = [e for e in store.erasures() if e.time > after][:MAX_ERASURES_PER_NOTICE]
        revoked = sorted(i.kid for i in self.dep.trust.list() if i.status == REVOKED)
        body = {
            "epoch": store.epoch(),
            "erased": [e.subject_hash for e in erased],
            "until": erased[-1].time if erased else after,
            "revoked": revoked,
            "policy": self.dep.policy.version,
            "at": time.time(),
        }
        return self.anchor.sign("notice", body)

    def epoch(self) -> int:
        """Changes whenever keys are destroyed (forget, rotation): what a notice waits on."""
        return self.dep.keys.store.epoch()

    def erased_after(self, after: float) -> bool:
        """Whether an erasure newer than ``after`` is already recorded (a waiting notice answers at once)."""
        erasures = self.dep.keys.store.erasures()
        return bool(erasures) and erasures[-1].time > after

    def decide(self, principal: str, action: str, resource: tuple[str, str], context: dict[str, Any] | None,
               about: str | None = None) -> bool:
        """The policy's answer for the caller's own identity (clients cache it until a notice), or,
        with ``about``, whether that producer may Publish on a topic the caller may Subscribe to:
        what a consumer needs to accept seals of keys registered without enrolled grants."""
        check_principal(principal)
        ctx = dict(context or {})
        if about is None or about == principal:
            return self.dep.policy.decide(principal, action, resource, ctx).allowed
        check_principal(about)
        if action != PUBLISH or resource[0] != "Topic":
            raise AccessDenied("only Publish rights of another principal can be asked, by a subscriber")
        self._allow(principal, SUBSCRIBE, resource, {}, "control.decide")
        return self.dep.policy.decide(about, PUBLISH, resource, ctx).allowed

    # --- erasure acknowledgements (client-mode consumer groups) ----------------------------
    def register_group(self, principal: str, group: str) -> str:
        """A client-mode consumer group that must acknowledge every later forget; named under its
        principal, so no service can answer (or hide) another's acknowledgements."""
        name = _client_group(principal, group)
        self.dep.notices.register_group(name)
        return name

    def erasures_due(self, principal: str, group: str) -> list[str]:
        """Pseudonyms the group must still purge from its read models (pending or failed ones)."""
        return self.dep.notices.due(_client_group(principal, group))

    def acknowledge(self, principal: str, group: str, pseudonym: str, error: str | None) -> bool:
        """The group's answer for one erasure: None when its hooks ran, else their error code."""
        if error is not None and not ERROR_CODE.fullmatch(str(error)):
            raise InputError("an acknowledgement's error is a short code (letters, digits, '_.-'), never free text")
        return self.dep.notices.acknowledge(pseudonym, _client_group(principal, group), principal=principal,
                                            error=error)

    # --- helpers -----------------------------------------------------------------------
    def _allow(self, principal: str, action: str, resource: tuple[str, str], ctx: dict[str, Any], what: str) -> None:
        check_principal(principal)
        d = self.dep.policy.decide(principal, action, resource, ctx)
        if not d.allowed:
            self.dep.audit.record(what, principal=principal, resource=f"{resource[0]}::{resource[1]}",
                                  outcome=DENIED, reason="forbidden")
            raise AccessDenied(f"{principal} may not {action} {resource[0]}::{resource[1]}", explanation=d)

    def _audit(self, action: str, principal: str, topic: str, event_type: str, classes: Counter[str],
               outcome: str, reason: str = "") -> None:
        if not classes and outcome == OK:
            return
        self.dep.audit.record(action, principal=principal, resource=f"Topic::{topic}", outcome=outcome, reason=reason,
                              event_type=event_type, keys=sum(classes.values()),
                              classes=",".join(f"{c}:{n}" for c, n in sorted(classes.items())))


_GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _client_group(principal: str, group: str) -> str:
    check_principal(principal)
    if not isinstance(group, str) or not _GROUP.fullmatch(group):
        raise InputError("a consumer group name is 1..128 of letters, digits, '._-'")
    return f"{principal}/{group}"


def _raw_b64(key: Any) -> str:
    return base64.urlsafe_b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def _bounded(items: Sequence[Any], what: str) -> None:
    if not isinstance(items, Sequence) or not items:
        raise InputError(f"{what}: a non-empty list is required")
    if len(items) > MAX_KEYS_PER_REQUEST:
        raise InputError(f"{what}: at most {MAX_KEYS_PER_REQUEST} per request, got {len(items)}")
