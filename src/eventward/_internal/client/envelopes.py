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


def _uuid4s(n: int) -> list[str]:
    """``n`` random version 4 UUIDs (RFC 4122 text form) from one urandom call: the version and
    variant bits set in place, one hex conversion for all, 122 random bits each."""
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = raw[6::16].translate(_VERSION_4)
    raw[8::16] = raw[8::16].translate(_VARIANT)
    h = raw.hex()
    return [f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-{h[i + 16 : i + 20]}-{h[i + 20 : i + 32]}"
            for i in range(0, 32 * n, 32)]


_VERSION_4 = bytes((b & 0x0F) | 0x40 for b in range(256))  # the high nibble of byte 6 is the version
_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))  # the two high bits of byte 8: 10


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
            self._ids = _uuid4s(_ID_POOL)
        return self._ids.pop()

    def new_ids(self, n: int) -> list[str]:
        """``n`` ids as ``new_id`` makes them (a producer's ``send_many``): from the pool, and
        the rest from one urandom call."""
        pool = self._ids
        if n <= 0:
            return []
        if n <= len(pool):
            out = pool[len(pool) - n :]
            del pool[len(pool) - n :]
            return out
        self._ids = []
        return pool + _uuid4s(n - len(pool))

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

    def encode_many(
        self,
        type_: str,
        source: str,
        schema_version: int,
        now: float,
        items: list[tuple[str, int, str | None, Any]],
        max_bytes: int,
    ) -> list[bytes]:
        """The encoded envelopes of one producer call: each item is (event id, sequence number,
        subject hash, encrypted data). The bytes are exactly ``envelope.encode(build(...))``'s
        (same members in the same order, each written by orjson), but the members shared by
        the call (source, type, time, producer, schema version) are encoded once, not per event.
        The full CloudEvents rules run on the first item as in ``build``; an item whose id or
        subject hash is not a plain non-empty string takes ``build`` itself. OversizeError as
        ``envelope.encode``; orjson.JSONEncodeError for data that is not JSON."""
        if not items:
            return []
        first = items[0]
        self.build(type_, source, first[3], id_=first[0], seq=first[1], schema_version=schema_version,
                   subject_hash=first[2], subject=None, now=now)  # the full rules, once per (type, source, version)
        dumps = orjson.dumps
        received = dumps(self.time(now))
        head = b'{"specversion":' + dumps(envelope.SPECVERSION) + b',"id":'
        mid = b"".join((
            b',"source":', dumps(source), b',"type":', dumps(type_), b',"time":', received,
            b',"datacontenttype":', dumps(envelope.JSON_TYPE), b",", dumps(envelope.EXT_PRODUCER), b":",
            dumps(self._principal), b",", dumps(envelope.EXT_SEQ), b":",
        ))
        tail = b"".join((b",", dumps(envelope.EXT_SCHEMA), b":", dumps(schema_version), b",",
                         dumps(envelope.EXT_RECEIVED), b":", received))
        subject_key = b"," + dumps(envelope.EXT_SUBJECT) + b":"
        data_key = b',"data":'
        out: list[bytes] = []
        for id_, seq, shash, data in items:
            if type(id_) is not str or not 0 < len(id_) <= _MAX_ID or not (
                shash is None or (type(shash) is str and 0 < len(shash) <= _MAX_ID)
            ) or type(seq) is not int:
                env = self.build(type_, source, data, id_=id_, seq=seq, schema_version=schema_version,
                                 subject_hash=shash, subject=None, now=now)
                out.append(envelope.encode(env, max_bytes=max_bytes))
                continue
            if shash is None:
                raw = b"".join((head, dumps(id_), mid, b"%d" % seq, tail, data_key, dumps(data), b"}"))
            else:
                raw = b"".join((head, dumps(id_), mid, b"%d" % seq, tail, subject_key, dumps(shash), data_key,
                                dumps(data), b"}"))
            if len(raw) > max_bytes:
                raise OversizeError(f"event is {len(raw)} bytes, limit is {max_bytes}", size=len(raw),
                                    limit=max_bytes)
            out.append(raw)
        return out

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
