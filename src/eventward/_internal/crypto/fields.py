"""Schema-driven field encryption: replace every sensitive value of an event by a token.

The FieldSpec (derived from the schema) says which paths are sensitive, their class, and
which field names the data subject. Classes are encrypted under the subject's DEK when the
spec names a subject (so ``forget(subject)`` shreds exactly that subject's fields) and under
the class DEK otherwise. Reading is enforced by the key source: a principal not cleared for
a class never gets its DEK, and sees ``REDACTED`` (or the token) instead.

Fail closed: encrypt either returns a fully encrypted copy or raises; decrypt never hands
back a value it could not verify as if it were clear. Inputs are never modified: outputs
copy the containers on the way to each sensitive value and share the untouched subtrees
(treat both as read-only, or copy before mutating).

Hot path (every event of every producer and consumer): a FieldSpec is compiled once into a
plan whose leaves carry their path's associated-data part; per event, the sensitive values
are located as groups of leaves sharing one parent container (no per-field allocations for
paths without arrays), the key source is asked once per class or key id, the key's part of
the associated data comes from a bounded cache, and each field costs one AEAD call plus its
token encoding. On decrypt, a token starting with the exact header of the previous token of
its slot skips the header parse and the key lookup; its payload is checked in full anyway.
"""

from __future__ import annotations

import binascii
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from cryptography.exceptions import InvalidTag

from eventward._internal.crypto import tokens
from eventward._internal.crypto.tokens import GCM, NONCE_BYTES, SIV, TokenCipher
from eventward._internal.fieldspec import FieldRule, FieldSpec, parse_path
from eventward._internal.keys.base import DekSource
from eventward.errors import (
    AccessDenied,
    EventwardError,
    FieldSpecError,
    InputError,
    KeyDestroyed,
    KeyNotFound,
    KeyServiceError,
    TokenError,
)

ERASED = "[erased]"  # what a reader sees for a crypto-shredded field
REDACTED = "[redacted]"  # what a reader not cleared for the field's class sees
_MAX_PLANS = 256
_MAX_BATCH_KEYS = 4096  # decryption outcomes one read batch remembers (a batch is <= 10,000 events)
_BATCH_KEYS_TTL = 1.0  # seconds; as long as the key service reuses a granted Encrypt decision
_DENIED = object()  # decryption-key outcomes, remembered for the rest of the event
_DESTROYED = object()
_NO_HEADER = (None, 0, None, b"")  # a slot's (header, payload offset, handle, head) before its first token
_NO_SLOT = (None, 0, None, b"", None)  # decrypt_many's, with the slot's AEAD decrypt
_NONCE_BLOCK = 64 * 1024  # bytes of nonces one os.urandom call of encrypt_many draws at most
_TO_URL = tokens._TO_URL  # KeyHandle.seal's base64url step, inlined by encrypt_many
_b2a = tokens._b2a
_TOKEN_PREFIX = tokens.VERSION + "."  # "ew1."; the algorithm letter and a dot follow, then the kid
_HEAD_OF = {a: m.match for a, m in tokens._HEAD_OF.items()}

# One sensitive value: (key or index in its container, concrete path, path part of the
# associated data). Plain paths have theirs precomputed in the plan.
_Leaf = tuple[Any, str, bytes]
# Leaves of one slot (one class and algorithm): (slot, a rule plan of that slot, for its
# class, algorithm and twin; the leaves).
_Batch = tuple[int, "_RulePlan", tuple[_Leaf, ...]]
# Values located in one event: (source container, output container, its sensitive leaves by
# slot, every one of them present in the source).
_Group = tuple[Any, Any, tuple[_Batch, ...]]


@dataclass(frozen=True)
class DecryptReport:
    """What a decrypt did, for metrics and audit: counts and class names, never values."""

    decrypted: int = 0
    erased: int = 0
    redacted: int = 0
    classes: frozenset[str] = frozenset()
    erased_classes: frozenset[str] = frozenset()
    redacted_classes: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class _RulePlan:
    rule: FieldRule
    cls: str
    alg: str
    slot: int  # index of (cls, alg) in _Plan.slots: one key and associated-data head per slot and event
    twin: int  # slot of the same class under the other algorithm (shares its key), or -1
    fixed: bool  # the associated data ends in the rule path (SIV, or a path without arrays)
    tail: bytes  # path_context(rule path)
    gcm: bool  # alg == GCM
    least: int  # tokens._MIN_BLOB[alg]
    # tokens._HEAD for this algorithm only: a token it does not match is malformed or of the
    # other algorithm, which tokens.parse_header tells apart (decrypt_many's header parse)
    match: Any


@dataclass(frozen=True, slots=True)
class _Plan:
    """A FieldSpec prepared once: plain paths grouped by parent object, overlaps refused."""

    # (parent names, names of its sensitive leaves, the leaves by slot)
    groups: tuple[tuple[tuple[str, ...], frozenset[str], tuple[_Batch, ...]], ...]
    nested: tuple[_RulePlan, ...]  # rules with an array segment
    subject: tuple[str, ...] | None
    classes: frozenset[str]
    slots: tuple[tuple[str, str], ...]  # distinct (cls, alg) pairs
    reports: dict[tuple[int, frozenset[str]], DecryptReport]
    full: int  # values in an event with every plain path present
    shared: bool  # a slot has leaves in more than one located group (two parents, or array paths)
    # want_keys' view of ``groups`` (None with array paths): (parent names, ((class, leaf names
    # of one slot), ...)) per group
    want: tuple[tuple[tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]], ...] | None


