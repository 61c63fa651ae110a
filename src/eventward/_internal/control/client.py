"""Client mode: the seams a Producer and Consumer need, answered by the control plane.

``ControlAPI`` is the contract (one method per control-API call, always as the *authenticated*
identity); ``HttpControlAPI`` speaks it over mTLS to one or more ``eventward serve`` replicas with
fail-over, and ``LocalControlAPI`` calls a ControlPlane in-process (tests, single-binary apps).

Over it sit the remote seams: ``RemoteKeys`` (a ContextualDekSource with a bounded LRU+TTL cache
and a max-uses bound per key), ``RemoteSchemas`` (recompiled locally, fingerprint checked),
``SignedTrust`` (seal keys and what each may seal, from statements signed by the anchor, usable
offline) and ``ClientAuthorizer``. ``NoticeFollower`` long-polls signed notices and drops what an
erasure or revocation affects. When the control plane cannot answer, key requests raise
:class:`ControlPlaneUnavailable` (a KMSUnavailable): producers send nothing, consumers stop before
the event and resume there.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PublicKey

from eventward._internal.client.trust import REVOKED, TrustedKey
from eventward._internal.control import anchor as statements
from eventward._internal.keys.cache import LruTtlCache
from eventward._internal.policy.base import PUBLISH, Decision, Resource
from eventward._internal.schema.compiled import compile_schema
from eventward._internal.schema.model import CheckReport, SchemaVersion, State
from eventward.errors import (
    AccessDenied,
    ControlPlaneUnavailable,
    EventwardError,
    InputError,
    KeyDestroyed,
    KeyNotFound,
    NotFoundError,
    SchemaSecurityError,
    SealError,
)

log = logging.getLogger("eventward.control")


REQUEST_KEYS = 1000  # the control API's bound on keys per request


class ControlAPI(Protocol):
    """The control API as one authenticated identity sees it.

    Every method may raise ControlPlaneUnavailable (no replica answered; retry later, nothing
    changed), AccessDenied (the policy refuses; the message names the class or topic, never a
    key), InputError (the request is malformed or over a limit) and NotFoundError.
    """

    principal: str

    def encryption_keys(
        self, topic: str, event_type: str, wanted: Sequence[tuple[str | None, str, int]]
    ) -> list[tuple[str, bytes, str | None]]:
        """(kid, DEK, subject hash) for each (subject or None, class, nonces), in request order;
        a None subject asks for the class DEK (subject hash None). All or nothing: AccessDenied
        (naming the topic or class) unless this identity may Publish ``event_type`` on ``topic``
        and Encrypt every class there; InputError for an empty list or more than REQUEST_KEYS."""
        ...

    def decryption_keys(
        self, topic: str, event_type: str, wanted: Sequence[tuple[str, str, str | None]]
    ) -> dict[str, bytes | str]:
        """kid -> DEK or an error code for each (kid, class, subject hash): ``forbidden`` (this
        identity may not Decrypt that class on ``topic``; audited), ``erased`` (crypto-shredded),
        ``not_found`` (never issued: forged). One refusal never fails the others. AccessDenied when
        this identity may not Subscribe to ``topic`` at all; InputError for an empty list or more
        than REQUEST_KEYS."""
        ...

    def schema(self, topic: str, event_type: str, version: int | None) -> dict[str, Any]:
        """``{type, version, format, fingerprint, document (base64), report}`` of ``event_type``
        at ``version``, the active one for None. NotFoundError for an unknown type or version;
        AccessDenied unless this identity may read schemas, or publish or subscribe it on ``topic``.
        A version's document never changes: callers cache it and check the fingerprint."""
        ...

    def topic(self, topic: str) -> dict[str, Any]:
        """``{topic, partitions}``: the topic's layout (1 when unpartitioned), which producers route
        by and consumers read whole. AccessDenied unless this identity may publish or subscribe to it."""
        ...

    def trust_entries(self) -> list[dict[str, str]]:
        """Every signing key (active, retired and revoked, with what each may seal) as a statement
        signed by the anchor: verify each before use; ``[]`` when no key is registered."""
        ...

    def notices(self, after: float, wait: float) -> dict[str, str]:
        """A signed notice of what changed since ``after`` (an erasure time; 0 for everything):
        erased subject hashes (at most 2000, ``until`` says where to resume), revoked kids, the
        key-store epoch and policy version. Waits up to ``wait`` s (capped at 25) for a change;
        answers at once, unchanged, when nothing happened."""
        ...

    def decide(self, action: str, resource: Resource, context: dict[str, Any] | None,
               about: str | None = None) -> bool:
        """Whether the policy allows this identity ``action`` on ``resource`` (False, never an
        error, for a denial); with ``about``, whether that producer may Publish on a topic this
        identity may Subscribe to (AccessDenied for any other question about another principal)."""
        ...

    def register_group(self, group: str) -> None:
        """This identity's consumer ``group`` must acknowledge every later forget (idempotent;
        the group is named under this identity, so no one else can answer for it). InputError for
        a name outside 1..128 of letters, digits, '._-'."""
        ...

    def erasures_due(self, group: str) -> list[str]:
        """Erasure references (pseudonyms) ``group`` must still purge and acknowledge (pending or
        failed); ``[]`` when none, or for a group never registered."""
        ...

    def acknowledge(self, group: str, pseudonym: str, error: str | None) -> bool:
        """``group`` purged ``pseudonym`` (error None) or its hooks failed with ``error`` (a short
        code, never free text: InputError otherwise). True when this answer completed the
        erasure (every registered group acknowledged); answering twice changes nothing."""
        ...


