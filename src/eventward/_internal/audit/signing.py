"""The audit key: Ed25519, named and hashed as in the C2SP signed-note format.

The private key lives in ``Home.audit_key`` (0600). The public half is exported as a
signed-note verifier key ``<name>+<hex keyhash>+<base64(0x01 || key)>`` so anyone can check
checkpoints and erasure certificates without eventward. The key name is derived from the
public key, so a verifier key fully determines the origin it accepts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from eventward._internal.home import Home, read_secret, write_secret
from eventward.errors import AuditIntegrityError, ConfigError

ALG_ED25519 = 0x01
ORIGIN_PREFIX = "eventward.audit/"
_KIND = re.compile(r"[a-z][a-z0-9-]{0,63}\Z")


def statement(kind: str, body: bytes) -> bytes:
    """The exact bytes signed for a document of ``kind`` (e.g. an erasure certificate).

    The prefix contains a space, and a checkpoint's first line (its origin) never does, so
    no statement can ever be passed off as a checkpoint or the other way round.
    """
    if not _KIND.match(kind):
        raise ConfigError("statement kind must be lowercase letters, digits and dashes")
    return f"eventward {kind} v1\n".encode() + body


def key_name(public_raw: bytes) -> str:
    return ORIGIN_PREFIX + hashlib.sha256(public_raw).hexdigest()[:16]


def key_hash(name: str, public_raw: bytes) -> bytes:
    """signed-note key hash: SHA-256(name || '\\n' || alg || key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_raw).digest()[:4]


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class AuditVerifier:
    name: str
    public_key: Ed25519PublicKey
    key_hash: bytes

    @classmethod
    def of(cls, public_key: PublicKeyLike) -> AuditVerifier:
        """Accept a verifier, an Ed25519 public key, its 32 raw bytes, or a verifier-key string."""
        if isinstance(public_key, AuditVerifier):
            return public_key
        if isinstance(public_key, str):
            return cls.parse_vkey(public_key)
        if isinstance(public_key, bytes):
            if len(public_key) != 32:
                raise ConfigError("audit public key must be 32 raw Ed25519 bytes")
            public_key = Ed25519PublicKey.from_public_bytes(public_key)
        if not isinstance(public_key, Ed25519PublicKey):
            raise ConfigError("audit public key must be Ed25519")
        raw = _raw(public_key)
        name = key_name(raw)
        return cls(name, public_key, key_hash(name, raw))

    @classmethod
    def parse_vkey(cls, vkey: str) -> AuditVerifier:
        parts = vkey.strip().split("+", 2)  # base64 may contain "+"; name and hex never do
        if len(parts) != 3:
            raise ConfigError("audit verifier key must be <name>+<hex keyhash>+<base64 key>")
        name, hexhash, b64 = parts
        try:
            blob = base64.b64decode(b64, validate=True)
            declared = bytes.fromhex(hexhash)
        except (binascii.Error, ValueError):
            raise ConfigError("audit verifier key is not valid hex/base64") from None
        if len(blob) != 33 or blob[0] != ALG_ED25519:
            raise ConfigError("audit verifier key is not an Ed25519 signed-note key")
        verifier = cls.of(blob[1:])
        if name != verifier.name or declared != verifier.key_hash:
            raise ConfigError("audit verifier key name or key hash does not match the key")
        return verifier

    def vkey(self) -> str:
        raw = _raw(self.public_key)
        return f"{self.name}+{self.key_hash.hex()}+{base64.b64encode(bytes([ALG_ED25519]) + raw).decode()}"

    def verify(self, message: bytes, signature: bytes, what: str) -> None:
        try:
            self.public_key.verify(signature, message)
        except InvalidSignature:
            raise AuditIntegrityError(f"{what}: signature does not verify") from None


PublicKeyLike = AuditVerifier | Ed25519PublicKey | bytes | str


class AuditSigner:
    """Holds the audit private key; repr never shows it."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.verifier = AuditVerifier.of(private_key.public_key())

    @property
    def name(self) -> str:
        return self.verifier.name

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def __repr__(self) -> str:
        return f"AuditSigner({self.name})"


def ensure_key(home: Home) -> None:
    """Create the audit key (0600) unless it exists; safe when several processes race."""
    path = home.audit_key
    if path.exists():
        return
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    write_secret(tmp, pem)
    try:
        os.link(tmp, path)  # atomic create-if-absent: the first writer wins, others use its key
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def load_signer(path: Path) -> AuditSigner:
    try:
        key = serialization.load_pem_private_key(read_secret(path), password=None)
    except ValueError:
        raise ConfigError(f"audit key {path} is not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"audit key {path} is not an Ed25519 key")
    return AuditSigner(key)