class FieldEncryptor:
    """Encrypts and decrypts the sensitive fields of event data against a DekSource.

    The key source is asked once per class (encrypt) or key id (decrypt) per event, never
    per field. Thread-safe as long as the key source is.
    """

    def __init__(self, keys: DekSource, *, cipher: TokenCipher | None = None) -> None:
        self._keys = keys
        # A key source that authorizes per topic/type and counts nonces (KeyService) is told
        # both; a minimal DekSource (tests, adapters) is called with the base signature.
        self._contextual = bool(getattr(keys, "takes_context", False))
        self._cipher = cipher or TokenCipher()
        self._plans: dict[int, tuple[FieldSpec, _Plan]] = {}
        self._lock = threading.Lock()
        self._batch = threading.local()  # .keys: this thread's read-batch memo, or None
        self._generation = 0  # moved by clear_cache: read-batch memos of every thread are dropped

    def __repr__(self) -> str:
        return f"FieldEncryptor({type(self._keys).__name__}, {len(self._plans)} specs prepared)"

    def prepare_many(
        self, topic: str, event_type: str, spec: FieldSpec, events: Iterable[Any], *, principal: str | None = None
    ) -> None:
        """Before a producer's ``send_many`` encrypts: the call's (subject, class) keys resolved in
        one key-source call (KeyService.encryption_keys: Encrypt decided for every class before any
        key is made, one pseudonym query, one current-key query, one unwrap, one creating
        transaction). No nonce is charged here (``nonces=0``): each event still asks the key source
        for its key (``encrypt``), which then finds it memoised and counts that event's nonces; a
        forget meanwhile drops the memo there, so a forgotten key is never used. A key source
        without a batch call (or a spec with no subject) is left to the per-event path."""
        many = getattr(self._keys, "encryption_keys", None)
        if many is None or principal is None or not spec.classes or spec.subject_path is None:
            return
        cached = self._plans.get(id(spec))
        plan = cached[1] if cached is not None and cached[0] is spec else self._plan(spec)
        subjects: dict[str, None] = {}
        for e in events:
            try:
                s = _subject(spec, plan, e)  # spec.subject_of, its common case inlined
            except FieldSpecError:
                continue  # refused by validation or by encrypt, with its own error
            if s is not None:
                subjects[s] = None
        classes = sorted(spec.classes)  # a property that builds a set: once, not per subject
        pairs = [(s, c) for s in subjects for c in classes]
        cold = getattr(self._keys, "unmemoised", None)
        if cold is not None:  # keys already memoised are left to the per-event hot path
            pairs = cold(pairs)
        if pairs:
            many([(s, c, 0) for s, c in pairs], principal=principal, topic=topic, event_type=event_type)

    def clear_cache(self) -> None:
        """Drop cached cipher objects and read-batch memos (call when keys are revoked)."""
        self._generation += 1
        self._cipher.clear()

    @contextmanager
    def reading_batch(self) -> Iterator[None]:
        """Within it (one consumer read batch, on this thread), the key source is asked once per
        (key id, class, principal, topic, type) instead of once per event: a DEK, a Decrypt
        refusal or a crypto-shred is resolved once per batch, as the seal is verified once per
        batch. Outcomes live until the block ends and at most ``_BATCH_KEYS_TTL`` seconds (slow
        handlers), so a revoked grant or a forget takes effect within that. An unknown key id is never remembered: every
        event carrying one is refused on its own. Nested blocks share the outer memo."""
        if getattr(self._batch, "keys", None) is not None:
            yield
            return
        self._batch.keys = {}
        self._batch.until = time.monotonic() + _BATCH_KEYS_TTL
        self._batch.state = self._revocation_state()
        try:
            yield
        finally:
            self._batch.keys = None

    def _revocation_state(self) -> tuple[int, int]:
        """What a read-batch memo is valid for: the key source's revocation count (a forget, in
        this process or seen by its poll) and this encryptor's clear_cache generation."""
        return getattr(self._keys, "revocations", 0), self._generation

    def resolve_batch(
        self,
        events: Iterable[tuple[str, FieldSpec, str | None, Any]],
        *,
        principal: str,
        topic: str | None = None,
    ) -> int:
        """Resolve a read batch's keys before its events are decrypted one by one: the key ids
        of every (event type, spec, subject hash, data), asked of the key source in one
        ``decryption_keys`` call per event type when it has one (KeyService: one Decrypt decision
        per class, one ``SELECT ... IN``, one unwrap per key, one audit record per class). The
        outcomes (DEK, Decrypt refusal, crypto-shred) fill the current ``reading_batch`` memo
        exactly as per-event lookups would; anything else (a forged id, an unavailable KMS or
        store) is left to the per-event lookup, which refuses or fails closed at that event.
        Returns how many outcomes were remembered; 0 outside a reading_batch."""
        if getattr(self._batch, "keys", None) is None or not self._contextual or not hasattr(
            self._keys, "decryption_keys"
        ):
            return 0
        wanted: dict[str | None, dict[tuple[str, str, str | None], None]] = {}
        for event_type, spec, shash, data in events:
            self.want_keys(wanted, event_type, spec, shash, data)
        return self.resolve_wanted(wanted, principal=principal, topic=topic)

    def want_keys(self, wanted: dict[str | None, dict[tuple[str, str, str | None], None]], event_type: str | None,
                  spec: FieldSpec, shash: str | None, data: Any) -> None:
        """Add the (key id, class, subject hash) of the tokens in one event's ``data`` to
        ``wanted`` (per event type), for ``resolve_wanted``: a consumer collects them as it parses
        each record. The common case (a prepared spec without array paths, dict data) reads the
        key ids in place, as ``key_ids`` does, without building its list, and takes one token per
        slot (class and algorithm) and parent object: encrypt seals an event's fields of one class
        under one key, so the others carry the same key id. This is a prefetch only: a token under
        another key id is not in the memo, so decrypt_many leaves its event to ``decrypt``, which
        asks the key source for it (or refuses it) as it always does."""
        cached = self._plans.get(id(spec))
        want = cached[1].want if cached is not None and cached[0] is spec and type(data) is dict else None
        if want is None:
            try:
                kids = self.key_ids(spec, data)
            except EventwardError:  # refused per event, with its own error, when it is decrypted
                return
        else:  # _plain_groups inlined, straight into the batch's set (no generator, no list per event)
            group = None
            for parent, runs in want:
                src: Any = data
                for name in parent:
                    src = src.get(name)
                    if type(src) is not dict:
                        break
                else:
                    for cls, names in runs:
                        for name in names:
                            value = src.get(name)
                            if type(value) is str and value[:4] == _TOKEN_PREFIX:
                                end = value.find(".", 6)
                                if end > 6:
                                    if group is None:
                                        group = wanted.get(event_type)
                                        if group is None:
                                            group = wanted[event_type] = {}
                                    group[value[6:end], cls, shash] = None
                                    break  # the slot's other tokens: see above
            return
        if kids:
            group = wanted.get(event_type)
            if group is None:
                group = wanted[event_type] = {}
            for kid, cls in kids:
                group[kid, cls, shash] = None

    def resolve_wanted(
        self,
        wanted: dict[str | None, dict[tuple[str, str, str | None], None]],
        *,
        principal: str,
        topic: str | None = None,
    ) -> int:
        """``resolve_batch`` of key ids already collected (``want_keys``)."""
        memo = getattr(self._batch, "keys", None)
        resolve = getattr(self._keys, "decryption_keys", None)
        if memo is None or resolve is None or not self._contextual:
            return 0
        state = self._revocation_state()
        if state != self._batch.state:  # dropped since the batch began: start the memo afresh
            memo.clear()
            self._batch.state = state
        room = _MAX_BATCH_KEYS - len(memo)
        done = 0
        for event_type, items in wanted.items():
            if len(items) > room - done:
                break
            try:
                got = resolve(list(items), principal=principal, topic=topic, event_type=event_type)
            except KeyServiceError:
                return done  # the per-event lookups meet it again, at the first event it stops
            if self._revocation_state() != state:  # a forget while resolving: these may predate it
                return done
            for kid, cls, shash in items:
                out = got.get((kid, cls))
                if type(out) is not bytes:
                    if isinstance(out, AccessDenied):
                        out = _DENIED
                    elif isinstance(out, KeyDestroyed):
                        out = _DESTROYED
                    else:
                        continue
                memo[kid, cls, principal, topic, event_type, shash] = out
                done += 1
        return done

    def key_ids(self, spec: FieldSpec, data: Any) -> list[tuple[str, str]]:
        """The distinct (key id, class) pairs of the tokens in ``data`` where ``spec`` puts
        sensitive values (values that are not tokens are left for decrypt to refuse)."""
        cached = self._plans.get(id(spec))
        plan = cached[1] if cached is not None and cached[0] is spec else self._plan(spec)
        found: dict[tuple[str, str], None] = {}
        if plan.nested or type(data) is not dict:
            _, located, _ = _locate(spec, plan, data)
            groups: Iterable[tuple[Any, tuple[_Batch, ...]]] = ((g[0], g[2]) for g in located)
        else:
            groups = _plain_groups(plan, data)
        for src, batches in groups:
            for _, rp, leaves in batches:
                for leaf in leaves:
                    value = src.get(leaf[0]) if type(src) is dict else src[leaf[0]]
                    if type(value) is str and value.startswith(_TOKEN_PREFIX):
                        end = value.find(".", 6)
                        if end > 6:
                            found[value[6:end], rp.cls] = None
        return list(found)

    def encrypt(
        self,
        event_id: str,
        data: dict[str, Any],
        spec: FieldSpec,
        *,
        principal: str,
        topic: str | None = None,
        event_type: str | None = None,
    ) -> tuple[dict[str, Any], str | None]:
        """A copy of ``data`` with every sensitive value replaced by a token, and the
        data-subject hash (None if the spec names no subject) for the envelope. ``topic`` and
        ``event_type`` go to the key source's Encrypt authorization."""
        if type(event_id) is not str or not event_id:
            _check_event_id(event_id)
        cached = self._plans.get(id(spec))  # self._plan(spec), its hit inlined
        plan = cached[1] if cached is not None and cached[0] is spec else self._plan(spec)
        subject = None if plan.subject is None else _subject(spec, plan, data)
        shash = None if subject is None else self._keys.subject_hash(subject)
        out, located, count = _locate(spec, plan, data)
        if not count:
            return out, shash
        ev = tokens.event_context(event_id)
        nonces = os.urandom(NONCE_BYTES * count)  # one syscall per event; SIV fields skip theirs
        pos = 0
        heads: list[Any] = [None] * len(plan.slots)  # per slot: (seal, associated-data head, (kid, dek))
        where = (topic, event_type, count)
        for src, dst, batches in located:
            for slot, rp, leaves in batches:
                entry = heads[slot]
                if entry is None:
                    entry = heads[slot] = self._encryption_head(subject, rp, principal, shash, ev, heads, where)
                seal, head, gcm = entry[0], entry[1], rp.alg == GCM
                for k, path, tail in leaves:
                    if gcm:
                        nonce = nonces[pos : pos + NONCE_BYTES]
                        pos += NONCE_BYTES
                    else:
                        nonce = None
                    try:
                        # ``dst`` belongs to ``out``, which nobody sees unless every field is sealed.
                        dst[k] = seal(src[k], head + tail, nonce)
                    except InputError as e:
                        raise InputError(f"sensitive field {path}: {e.message}", path=path) from None
        return out, shash

    def encrypt_many(
        self,
        ids: Sequence[str],
        events: Sequence[Any],
        spec: FieldSpec,
        *,
        principal: str,
        topic: str | None = None,
        event_type: str | None = None,
    ) -> list[tuple[dict[str, Any], str | None]]:
        """``encrypt`` of each (event id, data) pair in order, for a producer's ``send_many``: the
        same tokens, the same key-source calls (one per class and event: Encrypt releases and
        nonce counts as ``encrypt`` makes them) and the same errors (the first bad event raises,
        as a loop of ``encrypt`` would), with the per-call work done once: the plan is looked up
        once, nonces are cut from os.urandom blocks drawn for many events at a time (12 fresh
        bytes per GCM value; a block is never reused, its leftover is dropped) and each GCM
        token is sealed inline with its key's AESGCM (``KeyHandle.seal``'s encoding)."""
        if len(ids) != len(events):
            raise InputError("encrypt_many needs one event id per event")
        cached = self._plans.get(id(spec))
        plan = cached[1] if cached is not None and cached[0] is spec else self._plan(spec)
        head_of, subject_hash, event_context = self._encryption_head, self._keys.subject_hash, tokens.event_context
        contextual, encryption_key, bound = self._contextual, self._keys.encryption_key, self._cipher.bound
        has_subject, nslots = plan.subject is not None, len(plan.slots)
        per_event = NONCE_BYTES * max(1, sum(len(names) for _, names, _ in plan.groups))
        dumps, b2a, to_url, gcm_alg = orjson.dumps, _b2a, _TO_URL, GCM
        pool, pos, left = b"", 0, len(events)
        results: list[tuple[dict[str, Any], str | None]] = []
        for event_id, data in zip(ids, events, strict=True):
            left -= 1
            if type(event_id) is not str or not event_id:
                _check_event_id(event_id)
            subject = _subject(spec, plan, data) if has_subject else None
            shash = None if subject is None else subject_hash(subject)
            out, located, count = _locate(spec, plan, data)
            if count:
                need = NONCE_BYTES * count
                if pos + need > len(pool):  # a fresh block for this event and (up to a bound) the rest
                    pool, pos = os.urandom(max(need, min(per_event * (left + 1), _NONCE_BLOCK))), 0
                ev = event_context(event_id)
                heads: list[Any] = [None] * nslots
                where = (topic, event_type, count)
                for src, dst, batches in located:
                    for slot, rp, leaves in batches:
                        entry = heads[slot]
                        if entry is None:
                            if rp.twin < 0 and contextual and rp.alg == gcm_alg:  # _encryption_head, inlined
                                kid, dek = encryption_key(subject, rp.cls, principal=principal, topic=topic,
                                                          event_type=event_type, nonces=count)
                                h, ctx = bound(kid, dek, gcm_alg, rp.cls, shash)
                                entry = heads[slot] = (h.seal, ctx + ev, (kid, dek), h)
                            else:
                                entry = heads[slot] = head_of(subject, rp, principal, shash, ev, heads, where)
                        head = entry[1]
                        if rp.alg == gcm_alg:
                            h = entry[3]  # KeyHandle.seal's GCM branch, inlined below
                            aead, prefix = h._gcm.encrypt, h._prefix_g
                            for k, path, tail in leaves:
                                nonce = pool[pos : pos + NONCE_BYTES]
                                pos += NONCE_BYTES
                                try:
                                    pt = dumps(src[k])
                                except orjson.JSONEncodeError:  # KeyHandle.seal's error, named by its path
                                    raise InputError(
                                        f"sensitive field {path}: a sensitive value of type {type(src[k]).__name__} "
                                        "is not JSON-serializable",
                                        path=path,
                                    ) from None
                                # ``dst`` belongs to ``out``, which nobody sees unless every field is sealed.
                                dst[k] = prefix + b2a(nonce + aead(nonce, pt, head + tail), newline=False).translate(
                                    to_url, b"="
                                ).decode()
                        else:
                            seal = entry[0]
                            for k, path, tail in leaves:
                                try:
                                    dst[k] = seal(src[k], head + tail, None)
                                except InputError as e:
                                    raise InputError(f"sensitive field {path}: {e.message}", path=path) from None
            results.append((out, shash))
        return results

    def decrypt(
        self,
        event_id: str,
        data: dict[str, Any],
        spec: FieldSpec,
        subject_hash: str | None,
        *,
        principal: str,
        uncleared: Literal["redact", "token"] = "redact",
        topic: str | None = None,
        event_type: str | None = None,
    ) -> tuple[dict[str, Any], DecryptReport]:
        """A copy of ``data`` with the fields ``principal`` is cleared for decrypted,
        crypto-shredded ones as ERASED and uncleared ones as REDACTED (or left as tokens).

        TokenError for plaintext where a token belongs, a tampered or moved token, or a key id
        the key source never issued; KeyServiceError when the key source cannot answer.
        """
        if uncleared != "redact" and uncleared != "token":
            raise InputError("uncleared must be 'redact' or 'token'")
        if type(event_id) is not str or not event_id:
            _check_event_id(event_id)
        cached = self._plans.get(id(spec))
        plan = cached[1] if cached is not None and cached[0] is spec else self._plan(spec)
        if (subject_hash is None) != (plan.subject is None) or not (
            subject_hash is None or type(subject_hash) is str
        ):
            raise InputError(
                "a subject hash (a string) is required exactly when the field spec names a data "
                f"subject (spec subject: {spec.subject_path!r})"
            )
        out, located, count = _locate(spec, plan, data)
        ev = tokens.event_context(event_id)
        heads: dict[tuple[str, str, str], tuple[Any, bytes, Any]] = {}  # (kid, class, alg) -> entry
        where = (topic, event_type, subject_hash)
        # Per slot: (header "ew1.<alg>.<kid>." of the last token seen there, payload offset,
        # handle, associated-data head). A token starting with exactly that header has the same
        # algorithm and key id, so it needs no header parse and no lookup (the usual case: one
        # key per class and event); its payload is still decoded and checked in full.
        recent: list[Any] = [None] * len(plan.slots)
        erased: list[str] = []
        redacted: list[str] = []
        for src, dst, batches in located:
            for slot, rp, leaves in batches:
                alg = rp.alg
                header, start, h, head = recent[slot] or _NO_HEADER
                for k, path, tail in leaves:
                    value = src[k]
                    try:
                        if header is None or type(value) is not str or not value.startswith(header):
                            header, start, h, head = recent[slot] = self._decryption_entry(
                                value, rp, principal, subject_hash, ev, heads, where
                            )
                        if h is _DENIED or h is _DESTROYED:
                            tokens.decode_payload(value, start, alg)  # refused all the same if malformed
                            (redacted if h is _DENIED else erased).append(rp.cls)
                            if h is _DESTROYED:
                                dst[k] = ERASED
                            elif uncleared == "redact":
                                dst[k] = REDACTED
                        else:
                            dst[k] = h.open_token(value, start, alg, head + tail)
                    except TokenError as e:
                        raise TokenError(
                            f"sensitive field {path}: {e.message}", **{**e.details, "path": path}
                        ) from None
        return out, _report(plan, located, count, erased, redacted)

    def decrypt_many(
        self,
        items: Sequence[tuple[str, Any, str | None]],
        spec: FieldSpec,
        *,
        principal: str,
        uncleared: Literal["redact", "token"] = "redact",
        topic: str | None = None,
        event_type: str | None = None,
    ) -> tuple[list[Any], Any]:
        """``decrypt`` of each (event id, data, subject hash) within the current ``reading_batch``,
        from its memo only: ``(outcomes, stamp)``, one outcome per item, in order:
        ``(clear, report)``, the error ``decrypt`` would raise (InputError, TokenError), or None
        where this call cannot decide without the key source (a key not in the memo, a bad key)
        and the caller must call ``decrypt``. It never calls the key source, so it adds no
        Decrypt decision, audit record or query, and may run ahead of events that are then not
        decrypted. The outcomes hold while ``batch_current(stamp)``: the memo they were read from
        is still the one ``decrypt`` would read (no forget, no clear_cache, within the TTL).

        Why: a consumer opens every sensitive field of every event. Here each event's tokens are
        opened in one loop (``KeyHandle.open_token``'s checks inlined, in the same order), with
        no per-event call, keyword packing or per-key lookup call, so the same tokens are
        accepted and each event fails with the same first error."""
        if uncleared != "redact" and uncleared != "token":
            raise InputError("uncleared must be 'redact' or 'token'")
        cached = self._plans.get(id(spec))
        plan = cached[1] if cached is not None and cached[0] is spec else self._plan(spec)
        results: list[Any] = [None] * len(items)
        batch = self._batch
        memo = getattr(batch, "keys", None)
        state = self._revocation_state()
        if not memo or time.monotonic() >= batch.until or state != batch.state:
            return results, None  # the per-event path clears the memo and asks the key source
        stamp = (memo, batch.until, *state)  # batch_current unpacks it flat
        has_subject, opening = plan.subject is not None, self._cipher.opening
        bound_get, memo_get = self._cipher._bound.get, memo.get  # opening's cache hit, looked up inline
        last, pad, from_url, a2b, u32 = tokens._LAST, tokens._PAD, tokens._FROM_URL, tokens._a2b, tokens._U32
        loads, not_json, no_event, redact = orjson.loads, orjson.JSONDecodeError, tokens.NO_EVENT, uncleared == "redact"
        # The usual event (a plan without array paths, dict data) is located inline; anything else
        # by _locate. A sensitive value found absent while opening (an optional field) sends the
        # event to _locate too, which skips it, before anything of the event is recorded.
        groups = None if plan.nested else plan.groups
        single = groups[0] if groups is not None and len(groups) == 1 else None
        s_parent, s_batches = (single[0], single[2]) if single is not None else ((), ())
        shared, full, nslots = plan.shared, plan.full, len(plan.slots)
        # The report of an event with every value decrypted, shared (immutable): _report's own.
        full_report = None
        if len(plan.classes) == 1 and full and groups is not None:
            full_report = plan.reports.get((full, plan.classes))
        for i, (event_id, data, shash) in enumerate(items):
            try:
                if type(event_id) is not str or not event_id:
                    _check_event_id(event_id)
                if has_subject == (shash is None) or not (shash is None or type(shash) is str):
                    raise InputError(
                        "a subject hash (a string) is required exactly when the field spec names a data "
                        f"subject (spec subject: {spec.subject_path!r})"
                    )
                located: Any = None
                if groups is not None and type(data) is dict:
                    out = data.copy()
                    count = full
                    if single is not None:
                        src, dst = data, out
                        for name in s_parent:
                            child = src.get(name)
                            if type(child) is not dict:  # missing, null or mistyped: _locate decides
                                break
                            mine = dst[name]
                            if mine is child:
                                mine = dst[name] = child.copy()
                            src, dst = child, mine
                        else:
                            located = ((src, dst, s_batches),)
                    else:
                        located = []
                        for parent, _, batches in groups:
                            src, dst = data, out
                            for name in parent:
                                child = src.get(name)
                                if type(child) is not dict:
                                    break
                                mine = dst[name]
                                if mine is child:
                                    mine = dst[name] = child.copy()
                                src, dst = child, mine
                            else:
                                located.append((src, dst, batches))
                                continue
                            located = None
                            break
                if located is None:
                    out, located, count = _locate(spec, plan, data)
            except EventwardError as e:
                results[i] = e
                continue
            except Exception:  # noqa: S112 - not decided here: decrypt raises it at this event
                continue
            eb = event_id.encode()  # tokens.event_context, inlined
            ev = u32(len(eb)) + eb
            path = ""
            relocated = False
            while True:  # twice at most: located inline, then (a value absent) by _locate
                # Per slot, when a slot has leaves in several groups: (header "ew1.<alg>.<kid>." of
                # the slot's last token, payload offset, handle, associated-data head, AEAD decrypt).
                # A token starting with exactly that header has the same algorithm and key id: no
                # header parse, no lookup; its payload is still decoded and checked in full.
                recent: list[Any] | None = [None] * nslots if shared else None
                erased: list[str] | tuple[()] = ()  # made when a field is erased or redacted
                redacted: list[str] | tuple[()] = ()
                try:
                    for src, dst, batches in located:
                        for slot, rp, leaves in batches:
                            cls, gcm, least = rp.cls, rp.gcm, rp.least
                            if recent is None:
                                header = None
                            else:
                                header, start, h, head, dec = recent[slot] or _NO_SLOT
                            for k, path, tail in leaves:  # noqa: B007 - ``path`` names the field of an error
                                try:
                                    value = src[k]
                                except KeyError:
                                    raise _Absent from None
                                if header is None or type(value) is not str or not value.startswith(header):
                                    # A new key id in this slot (the first token, or a key changed): the
                                    # memo and the cipher's cache answer directly.
                                    m = rp.match(value) if type(value) is str else None
                                    if m is None:  # malformed (parse_header says how), or the other algorithm
                                        tokens.parse_header(value)
                                        raise TokenError("token algorithm does not match the field's rule")
                                    kid, start = m[1], m.end()
                                    dek = memo_get((kid, cls, principal, topic, event_type, shash))
                                    if dek is None:  # only the key source can tell: decrypt asks it
                                        raise _Undecided
                                    if dek is _DENIED or dek is _DESTROYED:
                                        h, head, dec = dek, b"", None
                                    else:
                                        hit = bound_get((kid, dek, rp.alg, cls, shash))
                                        if hit is None:
                                            try:
                                                hit = opening(kid, dek, rp.alg, cls, shash)
                                            except KeyServiceError:  # a bad key: decrypt raises it here
                                                raise _Undecided from None
                                        h = hit[0]
                                        if gcm:
                                            head, dec = hit[1] + ev, h._gcm.decrypt
                                        else:
                                            head, dec = hit[1] + no_event, h._siv_cipher().decrypt
                                    header = value[:start]
                                    if recent is not None:
                                        recent[slot] = (header, start, h, head, dec)
                                if dec is None:  # the key source refused the key: _DENIED or _DESTROYED
                                    tokens.decode_payload(value, start, rp.alg)  # refused all the same if malformed
                                    if h is _DESTROYED:
                                        erased = [*erased, cls]
                                        dst[k] = ERASED
                                    else:
                                        redacted = [*redacted, cls]
                                        if redact:
                                            dst[k] = REDACTED
                                    continue
                                # KeyHandle.open_token, inlined: the same checks in the same order.
                                rem = (len(value) - start) & 3
                                if value[-1] not in last[rem]:
                                    raise TokenError("token payload is not canonical base64url")
                                try:  # UTF-8, not ASCII: strict a2b refuses any byte out of the alphabet alike
                                    blob = a2b(value[start:].encode().translate(from_url) + pad[rem], strict_mode=True)
                                except (UnicodeEncodeError, binascii.Error):
                                    raise TokenError("token payload is not canonical base64url") from None
                                if len(blob) < least:
                                    raise TokenError("token payload is too short")
                                try:
                                    if gcm:
                                        pt = dec(blob[:NONCE_BYTES], blob[NONCE_BYTES:], head + tail)
                                    else:
                                        pt = dec(blob, [head + tail])
                                except InvalidTag:
                                    raise TokenError(tokens.TAMPERED) from None
                                try:
                                    dst[k] = loads(pt)
                                except not_json:
                                    raise TokenError("token plaintext is not JSON") from None
                except _Absent:
                    if relocated:  # cannot happen (_locate finds only present values): decrypt decides
                        break
                    relocated = True
                    out, located, count = _locate(spec, plan, data)  # the same parents: no shape error
                    continue
                except TokenError as e:
                    results[i] = _in_field(e, path)
                    break
                except Exception:  # _Undecided, or anything else: decrypt decides this event
                    break
                if erased or redacted or not count:
                    results[i] = (out, _report(plan, located, count, erased, redacted))  # type: ignore[arg-type]
                elif count == full and full_report is not None:  # the common outcome: _report's shared one
                    results[i] = (out, full_report)
                else:
                    report = _report(plan, located, count, [], [])
                    if count == full and report.classes is plan.classes:
                        full_report = report
                    results[i] = (out, report)
                break
        return results, stamp

    def batch_current(self, stamp: Any) -> bool:
        """Whether ``decrypt_many`` outcomes read under ``stamp`` are still what ``decrypt`` would
        give now: this thread's memo is the same one, within its TTL, with no forget or
        clear_cache since."""
        if stamp is None:
            return False
        batch = self._batch  # the consumer asks per event: _revocation_state inlined, no tuple built
        memo, until, revocations, generation = stamp
        return (
            getattr(batch, "keys", None) is memo
            and batch.until == until
            and time.monotonic() < until
            and self._generation == generation
            and getattr(self._keys, "revocations", 0) == revocations
        )

    def _encryption_head(
        self,
        subject: str | None,
        rp: _RulePlan,
        principal: str,
        shash: str | None,
        ev: bytes,
        heads: list[Any],
        where: tuple[str | None, str | None, int],
    ) -> tuple[Any, bytes, tuple[str, bytes], tokens.KeyHandle]:
        """(handle.seal, associated-data head, (kid, dek), handle) for a slot new in this event:
        one key-source call per class, shared by both algorithms. The event's value count is the
        nonce count charged to the key (an upper bound for the class: never an undercount). The
        handle serves ``encrypt_many``'s inlined GCM seal."""
        twin = heads[rp.twin] if rp.twin >= 0 else None
        if twin is not None:
            kid, dek = twin[2]
        elif self._contextual:
            kid, dek = self._keys.encryption_key(
                subject, rp.cls, principal=principal, topic=where[0], event_type=where[1], nonces=where[2]
            )
        else:
            kid, dek = self._keys.encryption_key(subject, rp.cls, principal=principal)
        h, ctx = self._cipher.bound(kid, dek, rp.alg, rp.cls, shash)
        return h.seal, ctx + (tokens.NO_EVENT if rp.alg == SIV else ev), (kid, dek), h

    def _decryption_entry(
        self,
        token: object,
        rp: _RulePlan,
        principal: str,
        shash: str | None,
        ev: bytes,
        heads: dict[Any, Any],
        where: tuple[str | None, str | None, str | None],
    ) -> tuple[str, int, Any, bytes]:
        """(header, its length, handle, associated-data head) for a token whose header differs
        from the last one in its slot; the handle is _DENIED or _DESTROYED (and the head b"")
        when the key source refused the key. One key-source call per key id and event."""
        alg, kid, start = tokens.parse_header(token)
        if alg != rp.alg:
            raise TokenError("token algorithm does not match the field's rule")
        entry = heads.get((kid, rp.cls, alg))
        if entry is None:
            twin = heads.get((kid, rp.cls, GCM if alg == SIV else SIV)) if rp.twin >= 0 else None
            dek = twin[2] if twin is not None else self._decryption_key(kid, rp.cls, principal, where)
            if dek is _DENIED or dek is _DESTROYED:
                entry = (dek, b"", dek)
            else:
                h, ctx = self._cipher.opening(kid, dek, alg, rp.cls, shash)
                entry = (h, ctx + (tokens.NO_EVENT if alg == SIV else ev), dek)
            heads[kid, rp.cls, alg] = entry
        return token[:start], start, entry[0], entry[1]  # type: ignore[index]

    def _decryption_key(
        self, kid: str, cls: str, principal: str, where: tuple[str | None, str | None, str | None]
    ) -> Any:
        """The DEK, or _DENIED / _DESTROYED (remembered for the rest of a reading_batch). Other
        KeyServiceErrors propagate: fail closed."""
        batch = self._batch
        memo = getattr(batch, "keys", None)
        mkey = (kid, cls, principal, *where)
        if memo is not None:
            now = time.monotonic()
            if now >= batch.until or (getattr(self._keys, "revocations", 0), self._generation) != batch.state:
                # Slow handlers: outcomes never outlive _BATCH_KEYS_TTL; and a forget (or a
                # clear_cache) mid-batch drops them at once, so no erased key is served from it.
                memo.clear()
                batch.until = now + _BATCH_KEYS_TTL
                batch.state = self._revocation_state()
            hit = memo.get(mkey)
            if hit is not None:
                return hit
        try:
            if self._contextual:
                out = self._keys.decryption_key(
                    kid, cls, principal=principal, topic=where[0], event_type=where[1], subject_hash=where[2]
                )
            else:
                out = self._keys.decryption_key(kid, cls, principal=principal)
        except AccessDenied:
            out = _DENIED
        except KeyDestroyed:
            out = _DESTROYED
        except KeyNotFound:
            raise TokenError(f"key id {kid} is unknown in class {cls!r} (forged or moved)", kid=kid) from None
        if memo is not None:
            if len(memo) >= _MAX_BATCH_KEYS:
                memo.clear()
            memo[mkey] = out
        return out

    def _plan(self, spec: FieldSpec) -> _Plan:
        entry = self._plans.get(id(spec))
        if entry is not None and entry[0] is spec:
            return entry[1]
        if not isinstance(spec, FieldSpec):
            raise InputError(f"expected a FieldSpec, got {type(spec).__name__}")
        plan = _compile(spec)
        with self._lock:  # inserts and evictions only; lookups stay lock-free
            if len(self._plans) >= _MAX_PLANS:
                self._plans.pop(next(iter(self._plans)), None)
            # The entry holds the spec itself, so its id cannot be reused while cached.
            self._plans[id(spec)] = (spec, plan)
        return plan


