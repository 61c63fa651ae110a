"""CloudEvents 1.0 structured-mode JSON envelopes, with size limits and strict parsing.

Routing attributes (id, source, type, time) stay plaintext so events remain routable and
debuggable by any CloudEvents tool; sensitive values live inside ``data`` as field tokens.
eventward's own metadata uses extension attributes (the spec requires lowercase
alphanumeric names):

    ewproducer  producer principal          ewseq     producer sequence number in the stream
    ewsubject   subject's random pseudonym  ewschema  schema version used by the producer
    ewtime      when eventward accepted the event (the producer's own ``time`` is kept as sent)

Every attribute a producer sets is kept or refused by name, never dropped. A JSON ``null``
attribute is unset (JSON format, section 3). ``traceparent``/``tracestate`` (the distributed
tracing extension) must follow W3C Trace Context, so consumers can hand them to a tracer as is.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from eventward.errors import EnvelopeError, OversizeError

SPECVERSION = "1.0"
DEFAULT_MAX_BYTES = 1024 * 1024
REQUIRED = ("id", "source", "specversion", "type")
_CORE_STR = ("id", "source", "type", "subject", "datacontenttype", "dataschema", "time")
_CORE = frozenset((*_CORE_STR, "specversion", "data", "data_base64"))
_EXT_NAME = re.compile(r"^[a-z0-9]{1,20}$")
# Patterns shared with the gateway's OpenAPI document, so the document and this parser agree.
# RFC 3986 URI-reference characters with well-formed percent-escapes; an absolute URI has a scheme.
URI_REFERENCE = r"^(?:[A-Za-z0-9\-._~:/?#\[\]@!\$&'()*+,;=]|%[0-9A-Fa-f]{2})+$"
ABSOLUTE_URI = r"^[A-Za-z][A-Za-z0-9+.\-]*:(?:[A-Za-z0-9\-._~:/?#\[\]@!\$&'()*+,;=]|%[0-9A-Fa-f]{2})*$"
# RFC 2046 media type: type "/" subtype (RFC 7231 token characters), then parameters.
MEDIA_TYPE = r"^[A-Za-z0-9!#\$&^_.+\-]+/[A-Za-z0-9!#\$&^_.+\-]+(?:[ \t]*;[ \t]*[!-~]+)*$"
JSON_MEDIA_TYPE = r"^(?:application/json|[!-~]*\+json)(?:[ \t]*;[ \t]*[!-~]+)*$"
# W3C Trace Context: version-traceid-parentid-flags; version ff is invalid, ids are never all zero.
TRACEPARENT_PATTERN = r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[ -~]*)?$"
_URI_REF = re.compile(URI_REFERENCE)
_ABS_URI = re.compile(ABSOLUTE_URI)
_MEDIA_TYPE = re.compile(MEDIA_TYPE)
_JSON_TYPE = re.compile(JSON_MEDIA_TYPE)
_TRACEPARENT = re.compile(TRACEPARENT_PATTERN)
_TRACESTATE_KEY = re.compile(r"^([a-z0-9][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})$")
_TRACESTATE_VALUE = re.compile(r"^[ -+\--<>-~]{0,255}[!-+\--<>-~]$")
_TRACESTATE_MAX = 32
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")
_MAX_ATTR = 4096

EXT_PRODUCER = "ewproducer"
EXT_SEQ = "ewseq"
EXT_SUBJECT = "ewsubject"
EXT_SCHEMA = "ewschema"
EXT_RECEIVED = "ewtime"
RESERVED_PREFIX = "ew"  # eventward's own extension attributes: set by eventward, refused from clients
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
JSON_TYPE = "application/json"


def new_id() -> str:
    return str(uuid.uuid4())


def now_rfc3339(ts: float | None = None) -> str:
    dt = datetime.fromtimestamp(time.time() if ts is None else ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond:06d}Z"


def parse_time(value: str) -> float:
    """RFC 3339 timestamp to epoch seconds; EnvelopeError if malformed."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise EnvelopeError("attribute 'time' is not an RFC 3339 timestamp")
    v = value.replace("Z", "+00:00")
    head, _, rest = v.partition(".")
    if rest:  # Python's fromisoformat accepts at most 6 fractional digits
        digits = re.match(r"\d+", rest)
        frac = digits.group(0) if digits else ""
        v = f"{head}.{frac[:6].ljust(6, '0')}{rest[len(frac):]}"
    try:
        return datetime.fromisoformat(v).timestamp()
    except ValueError:
        raise EnvelopeError("attribute 'time' is not a valid date") from None