class LocalControlAPI:
    """A ControlPlane called in-process as one identity (tests; a single-binary application)."""

    def __init__(self, plane: Any, principal: str) -> None:
        self._plane = plane
        self.principal = principal

    def encryption_keys(self, topic: str, event_type: str, wanted: Sequence[tuple[str | None, str, int]]
                        ) -> list[tuple[str, bytes, str | None]]:
        return [(r.kid, r.dek, r.subject_hash)
                for r in self._plane.encryption_keys(self.principal, topic, event_type, wanted)]

    def decryption_keys(self, topic: str, event_type: str, wanted: Sequence[tuple[str, str, str | None]]
                        ) -> dict[str, bytes | str]:
        return self._plane.decryption_keys(self.principal, topic, event_type, wanted)

    def schema(self, topic: str, event_type: str, version: int | None) -> dict[str, Any]:
        return self._plane.schema(self.principal, topic, event_type, version)

    def topic(self, topic: str) -> dict[str, Any]:
        return self._plane.topic(self.principal, topic)

    def trust_entries(self) -> list[dict[str, str]]:
        return self._plane.trust_entries(self.principal)

    def notices(self, after: float, wait: float) -> dict[str, str]:
        return self._plane.notices(self.principal, after, wait)

    def decide(self, action: str, resource: Resource, context: dict[str, Any] | None,
               about: str | None = None) -> bool:
        return self._plane.decide(self.principal, action, resource, context, about)

    def register_group(self, group: str) -> None:
        self._plane.register_group(self.principal, group)

    def erasures_due(self, group: str) -> list[str]:
        return self._plane.erasures_due(self.principal, group)

    def acknowledge(self, group: str, pseudonym: str, error: str | None) -> bool:
        return self._plane.acknowledge(self.principal, group, pseudonym, error)