def _plain_groups(plan: _Plan, data: dict[str, Any]) -> Iterator[tuple[dict[str, Any], tuple[_Batch, ...]]]:
    """(container, its leaves by slot) for the plain (array-free) paths of ``plan`` in ``data``,
    without copying anything: what ``_locate`` finds, for reading key ids only."""
    for parent, _, batches in plan.groups:
        src: Any = data
        for name in parent:
            src = src.get(name)
            if type(src) is not dict:
                break
        else:
            yield src, batches


def _compile(spec: FieldSpec) -> _Plan:
    names = [tuple(n for n, _ in r.segments) for r in spec.rules]
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i != j and b[: len(a)] == a:
                raise FieldSpecError(
                    f"field path {spec.rules[j].path!r} overlaps sensitive field {spec.rules[i].path!r}"
                )
    slots: dict[tuple[str, str], int] = {}
    for r in spec.rules:
        slots.setdefault((r.cls, SIV if r.deterministic else GCM), len(slots))
    groups: dict[tuple[str, ...], dict[int, tuple[_RulePlan, list[_Leaf]]]] = {}
    nested = []
    for r, n in zip(spec.rules, names, strict=True):
        plain = not any(is_array for _, is_array in r.segments)
        alg = SIV if r.deterministic else GCM
        twin = slots.get((r.cls, GCM if r.deterministic else SIV), -1)
        fixed = plain or r.deterministic
        rp = _RulePlan(r, r.cls, alg, slots[r.cls, alg], twin, fixed, tokens.path_context(r.path), alg == GCM,
                       tokens._MIN_BLOB[alg], _HEAD_OF[alg])
        if plain:
            batch = groups.setdefault(n[:-1], {}).setdefault(rp.slot, (rp, []))
            batch[1].append((n[-1], r.path, rp.tail))
        else:
            nested.append(rp)
    subject = None if spec.subject_path is None else tuple(n for n, _ in parse_path(spec.subject_path))
    groups_ = tuple(
        (
            parent,
            frozenset(leaf[0] for _, leaves in batches.values() for leaf in leaves),
            tuple((slot, rp, tuple(leaves)) for slot, (rp, leaves) in batches.items()),
        )
        for parent, batches in groups.items()
    )
    in_groups = [slot for _, _, batches in groups_ for slot, _, _ in batches]
    want = None if nested else tuple(
        (parent, tuple((rp.cls, tuple(leaf[0] for leaf in leaves)) for _, rp, leaves in batches))
        for parent, _, batches in groups_
    )
    return _Plan(groups_, tuple(nested), subject, spec.classes, tuple(slots), {},
                 sum(len(names) for _, names, _ in groups_), bool(nested) or len(in_groups) != len(set(in_groups)),
                 want)


