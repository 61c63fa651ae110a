"""Sealed batches: one Ed25519 signature over the Merkle root of a batch's exact event bytes.

Signing every event would cap a consumer near 10k events/s per core; a seal costs one
signature per batch and one SHA-256 per event, and any single event can still be proved
with an RFC 6962 inclusion proof. The signed part is a fixed binary layout with
length-prefixed strings, so two different seals can never share an encoding:

    body   = "EWS1" | u8 version | str producer | str instance | str stream | str batch
             | u64 first_seq | u64 last_seq | u32 count | root[32] | i64 time_us | str kid
    str    = u16 big-endian length | UTF-8 bytes
    blob   = u32 len(body) | body | signature[64] | digest[32] * count

The per-event digests travel unsigned but are bound by the root: a consumer that reads part
of a batch recomputes the root once per seal and then only hashes the events it reads.

Version 2 is the opt-in hybrid suite (Ed25519 + ML-DSA-65, FIPS 204) for producers moving to
post-quantum signatures. The suite id sits inside the signed body, and both signatures cover
that same body, so no byte of a hybrid seal can be relabelled as a classical one:

    body   = "EWS1" | u8 2 | u8 suite | str producer | ... (as in v1) ... | str kid
    blob   = u32 len(body) | body | ed25519_sig[64] | mldsa65_sig[3309] | digest[32] * count

Both signatures must verify. Version 1 blobs stay readable and verify as before.
"""

from __future__ import annotations

import hashlib
import struct
import time as _time
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from eventward._internal.crypto.merkle import (
    HASH_SIZE,
    inclusion_proof,
    leaf_hash,
    root_from_leaf_hashes,
    verify_inclusion,
)
from eventward.errors import AuditIntegrityError, InputError, SealError

FORMAT_VERSION = 1  # Ed25519 alone
HYBRID_VERSION = 2  # Ed25519 + ML-DSA-65
MAGIC = b"EWS1"
SIGNATURE_SIZE = 64
MLDSA65_SIGNATURE_SIZE = 3309  # FIPS 204, ML-DSA-65: fixed size
MAX_EVENTS = 100_000
ED25519 = "ed25519"  # suite names, as the trust registry and the verifier speak them
HYBRID = "ed25519+ml-dsa-65"
SUITES = (ED25519, HYBRID)
_SUITE_IDS = {HYBRID: 2}  # the u8 in a v2 body; v1 implies Ed25519
_CONTEXT = b"eventward-seal-v1\x00"  # domain separation: a seal signature is never anything else's
_CONTEXT_V2 = b"eventward-seal-v2\x00"
_MLDSA_CONTEXT = b"eventward-seal-v2"  # FIPS 204 context string
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_TAIL = struct.Struct(">QQI32sq")  # first_seq, last_seq, count, root, time_us
_MAX_STR = 1024
_LEAF = b"\x00"  # RFC 6962 leaf prefix, as merkle.leaf_hash writes it


def digest(event: bytes) -> bytes:
    """SHA-256 of an event's exact stored bytes: what the seal's Merkle leaves commit to."""
    return hashlib.sha256(event).digest()


def kid_of(public_key: Ed25519PublicKey) -> str:
    """Key id derived from the public key itself, so a kid can never name a different key."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "ed25519-" + hashlib.sha256(raw).hexdigest()[:24]


def check_suite(suite: str) -> str:
    if suite not in SUITES:
        raise InputError(f"seal suite must be one of {', '.join(SUITES)}")
    return suite


class Signer:
    """A producer principal's current signing key. The repr never shows key material.

    With ``pq_key`` the signer seals with the hybrid suite (both signatures, format v2); its kid
    stays the Ed25519 key's, and the trust registry binds the ML-DSA public key to that kid."""

    def __init__(
        self, principal: str, private_key: Ed25519PrivateKey, pq_key: MLDSA65PrivateKey | None = None
    ) -> None:
        self.principal = principal
        self._key = private_key
        self._pq = pq_key
        self.kid = kid_of(private_key.public_key())

    @property
    def suite(self) -> str:
        return ED25519 if self._pq is None else HYBRID

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def sign_pq(self, message: bytes) -> bytes:
        if self._pq is None:
            raise SealError("this signer has no ML-DSA key", reason="suite_mismatch")
        return self._pq.sign(message, _MLDSA_CONTEXT)

    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def pq_public_key(self) -> MLDSA65PublicKey | None:
        return None if self._pq is None else self._pq.public_key()

    def __repr__(self) -> str:
        return f"Signer(principal={self.principal!r}, kid={self.kid!r})"


