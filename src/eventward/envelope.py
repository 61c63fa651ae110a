"""CloudEvents 1.0 structured-mode JSON envelopes, with size limits and strict parsing.

Routing attributes (id, source, type, time) stay plaintext so events remain routable and
debuggable by any CloudEvents tool; sensitive values live inside ``data`` as field tokens.
eventward's own metadata uses extension attributes (the spec requires lowercase
alphanumeric names):

    ewproducer  producer principal          ewseq     producer sequence number in the stream
    ewsubject   keyed hash of data subject  ewschema  schema version used by the producer
"""

from __future__ import annotations

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
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")
_MAX_ATTR = 4096

EXT_PRODUCER = "ewproducer"
EXT_SEQ = "ewseq"
EXT_SUBJECT = "ewsubject"
EXT_SCHEMA = "ewschema"


def new_id() -> str:
    return str(uuid.uuid4())


def now_rfc3339(ts: float | None = None) -> str:
    dt = datetime.fromtimestamp(time.time() if ts is None else ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond:06d}Z"


def parse_time(value: str) -> float:
    """RFC 3339 timestamp to epoch seconds; EnvelopeError if malformed."""
    if not isinstance(value, str) or not _RFC3339.match(value):
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
) -> dict[str, Any]:
    """A new envelope dict. ``subject`` is the CloudEvents routing subject, not the data subject."""
    env: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": id_ or new_id(),
        "source": source,
        "type": type_,
        "time": time_ or now_rfc3339(),
        "datacontenttype": "application/json",
    }
    if subject is not None:
        env["subject"] = subject
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
    validate(env)
    return env


def validate(env: Any) -> None:
    """Check CloudEvents 1.0 conformance; names the attribute at fault, never its value."""
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
    if "data" in env and "data_base64" in env:
        raise EnvelopeError("only one of 'data' and 'data_base64' may be present")
    ctype = env.get("datacontenttype", "application/json")
    if "data" in env and not (ctype == "application/json" or ctype.endswith("+json")):
        raise EnvelopeError("attribute 'datacontenttype' must be JSON for structured JSON data")
    for k, v in env.items():
        if k not in _CORE:
            _check_extension(k, v)


def _check_extension(name: str, value: Any) -> None:
    if not _EXT_NAME.match(name):
        raise EnvelopeError(f"extension attribute name {name[:40]!r} must be 1..20 lowercase letters or digits")
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