# --- keys -----------------------------------------------------------------------------------
class RemoteKeys:
    """DEKs from the control plane, cached: at most ``max_entries`` keys for ``ttl`` seconds, and
    an encryption key for at most ``max_uses`` values before it is asked for again (so a revoked
    clearance or an erasure stops a producer within those bounds even without a notice)."""

    takes_context = True

    def __init__(self, api: ControlAPI, *, max_entries: int = 100_000, ttl: float = 300.0,
                 max_uses: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._api = api
        self.max_uses = max_uses
        self._ttl = ttl if max_entries > 0 else 0.0
        self._clock = clock
        # entries [kid, dek, subject hash, uses left, valid until]; (dek, subject hash, valid until)
        self._enc: LruTtlCache[tuple[str | None, str, str, str], list[Any]] = LruTtlCache(max_entries, ttl, clock)
        self._dec: LruTtlCache[str, tuple[bytes, str | None, float]] = LruTtlCache(max_entries, ttl, clock)
        self._hashes: LruTtlCache[str, str] = LruTtlCache(max_entries, ttl, clock)
        # The keys of the last prepared call and of the last prefetched read batch, as plain dicts
        # looked up once per event without the LRU's lock and reordering. The same entries (so
        # the same use bounds), each still checked against its own expiry; replaced by the next
        # call or batch (bounded by one call's keys) and dropped by an erasure notice or clear.
        self._hot_enc: dict[tuple[str | None, str, str, str], list[Any]] = {}
        self._hot_hashes: dict[str, tuple[str, float]] = {}
        self._hot_dec: dict[str, tuple[bytes, str | None, float]] = {}
        self._lock = threading.Lock()
        # Moved whenever cached keys are dropped (an erasure notice, a policy change, clear): a
        # FieldEncryptor's read-batch memo built from them is dropped at its next lookup, as the
        # key service's counter does in home mode, so no erased key is served from a memo.
        self.revocations = 0

    def __repr__(self) -> str:
        return f"RemoteKeys({self._api.principal!r}, {len(self._dec)} decryption keys cached)"

    def prepare(self, topic: str, event_type: str, items: Sequence[tuple[str | None, str, int]]) -> None:
        """Fetch every (subject, class) a batch will encrypt that is not cached: one request per
        ``REQUEST_KEYS`` of them."""
        hot: dict[tuple[str | None, str, str, str], list[Any]] = {}
        missing = []
        wanted = list(dict.fromkeys(items))
        keys = [(s, c, topic, event_type) for s, c, _ in wanted]
        for (s, c, n), key, entry in zip(wanted, keys, self._enc.get_many(keys), strict=True):
            if entry is None or entry[3] < n:
                missing.append((s, c, n))
            else:
                hot[key] = entry
        for start in range(0, len(missing), REQUEST_KEYS):
            chunk = missing[start:start + REQUEST_KEYS]
            got = self._api.encryption_keys(topic, event_type, chunk)
            until = self._clock() + self._ttl  # no later than the cache's own expiry (set after)
            fresh = [((subject, cls, topic, event_type), [kid, dek, shash, self.max_uses, until])
                     for (subject, cls, _), (kid, dek, shash) in zip(chunk, got, strict=True)]
            self._enc.put_many(fresh)
            self._hashes.put_many((key[0], entry[2]) for key, entry in fresh
                                  if key[0] is not None and entry[2] is not None)
            hot.update(fresh)
        hashes: dict[str, tuple[str, float]] = {}
        for (subject, _, _, _), entry in hot.items():
            if subject is not None and entry[2] is not None:
                hashes[subject] = (entry[2], entry[4])
        self._hot_enc, self._hot_hashes = hot, hashes

    def prefetch(self, topic: str, event_type: str, items: Sequence[tuple[str, str, str | None]]) -> None:
        """Fetch the DEKs of a read batch that are not cached (one request per ``REQUEST_KEYS``);
        refusals and erasures are left for ``decryption_key`` to ask about and report."""
        hot: dict[str, tuple[bytes, str | None, float]] = {}
        missing = []
        items = list(items)
        for item, hit in zip(items, self._dec.get_many([kid for kid, _, _ in items]), strict=True):
            if hit is None:
                missing.append(item)
            else:
                hot[item[0]] = hit
        for start in range(0, len(missing), REQUEST_KEYS):
            chunk = missing[start:start + REQUEST_KEYS]
            got = self._api.decryption_keys(topic, event_type, chunk)
            until = self._clock() + self._ttl
            fresh = [(kid, (dek, shash, until)) for kid, _, shash in chunk
                     if isinstance(dek := got.get(kid), bytes)]
            self._dec.put_many(fresh)
            hot.update(fresh)
        self._hot_dec = hot

    def decryption_keys(self, wanted: Sequence[tuple[str, str, str | None]], *, principal: str,
                        topic: str | None = None, event_type: str | None = None) -> dict[tuple[str, str], bytes]:
        """(kid, class) -> DEK for each wanted key already fetched (``prefetch``): the read batch's
        keys for a FieldEncryptor's memo (``resolve_wanted``), looked up as ``decryption_key``
        looks them up and asking nothing. A key not cached (refused, erased, expired) is left
        out, for ``decryption_key`` to ask about and report, as is everything for another
        principal (``decryption_key`` refuses it)."""
        if principal != self._api.principal:
            return {}
        hot, now, out = self._hot_dec, self._clock(), {}
        for kid, cls, _ in wanted:
            entry = hot.get(kid)
            if entry is None or now >= entry[2]:
                entry = self._dec.get(kid)
            if entry is not None:
                out[kid, cls] = entry[0]
        return out

    def _usable(self, subject: str | None, cls: str, topic: str, event_type: str, nonces: int) -> list[Any] | None:
        entry = self._enc.get((subject, cls, topic, event_type))
        if entry is None or entry[3] < nonces:
            return None
        return entry

    def subject_hash(self, subject: str) -> str:
        hot = self._hot_hashes.get(subject)
        if hot is not None and self._clock() < hot[1]:
            return hot[0]
        shash = self._hashes.get(subject)
        if shash is None:
            raise KeyNotFound("no key prepared for this data subject (client-mode producers prepare each batch)")
        return shash

    def encryption_key(self, subject: str | None, cls: str, *, principal: str, topic: str | None = None,
                       event_type: str | None = None, nonces: int = 1) -> tuple[str, bytes]:
        if principal != self._api.principal:
            raise AccessDenied(f"this client is {self._api.principal}, not {principal}")
        hot = self._hot_enc.get((subject, cls, topic, event_type))  # type: ignore[arg-type]
        if hot is not None:
            with self._lock:
                if hot[3] >= nonces and self._clock() < hot[4]:
                    hot[3] -= nonces
                    return hot[0], hot[1]
        if topic is None or event_type is None:
            raise InputError("client-mode encryption needs the topic and event type")
        with self._lock:
            entry = self._usable(subject, cls, topic, event_type, nonces)
            if entry is None:
                self.prepare(topic, event_type, [(subject, cls, nonces)])
                entry = self._usable(subject, cls, topic, event_type, nonces)
                assert entry is not None
            entry[3] -= nonces
            return entry[0], entry[1]

    def decryption_key(self, kid: str, cls: str, *, principal: str, topic: str | None = None,
                       event_type: str | None = None, subject_hash: str | None = None) -> bytes:
        if principal != self._api.principal:
            raise AccessDenied(f"this client is {self._api.principal}, not {principal}")
        hot = self._hot_dec.get(kid)
        if hot is not None and self._clock() < hot[2]:
            return hot[0]
        hit = self._dec.get(kid)
        if hit is not None:
            return hit[0]
        if topic is None or event_type is None:
            raise InputError("client-mode decryption needs the topic and event type")
        answer = self._api.decryption_keys(topic, event_type, [(kid, cls, subject_hash)])
        got = answer.get(kid)
        if isinstance(got, bytes):
            self._dec.put(kid, (got, subject_hash, self._clock() + self._ttl))
            return got
        if got == "forbidden":
            raise AccessDenied(f"{principal} may not Decrypt class {cls} on {topic}")
        if got == "erased":
            raise KeyDestroyed("the key was destroyed (crypto-shredded)")
        raise KeyNotFound(f"key id {kid} is unknown")

    def forget_subjects(self, hashes: Sequence[str]) -> None:
        """An erasure notice arrived: drop every cached key (entries are not indexed by subject,
        and the next request learns from the control plane which keys are gone; a subject that
        returns after its erasure gets new keys, which must stay readable)."""
        if not hashes:
            return
        with self._lock:
            self._drop_hot()
            self._dec.clear()
            self._enc.clear()
            self._hashes.clear()
            self.revocations += 1

    def clear(self) -> None:
        with self._lock:
            self._drop_hot()
            self._dec.clear()
            self._enc.clear()
            self.revocations += 1

    def _drop_hot(self) -> None:
        self._hot_enc, self._hot_hashes, self._hot_dec = {}, {}, {}



# --- schemas --------------------------------------------------------------------------------
class RemoteSchemas:
    """Schemas fetched for one topic, recompiled here; a document whose fingerprint differs from
    the one the control plane states is refused (SchemaSecurityError). Versions are immutable and
    cached for good; the active version is re-asked after ``active_ttl`` seconds."""

    def __init__(self, api: ControlAPI, topic: str, *, active_ttl: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._api = api
        self.topic = topic
        self._ttl = active_ttl
        self._clock = clock
        self._versions: dict[tuple[str, int], SchemaVersion] = {}
        self._active: dict[str, tuple[float, SchemaVersion]] = {}

    def active(self, type_: str) -> SchemaVersion:
        hit = self._active.get(type_)
        if hit is not None and self._clock() - hit[0] < self._ttl:
            return hit[1]
        sv = self._load(self._api.schema(self.topic, type_, None))
        self._active[type_] = (self._clock(), sv)
        return sv

    def get(self, type_: str, version: int | None = None) -> SchemaVersion:
        if version is None:
            return self.active(type_)
        sv = self._versions.get((type_, version))
        if sv is None:
            sv = self._load(self._api.schema(self.topic, type_, version))
        return sv

    def validate(self, type_: str, data: Any) -> SchemaVersion:
        sv = self.active(type_)
        sv.validate(data)
        return sv

    def _load(self, doc: dict[str, Any]) -> SchemaVersion:
        compiled = compile_schema(base64.b64decode(doc["document"]), doc["format"])
        if compiled.fingerprint != doc["fingerprint"]:
            raise SchemaSecurityError(f"{doc['type']} v{doc['version']}: the document does not match its fingerprint")
        report = CheckReport.from_dict(doc["report"])
        sv = SchemaVersion(doc["type"], int(doc["version"]), State.ACTIVE, "", 0.0, report, (), compiled)
        self._versions[(sv.type, sv.version)] = sv
        return sv


# --- trust ----------------------------------------------------------------------------------
Grants = dict[str, list[str]]  # topic -> event types a seal key was enrolled for


def verify_trust_entry(anchor_key: Ed25519PublicKey, wire: Any) -> tuple[TrustedKey, Grants | None]:
    """One trust entry as served (a ``trust`` statement), checked against the anchor key pinned at
    enrollment: the key it vouches for and what it may seal (None: registered without enrolled
    grants, as home mode does). Whoever relays entries (a gateway replica, a proxy, TLS alone)
    cannot add or alter one. Raises SealError(reason='bad_statement') for an entry the anchor did
    not sign, or whose body is not a trust entry."""
    body = statements.verify(anchor_key, wire, "trust").body
    try:
        pub = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(body["public"]))
        pq = body.get("mldsa")
        pq_key = None if pq is None else MLDSA65PublicKey.from_public_bytes(base64.urlsafe_b64decode(pq))
        kid, principal, status, purpose = body["kid"], body["principal"], body["status"], body.get("purpose", "seal")
        if not all(isinstance(v, str) for v in (kid, principal, status, purpose)):
            raise TypeError("kid, principal, status and purpose are text")
        key = TrustedKey(kid, principal, pub, status, float(body["changed"]), purpose, pq_key)
        grants = body.get("may_seal")
        if grants is not None and not (isinstance(grants, dict) and all(
                isinstance(t, list) and all(isinstance(x, str) for x in t) for t in grants.values())):
            raise TypeError("may_seal")
    except (KeyError, TypeError, ValueError):
        raise SealError("a signed trust entry is malformed", reason="bad_statement") from None
    return key, grants


class SignedTrust:
    """Seal keys from anchor-signed trust entries: a KeyResolver for SealVerifier, and the source
    of what each producer may seal. Works offline from the last entries fetched; an unknown kid
    triggers at most one refresh per ``min_refresh`` seconds (so forged kids cannot flood)."""

    def __init__(self, api: ControlAPI, anchor_key: Ed25519PublicKey, *, min_refresh: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._api = api
        self._anchor = anchor_key
        self._min_refresh = min_refresh
        self._clock = clock
        self._keys: dict[str, TrustedKey] = {}
        self._grants: dict[str, Grants | None] = {}
        self._fetched = float("-inf")
        self._lock = threading.Lock()

    def refresh(self, *, force: bool = False) -> None:
        if not force and self._clock() - self._fetched < self._min_refresh:
            return
        self._fetched = self._clock()
        try:
            wires = self._api.trust_entries()
        except ControlPlaneUnavailable:
            if not self._keys:
                raise
            return  # offline: keep verifying with what was last signed
        keys: dict[str, TrustedKey] = {}
        grants: dict[str, Grants | None] = {}
        for wire in wires:
            key, may_seal = verify_trust_entry(self._anchor, wire)
            keys[key.kid], grants[key.kid] = key, may_seal
        with self._lock:
            self._keys, self._grants = keys, grants

    def resolve(self, kid: str) -> TrustedKey:
        key = self._keys.get(kid)
        if key is None:
            self.refresh()
            key = self._keys.get(kid)
        if key is None:
            raise NotFoundError(f"unknown signing key {kid}")
        return key

    def revoke(self, kids: Sequence[str]) -> None:
        """A revocation notice arrived: refuse these kids at once, before the next refresh."""
        with self._lock:
            for kid in kids:
                k = self._keys.get(kid)
                if k is not None and k.status != REVOKED:
                    self._keys[kid] = TrustedKey(k.kid, k.principal, k.public_key, REVOKED, time.time(), k.purpose,
                                                 k.pq_public_key)

    def may_seal(self, producer: str, topic: str, event_type: str) -> bool | None:
        """Whether some seal key of ``producer`` was enrolled to seal ``event_type`` on ``topic``;
        None when its keys were registered without enrolled grants (home mode): ask the policy."""
        if not self._keys:
            self.refresh()
        unknown = False
        for kid, key in self._keys.items():
            if key.principal != producer or key.status == REVOKED or key.purpose != "seal":
                continue
            grants = self._grants.get(kid)
            if grants is None:
                unknown = True
                continue
            types = grants.get(topic, [])
            if event_type in types or "*" in types:
                return True
        return None if unknown else False


class ClientAuthorizer:
    """The Authorizer seam in client mode: other producers' Publish rights come from signed trust
    entries (offline); this identity's own rights are asked of the control plane and cached until
    a notice says the policy changed. Decisions for other principals are never asked remotely."""

    def __init__(self, api: ControlAPI, trust: SignedTrust) -> None:
        self._api = api
        self._trust = trust
        self._cache: dict[tuple[str, str, Resource, bytes], bool] = {}

    def decide(self, principal: str, action: str, resource: Resource,
               context: dict[str, Any] | None = None) -> Decision:
        ctx = dict(context or {})
        if principal != self._api.principal:
            if action != PUBLISH or resource[0] != "Topic":
                return Decision(False, principal, action, resource)
            enrolled = self._trust.may_seal(principal, resource[1], str(ctx.get("event_type", "")))
            if enrolled is not None:
                return Decision(enrolled, principal, action, resource, ("trust-entry",) if enrolled else ())
        key = (principal, action, resource, orjson.dumps(ctx, option=orjson.OPT_SORT_KEYS))
        allowed = self._cache.get(key)
        if allowed is None:
            about = None if principal == self._api.principal else principal
            if len(self._cache) >= 4096:
                self._cache.clear()
            allowed = self._cache[key] = bool(self._api.decide(action, resource, ctx, about))
        return Decision(allowed, principal, action, resource, ("control-plane",))

    def policy_changed(self) -> None:
        self._cache.clear()


class RemoteNotices:
    """The consumer's erasure-notice board in client mode (the Consumer calls ``due`` and
    ``acknowledge`` as it does the home's): answered by the control plane for this identity.

    The Consumer asks ``due`` every half second, an HTTPS round trip on its path. With a running
    ``follower`` an empty answer is kept while no erasure notice (and no failed poll, which could
    hide one) arrived since it was asked, for at most ``recheck_s``: anything erased later is
    announced by a notice, so it is asked about at the next ``due`` after the notice is applied.
    The first answer, a non-empty one and one after an acknowledgement are always asked for, and
    a group whose hooks failed here is always asked (its failures come due again without a
    notice, ``retry_s`` later); one failed in an earlier process is retried at most
    ``recheck_s`` after it came due."""

    def __init__(self, api: ControlAPI, follower: NoticeFollower | None = None, *, recheck_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._api = api
        self._registered: set[str] = set()
        self._follower = follower
        self._recheck = recheck_s
        self._clock = clock
        self._quiet: dict[str, tuple[int, float]] = {}  # group -> (follower changes, when) of an empty answer
        self._failed: set[str] = set()  # groups that acknowledged a failure here

    def register(self, group: str) -> None:
        """Register ``group`` now if the control plane answers, else at the first ``due``."""
        try:
            self._api.register_group(group)
        except ControlPlaneUnavailable:
            return
        self._registered.add(group)

    def due(self, group: str) -> list[str]:
        if group not in self._registered:
            self._api.register_group(group)
            self._registered.add(group)
        follower, quiet, now = self._follower, self._quiet.get(group), self._clock()
        if follower is not None and quiet is not None and now - quiet[1] < self._recheck \
                and follower.unchanged_since(quiet[0]):
            return []
        mark = follower.changes if follower is not None else 0  # before asking: a notice meanwhile counts
        got = self._api.erasures_due(group)
        if got or group in self._failed:
            self._quiet.pop(group, None)
        else:
            self._quiet[group] = (mark, now)
        return got

    def acknowledge(self, pseudonym: str, group: str, *, principal: str, error: str | None = None) -> bool:
        if principal != self._api.principal:
            raise AccessDenied(f"this client is {self._api.principal}, not {principal}")
        self._quiet.pop(group, None)
        if error is not None:
            self._failed.add(group)
        return self._api.acknowledge(group, pseudonym, error)


# --- notices --------------------------------------------------------------------------------
class NoticeFollower:
    """Long-polls signed notices on a daemon thread and applies them: erased subjects' keys are
    dropped (and refused from then on), revoked kids refused, cached decisions dropped when the
    policy version changes. ``latency`` holds recent (notice time -> applied) delays for the bench."""

    def __init__(self, api: ControlAPI, anchor_key: Ed25519PublicKey, keys: RemoteKeys, trust: SignedTrust,
                 authorizer: ClientAuthorizer, *, wait: float = 10.0) -> None:
        self._api = api
        self._anchor = anchor_key
        self._keys = keys
        self._trust = trust
        self._authz = authorizer
        self._wait = wait
        self._after = time.time()
        self._policy: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.applied = 0
        self.changes = 0  # polls that brought an erasure, or failed (a failure may hide one)
        self._healthy_until = 0.0  # monotonic; a poll's answer is current until about then
        # The application's on_forget(pseudonym) hooks, run after the subject's keys are dropped.
        # Seam: client-mode groups do not acknowledge to the home's notice board yet (no control
        # API route); ``acknowledge(pseudonym, error_code_or_None)`` is called when set.
        self.hooks: list[Callable[[str], object]] = []
        self.acknowledge: Callable[[str, str | None], None] | None = None

    def start(self) -> NoticeFollower:
        self.poll(0.0)  # the state as of now, synchronously: nothing earlier is cached yet
        self._thread = threading.Thread(target=self._run, name="eventward-notices", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self._wait + 5.0)

    def poll(self, wait: float) -> None:
        body = statements.verify(self._anchor, self._api.notices(self._after, wait), "notice").body
        erased = [str(h) for h in body.get("erased", ())]
        if erased:
            self.changes += 1
        self._keys.forget_subjects(erased)
        for h in erased:
            self._run_hooks(h)
        self._trust.revoke(list(body.get("revoked", ())))
        if self._policy is not None and body.get("policy") != self._policy:
            self._authz.policy_changed()
            self._keys.clear()
        self._policy = body.get("policy")
        self._after = max(self._after, float(body.get("until", self._after)))
        self.applied += 1
        self._healthy_until = time.monotonic() + self._wait + 5.0

    def unchanged_since(self, changes: int) -> bool:
        """Following, current, and no erasure (nor failed poll) since ``changes`` was read."""
        thread = self._thread
        return (thread is not None and thread.is_alive() and not self._stop.is_set()
                and self.changes == changes and time.monotonic() < self._healthy_until)

    def _run_hooks(self, pseudonym: str) -> None:
        """The hooks for one erased subject; a failure is logged and acknowledged by its code only."""
        from eventward._internal.keys.notices import error_code

        error = None
        for hook in self.hooks:
            try:
                hook(pseudonym)
            except Exception as e:  # the application's hook: reported by code, never its message
                error = error_code(e)
                log.error("on_forget hook failed (%s)", error)
                break
        if self.acknowledge is not None:
            self.acknowledge(pseudonym, error)

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                self.poll(self._wait)
                backoff = 0.1
            except (EventwardError, SealError) as e:
                self.changes += 1
                self._healthy_until = 0.0
                log.warning("control-plane notices unavailable (%s); retrying", e.code)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