def _report(
    plan: _Plan, located: list[_Group], count: int, erased: list[str], redacted: list[str]
) -> DecryptReport:
    if len(plan.classes) == 1:
        classes = plan.classes
    else:
        classes = frozenset(rp.cls for _, _, batches in located for _, rp, _ in batches)
    if count and not erased and not redacted:
        # The common outcome repeats event after event: share one immutable report.
        report = plan.reports.get((count, classes))
        if report is None:
            if len(plan.reports) >= _MAX_PLANS:
                plan.reports.clear()
            report = plan.reports[count, classes] = DecryptReport(count, classes=classes)
        return report
    return DecryptReport(
        decrypted=count - len(erased) - len(redacted),
        erased=len(erased),
        redacted=len(redacted),
        classes=classes if count else frozenset(),
        erased_classes=frozenset(erased),
        redacted_classes=frozenset(redacted),
    )


def _check_event_id(event_id: str) -> None:
    if not isinstance(event_id, str) or not event_id:
        raise InputError("event id must be a non-empty string")


def _subject(spec: FieldSpec, plan: _Plan, data: Any) -> str | None:
    """spec.subject_of with the common case (a string or int in nested dicts) inlined;
    anything else goes to spec.subject_of, which decides or raises its own error."""
    cur = data
    for name in plan.subject:  # type: ignore[union-attr]
        cur = cur.get(name) if type(cur) is dict else None
    if type(cur) is str and cur:
        return cur
    if type(cur) is int:
        return str(cur)
    return spec.subject_of(data)




