"""Checkpoints as C2SP signed notes: cosignatures, unknown keys, the origin's signature required.

Round 1 accepted exactly one signature line, so a witness-cosigned checkpoint (c2sp.org/
tlog-cosignature) was refused. Now any number of lines is read, unknown keys are ignored, a
trusted witness's cosignature is verified, and nothing but the log's own valid signature makes
a checkpoint acceptable.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventward._internal.audit import note
from eventward._internal.audit.checkpoint import cosign, parse_body, sign_checkpoint, verify_checkpoint
from eventward._internal.audit.signing import AuditSigner
from eventward.errors import AuditIntegrityError, ConfigError

ROOT = hashlib.sha256(b"root").digest()
TIME = "2026-01-01T00:00:00.000Z"


@pytest.fixture
def log_signer() -> AuditSigner:
    return AuditSigner(Ed25519PrivateKey.generate())


def _witness(name: str = "witness.example/w1") -> note.Signer:
    return note.Signer(name, Ed25519PrivateKey.generate(), note.ALG_COSIGNATURE_V1)


def _other_line(text: bytes, name: str) -> str:
    return note.Signer(name, Ed25519PrivateKey.generate()).sign(text).line()


def test_attack_checkpoint_without_origin_signature(log_signer: AuditSigner) -> None:
    """A witnessed checkpoint verifies (refused in round 1), but only with the log's own line:
    a trusted witness's cosignature, lines under the log's name from other keys, or a copied
    line from another checkpoint never stand in for it."""
    cp = sign_checkpoint(log_signer, 7, ROOT, TIME)
    witness = _witness()
    witnessed = cosign(cp.text, witness, 1_700_000_000)
    got = verify_checkpoint(witnessed, log_signer.verifier, witnesses=[witness.key])
    assert got.size == 7 and [s.name for s in got.cosignatures] == ["witness.example/w1"]

    body, lines = witnessed.split("\n\n")
    origin_line, witness_line = lines.splitlines(keepends=True)
    impostor = _other_line((body + "\n").encode(), log_signer.name)  # the log's name, another key
    other = sign_checkpoint(log_signer, 8, ROOT, TIME).text.split("\n\n")[1]  # the log's line for size 8
    for sigs in (witness_line, impostor + witness_line, other, other + witness_line):
        forged = f"{body}\n\n{sigs}"
        with pytest.raises(AuditIntegrityError):
            verify_checkpoint(forged, log_signer.verifier, witnesses=[witness.key])
    assert origin_line.startswith(note.SIG_PREFIX + log_signer.name + " ")


def test_attack_checkpoint_bad_cosignature_from_a_trusted_witness(log_signer: AuditSigner) -> None:
    """A known key's signature that fails rejects the whole note (signed-note: SHOULD)."""
    cp = sign_checkpoint(log_signer, 3, ROOT, TIME)
    witness = _witness()
    witnessed = cosign(cp.text, witness, 1_700_000_000)
    body, sigs = witnessed.split("\n\n")
    origin_line, witness_line = sigs.splitlines(keepends=True)
    blob = bytearray(base64.b64decode(witness_line.split(" ")[-1]))
    blob[5] ^= 1  # the timestamp is signed too
    bad = f"{note.SIG_PREFIX}{witness.name} {base64.b64encode(bytes(blob)).decode()}\n"
    with pytest.raises(AuditIntegrityError, match="does not verify"):
        verify_checkpoint(f"{body}\n\n{origin_line}{bad}", log_signer.verifier, witnesses=[witness.key])
    # Not trusted, the same line is just an unknown signature and is ignored.
    assert verify_checkpoint(f"{body}\n\n{origin_line}{bad}", log_signer.verifier).cosignatures == ()


def test_unknown_signature_lines_are_ignored_in_any_order(log_signer: AuditSigner) -> None:
    cp = sign_checkpoint(log_signer, 9, ROOT, TIME)
    body, origin_line = cp.text.split("\n\n")
    text = (body + "\n").encode()
    others = [_other_line(text, f"witness{i}.example/w") for i in range(20)]
    for sigs in (origin_line + "".join(others), "".join(others) + origin_line, origin_line * 2):
        got = verify_checkpoint(f"{body}\n\n{sigs}", log_signer.verifier)
        assert (got.size, got.root, got.time, got.cosignatures) == (9, ROOT, TIME, ())


