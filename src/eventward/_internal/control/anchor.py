"""Statements signed by the control plane: trust entries and notices.

A client verifies seals offline against trust entries, and drops cached keys on notices, so both
must be unforgeable by anyone but the control plane, including whoever relays them (a proxy, a
compromised gateway replica's cache, the broker). Each statement is canonical JSON (sorted keys,
no whitespace) under a domain-separated Ed25519 signature by the control plane's anchor key,
whose public half every service receives at enrollment, out of band.
"""

from __future__ import annotations

import base64
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from eventward._internal.home import read_secret, write_secret
from eventward.errors import InputError, SealError

_DOMAIN = b"eventward-control-statement-v1\n"
KINDS = ("trust", "notice", "grant")
ANCHOR_FILE = "control-anchor.key"  # in the home, 0600: only ``serve`` (and ``trust anchor``) open it
MAX_STATEMENT = 64 * 1024


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str, what: str) -> bytes:
    if not isinstance(text, str) or len(text) > 4 * MAX_STATEMENT:
        raise InputError(f"{what} must be base64url text")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        raise InputError(f"{what} is not base64url") from None


def public_key_text(key: Ed25519PublicKey) -> str:
    return _b64(key.public_bytes(Encoding.Raw, PublicFormat.Raw))


def public_key_from_text(text: str) -> Ed25519PublicKey:
    raw = _unb64(text, "anchor public key")
    if len(raw) != 32:
        raise InputError("anchor public key must be 32 bytes of Ed25519")
    return Ed25519PublicKey.from_public_bytes(raw)


def _message(kind: str, body: dict[str, Any]) -> bytes:
    return _DOMAIN + kind.encode() + b"\n" + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


@dataclass(frozen=True)
class Statement:
    """A verified statement: ``kind`` and its ``body``."""

    kind: str
    body: dict[str, Any]


class Anchor:
    """The control plane's statement key (0600 file in the home; only ``serve`` opens it)."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def load_or_create(cls, path: Path) -> Anchor:
        """The key in ``path``, made on first use. Checked and made under an exclusive lock on a
        file beside it, so ``serve`` replicas starting together on one home make ONE key (each
        made its own, and all but the last written were lost at their next start)."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path.with_name(f".{path.name}.lock"), os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if not path.exists():
                    key = Ed25519PrivateKey.generate()
                    write_secret(path, key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))
                    return cls(key)
            finally:
                os.close(fd)
        return cls(Ed25519PrivateKey.from_private_bytes(read_secret(path)))

    @property
    def public_text(self) -> str:
        return public_key_text(self._key.public_key())

    def sign(self, kind: str, body: dict[str, Any]) -> dict[str, str]:
        """The wire form: ``{"kind", "body" (canonical JSON, base64url), "sig"}``."""
        if kind not in KINDS:
            raise InputError(f"unknown statement kind {kind!r}")
        msg = _message(kind, body)
        return {"kind": kind, "body": _b64(msg[len(_DOMAIN) + len(kind) + 1:]), "sig": _b64(self._key.sign(msg))}

    def __repr__(self) -> str:
        return f"Anchor(public={self.public_text[:12]}...)"


def verify(public: Ed25519PublicKey, wire: Any, kind: str) -> Statement:
    """The statement if ``public`` signed it as ``kind``; SealError(reason='bad_statement') otherwise."""
    if not isinstance(wire, dict) or wire.get("kind") != kind or set(wire) != {"kind", "body", "sig"}:
        raise SealError(f"not a signed {kind} statement", reason="bad_statement")
    try:
        body_raw = _unb64(wire["body"], "statement body")
        sig = _unb64(wire["sig"], "statement signature")
    except InputError:
        raise SealError(f"malformed {kind} statement", reason="bad_statement") from None
    if len(body_raw) > MAX_STATEMENT:
        raise SealError(f"{kind} statement larger than {MAX_STATEMENT} bytes", reason="bad_statement")
    try:
        public.verify(sig, _DOMAIN + kind.encode() + b"\n" + body_raw)
    except InvalidSignature:
        raise SealError(f"{kind} statement is not signed by the control plane", reason="bad_statement") from None
    try:
        body = orjson.loads(body_raw)
    except orjson.JSONDecodeError:
        raise SealError(f"{kind} statement body is not JSON", reason="bad_statement") from None
    if not isinstance(body, dict):
        raise SealError(f"{kind} statement body is not an object", reason="bad_statement")
    return Statement(kind, body)
