"""Field tokens on their own: format, round trip, and every way to alter or move one."""

from __future__ import annotations

import base64
import os
import random
import re

import pytest

from eventward._internal.crypto import tokens
from eventward._internal.crypto.tokens import GCM, SIV, TokenCipher, associated_data
from eventward.errors import InputError, KeyServiceError, TokenError

from .conftest import SENTINEL

DEK = bytes(range(32))
OTHER_DEK = bytes(range(1, 33))
KID = "kid_A-1"
CTX = dict(kid=KID, cls="pii", subject_hash="ab" * 32, path="customer.email", event_id="evt-1")


def seal(value: object = "ada@example.com", alg: str = GCM, dek: bytes = DEK, **over: str) -> str:
    c = {**CTX, **over}
    return TokenCipher().encrypt(value, c.pop("kid"), dek, **c, deterministic=alg == SIV)


def open_(token: str, dek: bytes = DEK, **over: str) -> object:
    """Open in the context CTX (+ overrides); the token's own header names the alg and kid."""
    c = {**CTX, **over}
    del c["kid"]
    return TokenCipher().decrypt(token, dek, **c)


VALUES = [None, True, False, 0, -1, 2**63 - 1, -(2**63), 1.5, -0.25, 1e300, "", "ünïcødé ✓", "x" * 5000,
          [], {}, [1, "a", None, {"b": [True]}], {"nested": {"deep": [1.0, 2, "3"]}}]


@pytest.mark.parametrize("alg", [GCM, SIV])
@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_every_json_type_round_trips_with_its_type(alg, value):
    token = seal(value, alg)
    out = open_(token)
    assert out == value and type(out) is type(value)


def test_token_format_is_compact_url_safe_and_versioned():
    token = seal()
    m = re.fullmatch(r"ew1\.g\.([A-Za-z0-9_-]{1,64})\.([A-Za-z0-9_-]+)", token)
    assert m and m.group(1) == KID
    blob = base64.urlsafe_b64decode(m.group(2) + "=" * (-len(m.group(2)) % 4))
    assert len(blob) == 12 + len(b'"ada@example.com"') + 16  # nonce || ciphertext || tag
    assert seal(alg=SIV).startswith(f"ew1.s.{KID}.")
    assert tokens.parse(token) == (GCM, KID, blob)


def test_random_nonces_make_equal_values_differ():
    assert len({seal() for _ in range(50)}) == 50


def test_every_single_bit_flip_of_a_token_is_refused():
    for alg in (GCM, SIV):
        token = seal(7, alg)  # small token: try every bit of every character
        raw = token.encode()
        for i in range(len(raw)):
            for bit in range(8):
                flipped = bytearray(raw)
                flipped[i] ^= 1 << bit
                try:
                    text = flipped.decode()
                except UnicodeDecodeError:
                    continue  # cannot even be a str: nothing to hand to the parser
                with pytest.raises(TokenError):
                    open_(text)


