"""C2SP signed notes (c2sp.org/signed-note) and Ed25519 cosignatures (c2sp.org/tlog-cosignature).

A note is UTF-8 text ending in a newline, a blank line, then one or more signature lines
``— <key name> base64(4-byte key ID || signature)``. Verifiers follow the specification and
golang.org/x/mod/sumdb/note (whose published vectors the conformance tests run):

- signatures from unknown keys (name and key ID not both matching a known key) are ignored,
  so witnesses can add cosignature lines and logs can rotate keys;
- a known key's signature is always checked, and one that fails rejects the whole note;
- a note with no verified signature from a known key is rejected;
- at most 100 signature lines (the specification asks for at least 16); the same verified
  signature twice counts once.

Parsing is strict before anything is verified: valid UTF-8, no control characters but newline,
key names non-empty without spaces or ``+``, canonical base64.

Verifier keys (``vkey``) are ``<name>+<hex key ID>+base64(type || public key)``: type 0x01 is
an Ed25519 note signer, 0x04 an Ed25519 cosigner (its signature is ``u64 timestamp || Ed25519``
over ``cosignature/v1\\ntime <t>\\n`` followed by the checkpoint text).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from eventward.errors import AuditIntegrityError, ConfigError

SIG_PREFIX = "\u2014 "  # em dash, space
ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
MAX_SIGNATURES = 100
MAX_NOTE_BYTES = 64 * 1024
COSIGNATURE_HEADER = "cosignature/v1\n"


def valid_name(name: str) -> bool:
    """A key name: non-empty, no Unicode space, no ``+``."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def key_id(name: str, alg: int, public_key: bytes) -> bytes:
    """SHA-256(name || 0x0A || type || public key)[:4], as the specification recommends."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public_key).digest()[:4]


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _b64decode(value: str) -> bytes | None:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode() == value else None


@dataclass(frozen=True)
class Signature:
    """One signature line: key name, 4-byte key ID and the signature bytes after it."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        return f"{SIG_PREFIX}{self.name} {base64.b64encode(self.key_id + self.signature).decode()}\n"


