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
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, Literal

from eventward.crypto import tokens
from eventward.crypto.tokens import GCM, NONCE_BYTES, SIV, KeyHandle, TokenCipher
from eventward.errors import AccessDenied, FieldSpecError, InputError, KeyDestroyed, KeyNotFound, TokenError
from eventward.fieldspec import FieldRule, FieldSpec, parse_path
from eventward.keys.base import DekSource

ERASED = "[erased]"  # what a reader sees for a crypto-shredded field
REDACTED = "[redacted]"  # what a reader not cleared for the field's class sees
_MAX_PLANS = 256
_DENIED = object()  # decryption-key outcomes, remembered for the rest of the event
_DESTROYED = object()

# (concrete path, container in the output, key or index there, value, rule plan)
_Found = tuple[str, Any, Any, Any, "_RulePlan"]


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
    slot: tuple[str, str]  # (cls, alg): one associated-data head per slot and event
    fixed: bool  # the associated data ends in ``tail`` (SIV, or a path without arrays)
    tail: bytes  # SIV: rule path; GCM: rule path if fixed


@dataclass(frozen=True, slots=True)
class _Plan:
    """A FieldSpec prepared once: plain paths grouped by parent object, overlaps refused."""

    groups: tuple[tuple[tuple[str, ...], tuple[tuple[str, _RulePlan], ...]], ...]
    nested: tuple[_RulePlan, ...]  # rules with an array segment
    subject: tuple[str, ...] | None
    classes: frozenset[str]
    reports: dict[tuple[int, frozenset[str]], DecryptReport]