@dataclass(frozen=True, slots=True)
class Seal:
    version: int
    producer: str
    instance: str
    stream: str
    batch: str
    first_seq: int
    last_seq: int
    count: int
    root: bytes
    time_us: int
    kid: str
    signature: bytes = field(repr=False)
    digests: tuple[bytes, ...] = field(repr=False)
    body: bytes = field(repr=False)
    suite: str = ED25519
    pq_signature: bytes = field(default=b"", repr=False)

    @property
    def time(self) -> float:
        return self.time_us / 1_000_000

    def seq_of(self, index: int) -> int:
        return self.first_seq + index


def _str(value: str, name: str) -> bytes:
    raw = value.encode("utf-8")
    if not raw or len(raw) > _MAX_STR:
        raise InputError(f"seal field '{name}' must be 1..{_MAX_STR} bytes")
    return _U16.pack(len(raw)) + raw


def _body(
    producer: str,
    instance: str,
    stream: str,
    batch: str,
    first_seq: int,
    count: int,
    root: bytes,
    time_us: int,
    kid: str,
    suite: str = ED25519,
) -> bytes:
    head = bytes((FORMAT_VERSION,)) if suite == ED25519 else bytes((HYBRID_VERSION, _SUITE_IDS[suite]))
    return b"".join(
        (
            MAGIC,
            head,
            _str(producer, "producer"),
            _str(instance, "instance"),
            _str(stream, "stream"),
            _str(batch, "batch"),
            _TAIL.pack(first_seq, first_seq + count - 1, count, root, time_us),
            _str(kid, "kid"),
        )
    )


def merkle_root(digests: Sequence[bytes]) -> bytes:
    return root_from_leaf_hashes([leaf_hash(d) for d in digests])


def seal(
    signer: Signer,
    *,
    instance: str,
    stream: str,
    batch: str,
    first_seq: int,
    events: Sequence[bytes],
    time: float | None = None,
) -> bytes:
    """Seal a batch: the blob a transport stores next to the batch's events."""
    count = len(events)
    if not 1 <= count <= MAX_EVENTS:
        raise InputError(f"a sealed batch holds 1..{MAX_EVENTS} events, got {count}")
    if first_seq < 0 or first_seq + count - 1 >= 2**63:
        raise InputError("sequence numbers must be in 0..2^63-1")
    sha256 = hashlib.sha256
    digests = [sha256(e).digest() for e in events]  # digest(), inlined: once per event
    root = root_from_leaf_hashes([sha256(_LEAF + d).digest() for d in digests])  # merkle_root, leaf_hash inlined
    time_us = round((_time.time() if time is None else time) * 1_000_000)
    suite = signer.suite
    body = _body(signer.principal, instance, stream, batch, first_seq, count, root, time_us, signer.kid, suite)
    if suite == ED25519:
        return b"".join((_U32.pack(len(body)), body, signer.sign(_CONTEXT + body), *digests))
    sigs = (signer.sign(_CONTEXT_V2 + body), signer.sign_pq(body))
    return b"".join((_U32.pack(len(body)), body, *sigs, *digests))


class _Reader:
    def __init__(self, buf: bytes, pos: int, end: int) -> None:
        self.buf, self.pos, self.end = buf, pos, end

    def take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise SealError("seal is truncated", reason="malformed")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def str(self) -> str:
        (n,) = _U16.unpack(self.take(2))
        if not 0 < n <= _MAX_STR:
            raise SealError("seal has a string field of invalid length", reason="malformed")
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise SealError("seal has a string field that is not UTF-8", reason="malformed") from None