@dataclass(frozen=True)
class NoteKey:
    """A known key: its name, key ID and a check of (note text, signature bytes)."""

    name: str
    key_id: bytes
    check: Callable[[bytes, bytes], bool]
    alg: int = ALG_ED25519
    public_key: bytes = b""

    def vkey(self) -> str:
        blob = base64.b64encode(bytes([self.alg]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{blob}"


def _ed25519_check(public_key: Ed25519PublicKey) -> Callable[[bytes, bytes], bool]:
    def check(text: bytes, sig: bytes) -> bool:
        try:
            public_key.verify(sig, text)
        except InvalidSignature:
            return False
        return True

    return check


def cosigned_message(text: bytes, timestamp: int) -> bytes:
    """What an Ed25519 cosigner signs: header, time line, then the whole checkpoint text."""
    return f"{COSIGNATURE_HEADER}time {timestamp}\n".encode() + text


def _cosignature_check(public_key: Ed25519PublicKey) -> Callable[[bytes, bytes], bool]:
    def check(text: bytes, sig: bytes) -> bool:
        if len(sig) != 8 + 64:
            return False
        timestamp = int.from_bytes(sig[:8], "big")
        if timestamp >= 2**63:
            return False
        try:
            public_key.verify(sig[8:], cosigned_message(text, timestamp))
        except InvalidSignature:
            return False
        return True

    return check


def ed25519_key(name: str, public_key: Ed25519PublicKey | bytes, alg: int = ALG_ED25519) -> NoteKey:
    """A known Ed25519 note signer (0x01) or cosigner (0x04) under ``name``."""
    if not valid_name(name):
        raise ConfigError("key name must be non-empty, without spaces or '+'")
    if isinstance(public_key, bytes):
        try:
            public_key = Ed25519PublicKey.from_public_bytes(public_key)
        except ValueError:
            raise ConfigError("an Ed25519 public key is 32 bytes") from None
    raw = _raw(public_key)
    if alg == ALG_ED25519:
        check = _ed25519_check(public_key)
    elif alg == ALG_COSIGNATURE_V1:
        check = _cosignature_check(public_key)
    else:
        raise ConfigError(f"signature type {alg:#04x} is not supported (Ed25519 0x01, cosignature 0x04)")
    return NoteKey(name, key_id(name, alg, raw), check, alg, raw)


def parse_vkey(vkey: str) -> NoteKey:
    """A verifier key ``<name>+<hex key ID>+base64(type || key)``; the key ID must match."""
    if not isinstance(vkey, str):
        raise ConfigError("a verifier key is a string")
    name, _, rest = vkey.partition("+")
    hexid, _, b64 = rest.partition("+")
    blob = _b64decode(b64) if b64 else None
    if not valid_name(name) or len(hexid) != 8 or any(c not in "0123456789abcdefABCDEF" for c in hexid) or not blob:
        raise ConfigError("verifier key must be <name>+<8 hex digits>+<base64 type and key>")
    alg, public = blob[0], blob[1:]
    if alg not in (ALG_ED25519, ALG_COSIGNATURE_V1) or len(public) != 32:
        raise ConfigError("verifier key is not an Ed25519 signer (0x01) or cosigner (0x04) key")
    key = ed25519_key(name, public, alg)
    if key.key_id != bytes.fromhex(hexid):
        raise ConfigError("verifier key ID does not match the name and key")
    return key


@dataclass(frozen=True)
class Signer:
    """An Ed25519 note signer or cosigner; repr never shows the private key."""

    name: str
    _key: Ed25519PrivateKey
    alg: int = ALG_ED25519

    def __repr__(self) -> str:
        return f"Signer({self.name})"

    @property
    def key(self) -> NoteKey:
        return ed25519_key(self.name, self._key.public_key(), self.alg)

    def sign(self, text: bytes, timestamp: int = 0) -> Signature:
        if self.alg == ALG_COSIGNATURE_V1:
            if not 0 <= timestamp < 2**63:
                raise ConfigError("a cosignature timestamp is a POSIX time in 0..2^63-1")
            sig = timestamp.to_bytes(8, "big") + self._key.sign(cosigned_message(text, timestamp))
        else:
            sig = self._key.sign(text)
        return Signature(self.name, self.key.key_id, sig)


def parse_signer_key(skey: str) -> Signer:
    """A golang.org/x/mod signer key ``PRIVATE+KEY+<name>+<hex key ID>+base64(0x01 || seed)``."""
    parts = skey.split("+", 4) if isinstance(skey, str) else []
    if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
        raise ConfigError("signer key must be PRIVATE+KEY+<name>+<hex key ID>+<base64 key>")
    _, _, name, hexid, b64 = parts
    blob = _b64decode(b64)
    if not valid_name(name) or len(hexid) != 8 or not blob or blob[0] != ALG_ED25519 or len(blob) != 33:
        raise ConfigError("signer key is not a well-formed Ed25519 signer key")
    signer = Signer(name, Ed25519PrivateKey.from_private_bytes(blob[1:]))
    try:
        declared = bytes.fromhex(hexid)
    except ValueError:
        raise ConfigError("signer key ID is not hex") from None
    if signer.key.key_id != declared:
        raise ConfigError("signer key ID does not match the name and key")
    return signer


@dataclass(frozen=True)
class Note:
    """An opened note: its text and the signatures that verified or were ignored."""

    text: str
    verified: tuple[Signature, ...]
    unverified: tuple[Signature, ...]


def split(msg: str | bytes) -> tuple[str, list[Signature]]:
    """The text and signature lines of a note, parsed strictly (nothing verified yet)."""
    if isinstance(msg, bytes):
        try:
            msg = msg.decode("utf-8")
        except UnicodeDecodeError:
            raise AuditIntegrityError("note: malformed (invalid UTF-8)") from None
    if not isinstance(msg, str) or len(msg.encode("utf-8", "surrogatepass")) > MAX_NOTE_BYTES:
        raise AuditIntegrityError("note: not a note text or too large")
    if any(c < " " and c != "\n" for c in msg) or any("\ud800" <= c <= "\udfff" for c in msg):
        raise AuditIntegrityError("note: malformed (control characters or invalid UTF-8)")
    cut = msg.rfind("\n\n")
    if cut < 0:
        raise AuditIntegrityError("note: malformed (no blank line before the signature lines)")
    text, block = msg[: cut + 1], msg[cut + 2 :]
    if not block or not block.endswith("\n"):
        raise AuditIntegrityError("note: malformed (no signature line, or no final newline)")
    sigs: list[Signature] = []
    for line in block[:-1].split("\n"):
        name, _, b64 = line[len(SIG_PREFIX) :].partition(" ")
        blob = _b64decode(b64)
        if not line.startswith(SIG_PREFIX) or not valid_name(name) or blob is None or len(blob) < 5:
            raise AuditIntegrityError("note: malformed signature line")
        sigs.append(Signature(name, blob[:4], blob[4:]))
        if len(sigs) > MAX_SIGNATURES:
            raise AuditIntegrityError(f"note: more than {MAX_SIGNATURES} signature lines")
    return text, sigs


def open_note(msg: str | bytes, known: Iterable[NoteKey]) -> Note:
    """Verify a note against known keys (see the module docstring for the rules)."""
    text, sigs = split(msg)
    keys: dict[tuple[str, bytes], NoteKey | None] = {}
    for k in known:
        ident = (k.name, k.key_id)
        keys[ident] = None if ident in keys else k  # None: listed twice, ambiguous if used
    raw = text.encode()
    verified: list[Signature] = []
    unverified: list[Signature] = []
    for sig in sigs:
        ident = (sig.name, sig.key_id)
        if ident not in keys:
            if sig not in unverified:
                unverified.append(sig)
            continue
        key = keys[ident]
        if key is None:
            raise AuditIntegrityError(f"note: ambiguous key {sig.name[:80]}+{sig.key_id.hex()}")
        if any((v.name, v.key_id) == ident for v in verified):
            continue  # one key, one verified signature
        if not key.check(raw, sig.signature):
            raise AuditIntegrityError(f"note: signature does not verify for key {sig.name[:80]}+{sig.key_id.hex()}")
        verified.append(sig)
    if not verified:
        raise AuditIntegrityError("note: no signature from a known key")
    return Note(text, tuple(verified), tuple(unverified))


def sign_note(text: str, signers: Sequence[Signer], keep: Sequence[Signature] = (), timestamp: int = 0) -> str:
    """The note ``text`` signed by ``signers``, after the ``keep`` signatures they do not replace."""
    if not text.endswith("\n"):
        raise ConfigError("note text must end in a newline")
    new = [s.sign(text.encode(), timestamp) for s in signers]
    replaced = {(s.name, s.key_id) for s in new}
    lines = [s.line() for s in keep if (s.name, s.key_id) not in replaced] + [s.line() for s in new]
    msg = f"{text}\n{''.join(lines)}"
    split(msg)  # never emit what a verifier would refuse
    return msg


def add_signature(msg: str, signature: Signature) -> str:
    """``msg`` with one more signature line (a witness's cosignature, say), kept strict."""
    _, sigs = split(msg)
    if any((s.name, s.key_id) == (signature.name, signature.key_id) for s in sigs):
        raise ConfigError("the note already carries a signature from this key")
    out = msg + signature.line()
    split(out)
    return out


def cosign(msg: str, cosigner: Signer, timestamp: int) -> str:
    """``msg`` (a checkpoint) with ``cosigner``'s timestamped cosignature line added."""
    if cosigner.alg != ALG_COSIGNATURE_V1:
        raise ConfigError("a cosigner key has signature type 0x04")
    text, _ = split(msg)
    return add_signature(msg, cosigner.sign(text.encode(), timestamp))