def test_cosignature_line_is_the_c2sp_v1_format(log_signer: AuditSigner) -> None:
    """key ID = SHA-256(name || 0x0A || 0x04 || key)[:4]; signature = u64 time || Ed25519 over
    "cosignature/v1\\ntime <t>\\n" followed by the checkpoint text."""
    cp = sign_checkpoint(log_signer, 5, ROOT, TIME)
    priv = Ed25519PrivateKey.generate()
    witness = note.Signer("witness.example/w2", priv, note.ALG_COSIGNATURE_V1)
    line = cosign(cp.text, witness, 1_679_315_147).split("\n\n")[1].splitlines()[1]
    name, b64 = line.removeprefix(note.SIG_PREFIX).split(" ")
    blob = base64.b64decode(b64)
    pub = priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert name == "witness.example/w2" and len(blob) == 4 + 8 + 64
    assert blob[:4] == hashlib.sha256(b"witness.example/w2\n\x04" + pub).digest()[:4]
    assert int.from_bytes(blob[4:12], "big") == 1_679_315_147
    body = cp.text.split("\n\n")[0] + "\n"
    priv.public_key().verify(blob[12:], b"cosignature/v1\ntime 1679315147\n" + body.encode())
    vkey = witness.key.vkey()
    assert note.parse_vkey(vkey).key_id == blob[:4] and base64.b64decode(vkey.split("+", 2)[2])[0] == 0x04


def test_cosigning_twice_with_one_key_is_refused(log_signer: AuditSigner) -> None:
    witness = _witness()
    once = cosign(sign_checkpoint(log_signer, 1, ROOT, TIME).text, witness, 1)
    with pytest.raises(ConfigError):
        cosign(once, witness, 2)


def test_checkpoint_body_follows_tlog_checkpoint() -> None:
    b64 = base64.b64encode(ROOT).decode()
    body = parse_body(f"example.com/log42\n20852163\n{b64}\n")
    assert (body.origin, body.size, body.root, body.extensions) == ("example.com/log42", 20852163, ROOT, ())
    assert parse_body(f"example.com/log42\n0\n{b64}\next one\next two\n").extensions == ("ext one", "ext two")
    for bad in (
        f"example.com/log42\n020852163\n{b64}\n",  # leading zero
        f"example.com/log42\n20852163\n{b64}\n\n",  # empty extension line
        f"\n20852163\n{b64}\n",  # empty origin
        f"example.com/log42\n20852163\n{b64}",  # no final newline
        "example.com/log42\n20852163\n",  # no root
        f"example.com/log42\n20852163\n{base64.b64encode(ROOT[:31]).decode()}\n",
    ):
        with pytest.raises(AuditIntegrityError):
            parse_body(bad)


_NOTE_CHARS = st.sampled_from(
    ["\n", "\n\n", note.SIG_PREFIX, " ", "+", "=", "A", "/", "0", "1", "\x00", "\u00e9", "\ud800"]
)


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_checkpoint_parser_raises_only_integrity_errors(data: st.DataObject) -> None:
    """Random and mutated checkpoints: a typed refusal or a checkpoint, never another exception,
    and never a checkpoint whose signed text differs from what the log signed."""
    signer = AuditSigner(Ed25519PrivateKey.from_private_bytes(bytes(32)))
    good = sign_checkpoint(signer, 5, ROOT, TIME).text
    text = data.draw(
        st.one_of(
            st.lists(_NOTE_CHARS, max_size=40).map("".join),
            st.builds(
                lambda i, ins, cut: good[:i] + ins + good[i + cut :],
                st.integers(0, len(good)),
                st.lists(_NOTE_CHARS, max_size=3).map("".join),
                st.integers(0, 3),
            ),
        )
    )
    try:
        cp = verify_checkpoint(text, signer.verifier)
    except AuditIntegrityError:
        return
    assert cp.text.split("\n\n")[0] == good.split("\n\n")[0] and (cp.size, cp.root) == (5, ROOT)
