"""Signed checkpoints in the C2SP tlog-checkpoint format, a signed note (see note.py).

    eventward.audit/0123456789abcdef      origin (the audit key's name)
    1234                                  tree size
    <base64 root hash>
    timestamp 2025-01-01T00:00:00.000Z    extension line (eventward's own)
                                          blank line
    — eventward.audit/0123… <base64(keyhash4 || Ed25519 signature)>
    — witness.example/w1 <base64(keyhash4 || u64 time || Ed25519 signature)>   (optional)

The log signs the text up to and including the newline before the blank line. Verifying
follows the specifications: any number of signature lines, signatures from unknown keys
ignored (witness cosignatures, a rotated key), the origin's own signature required, a known
key's bad signature rejects the checkpoint. The body is parsed strictly (canonical decimal
and base64, non-empty lines), and eventward's checkpoints carry the ``timestamp`` extension
line first. Cosignatures from witness keys the caller trusts are verified and returned.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass

from eventward._internal.audit.note import SIG_PREFIX, NoteKey, Signature, Signer, ed25519_key, open_note, split
from eventward._internal.audit.note import cosign as _cosign
from eventward._internal.audit.records import check_time
from eventward._internal.audit.signing import AuditSigner, AuditVerifier, PublicKeyLike
from eventward._internal.crypto.merkle import HASH_SIZE
from eventward.errors import AuditIntegrityError, ValidationError

__all__ = [
    "SIG_PREFIX",
    "Checkpoint",
    "CheckpointBody",
    "cosign",
    "parse_body",
    "sign_checkpoint",
    "verify_checkpoint",
]

_SIZE = re.compile(r"(0|[1-9][0-9]{0,18})\Z")
_TIMESTAMP = "timestamp "


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    time: str
    text: str
    cosignatures: tuple[Signature, ...] = ()  # verified, from the witness keys the caller named


@dataclass(frozen=True)
class CheckpointBody:
    """The C2SP checkpoint note text: origin, tree size, root hash, extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...]


def _body(origin: str, size: int, root: bytes, time: str) -> str:
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n{_TIMESTAMP}{time}\n"


def sign_checkpoint(signer: AuditSigner, size: int, root: bytes, time: str) -> Checkpoint:
    body = _body(signer.name, size, root, time)
    line = Signature(signer.name, signer.verifier.key_hash, signer.sign(body.encode())).line()
    return Checkpoint(signer.name, size, root, time, f"{body}\n{line}")


def _log_key(verifier: AuditVerifier) -> NoteKey:
    return ed25519_key(verifier.name, verifier.public_key)


def parse_body(text: str) -> CheckpointBody:
    """Parse a checkpoint note text (c2sp.org/tlog-checkpoint); AuditIntegrityError if malformed."""
    if not text.endswith("\n"):
        raise AuditIntegrityError("checkpoint: the note text must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3 or any(not line for line in lines):
        raise AuditIntegrityError("checkpoint: expected origin, size and root lines, and no empty line")
    origin, size_line, root_line, *extensions = lines
    if not _SIZE.match(size_line):
        raise AuditIntegrityError("checkpoint: tree size is not a canonical decimal")
    try:
        root = base64.b64decode(root_line, validate=True)
    except ValueError:
        raise AuditIntegrityError("checkpoint: root hash is not valid base64") from None
    if len(root) != HASH_SIZE or base64.b64encode(root).decode() != root_line:
        raise AuditIntegrityError("checkpoint: root hash has the wrong length or is not canonical base64")
    return CheckpointBody(origin, int(size_line), root, tuple(extensions))


def verify_checkpoint(text: str, public_key: PublicKeyLike, *, witnesses: Sequence[NoteKey] = ()) -> Checkpoint:
    """Parse and verify a checkpoint signed by ``public_key``; raise AuditIntegrityError otherwise.

    ``witnesses`` are cosigner keys (note.parse_vkey of a 0x04 vkey) whose signature lines are
    verified too and returned in ``cosignatures``; any other signature line is ignored.
    """
    verifier = AuditVerifier.of(public_key)
    if not isinstance(text, str):
        raise AuditIntegrityError("checkpoint: not a checkpoint text")
    if "\r" in text:
        raise AuditIntegrityError("checkpoint: must use \\n line endings")
    note_text, _ = split(text)  # strict parsing first: nothing malformed reaches a verifier
    body = parse_body(note_text)
    if body.origin != verifier.name:
        raise AuditIntegrityError("checkpoint: origin is not the one this audit key signs for")
    if not body.extensions or not body.extensions[0].startswith(_TIMESTAMP):
        raise AuditIntegrityError("checkpoint: missing timestamp line")
    try:
        time = check_time(body.extensions[0][len(_TIMESTAMP) :], "timestamp")
    except ValidationError:
        raise AuditIntegrityError("checkpoint: timestamp is not RFC 3339 UTC") from None
    log_key = _log_key(verifier)
    note = open_note(text, [log_key, *witnesses])  # raises on any known key's bad signature
    if not any((s.name, s.key_id) == (log_key.name, log_key.key_id) for s in note.verified):
        raise AuditIntegrityError("checkpoint: no signature by the log's own key (origin signature required)")
    cosignatures = tuple(s for s in note.verified if s.name != log_key.name or s.key_id != log_key.key_id)
    return Checkpoint(body.origin, body.size, body.root, time, text, cosignatures)


def cosign(text: str, cosigner: Signer, timestamp: int) -> str:
    """A witness's cosignature line added to a checkpoint (c2sp.org/tlog-cosignature, Ed25519)."""
    return _cosign(text, cosigner, timestamp)
