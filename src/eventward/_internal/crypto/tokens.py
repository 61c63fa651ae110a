"""Field tokens: one AEAD ciphertext per sensitive value, bound to the place it belongs.

A token is a compact URL-safe string ``ew1.<alg>.<kid>.<base64url(blob)>``:

- ``g``: AES-256-GCM, ``blob = nonce(12) || ciphertext || tag(16)``, random 96-bit nonce.
- ``s``: AES-SIV (deterministic), ``blob = synthetic IV(16) || ciphertext``, under a 512-bit
  key derived from the DEK with HKDF-SHA256. Equal values give equal tokens only under the
  same DEK, i.e. for one data subject (or one class key) and one key version: that is what
  makes the field equality-searchable, and also the limit of the search.

The plaintext is the orjson encoding of the value, so every JSON type round-trips with its
type. The associated data binds the token to its context, each part length-prefixed:

    version, alg, kid, class, data-subject hash ("" for class keys) | event id | field path

A token copied to another event, field, subject or class, or re-labelled with another key
id, fails to verify. SIV tokens bind an empty event id and the schema path (``items[].sku``,
not ``items[2].sku``): otherwise equal values could not give equal tokens.

Errors name what is wrong, never the token or the value: a "token" that fails to parse may
be plaintext a producer forgot to encrypt.
"""

from __future__ import annotations

import binascii
import os
import re
import struct
import threading
from collections import OrderedDict
from typing import Any, NamedTuple

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from eventward.errors import InputError, KeyServiceError, TokenError

VERSION = "ew1"
GCM = "g"
SIV = "s"
ALGORITHMS = (GCM, SIV)
DEK_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
KID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SIV_INFO = b"eventward/field-token/aes-siv-512/v1"
_PREFIX = VERSION + "."
_HEAD = re.compile(r"ew1\.([gs])\.([A-Za-z0-9_-]{1,64})\.")
# _HEAD for one algorithm: the kid is group 1. A token it does not match is malformed or of the
# other algorithm (parse_header tells which); the field encryptor parses headers this way.
_HEAD_OF = {a: re.compile(rf"ew1\.{a}\.([A-Za-z0-9_-]{{1,64}})\.") for a in ALGORITHMS}
_TO_URL = bytes.maketrans(b"+/", b"-_")
# URL-safe to standard alphabet, and the characters the format leaves out ('+', '/' and the
# padding '=') to '!', which the strict decoder refuses: one pass checks and translates.
_FROM_URL = bytes.maketrans(b"-_+/=", b"+/!!!")
_B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_PAD = (b"", b"", b"==", b"=")
# Allowed last characters by payload length mod 4: the unused low bits must be zero, or
# flipping them would change the text but not the bytes (and go unnoticed).
# Length 1 mod 4 is never valid base64: no character may end it.
_LAST = (frozenset(_B64_ALPHABET), frozenset(), frozenset(_B64_ALPHABET[::16]), frozenset(_B64_ALPHABET[::4]))
# Smallest blob: an orjson plaintext is at least one byte.
_MIN_BLOB = {GCM: NONCE_BYTES + TAG_BYTES + 1, SIV: TAG_BYTES + 1}
_MAX_CONTEXTS = 64
_U32 = struct.Struct(">I").pack
_a2b = binascii.a2b_base64
_b2a = binascii.b2a_base64
_dumps = orjson.dumps
_loads = orjson.loads
_new_handle = object.__new__


class Token(NamedTuple):
    """A parsed token. ``blob`` is ciphertext; it stays out of the repr all the same."""

    alg: str
    kid: str
    blob: bytes

    def __repr__(self) -> str:
        return f"Token(alg={self.alg!r}, kid={self.kid!r}, {len(self.blob)} bytes)"


# An AEAD tag that does not verify: the same words wherever a token is opened (open_token, decrypt_many).
TAMPERED = "token does not verify: tampered, or moved from another context"


def is_token(value: object) -> bool:
    """Cheap shape test (no decoding); :func:`parse` is the real check."""
    return isinstance(value, str) and value.startswith(_PREFIX)


def split(token: object) -> tuple[str, str, bytes]:
    """``(alg, kid, blob)``, refusing anything non-canonical, so one token has one spelling."""
    alg, kid, start = parse_header(token)
    return alg, kid, decode_payload(token, start, alg)  # type: ignore[arg-type]


def parse_header(token: object) -> tuple[str, str, int]:
    """``(alg, kid, offset of the payload)`` of a token whose payload is not checked yet."""
    m = _HEAD.match(token) if isinstance(token, str) else None
    if m is None:
        raise TokenError(_diagnose(token))
    return m[1], m[2], m.end()


