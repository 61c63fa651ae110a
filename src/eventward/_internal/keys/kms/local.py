"""Local KMS: versioned KEKs in one AES-256-GCM encrypted keyring file.

The keyring's master key comes from a 0600 key file or from a passphrase (scrypt; salt and
cost in the authenticated header). Every change happens under an exclusive ``flock`` and
re-reads the file first, so concurrent processes never lose each other's rotations; readers
notice a rewritten file by its stat signature and reload it. Destroying a version rewrites the
file atomically without it; the old version is then gone from every future read.

Unwrap is a consumer's hot path (one call per distinct DEK of a read batch). Inside
``unwrap_batch()`` the file is checked once, when the block starts, and its unwraps use that
ring (a KEK id missing from it, after a rotation elsewhere, checks the file again, so a stale
ring never makes a key look forged). Every other call checks the file's signature each time:
a wrap must never use a KEK another process has just destroyed.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hmac
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from eventward._internal.fieldspec import check_class
from eventward._internal.home import read_secret, write_secret
from eventward._internal.keys.kms.base import MAC_LEDGER, MAC_SUBJECT, kek_id, parse_kek_id
from eventward.errors import (
    ConflictError,
    EventwardError,
    KeyDestroyed,
    KeyIntegrityError,
    KeyNotFound,
    KMSUnavailable,
)

MAGIC = b"EWKR"
FORMAT = 1
MODE_KEYFILE = 0
MODE_PASSPHRASE = 1
MASTER_KEY_BYTES = 32
SALT_BYTES = 16
# New keyrings: n = 2**17, r = 8, p = 1 (OWASP's current scrypt guidance, 128 MiB). The cost
# is stored in the authenticated header, so keyrings made at the older 2**15 still open; below
# that floor or above the caps is refused (downgrade, or a denial of service by memory).
SCRYPT_LOG2_N = 17
SCRYPT_R = 8
SCRYPT_P = 1
_SCRYPT_CAPS = ((15, 20), (8, 16), (1, 4))  # (min, max) of log2 n, r, p: refuse downgrades and DoS
_MAX_KEYRING = 64 * 1024 * 1024
_WRAP_FORMAT = b"\x01"
_NONCE = 12
_WRAP_AAD = b"eventward-kek-v1\x00"
_WRAP_BYTE = _WRAP_FORMAT[0]
_MIN_WRAPPED = 1 + _NONCE + 16  # format byte, nonce, GCM tag


@dataclass
class _ClassKeys:
    current: int
    keys: dict[int, bytes]
    destroyed: set[int] = field(default_factory=set)


@dataclass
class _Ring:
    classes: dict[str, _ClassKeys] = field(default_factory=dict)
    secrets: dict[str, bytes] = field(default_factory=dict)
    generation: int = 0
    # Built on install, so a reader's snapshot of ring and ciphers always agree.
    ciphers: dict[str, AESGCM] = field(default_factory=dict, repr=False, compare=False)

    def to_bytes(self) -> bytes:
        b64 = base64.b64encode
        return orjson.dumps({
            "generation": self.generation,
            "secrets": {k: b64(v).decode() for k, v in self.secrets.items()},
            "classes": {
                c: {
                    "current": ck.current,
                    "keys": {str(v): b64(k).decode() for v, k in ck.keys.items()},
                    "destroyed": sorted(ck.destroyed),
                }
                for c, ck in self.classes.items()
            },
        })

    @classmethod
    def from_bytes(cls, raw: bytes) -> _Ring:
        d = orjson.loads(raw)
        b64 = base64.b64decode
        return cls(
            generation=int(d["generation"]),
            secrets={k: b64(v) for k, v in d["secrets"].items()},
            classes={
                c: _ClassKeys(
                    current=int(ck["current"]),
                    keys={int(v): b64(k) for v, k in ck["keys"].items()},
                    destroyed={int(v) for v in ck["destroyed"]},
                )
                for c, ck in d["classes"].items()
            },
        )


@dataclass(frozen=True)
class _Header:
    mode: int
    salt: bytes = b""
    cost: tuple[int, int, int] = (0, 0, 0)  # log2 n, r, p

    def to_bytes(self) -> bytes:
        out = MAGIC + bytes([FORMAT, self.mode])
        if self.mode == MODE_PASSPHRASE:
            out += self.salt + bytes(self.cost)
        return out

    @classmethod
    def parse(cls, path: Path, data: bytes) -> tuple[_Header, int]:
        """(header, its length); a foreign or truncated file is a clear KMS error, not a traceback."""
        if len(data) < 6 or data[:4] != MAGIC:
            raise KMSUnavailable(f"keyring {path} is not an eventward keyring (bad magic)")
        if data[4] != FORMAT:
            raise KMSUnavailable(f"keyring {path} has unsupported format {data[4]}")
        mode = data[5]
        if mode == MODE_KEYFILE:
            return cls(mode), 6
        if mode == MODE_PASSPHRASE:
            end = 6 + SALT_BYTES + 3
            if len(data) < end:
                raise KMSUnavailable(f"keyring {path} is truncated")
            cost = (data[6 + SALT_BYTES], data[7 + SALT_BYTES], data[8 + SALT_BYTES])
            for value, (lo, hi), name in zip(cost, _SCRYPT_CAPS, ("log2 n", "r", "p"), strict=True):
                if not lo <= value <= hi:
                    raise KMSUnavailable(f"keyring {path} has scrypt {name}={value} outside [{lo}, {hi}]")
            return cls(mode, data[6 : 6 + SALT_BYTES], cost), end
        raise KMSUnavailable(f"keyring {path} has unknown key mode {mode}")


def derive_master_key(passphrase: str, salt: bytes, cost: tuple[int, int, int]) -> bytes:
    log2n, r, p = cost
    return Scrypt(salt=salt, length=MASTER_KEY_BYTES, n=2**log2n, r=r, p=p).derive(passphrase.encode())


def _open_one_kek(ring: _Ring, items: Sequence[tuple[str, bytes, bytes]]) -> list[bytes | EventwardError] | None:
    """unwrap_many's usual batch: every key wrapped under one live KEK, in the current format,
    and every one opens. The DEKs in one comprehension; None (nothing decided) for anything
    else, which unwrap_many then opens and refuses key by key."""
    if not items:
        return []
    kek_id = items[0][0]
    cipher = ring.ciphers.get(kek_id)
    if cipher is None or not all(k == kek_id and len(w) >= _MIN_WRAPPED and w[0] == _WRAP_BYTE
                                 for k, w, _ in items):
        return None
    decrypt, head = cipher.decrypt, _WRAP_AAD + kek_id.encode() + b"\x00"
    try:
        return [decrypt(w[1 : 1 + _NONCE], w[1 + _NONCE :], head + aad) for _, w, aad in items]
    except InvalidTag:
        return None


def _wrap_aad(kid: str, aad: bytes) -> bytes:
    # Binds the wrapped bytes to the KEK id as well as the caller's context.
    return _WRAP_AAD + kid.encode() + b"\x00" + aad


class LocalKMS:
    """Keyring-file KMS. Open with :meth:`create` or :meth:`open`; implements kms.base.KMS."""

    def __init__(self, path: Path, header: _Header, master: bytes) -> None:
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")
        self._header = header
        self._master = AESGCM(master)
        self._mutex = threading.RLock()
        self._ring = _Ring()
        self._sig: tuple[int, ...] | None = None
        self._closed = False
        self._pinned = threading.local()  # .ring: the ring an unwrap_batch() block checked once

    def __repr__(self) -> str:
        return f"LocalKMS({str(self.path)!r})"

    # --- opening -------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: Path,
        *,
        master_key_path: Path | None = None,
        passphrase: str | None = None,
        classes: tuple[str, ...] = ("pii", "payment", "health"),
    ) -> LocalKMS:
        """A new keyring with a v1 KEK per class and fresh MAC secrets; refuses to overwrite one."""
        for c in classes:
            check_class(c)
        if (master_key_path is None) == (passphrase is None):
            raise KMSUnavailable("a keyring needs exactly one of a master key file or a passphrase")
        with _io_errors(path):
            if path.exists():  # checked again under the lock; checking now avoids minting a stray master key
                raise ConflictError(f"keyring {path} already exists; refusing to overwrite it")
            if passphrase is not None:
                if not passphrase:
                    raise KMSUnavailable("the keyring passphrase must not be empty")
                header = _Header(MODE_PASSPHRASE, os.urandom(SALT_BYTES), (SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P))
                master = derive_master_key(passphrase, header.salt, header.cost)
            else:
                assert master_key_path is not None
                header = _Header(MODE_KEYFILE)
                if not master_key_path.exists():
                    write_secret(master_key_path, os.urandom(MASTER_KEY_BYTES))
                master = _read_master_key(master_key_path)
            kms = cls(path, header, master)
            with kms._locked():
                if path.exists():
                    raise ConflictError(f"keyring {path} already exists; refusing to overwrite it")
                ring = _Ring(
                    classes={c: _ClassKeys(1, {1: os.urandom(32)}) for c in classes},
                    secrets={MAC_SUBJECT: os.urandom(32), MAC_LEDGER: os.urandom(32)},
                )
                kms._write(ring)
        return kms

    @classmethod
    def open(
        cls, path: Path, *, master_key_path: Path | None = None, passphrase: str | None = None
    ) -> LocalKMS:
        with _io_errors(path):
            if not path.exists():
                raise KMSUnavailable(f"keyring {path} does not exist: run 'eventward init' first")
            data = read_secret(path)
            header, _ = _Header.parse(path, data)
            if header.mode == MODE_PASSPHRASE:
                if not passphrase:
                    raise KMSUnavailable(f"keyring {path} is passphrase-protected: supply the passphrase")
                master = derive_master_key(passphrase, header.salt, header.cost)
            else:
                if master_key_path is None:
                    raise KMSUnavailable(f"keyring {path} needs its master key file")
                master = _read_master_key(master_key_path)
            kms = cls(path, header, master)
            kms._refresh(force=True)
        return kms

    @staticmethod
    def header_mode(path: Path) -> int:
        """MODE_KEYFILE or MODE_PASSPHRASE, so a CLI knows whether to ask for a passphrase."""
        with _io_errors(path), open(path, "rb") as f:
            return _Header.parse(path, f.read(6 + SALT_BYTES + 3))[0].mode

    def close(self) -> None:
        with self._mutex:
            self._closed = True
            self._ring = _Ring()

    # --- reading ----------------------------------------------------------------------------
    def _refresh(self, force: bool = False) -> _Ring:
        """Reload the keyring if another process replaced it (stat signature changed)."""
        if self._closed:
            raise KMSUnavailable(f"keyring {self.path} is closed")
        with _io_errors(self.path):
            st = os.stat(self.path)
            sig = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
            if not force and sig == self._sig:
                return self._ring
            with self._mutex:
                if not force and sig == self._sig:
                    return self._ring
                ring, sig = self._read()
                self._install(ring, sig)
                return ring

    @contextlib.contextmanager
    def unwrap_batch(self) -> Iterator[None]:
        """A block of unwraps (one read batch) on this thread: the keyring file is checked once
        here instead of by every unwrap. Blocks nest; the outer one's check holds."""
        if getattr(self._pinned, "ring", None) is not None:
            yield
            return
        self._pinned.ring = self._refresh()
        try:
            yield
        finally:
            self._pinned.ring = None

    def _unwrap_ring(self, kek_id: str) -> _Ring:
        """The ring unwrap uses: the one this thread's unwrap_batch() checked if it holds
        ``kek_id``, else the file's current one (checked now)."""
        ring = getattr(self._pinned, "ring", None)
        if ring is None or self._closed or kek_id not in ring.ciphers:
            ring = self._refresh()
        return ring

    def _read(self) -> tuple[_Ring, tuple[int, ...]]:
        # Stat before reading: if the file is replaced in between, the stale signature only
        # causes one extra reload, never a new signature paired with old contents.
        st = os.stat(self.path)
        sig = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
        data = read_secret(self.path)
        if len(data) > _MAX_KEYRING:
            raise KMSUnavailable(f"keyring {self.path} is larger than {_MAX_KEYRING} bytes")
        header, hlen = _Header.parse(self.path, data)
        if header != self._header:
            raise KMSUnavailable(f"keyring {self.path} was re-keyed by another process; reopen it")
        nonce, body = data[hlen : hlen + _NONCE], data[hlen + _NONCE :]
        try:
            plain = self._master.decrypt(nonce, body, data[:hlen])
        except (InvalidTag, ValueError):
            secret = "passphrase" if header.mode == MODE_PASSPHRASE else "master key"
            raise KMSUnavailable(
                f"keyring {self.path} could not be decrypted: wrong {secret}, or the file was modified"
            ) from None
        try:
            return _Ring.from_bytes(plain), sig
        except (ValueError, KeyError, TypeError):
            raise KeyIntegrityError(f"keyring {self.path} decrypted but its contents are malformed") from None

    def _install(self, ring: _Ring, sig: tuple[int, ...]) -> None:
        ring.ciphers = {
            kek_id(c, v): AESGCM(k) for c, ck in ring.classes.items() for v, k in ck.keys.items()
        }
        self._ring = ring
        self._sig = sig

    def _class(self, ring: _Ring, cls: str) -> _ClassKeys:
        ck = ring.classes.get(cls)
        if ck is None:
            raise KeyNotFound(f"no KEK for class {cls!r}")
        return ck

    def current(self, cls: str) -> str:
        return kek_id(cls, self._class(self._refresh(), cls).current)

    def epoch(self, cls: str) -> int:
        return self._class(self._refresh(), cls).current

    def versions(self, cls: str) -> list[str]:
        return [kek_id(cls, v) for v in sorted(self._class(self._refresh(), cls).keys)]

    def destroyed(self, cls: str) -> list[str]:
        return [kek_id(cls, v) for v in sorted(self._class(self._refresh(), cls).destroyed)]

    def classes(self) -> list[str]:
        return sorted(self._refresh().classes)

    def generation(self) -> int:
        """How many changes the keyring file has seen: anchored in the audit log, so a keyring
        restored from a backup (fewer changes, destroyed KEKs still inside) is recognised."""
        return self._refresh().generation

    def is_live(self, kid: str) -> bool:
        cls, version = parse_kek_id(kid)
        ck = self._refresh().classes.get(cls)
        return ck is not None and version in ck.keys

    # --- wrapping ---------------------------------------------------------------------------
    def wrap(self, cls: str, dek: bytes, aad: bytes) -> tuple[str, bytes]:
        ring = self._refresh()
        if cls not in ring.classes:
            self.rotate(cls)  # first use of a user-defined class creates its v1
            ring = self._refresh()
        kid = kek_id(cls, ring.classes[cls].current)
        nonce = os.urandom(_NONCE)
        return kid, _WRAP_FORMAT + nonce + ring.ciphers[kid].encrypt(nonce, dek, _wrap_aad(kid, aad))

    def unwrap(self, kek_id: str, wrapped: bytes, aad: bytes) -> bytes:
        ring = self._unwrap_ring(kek_id)
        cipher = ring.ciphers.get(kek_id)  # live versions only, under well-formed ids
        if cipher is None:
            cls, version = parse_kek_id(kek_id)
            if version in self._class(ring, cls).destroyed:
                raise KeyDestroyed(f"KEK {kek_id} was destroyed")
            raise KeyNotFound(f"no KEK {kek_id}")
        if len(wrapped) < 1 + _NONCE + 16 or wrapped[:1] != _WRAP_FORMAT:
            raise KeyIntegrityError(f"wrapped key under {kek_id} is malformed")
        try:
            return cipher.decrypt(wrapped[1 : 1 + _NONCE], wrapped[1 + _NONCE :], _wrap_aad(kek_id, aad))
        except InvalidTag:
            raise KeyIntegrityError(
                f"wrapped key under {kek_id} failed authentication (tampered, or moved to another key id)"
            ) from None

    def unwrap_many(self, items: Sequence[tuple[str, bytes, bytes]]) -> list[bytes | EventwardError]:
        """``unwrap`` of each (kek id, wrapped, aad) of a read batch, as one call: the keyring is
        checked once (as in ``unwrap_batch``) and each outcome is the DEK or the refusal ``unwrap``
        would raise (KeyDestroyed, KeyNotFound, KeyIntegrityError); one KMS call to time and
        count, not one per key. The crypto is unchanged: one AES-GCM open per wrapped key."""
        out: list[bytes | EventwardError] = []
        heads: dict[str, tuple[Any, bytes]] = {}  # kek id -> (its AESGCM's decrypt, _wrap_aad's head)
        with self.unwrap_batch():
            ring = self._pinned.ring
            opened = _open_one_kek(ring, items)
            if opened is not None:
                return opened
            for kek_id, wrapped, aad in items:
                head = heads.get(kek_id)
                if head is None:
                    cipher = ring.ciphers.get(kek_id)
                    if cipher is not None:
                        head = heads[kek_id] = (cipher.decrypt, _WRAP_AAD + kek_id.encode() + b"\x00")
                if head is not None and len(wrapped) >= 1 + _NONCE + 16 and wrapped[:1] == _WRAP_FORMAT:
                    try:
                        out.append(head[0](wrapped[1 : 1 + _NONCE], wrapped[1 + _NONCE :], head[1] + aad))
                        continue
                    except InvalidTag:
                        pass
                try:  # the refusal worded by unwrap (which also re-checks a KEK missing from the ring)
                    out.append(self.unwrap(kek_id, wrapped, aad))
                except (KeyDestroyed, KeyNotFound, KeyIntegrityError) as e:
                    out.append(e)
        return out

    def mac(self, name: str, data: bytes) -> bytes:
        secret = self._ring.secrets.get(name)  # MAC secrets never change once created
        if secret is None:
            secret = self._refresh().secrets.get(name)
        if secret is None:
            secret = self._mutate(lambda r: r.secrets.setdefault(name, os.urandom(32))).secrets[name]
        return hmac.digest(secret, data, "sha256")

    # --- changing ---------------------------------------------------------------------------
    def rotate(self, cls: str) -> str:
        check_class(cls)

        def bump(ring: _Ring) -> None:
            ck = ring.classes.get(cls)
            if ck is None:
                ring.classes[cls] = _ClassKeys(1, {1: os.urandom(32)})
            else:
                ck.current += 1
                ck.keys[ck.current] = os.urandom(32)

        return kek_id(cls, self._mutate(bump).classes[cls].current)

    def destroy(self, kek_id: str) -> None:
        cls, version = parse_kek_id(kek_id)

        def drop(ring: _Ring) -> None:
            ck = self._class(ring, cls)
            if version in ck.destroyed:
                return
            if version == ck.current:
                raise ConflictError(f"cannot destroy the current KEK {kek_id}; rotate first")
            if version not in ck.keys:
                raise KeyNotFound(f"no KEK {kek_id}")
            del ck.keys[version]
            ck.destroyed.add(version)

        self._mutate(drop)

    def _mutate(self, change: Callable[[_Ring], object]) -> _Ring:
        """Apply ``change`` to the on-disk keyring under the cross-process lock, then rewrite it."""
        with self._locked():
            ring, _ = self._read()  # freshly parsed: nobody else holds this object
            change(ring)
            ring.generation += 1
            self._write(ring)
            return ring

    def _write(self, ring: _Ring) -> None:
        header = self._header.to_bytes()
        nonce = os.urandom(_NONCE)
        with _io_errors(self.path):
            write_secret(self.path, header + nonce + self._master.encrypt(nonce, ring.to_bytes(), header))
            st = os.stat(self.path)
        self._install(ring, (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._mutex, _io_errors(self._lock_path):
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing releases the flock


def _read_master_key(path: Path) -> bytes:
    if not path.exists():
        raise KMSUnavailable(f"master key file {path} does not exist")
    key = read_secret(path)
    if len(key) != MASTER_KEY_BYTES:
        raise KMSUnavailable(f"master key file {path} must hold exactly {MASTER_KEY_BYTES} bytes")
    return key


@contextlib.contextmanager
def _io_errors(path: Path) -> Iterator[None]:
    """OS failures become KMSUnavailable naming the file: fail closed, never a raw OSError."""
    try:
        yield
    except OSError as e:
        raise KMSUnavailable(f"keyring file {path}: {e.strerror or type(e).__name__}") from None


__all__ = ["FORMAT", "MODE_KEYFILE", "MODE_PASSPHRASE", "LocalKMS", "derive_master_key"]