def parse(blob: bytes) -> Seal:
    """Decode a seal blob strictly: every byte accounted for, nothing trailing, nothing missing.

    Parsing does not verify the signature; ``verify`` does.
    """
    blob = bytes(blob)
    if len(blob) < 4:
        raise SealError("seal is truncated", reason="malformed")
    (body_len,) = _U32.unpack_from(blob)
    if 4 + body_len > len(blob):
        raise SealError("seal is truncated", reason="malformed")
    r = _Reader(blob, 4, 4 + body_len)
    if r.take(4) != MAGIC:
        raise SealError("not a seal (bad magic)", reason="malformed")
    version = r.take(1)[0]
    suite = ED25519
    if version == HYBRID_VERSION:
        suite_id = r.take(1)[0]
        named = [name for name, i in _SUITE_IDS.items() if i == suite_id]
        if not named:
            raise SealError(f"unsupported seal suite {suite_id}", reason="malformed")
        suite = named[0]
    elif version != FORMAT_VERSION:
        raise SealError(f"unsupported seal format version {version}", reason="malformed")
    producer, instance, stream, batch = r.str(), r.str(), r.str(), r.str()
    first_seq, last_seq, count, root, time_us = _TAIL.unpack(r.take(_TAIL.size))
    kid = r.str()
    if r.pos != r.end:
        raise SealError("seal body has trailing bytes", reason="malformed")
    if not 1 <= count <= MAX_EVENTS or last_seq != first_seq + count - 1 or last_seq >= 2**63:
        raise SealError("seal sequence range does not match its event count", reason="malformed")
    sig_at = 4 + body_len
    pq_at = sig_at + SIGNATURE_SIZE
    dig_at = pq_at + (MLDSA65_SIGNATURE_SIZE if suite == HYBRID else 0)
    if len(blob) != dig_at + count * HASH_SIZE:
        raise SealError("seal digest list does not match its event count", reason="malformed")
    digests = tuple(blob[i : i + HASH_SIZE] for i in range(dig_at, len(blob), HASH_SIZE))
    return Seal(
        version,
        producer,
        instance,
        stream,
        batch,
        first_seq,
        last_seq,
        count,
        root,
        time_us,
        kid,
        blob[sig_at:pq_at],
        digests,
        blob[4:sig_at],
        suite,
        blob[pq_at:dig_at],
    )


def verify(s: Seal, public_key: Ed25519PublicKey, pq_public_key: MLDSA65PublicKey | None = None) -> None:
    """Check the signature(s) over the body and that the digests hash to the signed root.

    A hybrid seal needs ``pq_public_key`` and both signatures; a key registered as hybrid
    (``pq_public_key`` given) accepts nothing less than a hybrid seal."""
    if (s.suite == HYBRID) != (pq_public_key is not None):
        raise SealError(
            f"seal suite {s.suite} does not match the suite of key {s.kid}", reason="suite_mismatch", kid=s.kid
        )
    try:
        if pq_public_key is not None:  # and so s.suite == HYBRID
            public_key.verify(s.signature, _CONTEXT_V2 + s.body)
            pq_public_key.verify(s.pq_signature, s.body, _MLDSA_CONTEXT)
        else:
            public_key.verify(s.signature, _CONTEXT + s.body)
    except InvalidSignature:
        raise SealError(
            f"seal signature does not verify (batch {s.batch[:64]!r}, kid {s.kid})",
            reason="bad_signature",
            kid=s.kid,
        ) from None
    if merkle_root(s.digests) != s.root:
        raise SealError(
            f"seal digests do not match the signed Merkle root (batch {s.batch[:64]!r})",
            reason="root_mismatch",
        )


def check_event(s: Seal, index: int, data: bytes) -> None:
    """One SHA-256: the stored bytes are exactly the ones the producer sealed at ``index``."""
    if not 0 <= index < s.count:
        raise SealError(f"event index {index} is outside the sealed batch of {s.count}", reason="not_in_seal")
    if digest(data) != s.digests[index]:
        raise SealError(
            f"event at index {index} of batch {s.batch[:64]!r} does not match its sealed digest",
            reason="digest_mismatch",
            index=index,
        )


def prove_event(s: Seal, index: int) -> list[bytes]:
    """RFC 6962 inclusion proof that the event at ``index`` is covered by the seal's root."""
    if not 0 <= index < s.count:
        raise SealError(f"event index {index} is outside the sealed batch of {s.count}", reason="not_in_seal")
    return inclusion_proof([leaf_hash(d) for d in s.digests], index)


def verify_event_proof(data: bytes, index: int, count: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check a single event against a (signature-verified) root without the digest list."""
    try:
        verify_inclusion(leaf_hash(digest(data)), index, count, proof, root)
    except AuditIntegrityError as e:
        raise SealError(f"event inclusion proof does not verify: {e.message}", reason="bad_proof") from None