def decode_payload(token: str, start: int, alg: str) -> bytes:
    """The blob of ``token[start:]``, a header already checked for ``alg``: canonical
    base64url only (no padding, no '+' or '/', unused low bits zero) and long enough."""
    rem = (len(token) - start) & 3
    # Without this, flipping the unused low bits of the last character would change the text
    # but not the bytes. An empty payload ends in the header's '.', which no set holds.
    if token[-1] not in _LAST[rem]:
        raise TokenError("token payload is not canonical base64url")
    try:
        blob = _a2b(token[start:].encode("ascii").translate(_FROM_URL) + _PAD[rem], strict_mode=True)
    except (UnicodeEncodeError, binascii.Error):
        raise TokenError("token payload is not canonical base64url") from None
    if len(blob) < _MIN_BLOB[alg]:
        raise TokenError("token payload is too short")
    return blob


def parse(token: object) -> Token:
    return Token(*split(token))


def encode_token(alg: str, kid: str, blob: bytes) -> str:
    """The inverse of :func:`split` (KeyHandle.seal inlines the same encoding)."""
    if alg not in ALGORITHMS:
        raise TokenError("unknown token algorithm")
    return f"{_PREFIX}{alg}.{check_kid(kid)}.{_b64(blob)}"


def check_kid(kid: str) -> str:
    if not isinstance(kid, str) or not KID_PATTERN.fullmatch(kid):
        raise TokenError("key id must be 1..64 characters of [A-Za-z0-9_-]")
    return kid


def _b64(blob: bytes) -> str:
    return _b2a(blob, newline=False).translate(_TO_URL, b"=").decode()  # translated, padding deleted


def _diagnose(token: object) -> str:
    """Name the first thing wrong with a token that failed the fast match (never echo it)."""
    if not isinstance(token, str):
        return f"expected a token string, found {type(token).__name__}"
    parts = token.split(".")
    if parts[0] != VERSION:
        return "not a field token (unknown format version, or plaintext)"
    if len(parts) != 4:
        return f"token must have 4 dot-separated parts, found {len(parts)}"
    if parts[1] not in ALGORITHMS:
        return "unknown token algorithm"
    if not KID_PATTERN.fullmatch(parts[2]):
        return "malformed key id in token"
    return "token payload is not base64url"


def _lp(part: str) -> bytes:
    b = part.encode()  # UTF-8
    return _U32(len(b)) + b


def key_context(alg: str, kid: str, cls: str, subject_hash: str | None) -> bytes:
    """The leading part of the associated data, fixed for one key, class and subject: the
    length-prefixed parts (``_lp`` of each), built in one join (a consumer of many subjects
    builds one per event)."""
    k, c, h = kid.encode(), cls.encode(), (subject_hash or "").encode()
    return b"".join((_lp(VERSION), _lp(alg), _U32(len(k)), k, _U32(len(c)), c, _U32(len(h)), h))


# The associated data's event and path parts: the same length-prefixed encoding as every other
# part (aliases rather than wrappers: the field encryptor calls them per event and field).
event_context = _lp
path_context = _lp


NO_EVENT = event_context("")  # what SIV tokens bind in place of the event id
_CONTEXT_HEADS = {a: _lp(VERSION) + _lp(a) for a in ALGORITHMS}  # key_context's first two parts


def associated_data(
    alg: str, kid: str, cls: str, subject_hash: str | None, path: str, event_id: str = ""
) -> bytes:
    """The full associated data of one token (SIV ignores ``event_id``)."""
    ev = NO_EVENT if alg == SIV else event_context(event_id)
    return key_context(alg, kid, cls, subject_hash) + ev + path_context(path)


