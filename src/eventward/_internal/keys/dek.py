"""Data-key ids and the context a wrapped DEK is bound to.

A kid is 128 random bits (base64url, 22 chars): it names a key without saying whose it is.
The wrap's associated data binds the DEK's row: kid, class, subject hash and, from format 2
on, its version and creation time, so a wrapped DEK copied to another row (another subject,
another class) fails to unwrap, and a database writer cannot renumber an old DEK to make it
current again. Format 2 length-prefixes every part; format 1 (``\\x00``-joined, no version)
is only read, for DEKs wrapped before it existed, and is upgraded on the next KEK rotation.
"""

from __future__ import annotations

import re
import secrets
import struct
from collections.abc import Callable

DEK_BYTES = 32
KID_LEN = 22  # new_kid: 16 random bytes in base64url
KID_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
KID_RE = re.compile(r"^[A-Za-z0-9_\-]{22}$")  # KID_LEN characters of KID_ALPHABET
AAD_V1 = 1
AAD_V2 = 2
AAD_CURRENT = AAD_V2
_AAD_V1 = b"eventward-dek-v1\x00"
_AAD_V2 = b"eventward-dek-v2"
_U32 = struct.Struct(">I").pack
_TAIL = struct.Struct(">IQId").pack  # length-prefixed version (u64) and creation time (f64)


def new_kid() -> str:
    return secrets.token_urlsafe(16)


def is_kid(kid: object) -> bool:
    return isinstance(kid, str) and KID_RE.match(kid) is not None


def all_kids(kids: list[str]) -> bool:
    """Every one of ``kids`` is a well-formed kid (True means ``is_kid`` of each is True), checked
    for a whole read batch at once: lengths, then the joined alphabet (bytes.translate deleting
    KID_ALPHABET leaves nothing) instead of one regex match per key. False (a non-string, a wrong
    length or character anywhere) sends the caller to ``is_kid`` key by key."""
    try:
        joined = "".join(kids)
    except TypeError:
        return False
    return (set(map(len, kids)) <= {KID_LEN} and joined.isascii()
            and not joined.encode().translate(None, KID_ALPHABET))


def _lp(part: bytes) -> bytes:
    return struct.pack(">I", len(part)) + part


def dek_aad(
    kid: str, cls: str, subject_hash: str, version: int = 0, created: float = 0.0, *, fmt: int = AAD_V1
) -> bytes:
    """The wrap's associated data for a DEK row, in the row's AAD format."""
    if fmt == AAD_V1:
        return b"\x00".join((_AAD_V1, kid.encode(), cls.encode(), subject_hash.encode()))
    k, c, h = kid.encode(), cls.encode(), subject_hash.encode()
    # The same bytes as _lp over each part, with the fixed-size version and time packed at once
    # (every unwrap of a consumer's read batch builds one).
    return b"".join((_AAD_V2, _U32(len(k)), k, _U32(len(c)), c, _U32(len(h)), h, _TAIL(8, version, 8, created)))


def uses_tag_input(kid: str, uses: int) -> bytes:
    """What the MAC over a DEK's use counter covers (kid and count, length-prefixed)."""
    return b"eventward-dek-uses-v1" + _lp(kid.encode()) + struct.pack(">Q", uses)


# What a decryption reads of a DEK row (KeyStore.wrapped_deks), in this order: a plain tuple
# per row, no DekRecord (a consumer of many subjects reads one row per event).
WRAPPED_COLUMNS = ("kid", "class", "subject_hash", "version", "kek_id", "wrapped", "created", "fmt")
WrappedRow = tuple[str, str, str, int, str, bytes, float, int]


def row_aad(row: WrappedRow) -> bytes:
    """``dek_aad`` of a WrappedRow, in the row's format (the same bytes). Raises AttributeError,
    TypeError or struct.error for a row whose columns have the wrong types (a tampered store):
    the caller refuses that key. Format 2 is one ``pack`` of a Struct made for the parts' lengths
    (a consumer of many subjects builds one per event; four packs and a join cost twice as much)."""
    k, c, h = row[0].encode(), row[1].encode(), row[2].encode()
    if row[7] == AAD_V1:
        return b"\x00".join((_AAD_V1, k, c, h))
    lk, lc, lh = len(k), len(c), len(h)
    pack = _AAD_V2_PACKS.get((lk, lc, lh)) or _aad_v2_pack(lk, lc, lh)
    return pack(_AAD_V2, lk, k, lc, c, lh, h, 8, row[3], 8, row[6])


# Struct.pack of the format 2 AAD by (kid, class, subject hash) lengths: few in a deployment (a
# kid is 22 characters, a subject hash 32 or empty, a class 1-32), bounded all the same.
_AAD_V2_PACKS: dict[tuple[int, int, int], Callable[..., bytes]] = {}


def _aad_v2_pack(lk: int, lc: int, lh: int) -> Callable[..., bytes]:
    # Each "Ns" is given exactly N bytes (its length is the prefix before it): no padding.
    pack = struct.Struct(f">{len(_AAD_V2)}sI{lk}sI{lc}sI{lh}sIQId").pack
    if len(_AAD_V2_PACKS) < 256:
        _AAD_V2_PACKS[lk, lc, lh] = pack
    return pack
