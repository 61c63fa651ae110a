"""Signed checkpoints in the C2SP tlog-checkpoint / signed-note text format.

    eventward.audit/0123456789abcdef      origin (the audit key's name)
    1234                                  tree size
    <base64 root hash>
    timestamp 2025-01-01T00:00:00.000Z    extension line
                                          blank line
    — eventward.audit/0123… <base64(keyhash4 || Ed25519 signature)>

The signature covers the text up to and including the newline before the blank line.
Parsing is strict (exact line count, canonical decimal and base64, one signature by the
expected key): a lenient parser is where forged checkpoints get in.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from eventward.audit.records import check_time
from eventward.audit.signing import AuditSigner, AuditVerifier, PublicKeyLike
from eventward.crypto.merkle import HASH_SIZE
from eventward.errors import AuditIntegrityError, ValidationError

SIG_PREFIX = "\u2014 "  # em dash, space
_SIZE = re.compile(r"(0|[1-9][0-9]{0,18})\Z")
_MAX_TEXT = 4096


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    time: str
    text: str


def _body(origin: str, size: int, root: bytes, time: str) -> str:
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\ntimestamp {time}\n"


def sign_checkpoint(signer: AuditSigner, size: int, root: bytes, time: str) -> Checkpoint:
    body = _body(signer.name, size, root, time)
    sig = base64.b64encode(signer.verifier.key_hash + signer.sign(body.encode())).decode()
    text = f"{body}\n{SIG_PREFIX}{signer.name} {sig}\n"
    return Checkpoint(signer.name, size, root, time, text)


def _b64(value: str, size: int, what: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise AuditIntegrityError(f"checkpoint: {what} is not valid base64") from None
    if len(raw) != size or base64.b64encode(raw).decode() != value:
        raise AuditIntegrityError(f"checkpoint: {what} has the wrong length or is not canonical base64")
    return raw


def verify_checkpoint(text: str, public_key: PublicKeyLike) -> Checkpoint:
    """Parse and verify a checkpoint signed by ``public_key``; raise AuditIntegrityError otherwise."""
    verifier = AuditVerifier.of(public_key)
    if not isinstance(text, str) or len(text) > _MAX_TEXT:
        raise AuditIntegrityError("checkpoint: not a checkpoint text or too large")
    if "\r" in text or not text.endswith("\n"):
        raise AuditIntegrityError("checkpoint: must use \\n line endings and end with a newline")
    parts = text.split("\n\n")
    if len(parts) != 2:
        raise AuditIntegrityError("checkpoint: expected exactly one blank line before the signature")
    body, sigs = parts[0] + "\n", parts[1]
    lines = body[:-1].split("\n")
    if len(lines) != 4:
        raise AuditIntegrityError(f"checkpoint: expected 4 body lines, found {len(lines)}")
    origin, size_line, root_line, ts_line = lines
    if origin != verifier.name:
        raise AuditIntegrityError("checkpoint: origin is not the one this audit key signs for")
    if not _SIZE.match(size_line):
        raise AuditIntegrityError("checkpoint: tree size is not a canonical decimal")
    root = _b64(root_line, HASH_SIZE, "root hash")
    if not ts_line.startswith("timestamp "):
        raise AuditIntegrityError("checkpoint: missing timestamp line")
    try:
        time = check_time(ts_line[len("timestamp ") :], "timestamp")
    except ValidationError:
        raise AuditIntegrityError("checkpoint: timestamp is not RFC 3339 UTC") from None
    sig_lines = sigs[:-1].split("\n")
    if len(sig_lines) != 1:
        raise AuditIntegrityError(f"checkpoint: expected exactly 1 signature line, found {len(sig_lines)}")
    sig_line = sig_lines[0]
    fields = sig_line[len(SIG_PREFIX) :].split(" ")
    if not sig_line.startswith(SIG_PREFIX) or len(fields) != 2:
        raise AuditIntegrityError("checkpoint: malformed signature line")
    name, sig_b64 = fields
    blob = _b64(sig_b64, 4 + 64, "signature")
    if name != verifier.name or blob[:4] != verifier.key_hash:
        raise AuditIntegrityError("checkpoint: signed by another key")
    verifier.verify(body.encode(), blob[4:], "checkpoint")
    return Checkpoint(origin, int(size_line), root, time, text)
