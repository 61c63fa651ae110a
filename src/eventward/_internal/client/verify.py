"""Consumer-side seal verification: one signature per batch, one SHA-256 per event.

Verified seals are cached per (stream, batch) and compared byte for byte on every hit, so a
swapped seal blob is never mistaken for the cached one. Key status is re-read from the trust
registry at most every ``key_ttl`` seconds, so a revocation reaches running consumers fast.
A dead-letter key verifies only on a dead-letter stream (``<topic>.dlq``): anywhere else its
seal is refused as ``dead_letter_key``, whatever the policy grants its principal.

Hybrid seals (Ed25519 + ML-DSA-65): a key registered as hybrid verifies hybrid seals only
(``suite_mismatch``: no stripping down to Ed25519), and streams named in ``require_hybrid``
(eventward.yaml ``seals.require_hybrid``: exact names, or a prefix ending in ``*``) refuse any
Ed25519-only seal (``hybrid_required``), so a topic can be closed to classical seals once its
producers have migrated while other topics still accept both.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol

from eventward._internal.client.trust import DEAD_LETTER, RETIRED, REVOKED, TrustedKey
from eventward._internal.crypto import seal as sealing
from eventward._internal.crypto.seal import HYBRID, Seal
from eventward._internal.log.base import Record
from eventward.errors import NotFoundError, SealError

DLQ_SUFFIX = ".dlq"  # <topic>.dlq holds the dead letters of <topic>


def is_dead_letter_stream(stream: str) -> bool:
    return stream.endswith(DLQ_SUFFIX) and len(stream) > len(DLQ_SUFFIX)


def stream_matches(stream: str, patterns: Sequence[str]) -> bool:
    """``orders`` matches only ``orders``; ``orders*`` matches every stream starting ``orders``."""
    return any(stream.startswith(p[:-1]) if p.endswith("*") else stream == p for p in patterns)


class KeyResolver(Protocol):
    def resolve(self, kid: str) -> TrustedKey: ...


class SealVerifier:
    def __init__(
        self,
        keys: KeyResolver,
        *,
        cache_size: int = 256,  # batches are read in order: a few recent seals are all that is hit
        key_ttl: float = 5.0,
        retired_grace: float = 60.0,
        clock: Callable[[], float] = time.time,
        require_hybrid: Sequence[str] = (),
        topic_of: Callable[[str], str] | None = None,
    ) -> None:
        self._keys = keys
        self._topic_of = topic_of  # a partition stream answers to its topic's require_hybrid
        self._require_hybrid = tuple(require_hybrid)
        self._cache_size = cache_size
        self._key_ttl = key_ttl
        self._grace = retired_grace
        self._clock = clock
        self._seals: OrderedDict[tuple[str, str], tuple[bytes, Seal]] = OrderedDict()
        self._key_cache: dict[str, tuple[float, TrustedKey | None]] = {}

    def verify_record(self, rec: Record, *, fresh: bool = False) -> Seal:
        """The verified seal covering ``rec``; SealError naming the reason otherwise.

        ``fresh`` skips both caches (a redrive re-verifies against the registry as it is now).
        """
        if not rec.seal:
            raise SealError(
                f"event at offset {rec.offset} of {rec.stream} carries no seal", reason="unsealed"
            )
        s = self.verify_seal(rec.seal, rec.stream, rec.batch, fresh=fresh)
        sealing.check_event(s, rec.index, rec.data)
        return s

    def verify_records(self, records: Sequence[Record]) -> list[Seal | SealError]:
        """``verify_record`` for a consumer's read batch, aligned with ``records``: the verified
        seal or the SealError that ``verify_record`` would raise. Each sealed batch in it is
        verified once (signature, key status and grant, all as ``verify_seal``), then every
        event costs one SHA-256 against its digest; a run of records of one batch shares one
        seal blob (the transports hand out one object per batch; equal bytes do too)."""
        out: list[Seal | SealError] = []
        blob: bytes | None = None
        stream = batch = ""
        s: Seal | None = None
        err: SealError | None = None
        sha256 = hashlib.sha256
        for rec in records:
            if not rec.seal:
                try:
                    self.verify_record(rec)  # raises "unsealed", worded for this record
                except SealError as e:
                    out.append(e)
                continue
            if rec.seal is not blob or rec.batch != batch or rec.stream != stream:
                blob, stream, batch = rec.seal, rec.stream, rec.batch
                try:
                    s, err = self.verify_seal(blob, stream, batch), None
                except SealError as e:
                    s, err = None, e
            if s is None:
                out.append(err)  # type: ignore[arg-type]
                continue
            idx = rec.index
            if type(idx) is int and 0 <= idx < s.count and sha256(rec.data).digest() == s.digests[idx]:
                out.append(s)
                continue
            try:
                sealing.check_event(s, idx, rec.data)  # raises, naming what is wrong
                out.append(s)
            except SealError as e:
                out.append(e)
        return out

    def verify_seal(self, blob: bytes, stream: str, batch: str, *, fresh: bool = False) -> Seal:
        """Parse and verify a seal for (stream, batch), with the key's current status."""
        slot = (stream, batch)
        if fresh:
            self._seals.pop(slot, None)
        hit = self._seals.get(slot)
        if hit is not None and (hit[0] is blob or hit[0] == blob):
            s = hit[1]
            self._check_key_status(s, self._key(s.kid))  # revocation applies to cached seals too
            return s
        s = sealing.parse(blob)
        if s.stream != stream:
            raise SealError(
                f"seal was made for stream {s.stream[:64]!r}, found in {stream!r}", reason="stream_mismatch"
            )
        if s.batch != batch:
            raise SealError(
                f"seal was made for batch {s.batch[:64]!r}, stored as batch {batch[:64]!r}",
                reason="batch_mismatch",
            )
        if s.suite != HYBRID and self._require_hybrid and (
            stream_matches(stream, self._require_hybrid)
            or (self._topic_of is not None and stream_matches(self._topic_of(stream), self._require_hybrid))
        ):
            raise SealError(
                f"stream {stream!r} requires hybrid (Ed25519 + ML-DSA-65) seals; batch sealed with {s.suite}",
                reason="hybrid_required",
                kid=s.kid[:80],
            )
        key = self._key(s.kid, fresh=fresh)
        if key.principal != s.producer:
            raise SealError(
                f"seal claims producer {s.producer[:64]!r} but key {s.kid} belongs to another principal",
                reason="wrong_producer",
                kid=s.kid,
            )
        if key.purpose == DEAD_LETTER and not is_dead_letter_stream(stream):
            raise SealError(
                f"seal on {stream!r} signed by dead-letter key {key.kid}, which seals dead letters only",
                reason="dead_letter_key",
                kid=key.kid,
            )
        self._check_key_status(s, key)
        sealing.verify(s, key.public_key, key.pq_public_key)
        self._seals[slot] = (blob, s)
        if len(self._seals) > self._cache_size:
            self._seals.popitem(last=False)
        return s

    def _key(self, kid: str, *, fresh: bool = False) -> TrustedKey:
        now = self._clock()
        hit = self._key_cache.get(kid)
        if fresh or hit is None or now - hit[0] > self._key_ttl:
            try:
                key: TrustedKey | None = self._keys.resolve(kid)
            except NotFoundError:
                key = None
            if len(self._key_cache) > self._cache_size:
                self._key_cache.clear()
            hit = self._key_cache[kid] = (now, key)
        if hit[1] is None:
            raise SealError(f"seal signed by unknown key {kid[:80]!r}", reason="unknown_key", kid=kid[:80])
        return hit[1]

    def _check_key_status(self, s: Seal, key: TrustedKey) -> None:
        if key.status == REVOKED:
            raise SealError(f"seal signed by revoked key {key.kid}", reason="revoked_key", kid=key.kid)
        if key.status == RETIRED and s.time > key.changed + self._grace:
            raise SealError(
                f"seal signed by key {key.kid} after it was rotated out", reason="retired_key", kid=key.kid
            )