class _Undecided(Exception):
    """decrypt_many: an event needs the key source from this token on; ``decrypt`` decides it."""


class _Absent(Exception):
    """decrypt_many: a sensitive value of an event located inline is absent; _locate locates it."""


def _in_field(e: TokenError, path: str) -> TokenError:
    """``e`` named by the field it concerns, as ``decrypt`` raises it."""
    return TokenError(f"sensitive field {path}: {e.message}", **{**e.details, "path": path})


class _Mismatch(Exception):
    """A path ran into the wrong kind of container; spec.targets() words the error."""


def _locate(spec: FieldSpec, plan: _Plan, data: Any) -> tuple[dict[str, Any], list[_Group], int]:
    """The output copy, the groups of sensitive values in it, and how many values: exactly
    what ``spec.targets(data)`` finds, with copy-on-write containers so that writing a token
    never touches ``data``."""
    if type(data) is not dict and not isinstance(data, dict):
        list(spec.targets(data))  # raises FieldSpecError when any rule applies
        raise InputError(f"event data must be a JSON object, found {type(data).__name__}")
    out = data.copy()
    located: list[_Group] = []
    count = 0
    try:
        for parent, names, batches in plan.groups:
            src, dst = data, out
            for name in parent:
                child = src.get(name)  # missing or null: nothing below to protect
                if child is None:
                    break
                if type(child) is not dict and not isinstance(child, dict):
                    raise _Mismatch
                mine = dst[name]  # _own, inlined
                if mine is child:
                    mine = dst[name] = child.copy()
                src, dst = child, mine
            else:
                if src.keys() >= names:
                    located.append((src, dst, batches))
                    count += len(names)
                else:  # some optional leaves are absent
                    present = [(s, rp, tuple(f for f in fs if f[0] in src)) for s, rp, fs in batches]
                    present = [b for b in present if b[2]]
                    if present:
                        located.append((src, dst, tuple(present)))
                        count += sum(len(b[2]) for b in present)
        for rp in plan.nested:
            before = len(located)
            _walk(data, out, rp.rule.segments, 0, "", rp, located)
            count += len(located) - before
    except _Mismatch:
        list(spec.targets(data))  # raises the FieldSpecError that names the path
        raise FieldSpecError("event data does not match the shape of the field spec") from None
    return out, located, count


