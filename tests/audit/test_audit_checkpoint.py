"""Signed checkpoints: C2SP signed-note format, strict parsing, forged and foreign signatures."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from eventward._internal.audit.checkpoint import SIG_PREFIX, sign_checkpoint, verify_checkpoint
from eventward._internal.audit.log import AuditLog
from eventward._internal.audit.signing import AuditSigner, AuditVerifier, key_hash, statement
from eventward._internal.home import Home
from eventward.errors import AuditIntegrityError, ConfigError

from .helpers import fill


@pytest.fixture
def signed(log):
    fill(log, 17)
    return log, log.checkpoint()


def test_checkpoint_format_follows_the_signed_note_spec(signed):
    log, cp = signed
    body, sig_line = cp.text.split("\n\n")
    origin, size, root_b64, ts = body.split("\n")
    assert origin == log.verifier.name and size == "17" and base64.b64decode(root_b64) == log.root(17)
    assert ts.startswith("timestamp ") and ts.endswith("Z")
    assert sig_line.startswith(SIG_PREFIX + origin + " ") and sig_line.endswith("\n")
    blob = base64.b64decode(sig_line.split(" ")[-1])
    raw_pub = base64.b64decode(log.verifier.vkey().split("+", 2)[2])[1:]
    # keyhash = SHA-256(name || "\n" || 0x01 || key)[:4], as in golang.org/x/mod/sumdb/note
    assert blob[:4] == hashlib.sha256(origin.encode() + b"\n\x01" + raw_pub).digest()[:4]
    log.verifier.public_key.verify(blob[4:], (body + "\n").encode())
    assert verify_checkpoint(cp.text, log.verifier.vkey()) == cp
    assert log.checkpoints() == [cp.text]


def test_checkpoint_verifies_from_every_key_form(signed):
    log, cp = signed
    v = log.verifier
    raw = base64.b64decode(v.vkey().split("+", 2)[2])[1:]
    for key in (v, v.public_key, raw, v.vkey()):
        assert verify_checkpoint(cp.text, key).size == 17


def _replace_line(text: str, i: int, new: str) -> str:
    lines = text.split("\n")
    lines[i] = new
    return "\n".join(lines)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t.replace("\n17\n", "\n18\n"),
        lambda t: _replace_line(t, 2, base64.b64encode(bytes(32)).decode()),
        lambda t: _replace_line(t, 3, "timestamp 2000-01-01T00:00:00.000Z"),
        lambda t: t[:-6] + ("A" if t[-6] != "A" else "B") + t[-5:],  # a signature byte
    ],
    ids=["size", "root", "timestamp", "signature"],
)
def test_any_changed_byte_breaks_the_signature(signed, mutate):
    log, cp = signed
    forged = mutate(cp.text)
    assert forged != cp.text
    with pytest.raises(AuditIntegrityError):
        verify_checkpoint(forged, log.verifier)


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda t: t.replace("\n\n", "\nextra line\n\n"), "signature does not verify"),  # a signed extension
        (lambda t: "\n".join(t.split("\n")[:3] + t.split("\n")[4:]), "timestamp"),
        (lambda t: t.replace("\n", "\r\n"), "line endings"),
        (lambda t: t[:-1], "final newline"),
        (lambda t: t.replace("\n\n", "\n\n\n"), "empty line"),
        (lambda t: t.replace("\n17\n", "\n017\n"), "canonical decimal"),
        (lambda t: t.replace("\n17\n", "\n+17\n"), "canonical decimal"),
        (lambda t: t.replace("\n17\n", "\n-1\n"), "canonical decimal"),
        (lambda t: _replace_line(t, 2, t.split("\n")[2].rstrip("=")), "base64"),
        (lambda t: _replace_line(t, 2, base64.b64encode(bytes(31)).decode()), "length"),
        (lambda t: _replace_line(t, 2, "!!!!" + t.split("\n")[2][4:]), "base64"),
        (lambda t: _replace_line(t, 3, "time 2000-01-01T00:00:00.000Z"), "timestamp"),
        (lambda t: t.replace(SIG_PREFIX, "- "), "signature line"),
        (lambda t: "x" * 70000, "too large"),
    ],
)
def test_strict_parsing_rejects_malformed_checkpoints(signed, mutate, why):
    log, cp = signed
    with pytest.raises(AuditIntegrityError, match=why):
        verify_checkpoint(mutate(cp.text), log.verifier)


def test_checkpoint_signed_by_another_key_is_rejected(tmp_path, signed):
    log, cp = signed
    with AuditLog.open(Home(tmp_path / "other")) as other:
        fill(other, 17)
        foreign = other.checkpoint()
    with pytest.raises(AuditIntegrityError, match="origin"):
        verify_checkpoint(foreign.text, log.verifier)
    # An attacker signs the victim's origin and root with their own key.
    mallory = AuditSigner(Ed25519PrivateKey.generate())
    body = cp.text.split("\n\n")[0] + "\n"
    sig = base64.b64encode(mallory.verifier.key_hash + mallory.sign(body.encode())).decode()
    with pytest.raises(AuditIntegrityError, match="known key"):
        verify_checkpoint(f"{body}\n{SIG_PREFIX}{log.verifier.name} {sig}\n", log.verifier)
    # ...even claiming the victim's key hash: the signature itself fails.
    sig = base64.b64encode(log.verifier.key_hash + mallory.sign(body.encode())).decode()
    with pytest.raises(AuditIntegrityError, match="signature does not verify"):
        verify_checkpoint(f"{body}\n{SIG_PREFIX}{log.verifier.name} {sig}\n", log.verifier)


def test_statements_can_never_pass_as_checkpoints(signed):
    """Certificates are signed by the same key: their signed bytes must not parse as a checkpoint body."""
    log, cp = signed
    body = cp.text.split("\n\n")[0] + "\n"
    sig = log.sign_statement("erasure-certificate", body.encode())
    assert statement("erasure-certificate", body.encode()).startswith(b"eventward erasure-certificate v1\n")
    forged = f"{body}\n{SIG_PREFIX}{log.verifier.name} {base64.b64encode(log.verifier.key_hash + sig).decode()}\n"
    with pytest.raises(AuditIntegrityError, match="signature"):
        verify_checkpoint(forged, log.verifier)
    with pytest.raises(ConfigError):
        log.sign_statement("Has Space", b"x")


def test_verifier_keys_are_parsed_strictly(signed):
    log, _ = signed
    good = log.verifier.vkey()
    name, hexhash, b64 = good.split("+", 2)
    for bad in (
        f"{name}+{hexhash}",
        f"other.log/x+{hexhash}+{b64}",
        f"{name}+00000000+{b64}",
        f"{name}+{hexhash}+{b64[:-4]}",
        f"{name}+zz+{b64}",
        "garbage",
    ):
        with pytest.raises(ConfigError):
            AuditVerifier.parse_vkey(bad)
    assert key_hash(name, base64.b64decode(b64)[1:]).hex() == hexhash


def test_sign_checkpoint_round_trips_for_empty_and_large_trees():
    signer = AuditSigner(Ed25519PrivateKey.generate())
    for size in (0, 1, 2**62):
        cp = sign_checkpoint(signer, size, hashlib.sha256(b"").digest(), "2025-01-01T00:00:00.000Z")
        assert verify_checkpoint(cp.text, signer.verifier) == cp