class KeyHandle:
    """One DEK ready to seal and open tokens: cipher objects built once, token prefixes and
    associated-data heads precomputed. Get one from :meth:`TokenCipher.handle`."""

    __slots__ = ("_contexts", "_dek", "_gcm", "_prefix_g", "_prefix_s", "_siv", "kid")

    def __init__(self, kid: str, dek: bytes) -> None:
        if not isinstance(kid, str) or not KID_PATTERN.fullmatch(kid):
            raise KeyServiceError("the key source returned a key id that is not 1..64 of [A-Za-z0-9_-]")
        if not isinstance(dek, bytes) or len(dek) != DEK_BYTES:
            raise KeyServiceError(f"the key source returned a data key that is not {DEK_BYTES} bytes")
        self.kid = kid
        self._dek = dek
        self._gcm = AESGCM(dek)
        self._siv: AESSIV | None = None
        self._prefix_g = f"{_PREFIX}{GCM}.{kid}."
        self._prefix_s = f"{_PREFIX}{SIV}.{kid}."
        self._contexts: dict[tuple[str, str, str | None], bytes] = {}

    def __repr__(self) -> str:
        return f"KeyHandle(kid={self.kid!r})"

    def context(self, alg: str, cls: str, subject_hash: str | None) -> bytes:
        """:func:`key_context` for this key, memoised (bounded: decrypt sees attacker-chosen pairs)."""
        slot = (alg, cls, subject_hash)
        ctx = self._contexts.get(slot)
        if ctx is None:
            if len(self._contexts) >= _MAX_CONTEXTS:
                self._contexts.clear()
            ctx = self._contexts[slot] = key_context(alg, self.kid, cls, subject_hash)
        return ctx

    def _siv_cipher(self) -> AESSIV:
        if self._siv is None:
            hkdf = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=_SIV_INFO)
            self._siv = AESSIV(hkdf.derive(self._dek))
        return self._siv

    def seal(self, value: Any, ad: bytes, nonce: bytes | None) -> str:
        """A token for ``value``. ``nonce``: 12 fresh bytes from os.urandom, never reused,
        for GCM; None selects deterministic AES-SIV."""
        try:
            pt = _dumps(value)
        except orjson.JSONEncodeError:
            # Name the type only: orjson's own message can quote the value.
            kind = type(value).__name__
            raise InputError(f"a sensitive value of type {kind} is not JSON-serializable") from None
        if nonce is None:
            return self._prefix_s + _b64(self._siv_cipher().encrypt(pt, [ad]))
        # _b64 inlined: this line runs once per sensitive field.
        return self._prefix_g + _b2a(nonce + self._gcm.encrypt(nonce, pt, ad), newline=False).translate(
            _TO_URL, b"="
        ).decode()

    def open_token(self, token: str, start: int, alg: str, ad: bytes) -> Any:
        """``open(alg, decode_payload(token, start, alg), ad)`` in one call: a consumer opens
        every sensitive field of every event this way. The same checks, the same errors."""
        rem = (len(token) - start) & 3
        if token[-1] not in _LAST[rem]:
            raise TokenError("token payload is not canonical base64url")
        try:
            blob = _a2b(token[start:].encode("ascii").translate(_FROM_URL) + _PAD[rem], strict_mode=True)
        except (UnicodeEncodeError, binascii.Error):
            raise TokenError("token payload is not canonical base64url") from None
        if len(blob) < _MIN_BLOB[alg]:
            raise TokenError("token payload is too short")
        try:
            if alg == GCM:
                pt = self._gcm.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], ad)
            else:
                pt = self._siv_cipher().decrypt(blob, [ad])
        except InvalidTag:
            raise TokenError(TAMPERED) from None
        try:
            return _loads(pt)
        except orjson.JSONDecodeError:
            raise TokenError("token plaintext is not JSON") from None

    def open(self, alg: str, blob: bytes, ad: bytes) -> Any:
        """The value, or TokenError when the blob or its context was altered."""
        try:
            if alg == GCM:
                pt = self._gcm.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], ad)
            else:
                pt = self._siv_cipher().decrypt(blob, [ad])
        except InvalidTag:
            raise TokenError(TAMPERED) from None
        try:
            return _loads(pt)
        except orjson.JSONDecodeError:
            raise TokenError("token plaintext is not JSON") from None