def _walk(
    src: dict[str, Any],
    dst: dict[str, Any],
    segs: tuple[tuple[str, bool], ...],
    i: int,
    prefix: str,
    rp: _RulePlan,
    located: list[_Group],
) -> None:
    """Locate the values of one rule with an array segment, one group per value."""
    name, is_array = segs[i]
    if name not in src:
        return
    here = f"{prefix}.{name}" if prefix else name
    child = src[name]
    last = i == len(segs) - 1
    if not is_array:
        if last:
            located.append((src, dst, ((rp.slot, rp, ((name, here, _tail(rp, here)),)),)))
        elif child is not None:
            if not isinstance(child, dict):
                raise _Mismatch
            _walk(child, _own(dst, name, child), segs, i + 1, here, rp, located)
        return
    if child is None:
        return
    if not isinstance(child, list):
        raise _Mismatch
    items = _own(dst, name, child)
    for idx, item in enumerate(child):
        p = f"{here}[{idx}]"
        if last:
            located.append((child, items, ((rp.slot, rp, ((idx, p, _tail(rp, p)),)),)))
        elif item is not None:
            if not isinstance(item, dict):
                raise _Mismatch
            _walk(item, _own(items, idx, item), segs, i + 1, p, rp, located)


def _tail(rp: _RulePlan, path: str) -> bytes:
    """The path part of the associated data: the concrete path (with array indexes) for GCM,
    the rule path for SIV, so that equal values stay equal wherever they sit."""
    return rp.tail if rp.fixed else tokens.path_context(path)


def _own(dst: Any, key: Any, child: Any) -> Any:
    """``dst[key]`` as this output's private copy (copied on first write)."""
    mine = dst[key]
    if mine is child:
        mine = dst[key] = child.copy()
    return mine
