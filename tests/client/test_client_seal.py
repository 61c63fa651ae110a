"""Seals: canonical, strict encoding; every byte of the blob matters; inclusion proofs."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from eventward._internal.crypto import seal as sealing
from eventward._internal.crypto.merkle import leaf_hash
from eventward._internal.crypto.seal import Signer
from eventward.errors import SealError

_SIGNED = sealing.Seal.__slots__.index("signature")  # the fields before the signature
EVENTS = [b'{"id":"a"}', b'{"id":"b"}', b'{"id":"c"}', b'{"id":"d"}', b'{"id":"e"}']


@pytest.fixture
def signer() -> Signer:
    return Signer("svc", Ed25519PrivateKey.generate())


def make(signer: Signer, events=EVENTS, **kw) -> bytes:
    args = {"instance": "inst1", "stream": "orders", "batch": "b-1", "first_seq": 10, "time": 1700000000.25}
    args.update(kw)
    return sealing.seal(signer, events=events, **args)


def test_roundtrip_binds_every_field(signer):
    s = sealing.parse(make(signer))
    sealing.verify(s, signer.public_key())
    assert (s.producer, s.instance, s.stream, s.batch) == ("svc", "inst1", "orders", "b-1")
    assert (s.first_seq, s.last_seq, s.count, s.time_us, s.kid) == (10, 14, 5, 1700000000250000, signer.kid)
    assert s.digests == tuple(sealing.digest(e) for e in EVENTS)
    for i, e in enumerate(EVENTS):
        sealing.check_event(s, i, e)


def test_length_prefixes_make_field_boundaries_unambiguous(signer):
    # "ab"+"c" and "a"+"bc" must not sign the same bytes.
    a = sealing.parse(make(signer, instance="ab", stream="c"))
    b = sealing.parse(make(signer, instance="a", stream="bc"))
    assert a.body != b.body


@pytest.mark.parametrize(
    "field,value",
    [
        ("stream", "payments"),
        ("batch", "b-2"),
        ("first_seq", 11),
        ("time", 1700000001.0),
        ("instance", "inst2"),
    ],
)
def test_signature_does_not_carry_over_to_other_field_values(signer, field, value):
    good = sealing.parse(make(signer))
    other = sealing.parse(make(signer, **{field: value}))
    forged = sealing.Seal(
        *[getattr(other, f) for f in sealing.Seal.__slots__[:_SIGNED]], good.signature, other.digests, other.body
    )
    with pytest.raises(SealError) as e:
        sealing.verify(forged, signer.public_key())
    assert e.value.reason == "bad_signature"


def test_every_single_byte_flip_is_refused(signer):
    blob = make(signer, events=EVENTS[:3])
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(SealError):
            s = sealing.parse(bytes(bad))
            sealing.verify(s, signer.public_key())
            for j, e in enumerate(EVENTS[:3]):
                sealing.check_event(s, j, e)


def test_truncated_and_padded_blobs_are_malformed(signer):
    blob = make(signer)
    for bad in (blob[:-1], blob + b"\x00", blob[:3], b"", blob[:40]):
        with pytest.raises(SealError) as e:
            sealing.parse(bad)
        assert e.value.reason == "malformed"


def test_other_key_and_swapped_digests_are_refused(signer):
    s = sealing.parse(make(signer))
    with pytest.raises(SealError) as e:
        sealing.verify(s, Ed25519PrivateKey.generate().public_key())
    assert e.value.reason == "bad_signature"
    swapped = sealing.Seal(
        *[getattr(s, f) for f in sealing.Seal.__slots__[: _SIGNED + 1]],
        (s.digests[1], s.digests[0], *s.digests[2:]),
        s.body,
    )
    with pytest.raises(SealError) as e:
        sealing.verify(swapped, signer.public_key())
    assert e.value.reason == "root_mismatch"


def test_event_checks_name_the_reason(signer):
    s = sealing.parse(make(signer))
    with pytest.raises(SealError) as e:
        sealing.check_event(s, 1, EVENTS[2])
    assert e.value.reason == "digest_mismatch"
    with pytest.raises(SealError) as e:
        sealing.check_event(s, 5, EVENTS[0])
    assert e.value.reason == "not_in_seal"


def test_inclusion_proofs_for_single_events(signer):
    s = sealing.parse(make(signer))
    for i, e in enumerate(EVENTS):
        proof = sealing.prove_event(s, i)
        sealing.verify_event_proof(e, i, s.count, proof, s.root)
    proof = sealing.prove_event(s, 2)
    with pytest.raises(SealError):
        sealing.verify_event_proof(EVENTS[3], 2, s.count, proof, s.root)  # other event
    with pytest.raises(SealError):
        sealing.verify_event_proof(EVENTS[2], 3, s.count, proof, s.root)  # other position
    with pytest.raises(SealError):
        sealing.verify_event_proof(EVENTS[2], 2, s.count, [*proof, leaf_hash(b"x")], s.root)  # extra hash
    with pytest.raises(SealError):
        sealing.verify_event_proof(EVENTS[2], 2, s.count, proof[:-1], s.root)  # missing hash


def test_signer_repr_has_no_key_material(signer):
    assert "kid" in repr(signer) and "ed25519" in repr(signer)
    assert "private" not in repr(signer).lower()
