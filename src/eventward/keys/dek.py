"""Data-key ids and the context a wrapped DEK is bound to.

A kid is 128 random bits (base64url, 22 chars): it names a key without saying whose it is.
The wrap's associated data binds kid, class and subject hash, so a wrapped DEK copied to
another row of the store (another subject, another class) fails to unwrap.
"""

from __future__ import annotations

import re
import secrets

DEK_BYTES = 32
KID_RE = re.compile(r"^[A-Za-z0-9_\-]{22}$")
_AAD = b"eventward-dek-v1\x00"


def new_kid() -> str:
    return secrets.token_urlsafe(16)


def is_kid(kid: object) -> bool:
    return isinstance(kid, str) and KID_RE.match(kid) is not None


def dek_aad(kid: str, cls: str, subject_hash: str) -> bytes:
    return b"\x00".join((_AAD, kid.encode(), cls.encode(), subject_hash.encode()))
