"""CloudEvents envelopes on the SDK's hot paths, with the same rules as eventward._internal.envelope.

Producing: the attributes that repeat (type, source, producer, schema version) are checked
once by ``envelope.make`` and cached; per event only the id is checked and the time is
formatted from a per-second cache. Consuming: a record's bytes are only parsed after its
seal verified, i.e. they are exactly what an authenticated producer built with these
rules, so parsing checks what the consumer relies on (attribute types) rather than
re-running full CloudEvents conformance on every event.
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson

from eventward._internal import envelope
from eventward.errors import EnvelopeError, OversizeError

_MAX_ID = 4096
_ID_POOL = 256


class EnvelopeBuilder:
    def __init__(self, principal: str) -> None:
        self._principal = principal
        self._checked: set[tuple[str, str, int]] = set()
        self._second = -1
        self._prefix = ""
        self._ids: list[str] = []

    def new_id(self) -> str:
        """A random (version 4) UUID, drawn from one urandom call per 256 ids."""
        if not self._ids:
            raw = os.urandom(16 * _ID_POOL)
            for i in range(0, len(raw), 16):
                h = raw[i : i + 16].hex()
                variant = "89ab"[int(h[16], 16) & 3]
                self._ids.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}")
        return self._ids.pop()

    def build(
        self,
        type_: str,
        source: str,
        data: Any,
        *,
        id_: str,
        seq: int,
        schema_version: int,
        subject_hash: str | None,
        subject: str | None,
        now: float,
        attributes: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``attributes``: what the producer set beyond type/source/id/subject (``time``,
        ``dataschema``, ``datacontenttype``, extensions), kept as given; ``ewtime`` is always
        eventward's own acceptance time."""
        received = self.time(now)
        ext: dict[str, Any] = {
            envelope.EXT_PRODUCER: self._principal,
            envelope.EXT_SEQ: seq,
            envelope.EXT_SCHEMA: schema_version,
            envelope.EXT_RECEIVED: received,
        }
        if subject_hash is not None:
            ext[envelope.EXT_SUBJECT] = subject_hash
        if attributes:
            given = dict(attributes)
            time_ = given.pop("time", None)
            dataschema = given.pop("dataschema", None)
            ctype = given.pop("datacontenttype", None)
            return envelope.make(
                type_,
                source,
                data,
                id_=id_,
                subject=subject,
                time_=time_ or received,
                extensions={**given, **ext},
                dataschema=dataschema,
                datacontenttype=ctype,
            )
        key = (type_, source, schema_version)
        fast = (
            key in self._checked
            and subject is None
            and type(id_) is str
            and 0 < len(id_) <= _MAX_ID
            and (subject_hash is None or (type(subject_hash) is str and 0 < len(subject_hash) <= _MAX_ID))
        )
        if not fast:  # the full rules; raises EnvelopeError naming the attribute
            env = envelope.make(type_, source, data, id_=id_, subject=subject, time_=received, extensions=ext)
            self._checked.add(key)
            return env
        env = {
            "specversion": envelope.SPECVERSION,
            "id": id_,
            "source": source,
            "type": type_,
            "time": received,
            "datacontenttype": "application/json",
        }
        env.update(ext)
        env["data"] = data
        return env

    def time(self, ts: float) -> str:
        """RFC 3339 with microseconds, as envelope.now_rfc3339 formats it."""
        sec = int(ts)
        if sec != self._second:
            self._second = sec
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec))
        return f"{self._prefix}{int((ts - sec) * 1_000_000):06d}Z"


def parse_sealed(raw: bytes, max_bytes: int = envelope.DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """Parse the bytes of a verified record; EnvelopeError if they are not a usable event."""
    if len(raw) > max_bytes:
        raise OversizeError(
            f"event is {len(raw)} bytes, limit is {max_bytes}", size=len(raw), limit=max_bytes
        )
    try:
        env = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise EnvelopeError("event is not valid JSON") from None
    if type(env) is not dict or env.get("specversion") != envelope.SPECVERSION:
        raise EnvelopeError("event is not a CloudEvents 1.0 envelope")
    for name in ("id", "type", "source"):
        v = env.get(name)
        if type(v) is not str or not v:
            raise EnvelopeError(f"attribute '{name}' must be a non-empty string")
    return env