class TokenCipher:
    """Key handles cached by (kid, DEK) in a bounded dict (oldest evicted first).

    Building an AESGCM costs as much as an encryption and the SIV key needs an HKDF, so this
    pays for itself from the second field. The cache only saves work: callers still ask the
    key source for every event, so a destroyed or revoked key stays unusable. ``clear()``
    drops every cached key, e.g. on a revocation broadcast.
    """

    def __init__(self, max_keys: int = 4096) -> None:
        if max_keys < 1:
            raise InputError("max_keys must be at least 1")
        self._max = max_keys
        # OrderedDicts: evicting the oldest is O(1). A plain dict's ``pop(next(iter(d)))`` walks
        # the deleted slots at its front first, which made every insert slow once a consumer of
        # many subjects (one key per event) kept the cache full.
        self._handles: OrderedDict[tuple[str, bytes], KeyHandle] = OrderedDict()
        self._bound: OrderedDict[tuple[str, bytes, str, str, str | None], tuple[KeyHandle, bytes]] = OrderedDict()
        # Decryption (``opening``) keeps a handle from a key's second use on: a consumer of many
        # subjects meets most keys once, and thousands of cached cipher objects it never uses
        # again cost it more (memory, garbage-collector walks) than making each once. What keys
        # were met once is remembered (bounded; key id, algorithm, class and subject hash: no
        # key material) to recognise the second use.
        self._once: dict[tuple[str, str, str, str | None], None] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TokenCipher({len(self._handles)} cached keys, max {self._max})"

    def clear(self) -> None:
        with self._lock:
            self._handles.clear()
            self._bound.clear()
            self._once.clear()

    def bound(
        self, kid: str, dek: bytes, alg: str, cls: str, subject_hash: str | None
    ) -> tuple[KeyHandle, bytes]:
        """``(handle, key_context(alg, kid, cls, subject_hash))``, cached together: the field
        encryptor needs both for every key of every event, and one lookup beats two."""
        if type(kid) is not str or type(dek) is not bytes:  # KeyHandle names what is wrong, if anything
            return KeyHandle(kid, dek), key_context(alg, kid, cls, subject_hash)
        slot = (kid, dek, alg, cls, subject_hash)
        hit = self._bound.get(slot)
        if hit is None:
            hit = (self.handle(kid, dek), key_context(alg, kid, cls, subject_hash))
            with self._lock:  # bounded: decrypt sees attacker-chosen key ids and subject hashes
                if len(self._bound) >= self._max:
                    self._bound.popitem(last=False)
                self._bound[slot] = hit
        return hit

    def opening(
        self, kid: str, dek: bytes, alg: str, cls: str, subject_hash: str | None
    ) -> tuple[KeyHandle, bytes]:
        """``bound`` for decryption, where ``kid`` is the key id of a token whose header matched
        (so of the key-id alphabet already): a miss makes the handle without checking the id
        again and caches only the pair (one insert, not two; a consumer of many subjects misses
        once per event). The DEK is checked as always.

        A key met for the first time (a consumer of many subjects: nearly every key) costs its
        AESGCM and the context bytes only: the handle's token prefixes and context memo (used by
        ``seal`` and ``context``) are made when it is kept, at its second use, and what was met
        once is a bounded plain dict (emptied when full), not an ordered one evicting an entry
        per insert."""
        if type(dek) is not bytes or len(dek) != DEK_BYTES or type(kid) is not str:
            return self.bound(kid, dek, alg, cls, subject_hash)  # raises the KeyServiceError naming it
        slot = (kid, dek, alg, cls, subject_hash)
        hit = self._bound.get(slot)
        if hit is not None:
            return hit
        h = self._handles.get((kid, dek)) if self._handles else None  # a consumer's is empty
        if h is None:
            h = _new_handle(KeyHandle)
            h.kid, h._dek, h._gcm, h._siv = kid, dek, AESGCM(dek), None
        k, c, sh = kid.encode(), cls.encode(), (subject_hash or "").encode()
        hit = (h, b"".join((_CONTEXT_HEADS[alg], _U32(len(k)), k, _U32(len(c)), c, _U32(len(sh)), sh)))
        seen = (kid, alg, cls, subject_hash)
        with self._lock:
            once = self._once
            if once.pop(seen, 0) is None:  # met before: worth keeping, with everything seal needs
                if not hasattr(h, "_prefix_g"):
                    h._prefix_g, h._prefix_s = f"{_PREFIX}{GCM}.{kid}.", f"{_PREFIX}{SIV}.{kid}."
                    h._contexts = {}
                if len(self._bound) >= self._max:
                    self._bound.popitem(last=False)
                self._bound[slot] = hit
            else:  # a key met once (a consumer of many subjects: most keys) is not kept: see __init__
                if len(once) >= self._max:
                    once.clear()
                once[seen] = None
        return hit

    def handle(self, kid: str, dek: bytes) -> KeyHandle:
        """The cached handle for this key; KeyServiceError if the key source gave a bad key."""
        if type(kid) is not str or type(dek) is not bytes:
            return KeyHandle(kid, dek)  # raises the KeyServiceError that names what is wrong
        slot = (kid, dek)
        h = self._handles.get(slot)
        if h is None:
            h = KeyHandle(kid, dek)
            with self._lock:  # inserts and evictions only; lookups stay lock-free
                if len(self._handles) >= self._max:
                    self._handles.popitem(last=False)
                self._handles[slot] = h
        return h

    def encrypt(
        self, value: Any, kid: str, dek: bytes, *, cls: str, subject_hash: str | None, path: str,
        event_id: str = "", deterministic: bool = False,
    ) -> str:
        """One token for ``value`` in its context (the field encryptor batches this per event)."""
        alg = SIV if deterministic else GCM
        ad = associated_data(alg, kid, cls, subject_hash, path, event_id)
        return self.handle(kid, dek).seal(value, ad, None if deterministic else os.urandom(NONCE_BYTES))

    def decrypt(
        self, token: str, dek: bytes, *, cls: str, subject_hash: str | None, path: str, event_id: str = ""
    ) -> Any:
        """The value of ``token``; TokenError when malformed, tampered or out of its context.
        The algorithm and key id come from the token itself, so re-labelling either fails."""
        alg, kid, blob = split(token)
        ad = associated_data(alg, kid, cls, subject_hash, path, event_id)
        return self.handle(kid, dek).open(alg, blob, ad)
