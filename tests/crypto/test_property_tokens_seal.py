"""Property tests for the binary and token parsers a consumer feeds with stored bytes: field
tokens, seal blobs, and the broker record framing (one NATS/Kafka message per sealed batch).

Each accepts well-formed input and refuses anything else with its typed error (TokenError,
SealError, TransportError), never another exception: these parsers see bytes an attacker
with write access to a broker or a log file chose. Inputs are random bytes/text and mutations
of valid encodings (bit flips, truncations, splices, re-labelled headers).
"""

from __future__ import annotations

import copy
import os
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventward._internal.crypto import seal as sealing
from eventward._internal.crypto import tokens
from eventward._internal.crypto.fields import FieldEncryptor
from eventward._internal.keys.memory import MemoryKeys
from eventward._internal.log import framing
from eventward.errors import EventwardError, InputError, SealError, TokenError, TransportError

from .conftest import SPEC, order

EXAMPLES = int(os.environ.get("EW_PROPERTY_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

DEK = bytes(range(32))
KID = "k1"
CTX = {"cls": "pii", "subject_hash": "h" * 32, "path": "customer.email", "event_id": "e-1"}
CIPHER = tokens.TokenCipher()
GCM_TOKEN = CIPHER.encrypt("jane@example.org", KID, DEK, **CTX)
SIV_TOKEN = CIPHER.encrypt("jane@example.org", KID, DEK, deterministic=True, **CTX)

SIGNER = sealing.Signer("orders-svc", Ed25519PrivateKey.generate())
EVENTS = [b'{"n":1}', b'{"n":2}', b'{"n":3}']
BLOB = sealing.seal(SIGNER, instance="i-1", stream="orders", batch="b-1", first_seq=5, events=EVENTS)
FRAME = framing.encode("b-1", EVENTS, BLOB)


def expect(error: type[EventwardError], fn, *args, **kw):  # type: ignore[no-untyped-def]
    """fn(*args) returns or raises ``error``; any other exception fails the property."""
    try:
        return fn(*args, **kw)
    except error:
        return None
    except EventwardError as e:
        raise AssertionError(f"{fn.__name__} raised {type(e).__name__}, expected {error.__name__}") from e


def flip(data: bytes, at: int, mask: int) -> bytes:
    at %= len(data)
    return data[:at] + bytes([data[at] ^ (mask or 1)]) + data[at + 1 :]


# --- field tokens ------------------------------------------------------------------------------

token_text = st.text(max_size=120) | st.builds(lambda s: "ew1." + s, st.text(max_size=80))


@SETTINGS
@given(token_text)
def test_property_token_random_text(text: str) -> None:
    expect(TokenError, tokens.parse, text)
    expect(TokenError, CIPHER.decrypt, text, DEK, **CTX)


@SETTINGS
@given(st.sampled_from([GCM_TOKEN, SIV_TOKEN]), st.integers(0, 400), st.text(max_size=6), st.integers(0, 8))
def test_property_token_mutations(token: str, at: int, insert: str, cut: int) -> None:
    """Characters replaced, inserted or cut anywhere: a changed token never decrypts."""
    at %= len(token) + 1
    for bad in (token[:at] + insert + token[at + cut :], token[: max(0, at - cut)], token + insert):
        if bad == token:
            continue
        value = expect(TokenError, CIPHER.decrypt, bad, DEK, **CTX)
        assert value is None, "a modified token decrypted"


@SETTINGS
@given(st.sampled_from(["g", "s", "x", ""]), st.text(max_size=70), st.binary(max_size=64))
def test_property_token_relabelled(alg: str, kid: str, blob: bytes) -> None:
    text = f"ew1.{alg}.{kid}.{tokens._b64(blob)}"
    expect(TokenError, tokens.parse, text)
    assert expect(TokenError, CIPHER.decrypt, text, DEK, **CTX) is None


@SETTINGS
@given(st.none() | st.integers() | st.binary(max_size=20) | st.lists(st.text(max_size=3), max_size=3))
def test_property_token_non_strings(value: object) -> None:
    expect(TokenError, tokens.parse, value)


# --- seal blobs ---------------------------------------------------------------------------------


def check_blob(blob: bytes) -> None:
    """Parse, verify and check every event: the only accepted blob is the original."""
    s = expect(SealError, sealing.parse, blob)
    if s is None:
        return
    if _verifies(s):
        for i, e in enumerate(EVENTS):
            expect(SealError, sealing.check_event, s, i, e)
        assert blob == BLOB, "a modified seal verified"


def _verifies(s: sealing.Seal) -> bool:
    try:
        sealing.verify(s, SIGNER.public_key())
    except SealError:
        return False
    return True


@SETTINGS
@given(st.binary(max_size=400))
def test_property_seal_random_bytes(blob: bytes) -> None:
    check_blob(blob)


@SETTINGS
@given(st.integers(0, 10_000), st.integers(0, 255), st.integers(0, 400), st.binary(max_size=40))
def test_property_seal_mutations(at: int, mask: int, cut: int, splice: bytes) -> None:
    check_blob(flip(BLOB, at, mask))
    check_blob(BLOB[: cut % len(BLOB)])
    check_blob(BLOB[: at % len(BLOB)] + splice + BLOB[at % len(BLOB) :])
    check_blob(BLOB + splice)


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.binary(max_size=200))
def test_property_seal_lying_length_prefix(length: int, rest: bytes) -> None:
    check_blob(length.to_bytes(4, "big") + rest)
    check_blob(length.to_bytes(4, "big") + BLOB[4:])


# --- broker record framing ---------------------------------------------------------------------


def check_frame(payload: bytes) -> None:
    batch = expect(TransportError, framing.decode, payload, "stream orders sequence 1")
    if batch is not None:
        assert isinstance(batch.batch_id, str) and batch.batch_id
        assert batch.events and batch.seal
        assert framing.encode(batch.batch_id, batch.events, batch.seal) == payload  # one encoding


@SETTINGS
@given(st.binary(max_size=400))
def test_property_framing_random_bytes(payload: bytes) -> None:
    check_frame(payload)
    check_frame(framing.MAGIC + payload)


@SETTINGS
@given(st.integers(0, 10_000), st.integers(0, 255), st.integers(0, 400), st.binary(max_size=40))
def test_property_framing_mutations(at: int, mask: int, cut: int, splice: bytes) -> None:
    check_frame(flip(FRAME, at, mask))
    check_frame(FRAME[: cut % len(FRAME)])
    check_frame(FRAME[: at % len(FRAME)] + splice + FRAME[at % len(FRAME) :])


@SETTINGS
@given(st.integers(0, 2**16 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.binary(max_size=60))
def test_property_framing_lying_header(id_len: int, n: int, seal_len: int, rest: bytes) -> None:
    check_frame(framing._HEAD.pack(framing.MAGIC, id_len, n, seal_len) + rest)


# --- encrypted event data (tokens in place, as a consumer decrypts them) ------------------------

KEYS = MemoryKeys()
ENCRYPTOR = FieldEncryptor(KEYS)
PLAIN = order("alice")
ENCRYPTED, SUBJECT_HASH = ENCRYPTOR.encrypt("evt-1", PLAIN, SPEC, principal="p")
scalars = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=12)
    | st.sampled_from([GCM_TOKEN, SIV_TOKEN, "ew1.g.k1.", "ew1.s.nokey.AAAAAAAAAAAAAAAAAAAAAAAA"])
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for k, v in items:
        out += _paths(v, (*prefix, k))
    return out


@SETTINGS
@given(data=st.data())
def test_property_token_fields_in_mutated_events(data: st.DataObject) -> None:
    """An encrypted event with one place replaced (a token mutated, retyped, moved, a container
    reshaped): decrypted exactly, or refused with a typed input/token error."""
    doc = copy.deepcopy(ENCRYPTED)
    path = data.draw(st.sampled_from(_paths(doc)))
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    old = parent[path[-1]]
    if isinstance(old, str) and tokens.is_token(old) and data.draw(st.booleans()):
        at = data.draw(st.integers(0, len(old)))
        new: Any = old[:at] + data.draw(st.text(max_size=4)) + old[at + data.draw(st.integers(0, 4)):]
    else:
        new = data.draw(json_values)
    parent[path[-1]] = new
    shash = data.draw(st.sampled_from([SUBJECT_HASH, KEYS.subject_hash("bob")]))
    try:
        out, _ = ENCRYPTOR.decrypt("evt-1", doc, SPEC, shash, principal="p")
    except (TokenError, InputError):
        return
    except EventwardError as e:
        raise AssertionError(f"decrypt raised {type(e).__name__}") from e
    # Accepted: every sensitive value is the original (nothing forged decrypts), or the field
    # was not sensitive where the change happened.
    for t in SPEC.targets(out):
        original = [u.container[u.key] for u in SPEC.targets(PLAIN) if u.path == t.path]
        assert original and t.container[t.key] == original[0], f"{t.path} decrypted to a forged value"