def make(
    type_: str,
    source: str,
    data: Any,
    *,
    id_: str | None = None,
    subject: str | None = None,
    time_: str | None = None,
    extensions: dict[str, Any] | None = None,
    dataschema: str | None = None,
    datacontenttype: str | None = None,
) -> dict[str, Any]:
    """A new envelope dict. ``subject`` is the CloudEvents routing subject, not the data subject."""
    env: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": id_ or new_id(),
        "source": source,
        "type": type_,
        "time": time_ or now_rfc3339(),
        "datacontenttype": datacontenttype or JSON_TYPE,
    }
    if subject is not None:
        env["subject"] = subject
    if dataschema is not None:
        env["dataschema"] = dataschema
    if extensions:
        for k, v in extensions.items():
            _check_extension(k, v)
            env[k] = v
    env["data"] = data
    validate(env)
    return env


def encode(env: dict[str, Any], max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    raw = orjson.dumps(env)
    if len(raw) > max_bytes:
        raise OversizeError(f"event is {len(raw)} bytes, limit is {max_bytes}", size=len(raw), limit=max_bytes)
    return raw


def decode(raw: bytes | bytearray | memoryview | str, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """Parse and validate a structured-mode envelope. The size check runs before parsing."""
    size = len(raw)
    if size > max_bytes:
        raise OversizeError(f"event is {size} bytes, limit is {max_bytes}", size=size, limit=max_bytes)
    try:
        env = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise EnvelopeError(f"event is not valid JSON (at byte {e.pos})") from None
    env = unset_nulls(env)
    validate(env)
    return env


def unset_nulls(env: Any) -> Any:
    """The event without its ``null`` members: the JSON format says a null attribute is unset.
    (``data: null`` goes too: an event whose data is JSON null carries no data.) Not a dict: as is."""
    if isinstance(env, dict) and any(v is None for v in env.values()):
        return {k: v for k, v in env.items() if v is not None}
    return env


def is_json_type(ctype: str | None) -> bool:
    """Whether ``datacontenttype`` says JSON (absent means JSON in the JSON format). Lowercase only:
    eventward does not guess whether "Application/JSON" data is meant to be parsed."""
    return ctype is None or _JSON_TYPE.fullmatch(ctype) is not None


def decode_data_base64(value: str) -> bytes:
    """``data_base64`` as bytes (RFC 4648 base64, padding required); EnvelopeError if malformed."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError("attribute 'data_base64' is not valid base64") from None


def validate(env: Any) -> None:
    """Check CloudEvents 1.0 conformance; names the attribute at fault, never its value.

    Call on an event whose nulls were unset (``unset_nulls``); a null left here is refused."""
    if not isinstance(env, dict):
        raise EnvelopeError("event must be a JSON object")
    for name in REQUIRED:
        if name not in env:
            raise EnvelopeError(f"required attribute '{name}' is missing")
    if env["specversion"] != SPECVERSION:
        raise EnvelopeError("attribute 'specversion' must be \"1.0\"")
    for name in _CORE_STR:
        if name in env:
            v = env[name]
            if not isinstance(v, str) or not v:
                raise EnvelopeError(f"attribute '{name}' must be a non-empty string")
            if len(v) > _MAX_ATTR:
                raise EnvelopeError(f"attribute '{name}' is longer than {_MAX_ATTR} characters")
    if "time" in env:
        parse_time(env["time"])
    _check_uri(env["source"], "source", absolute=False)
    if "dataschema" in env:
        _check_uri(env["dataschema"], "dataschema", absolute=True)
    ctype = env.get("datacontenttype")
    if ctype is not None and not _MEDIA_TYPE.fullmatch(ctype):
        raise EnvelopeError("attribute 'datacontenttype' is not a media type (RFC 2046)")
    if "data" in env and "data_base64" in env:
        raise EnvelopeError("only one of 'data' and 'data_base64' may be present")
    if "data" in env and not is_json_type(ctype) and not isinstance(env["data"], str):
        raise EnvelopeError("'data' of a non-JSON 'datacontenttype' must be a string (or use data_base64)")
    if "data_base64" in env:
        if not isinstance(env["data_base64"], str):
            raise EnvelopeError("attribute 'data_base64' must be a base64 string")
        decode_data_base64(env["data_base64"])
    for k, v in env.items():
        if k not in _CORE:
            _check_extension(k, v)


def _check_uri(value: str, name: str, *, absolute: bool) -> None:
    if not _URI_REF.fullmatch(value):
        raise EnvelopeError(f"attribute '{name}' is not a URI reference (RFC 3986)")
    if absolute and not _ABS_URI.fullmatch(value):
        raise EnvelopeError(f"attribute '{name}' must be an absolute URI (RFC 3986)")


def check_traceparent(value: Any) -> None:
    """W3C Trace Context ``traceparent``; EnvelopeError naming the rule broken, never the value."""
    m = _TRACEPARENT.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise EnvelopeError(
            "extension attribute 'traceparent' is not a W3C traceparent (version-traceid-parentid-flags)"
        )
    version, trace_id, parent_id, _, rest = m.groups()
    if version == "ff" or (version == "00" and rest is not None):
        raise EnvelopeError("extension attribute 'traceparent' has an invalid version")
    if trace_id == "0" * 32 or parent_id == "0" * 16:
        raise EnvelopeError("extension attribute 'traceparent' has an all-zero trace or parent id")


def check_tracestate(value: Any) -> None:
    """W3C Trace Context ``tracestate``: up to 32 comma-separated key=value members, keys unique."""
    if not isinstance(value, str) or len(value) > _MAX_ATTR:
        raise EnvelopeError("extension attribute 'tracestate' must be a W3C tracestate string")
    members = [m.strip(" \t") for m in value.split(",")]
    members = [m for m in members if m]
    if len(members) > _TRACESTATE_MAX:
        raise EnvelopeError(f"extension attribute 'tracestate' has more than {_TRACESTATE_MAX} members")
    keys: set[str] = set()
    for member in members:
        key, eq, val = member.partition("=")
        if not eq or not _TRACESTATE_KEY.fullmatch(key) or not _TRACESTATE_VALUE.fullmatch(val):
            raise EnvelopeError("extension attribute 'tracestate' has a malformed member (W3C key=value)")
        if key in keys:
            raise EnvelopeError("extension attribute 'tracestate' repeats a key")
        keys.add(key)


def _check_extension(name: str, value: Any) -> None:
    if not _EXT_NAME.fullmatch(name):
        raise EnvelopeError(f"extension attribute name {name[:40]!r} must be 1..20 lowercase letters or digits")
    if name == TRACEPARENT:
        check_traceparent(value)
    elif name == TRACESTATE:
        check_tracestate(value)
    if isinstance(value, bool) or value is None:
        if value is None:
            raise EnvelopeError(f"extension attribute '{name}' must not be null")
        return
    if isinstance(value, int):
        if not -(2**31) <= value < 2**31 and name != EXT_SEQ:
            raise EnvelopeError(f"extension attribute '{name}' integer out of range")
        return
    if not isinstance(value, str):
        raise EnvelopeError(f"extension attribute '{name}' must be a string, integer or boolean")
    if len(value) > _MAX_ATTR:
        raise EnvelopeError(f"extension attribute '{name}' is longer than {_MAX_ATTR} characters")