class FieldEncryptor:
    """Encrypts and decrypts the sensitive fields of event data against a DekSource.

    The key source is asked once per class (encrypt) or key id (decrypt) per event, never
    per field. Thread-safe as long as the key source is.
    """

    def __init__(self, keys: DekSource, *, cipher: TokenCipher | None = None) -> None:
        self._keys = keys
        self._cipher = cipher or TokenCipher()
        self._plans: dict[int, tuple[FieldSpec, _Plan]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FieldEncryptor({type(self._keys).__name__}, {len(self._plans)} specs prepared)"

    def clear_cache(self) -> None:
        """Drop cached cipher objects (call when keys are revoked)."""
        self._cipher.clear()

    def encrypt(
        self, event_id: str, data: dict[str, Any], spec: FieldSpec, *, principal: str
    ) -> tuple[dict[str, Any], str | None]:
        """A copy of ``data`` with every sensitive value replaced by a token, and the
        data-subject hash (None if the spec names no subject) for the envelope."""
        if type(event_id) is not str or not event_id:
            _check_event_id(event_id)
        plan = self._plan(spec)
        subject = _subject(spec, plan, data)
        shash = None if subject is None else self._keys.subject_hash(subject)
        out, found = _collect(spec, plan, data)
        if not found:
            return out, shash
        ev = tokens.event_context(event_id)
        nonces = os.urandom(NONCE_BYTES * len(found))  # one syscall per event; SIV fields skip theirs
        pos = 0
        heads: dict[tuple[str, str], tuple[KeyHandle, bytes]] = {}  # (class, alg) -> (handle, head)
        for path, container, k, value, rp in found:
            entry = heads.get(rp.slot)
            if entry is None:
                entry = heads[rp.slot] = self._encryption_head(subject, rp, principal, shash, ev, heads)
            h, head = entry
            if rp.alg == GCM:
                nonce = nonces[pos : pos + NONCE_BYTES]
                pos += NONCE_BYTES
            else:
                nonce = None
            ad = head + rp.tail if rp.fixed else head + tokens.path_context(path)
            try:
                # ``container`` belongs to ``out``, which nobody sees unless every field is sealed.
                container[k] = h.seal(value, ad, nonce)
            except InputError as e:
                raise InputError(f"sensitive field {path}: {e.message}", path=path) from None
        return out, shash

    def decrypt(
        self,
        event_id: str,
        data: dict[str, Any],
        spec: FieldSpec,
        subject_hash: str | None,
        *,
        principal: str,
        uncleared: Literal["redact", "token"] = "redact",
    ) -> tuple[dict[str, Any], DecryptReport]:
        """A copy of ``data`` with the fields ``principal`` is cleared for decrypted,
        crypto-shredded ones as ERASED and uncleared ones as REDACTED (or left as tokens).

        TokenError for plaintext where a token belongs, a tampered or moved token, or a key id
        the key source never issued; KeyServiceError when the key source cannot answer.
        """
        if uncleared not in ("redact", "token"):
            raise InputError("uncleared must be 'redact' or 'token'")
        if type(event_id) is not str or not event_id:
            _check_event_id(event_id)
        plan = self._plan(spec)
        if (plan.subject is None) != (subject_hash is None):
            raise InputError(
                "a subject hash is required exactly when the field spec names a data subject "
                f"(spec subject: {spec.subject_path!r})"
            )
        out, found = _collect(spec, plan, data)
        ev = tokens.event_context(event_id)
        heads: dict[tuple[str, str, str], tuple[Any, bytes]] = {}  # (kid, class, alg) -> (handle, head)
        erased: list[str] = []
        redacted: list[str] = []
        for path, container, k, value, rp in found:
            try:
                alg, kid, blob = tokens.split(value)
                if alg != rp.alg:
                    raise TokenError("token algorithm does not match the field's rule")
                entry = heads.get((kid, rp.cls, alg))
                if entry is None:
                    entry = self._decryption_head(kid, rp, principal, subject_hash, ev, heads)
                    heads[kid, rp.cls, alg] = entry
                h, head = entry
                if h is _DENIED:
                    redacted.append(rp.cls)
                    if uncleared == "redact":
                        container[k] = REDACTED
                elif h is _DESTROYED:
                    erased.append(rp.cls)
                    container[k] = ERASED
                else:
                    ad = head + rp.tail if rp.fixed else head + tokens.path_context(path)
                    container[k] = h.open(alg, blob, ad)
            except TokenError as e:
                raise TokenError(f"sensitive field {path}: {e.message}", **{**e.details, "path": path}) from None
        return out, _report(plan, found, erased, redacted)

    def _encryption_head(
        self, subject: str | None, rp: _RulePlan, principal: str, shash: str | None, ev: bytes,
        heads: dict[tuple[str, str], tuple[KeyHandle, bytes]],
    ) -> tuple[KeyHandle, bytes]:
        """(handle, associated-data head) for a class new in this event: one key-source call per
        class, shared by both algorithms."""
        other = heads.get((rp.cls, GCM if rp.alg == SIV else SIV))
        if other is not None:
            h = other[0]
        else:
            kid, dek = self._keys.encryption_key(subject, rp.cls, principal=principal)
            h = self._cipher.handle(kid, dek)
        return h, _head(h, rp, shash, ev)

    def _decryption_head(
        self, kid: str, rp: _RulePlan, principal: str, shash: str | None, ev: bytes, heads: dict[Any, Any]
    ) -> tuple[Any, bytes]:
        """(handle, associated-data head) for a key new in this event; (_DENIED or _DESTROYED, b"")."""
        other = heads.get((kid, rp.cls, GCM if rp.alg == SIV else SIV))
        h = other[0] if other is not None else self._decryption_handle(kid, rp.cls, principal)
        if h is _DENIED or h is _DESTROYED:
            return h, b""
        return h, _head(h, rp, shash, ev)

    def _decryption_handle(self, kid: str, cls: str, principal: str) -> Any:
        """A handle, or _DENIED / _DESTROYED. Other KeyServiceErrors propagate: fail closed."""
        try:
            dek = self._keys.decryption_key(kid, cls, principal=principal)
        except AccessDenied:
            return _DENIED
        except KeyDestroyed:
            return _DESTROYED
        except KeyNotFound:
            raise TokenError(f"key id {kid} is unknown in class {cls!r} (forged or moved)", kid=kid) from None
        return self._cipher.handle(kid, dek)

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


def _compile(spec: FieldSpec) -> _Plan:
    names = [tuple(n for n, _ in r.segments) for r in spec.rules]
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i != j and b[: len(a)] == a:
                raise FieldSpecError(
                    f"field path {spec.rules[j].path!r} overlaps sensitive field {spec.rules[i].path!r}"
                )
    groups: dict[tuple[str, ...], list[tuple[str, _RulePlan]]] = {}
    nested = []
    for r, n in zip(spec.rules, names, strict=True):
        plain = not any(is_array for _, is_array in r.segments)
        alg = SIV if r.deterministic else GCM
        rp = _RulePlan(r, r.cls, alg, (r.cls, alg), plain or r.deterministic, tokens.path_context(r.path))
        if plain:
            groups.setdefault(n[:-1], []).append((n[-1], rp))
        else:
            nested.append(rp)
    subject = None if spec.subject_path is None else tuple(n for n, _ in parse_path(spec.subject_path))
    groups_ = tuple((p, tuple(leaves)) for p, leaves in groups.items())
    return _Plan(groups_, tuple(nested), subject, spec.classes, {})


def _report(plan: _Plan, found: list[_Found], erased: list[str], redacted: list[str]) -> DecryptReport:
    classes = plan.classes if len(plan.classes) == 1 else frozenset(f[4].cls for f in found)
    if found and not erased and not redacted:
        # The common outcome repeats event after event: share one immutable report.
        report = plan.reports.get((len(found), classes))
        if report is None:
            if len(plan.reports) >= _MAX_PLANS:
                plan.reports.clear()
            report = plan.reports[len(found), classes] = DecryptReport(len(found), classes=classes)
        return report
    return DecryptReport(
        decrypted=len(found) - len(erased) - len(redacted),
        erased=len(erased),
        redacted=len(redacted),
        classes=classes if found else frozenset(),
        erased_classes=frozenset(erased),
        redacted_classes=frozenset(redacted),
    )


def _head(h: KeyHandle, rp: _RulePlan, shash: str | None, ev: bytes) -> bytes:
    """The associated data of one field up to its path (layout in crypto/tokens.py). GCM binds
    the event and the concrete path; SIV neither the event nor array indexes, so that equal
    values stay equal."""
    if rp.alg == SIV:
        return h.context(SIV, rp.cls, shash) + tokens.NO_EVENT
    return h.context(GCM, rp.cls, shash) + ev


def _check_event_id(event_id: str) -> None:
    if not isinstance(event_id, str) or not event_id:
        raise InputError("event id must be a non-empty string")


def _subject(spec: FieldSpec, plan: _Plan, data: Any) -> str | None:
    """spec.subject_of with the common case (a string or int in nested objects) inlined;
    anything else goes to spec.subject_of, which decides or raises its own error."""
    if plan.subject is None:
        return None
    cur = data
    for name in plan.subject:
        if not isinstance(cur, dict) or name not in cur:
            return spec.subject_of(data)
        cur = cur[name]
    if type(cur) is str and cur:
        return cur
    if type(cur) is int:
        return str(cur)
    return spec.subject_of(data)


class _Mismatch(Exception):
    """A path ran into the wrong kind of container; spec.targets() words the error."""


def _collect(spec: FieldSpec, plan: _Plan, data: Any) -> tuple[dict[str, Any], list[_Found]]:
    """The output copy and every sensitive value in it, as ``spec.targets(data)`` finds them,
    with copy-on-write containers so that writing a token never touches ``data``."""
    if not isinstance(data, dict):
        list(spec.targets(data))  # raises FieldSpecError when any rule applies
        raise InputError(f"event data must be a JSON object, found {type(data).__name__}")
    out = data.copy()
    found: list[_Found] = []
    try:
        for parent, leaves in plan.groups:
            src, dst = data, out
            for name in parent:
                child = src.get(name)  # missing or null: nothing below to protect
                if child is None:
                    break
                if not isinstance(child, dict):
                    raise _Mismatch
                src, dst = child, _own(dst, name, child)
            else:
                for leaf, rp in leaves:
                    if leaf in src:
                        found.append((rp.rule.path, dst, leaf, src[leaf], rp))
        for rp in plan.nested:
            _walk(data, out, rp.rule.segments, 0, "", rp, found)
    except _Mismatch:
        list(spec.targets(data))  # raises the FieldSpecError that names the path
        raise FieldSpecError("event data does not match the shape of the field spec") from None
    return out, found


def _walk(
    src: dict[str, Any],
    dst: dict[str, Any],
    segs: tuple[tuple[str, bool], ...],
    i: int,
    prefix: str,
    rp: _RulePlan,
    found: list[_Found],
) -> None:
    name, is_array = segs[i]
    if name not in src:
        return
    here = f"{prefix}.{name}" if prefix else name
    child = src[name]
    last = i == len(segs) - 1
    if not is_array:
        if last:
            found.append((here, dst, name, child, rp))
        elif child is not None:
            if not isinstance(child, dict):
                raise _Mismatch
            _walk(child, _own(dst, name, child), segs, i + 1, here, rp, found)
        return
    if child is None:
        return
    if not isinstance(child, list):
        raise _Mismatch
    items = _own(dst, name, child)
    for idx, item in enumerate(child):
        p = f"{here}[{idx}]"
        if last:
            found.append((p, items, idx, item, rp))
        elif item is not None:
            if not isinstance(item, dict):
                raise _Mismatch
            _walk(item, _own(items, idx, item), segs, i + 1, p, rp, found)


def _own(dst: Any, key: Any, child: Any) -> Any:
    """``dst[key]`` as this output's private copy (copied on first write)."""
    mine = dst[key]
    if mine is child:
        mine = dst[key] = child.copy()
    return mine