def test_every_single_bit_flip_of_the_ciphertext_is_refused():
    for alg in (GCM, SIV):
        _, kid, blob = tokens.split(seal("some value", alg))
        for i in range(len(blob) * 8):
            b = bytearray(blob)
            b[i // 8] ^= 1 << (i % 8)
            with pytest.raises(TokenError):
                open_(tokens.encode_token(alg, kid, bytes(b)))


def test_truncated_tokens_are_refused():
    token = seal()
    for n in range(len(token)):
        with pytest.raises(TokenError):
            open_(token[:n])


def test_extended_tokens_are_refused():
    token = seal()
    for extra in ("A", "AA", "AAAA", ".", "=", "==", " ", "\n"):
        with pytest.raises(TokenError):
            open_(token + extra)


@pytest.mark.parametrize("over", [
    {"event_id": "evt-2"},
    {"path": "customer.name"},
    {"path": "items[1].note"},
    {"subject_hash": "cd" * 32},
    {"subject_hash": ""},
    {"cls": "payment"},
], ids=lambda o: next(iter(o)))
def test_a_token_moved_to_another_context_is_refused(over):
    token = seal()
    with pytest.raises(TokenError):
        open_(token, **over)


def test_a_token_relabelled_with_another_key_id_is_refused():
    token = seal()
    alg, _, blob = tokens.split(token)
    relabelled = tokens.encode_token(alg, "kid_B-2", blob)
    # Even with the same DEK (a key source handing it out under both ids): the id is bound.
    with pytest.raises(TokenError):
        open_(relabelled)
    # And with the DEK that the new id really names:
    with pytest.raises(TokenError):
        open_(relabelled, dek=OTHER_DEK)


def test_wrong_key_is_refused():
    with pytest.raises(TokenError):
        open_(seal(), dek=OTHER_DEK)


def test_algorithm_swapped_in_the_header_is_refused():
    for alg, other in ((GCM, SIV), (SIV, GCM)):
        _, kid, blob = tokens.split(seal("v", alg))
        with pytest.raises(TokenError):
            open_(tokens.encode_token(other, kid, blob))


@pytest.mark.parametrize("bad", [
    "ew2.g.kid.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "ew1.x.kid.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "ew1.g.kid with space.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "ew1.g." + "k" * 65 + ".AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "ew1.g..AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "ew1.g.kid.AAAA+AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  # standard, not URL-safe, alphabet
    "ew1.g.kid.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",  # padding
    "ew1.g.kid.AAAA",  # too short for nonce and tag
    "ew1.g.kid",
    "ew1.g.kid.AAAA.AAAA",
    "",
    SENTINEL,
    "ew1." + SENTINEL,
], ids=range(13))
def test_malformed_tokens_raise_token_error_without_echoing_them(bad):
    with pytest.raises(TokenError) as ei:
        tokens.parse(bad)
    if bad:
        assert bad not in str(ei.value) and bad not in repr(ei.value)
    assert SENTINEL not in str(ei.value)


@pytest.mark.parametrize("bad", [None, 42, b"ew1.g.kid.AAAA", ["ew1"], {"t": 1}])
def test_non_strings_are_not_tokens(bad):
    with pytest.raises(TokenError):
        tokens.parse(bad)
    assert not tokens.is_token(bad)


def test_deterministic_tokens_are_equal_for_equal_values_in_the_same_context_only():
    a1 = seal("ada@example.com", SIV)
    assert a1 == seal("ada@example.com", SIV)
    assert a1 == seal("ada@example.com", SIV, event_id="another-event")  # SIV ignores the event
    assert a1 != seal("bob@example.com", SIV)
    assert a1 != seal("ada@example.com", SIV, subject_hash="cd" * 32)
    assert a1 != seal("ada@example.com", SIV, path="customer.other")
    assert a1 != seal("ada@example.com", SIV, cls="contact")
    # and a different DEK (another subject's key) gives a different token
    assert a1 != seal("ada@example.com", SIV, dek=OTHER_DEK)


def test_deterministic_tokens_are_still_bound_to_their_context():
    token = seal("ada@example.com", SIV)
    for over in ({"path": "customer.name"}, {"subject_hash": "cd" * 32}, {"cls": "payment"}):
        with pytest.raises(TokenError):
            open_(token, **over)
    alg, _, blob = tokens.split(token)
    with pytest.raises(TokenError):
        open_(tokens.encode_token(alg, "k2", blob))


def test_associated_data_is_unambiguous():
    # Shifting characters between neighbouring parts must change the encoding.
    a = associated_data(GCM, "k", "pii", "ab", "x.y", "e1")
    assert a != associated_data(GCM, "k", "pii", "abx", ".y", "e1")
    assert a != associated_data(GCM, "k", "pii", "a", "bx.y", "e1")
    assert a != associated_data(GCM, "kp", "ii", "ab", "x.y", "e1")
    assert associated_data(GCM, "k", "pii", None, "p", "e") == associated_data(GCM, "k", "pii", "", "p", "e")
    siv = [associated_data(SIV, "k", "pii", "ab", "p", e) for e in ("e1", "e2")]
    assert siv[0] == siv[1]


def test_random_positions_in_a_large_token_are_tamper_evident():
    rng = random.Random(1)
    token = seal({"blob": "z" * 3000})
    alg, kid, blob = tokens.split(token)
    for _ in range(300):
        b = bytearray(blob)
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        with pytest.raises(TokenError):
            open_(tokens.encode_token(alg, kid, bytes(b)))


@pytest.mark.parametrize("kid,dek", [
    ("bad kid", DEK), ("", DEK), ("k" * 65, DEK), ("a.b", DEK), (None, DEK), (["k"], DEK),
    (KID, DEK[:16]), (KID, "x" * 32), (KID, None), (KID, bytearray(DEK)), (KID, [1, 2]),
])
def test_key_source_handing_out_bad_keys_is_a_key_service_error(kid, dek):
    with pytest.raises(KeyServiceError):
        TokenCipher().handle(kid, dek)


def test_values_that_are_not_json_are_refused_by_type_not_value():
    with pytest.raises(InputError) as ei:
        seal({SENTINEL})
    assert "set" in str(ei.value)
    assert SENTINEL not in str(ei.value) and SENTINEL not in repr(ei.value)


def test_reprs_hold_no_key_or_ciphertext():
    cipher = TokenCipher()
    h = cipher.handle(KID, DEK)
    t = tokens.parse(seal())
    for r in (repr(cipher), repr(h), repr(t)):
        assert DEK.hex() not in r and str(DEK) not in r and "\\x" not in r
    assert t.blob.hex() not in repr(t) and str(t.blob) not in repr(t)


def test_cipher_cache_is_bounded():
    cipher = TokenCipher(max_keys=4)
    for _ in range(50):
        cipher.handle(KID, os.urandom(32))
    assert len(cipher._handles) <= 4
    cipher.clear()
    assert not cipher._handles


def test_encode_token_is_the_inverse_of_split():
    for alg in (GCM, SIV):
        token = seal("x", alg)
        assert tokens.encode_token(*tokens.split(token)) == token
    with pytest.raises(TokenError):
        tokens.encode_token("q", KID, b"x" * 40)
    with pytest.raises(TokenError):
        tokens.encode_token(GCM, "bad kid", b"x" * 40)
