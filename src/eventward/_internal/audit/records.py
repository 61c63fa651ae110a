"""What an audit record may contain, and its canonical bytes.

The log is metadata only: who, what, when, on which resource, with what outcome, plus ids,
counts, sizes and key ids. The log cannot tell PII from an id, so the API makes payloads
impossible to pass instead: ``meta`` values are bounded scalars under identifier keys,
names that only ever carry payloads are refused, and a data subject is accepted only as
``subject_hash=`` (the keyed hash from ``KeyService.subject_hash()``), never raw.

A record's bytes are canonical JSON (orjson, sorted keys) and the Merkle leaf hash covers
exactly those bytes, so a verifier needs nothing but the stored bytes.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

import orjson

from eventward._internal.audit.base import OK, MetaValue
from eventward.errors import AuditIntegrityError, OversizeError, ValidationError

MAX_TEXT = 256  # principal, resource and every meta string
MAX_REASON = 1024  # an explanation (e.g. a legal-hold reason), so longer than an id
MAX_META_KEYS = 32
MAX_RECORD_BYTES = 8192

_ACTION = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}\Z")
_OUTCOME = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")
_META_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
_SUBJECT_HASH = re.compile(r"[A-Za-z0-9_:+/=-]{16,128}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")  # no UTF-8 encoding: the record could never be stored
_PLAIN_TEXT = re.compile(rf"[^\x00-\x1f\x7f\ud800-\udfff]{{0,{MAX_TEXT}}}\Z")  # the fast path of _text
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z\Z")
_FIELDS = {"action", "index", "meta", "outcome", "principal", "reason", "resource", "time"}
_TEXT_FIELDS = ("action", "outcome", "principal", "reason", "resource", "time")
_META_TYPES = (str, int, float, bool)

# Meta names that only ever carry payloads or raw identities.
PAYLOAD_KEYS = frozenset(
    {
        "subject",
        "payload",
        "data",
        "body",
        "value",
        "values",
        "fields",
        "plaintext",
        "password",
        "secret",
        "email",
    }
)
_SPECIAL_KEYS = PAYLOAD_KEYS | {"subject_hash"}
_WIDEST_META = 8 + 4 * 64 + 4 * MAX_TEXT  # quotes, colon, comma; a 64-char key; a MAX_TEXT value
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


@dataclass(frozen=True)
class AuditRecord:
    """One stored record, decoded. ``body`` is the exact bytes the leaf hash covers."""

    index: int
    time: str
    principal: str
    action: str
    resource: str
    outcome: str
    reason: str
    meta: Mapping[str, MetaValue] = field(default_factory=dict)
    body: bytes = b""


_last_time: tuple[int, str] = (-1, "")


def format_time(t: float | None = None) -> str:
    """RFC 3339 UTC with milliseconds: fixed width, so it sorts and compares as text."""
    global _last_time
    ms = int((time.time() if t is None else t) * 1000)
    last = _last_time  # one formatting per millisecond: records arrive far faster than that
    if last[0] == ms:
        return last[1]
    text = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    _last_time = (ms, text)
    return text


def check_time(value: str, what: str = "time") -> str:
    if not isinstance(value, str) or not _TIME.match(value):
        raise ValidationError(f"{what} must be RFC 3339 UTC with milliseconds", path=what, rule="rfc3339")
    return value


class _Seen(set[str]):
    """Strings that already passed one check. Principals, actions, outcomes and meta keys repeat
    record after record, so this skips most regex work on the append path. Bounded.
    (A set subclass so that ``in`` stays a C-level lookup.)"""

    LIMIT = 4096

    def add(self, value: str) -> None:
        if len(self) >= self.LIMIT:
            self.clear()
        super().add(value)


_SEEN_TEXT, _SEEN_ACTION, _SEEN_OUTCOME, _SEEN_KEY = _Seen(), _Seen(), _Seen(), _Seen()


def _text(
    value: object,
    path: str,
    *,
    pattern: re.Pattern[str] | None = None,
    limit: int = MAX_TEXT,
    seen: _Seen | None = None,
) -> str:
    if type(value) is str:  # exactly str: a subclass could fake equality with a seen string
        if seen is not None and value in seen:
            return value
        if _PLAIN_TEXT.match(value) and (pattern is None or pattern.match(value)):
            if seen is not None:
                seen.add(value)
            return value
    if not isinstance(value, str):
        raise ValidationError(f"audit {path} must be a string", path=path, rule="type")
    if len(value) > limit:
        raise OversizeError(f"audit {path} is longer than {limit} characters", path=path, rule="max_length")
    if _CONTROL.search(value):
        raise ValidationError(f"audit {path} contains control characters", path=path, rule="no_control_chars")
    if _SURROGATE.search(value):
        # refused at the call: accepted, it would fail every later flush of the buffer
        raise ValidationError(f"audit {path} is not valid Unicode text", path=path, rule="unicode")
    if pattern is not None and not pattern.match(value):
        raise ValidationError(f"audit {path} has an invalid format", path=path, rule="format")
    return str(value)  # a str subclass, normalized so orjson sees a plain str


def _meta_value(key: str, value: object) -> MetaValue:
    """The common cases (plain str/int/bool/None) cost a type check and at most one match."""
    t = type(value)
    plain = (
        (t is str and _PLAIN_TEXT.match(value))  # type: ignore[arg-type]
        or (t is int and _INT_MIN <= value <= _INT_MAX)  # type: ignore[operator]
        or value is None
        or t is bool
        or (t is float and math.isfinite(value))  # type: ignore[arg-type]
    )
    return value if plain else _odd_meta_value(key, value)  # type: ignore[return-value]


def _odd_meta_value(key: str, value: object) -> MetaValue:
    """Subclasses, out-of-range numbers and non-scalars: normalize or refuse."""
    path = f"meta.{key}"
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise ValidationError(f"audit {path} is outside the 64-bit range", path=path, rule="int_range")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"audit {path} must be finite", path=path, rule="finite")
        return float(value)
    if isinstance(value, str):
        return _text(value, path)
    raise ValidationError(
        f"audit {path} must be a scalar (str, int, float, bool, None), not {type(value).__name__}",
        path=path,
        rule="scalar",
    )


def _check_key(key: object, value: object) -> None:
    """Slow path for keys that are not plain identifiers or that need a rule of their own."""
    if not isinstance(key, str) or not _META_KEY.match(key):
        raise ValidationError("audit meta key is not an identifier", path="meta", rule="identifier")
    if key in PAYLOAD_KEYS:
        rule = "subject_hash_required" if key == "subject" else "no_payloads"
        hint = "pass subject_hash=KeyService.subject_hash(subject)" if key == "subject" else "metadata only"
        raise ValidationError(f"audit meta.{key} is not allowed ({hint})", path=f"meta.{key}", rule=rule)
    if key == "subject_hash" and not (isinstance(value, str) and _SUBJECT_HASH.match(value)):
        raise ValidationError(
            "audit meta.subject_hash must be the keyed hash from KeyService.subject_hash()",
            path="meta.subject_hash",
            rule="subject_hash_format",
        )


def check_meta(meta: Mapping[str, object]) -> dict[str, MetaValue]:
    """Validate ``meta``; errors name the key and the rule, never the value."""
    if type(meta) is not dict and not isinstance(meta, Mapping):
        raise ValidationError("audit meta must be a mapping", path="meta", rule="type")
    if len(meta) > MAX_META_KEYS:
        raise OversizeError(f"audit meta has more than {MAX_META_KEYS} keys", path="meta", rule="max_keys")
    out: dict[str, MetaValue] = {}
    for key, value in meta.items():
        if type(key) is not str or key not in _SEEN_KEY:
            _check_key(key, value)
            key = str(key)  # a str subclass becomes a plain str
            if key not in _SPECIAL_KEYS:  # special keys are checked every time, with their value
                _SEEN_KEY.add(key)
        if type(value) is str and _PLAIN_TEXT.match(value):  # the common case, inlined
            out[key] = value
        else:
            out[key] = _meta_value(key, value)
    return out


class Entry(NamedTuple):
    """A validated record waiting for its index (assigned inside the append transaction)."""

    time: str
    principal: str
    action: str
    resource: str
    outcome: str
    reason: str
    meta: dict[str, MetaValue]


def make_entry(
    action: str,
    *,
    principal: str,
    resource: str,
    outcome: str = OK,
    reason: str = "",
    meta: Mapping[str, object] | None = None,
) -> Entry:
    """Validate eagerly so a careless caller gets a typed error at the call, not at flush."""
    # This is the hot path of every audited operation: strings seen before skip the call to
    # _text entirely (the `type(x) is str and x in seen` test is what _text would do first).
    text, act, out = _SEEN_TEXT, _SEEN_ACTION, _SEEN_OUTCOME
    entry = Entry(
        format_time(),
        principal if type(principal) is str and principal in text else _text(principal, "principal", seen=text),
        action if type(action) is str and action in act else _text(action, "action", pattern=_ACTION, seen=act),
        resource if type(resource) is str and resource in text else _text(resource, "resource", seen=text),
        outcome if type(outcome) is str and outcome in out else _text(outcome, "outcome", pattern=_OUTCOME, seen=out),
        "" if type(reason) is str and not reason else _text(reason, "reason", limit=MAX_REASON),
        check_meta(meta) if meta else {},
    )
    if _size_bound(entry) > MAX_RECORD_BYTES:
        encode(_INT_MAX, entry)  # exact check, only for records that might be too big
    return entry


def _size_bound(entry: Entry) -> int:
    """Upper bound of the encoded size: at most 4 bytes per character, the widest meta entry each."""
    chars = len(entry.principal) + len(entry.action) + len(entry.resource) + len(entry.outcome)
    return 160 + 4 * (chars + len(entry.reason)) + _WIDEST_META * len(entry.meta)


def encode(index: int, entry: Entry) -> bytes:
    body = orjson.dumps(
        {
            "index": index,
            "time": entry.time,
            "principal": entry.principal,
            "action": entry.action,
            "resource": entry.resource,
            "outcome": entry.outcome,
            "reason": entry.reason,
            "meta": entry.meta,
        },
        option=orjson.OPT_SORT_KEYS,
    )
    if len(body) > MAX_RECORD_BYTES:
        raise OversizeError(f"audit record is larger than {MAX_RECORD_BYTES} bytes", rule="max_record_bytes")
    return body


def decode(body: bytes, index: int | None = None) -> AuditRecord:
    """Strictly decode stored bytes: the exact fields, canonical form, and (if given) the index."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise AuditIntegrityError(f"audit record {index} is not valid JSON", index=index) from None
    if not isinstance(obj, dict) or obj.keys() != _FIELDS:
        raise AuditIntegrityError(f"audit record {index} does not have the record fields", index=index)
    if orjson.dumps(obj, option=orjson.OPT_SORT_KEYS) != body:
        raise AuditIntegrityError(f"audit record {index} is not in canonical form", index=index)
    if index is not None and obj["index"] != index:
        raise AuditIntegrityError(
            f"audit record stored at {index} claims another index (moved, inserted or removed)",
            index=index,
        )
    meta = obj["meta"]
    if (
        type(obj["index"]) is not int
        or not all(type(obj[k]) is str for k in _TEXT_FIELDS)
        or not isinstance(meta, dict)
        or not all(v is None or type(v) in _META_TYPES for v in meta.values())
    ):  # canonical JSON of the wrong shape: readers (``audit tail``) rely on these types
        raise AuditIntegrityError(f"audit record {index} has malformed fields", index=index)
    return AuditRecord(
        obj["index"],
        obj["time"],
        obj["principal"],
        obj["action"],
        obj["resource"],
        obj["outcome"],
        obj["reason"],
        obj["meta"],
        body,
    )
