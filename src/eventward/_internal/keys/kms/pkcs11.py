"""PKCS#11 KMS: KEKs and MAC secrets generated inside a token (an HSM, or SoftHSM2), never exported.

A KEK is an AES-256 token object labelled ``<class>.v<N>``: generated in the token, sensitive,
not extractable, not copyable, not modifiable, usable only to encrypt and decrypt. A DEK is wrapped
inside the token with CKM_AES_GCM (random 96-bit IV; the AAD binds KEK id, object id and the
caller's context), so KEK bytes never reach this process. The MAC secrets (subject hashing, erasure
ledger) are generic-secret token objects used with CKM_SHA256_HMAC. Destroying a version is
C_DestroyObject; versions are numbered in order, so a missing version below the current one is
known to be destroyed without a tombstone.

Only keys that the token itself generated and never exposed (CKA_LOCAL, ALWAYS_SENSITIVE,
NEVER_EXTRACTABLE) are used: an imported or extractable object planted under a KEK label makes
the KMS refuse to work rather than wrap data keys under a key someone holds a copy of.

Two processes rotating at once may both create ``pii.v4``. Each object has a random CKA_ID that
the wrapped bytes carry, so either copy unwraps exactly, and destroy removes every object of
the label. The PIN comes from an environment variable or a 0600 file; it is used for one login
per (module, token) per process and is never stored, logged or put in an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pkcs11
from pkcs11 import Attribute, GCMParams, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11e

from eventward._internal.fieldspec import check_class
from eventward._internal.home import read_secret
from eventward._internal.keys.cache import LruTtlCache
from eventward._internal.keys.kms.base import MAC_LEDGER, MAC_SUBJECT, config_from_mapping, kek_id, parse_kek_id
from eventward.errors import (
    ConfigError,
    ConflictError,
    EventwardError,
    KeyDestroyed,
    KeyIntegrityError,
    KeyNotFound,
    KMSUnavailable,
)

T = TypeVar("T")
log = logging.getLogger("eventward.keys.pkcs11")

SOFTHSM_MODULES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
MAC_PREFIX = "mac:"  # ':' cannot appear in a class name, so MAC labels never look like KEK ids
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")
_MAC_LABELS = frozenset(MAC_PREFIX + name for name in (MAC_SUBJECT, MAC_LEDGER))
_FORMAT = b"\x02"  # 0x01 is the local keyring's format: a blob names the backend that made it
_OID = 16
_IV = 12
_TAG = 16
_WRAP_AAD = b"eventward-p11-kek-v1\x00"
_KEY_BITS = 256
_SCAN = [
    Attribute.LABEL, Attribute.ID, Attribute.KEY_TYPE, Attribute.VALUE_LEN, Attribute.SENSITIVE,
    Attribute.EXTRACTABLE, Attribute.ALWAYS_SENSITIVE, Attribute.NEVER_EXTRACTABLE, Attribute.LOCAL,
]
_SEALED = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.COPYABLE: False,  # a copy under another label would survive destroy()
    Attribute.MODIFIABLE: False,  # nobody relabels pii.v1 as pii.v9
    Attribute.WRAP: False,
    Attribute.UNWRAP: False,
    Attribute.DERIVE: False,
    Attribute.VERIFY: False,
}
_TEMPLATES = {
    KeyType.AES: {**_SEALED, Attribute.ENCRYPT: True, Attribute.DECRYPT: True, Attribute.SIGN: False},
    KeyType.GENERIC_SECRET: {
        **_SEALED, Attribute.ENCRYPT: False, Attribute.DECRYPT: False, Attribute.SIGN: True,
    },
}
# A handle that vanished: another process destroyed the object. Look again before deciding.
_GONE = (p11e.ObjectHandleInvalid, p11e.KeyHandleInvalid)
# What a failed GCM decryption looks like (SoftHSM2 reports a bad tag as CKR_GENERAL_ERROR).
_BAD_CIPHERTEXT = (
    p11e.GeneralError, p11e.FunctionFailed, p11e.EncryptedDataInvalid, p11e.EncryptedDataLenRange,
    p11e.DataInvalid, p11e.DataLenRange,
)
# What a token that went away (unplugged HSM, SoftHSM token directory moved) looks like. Any of
# these, or a scan that no longer finds this KMS's MAC secrets, means "unavailable", never
# "key not found": a consumer must stop and retry, not judge every event forged.
_LOST = (
    p11e.TokenNotPresent, p11e.TokenNotRecognised, p11e.DeviceRemoved, p11e.DeviceError,
    p11e.SessionHandleInvalid, p11e.SessionClosed, p11e.GeneralError, p11e.SlotIDInvalid,
)
RECONNECT_INTERVAL_S = 0.5
_LOGIN_REASONS = {
    p11e.PinIncorrect: "incorrect PIN",
    p11e.PinInvalid: "malformed PIN",
    p11e.PinLenRange: "PIN of the wrong length",
    p11e.PinExpired: "expired PIN",
    p11e.PinLocked: "PIN locked",
    p11e.UserPinNotInitialized: "user PIN not initialised",
    p11e.UserAlreadyLoggedIn: "already logged in by code outside eventward in this process",
}


def softhsm_module() -> str:
    """Path of the installed SoftHSM2 module (Debian and common layouts)."""
    for path in SOFTHSM_MODULES:
        if os.path.exists(path):
            return path
    raise KMSUnavailable("SoftHSM2 is not installed (apt-get install softhsm2): no libsofthsm2.so found")


def _number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


@dataclass(frozen=True)
class Pkcs11Config:
    """Where the token is and where its PIN comes from: an environment variable name or a 0600
    file, never the PIN itself. ``refresh_s`` bounds how long a wrap may use a KEK version after
    another process rotated; ``mac_cache`` memoises subject hashes (0 disables)."""

    module: str
    token_label: str
    pin_env: str | None = None
    pin_file: Path | None = None
    refresh_s: float = 1.0
    mac_cache: int = 65_536

    def __post_init__(self) -> None:
        if not isinstance(self.module, str) or not os.path.isabs(self.module):
            raise ConfigError("pkcs11.module must be the absolute path of a PKCS#11 library")
        if not isinstance(self.token_label, str) or not 0 < len(self.token_label) <= 32:
            raise ConfigError("pkcs11.token_label must be 1..32 characters")
        if (self.pin_env is None) == (self.pin_file is None):
            raise ConfigError("pkcs11 needs exactly one PIN source: pin_env (a variable name) or pin_file")
        if self.pin_env is not None and not (isinstance(self.pin_env, str) and _ENV_NAME.match(self.pin_env)):
            # Never echoed: a PIN pasted here by mistake must not reach a log.
            raise ConfigError("pkcs11.pin_env must name an environment variable (A-Z, 0-9, _), "
                              "not hold the PIN")
        if self.pin_file is not None and not isinstance(self.pin_file, Path):
            object.__setattr__(self, "pin_file", Path(self.pin_file))
        if not _number(self.refresh_s) or self.refresh_s < 0:
            raise ConfigError("pkcs11.refresh_s must be a number of seconds >= 0")
        if not _number(self.mac_cache) or not isinstance(self.mac_cache, int) or self.mac_cache < 0:
            raise ConfigError("pkcs11.mac_cache must be an integer >= 0")

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any], where: str = "pkcs11") -> Pkcs11Config:
        """From a config section; unknown keys and a literal PIN are refused by name."""
        if isinstance(doc, Mapping) and ("pin" in doc or "user_pin" in doc):
            raise ConfigError(f"{where}: never put the PIN in configuration; use pin_env or pin_file")
        return config_from_mapping(cls, doc, where, required="module and token_label are")

    def read_pin(self) -> str:
        if self.pin_env is not None:
            pin = os.environ.get(self.pin_env)
            if not pin:
                raise KMSUnavailable("the environment variable named by pkcs11.pin_env is not set or empty")
            return pin
        assert self.pin_file is not None
        try:
            pin = read_secret(self.pin_file).decode().rstrip("\r\n")
        except UnicodeDecodeError:
            raise KMSUnavailable(f"PIN file {self.pin_file} is not UTF-8 text") from None
        if not pin:
            raise KMSUnavailable(f"PIN file {self.pin_file} is empty")
        return pin


# --- one login per (module, token) per process ---------------------------------------------
# PKCS#11 login state belongs to the application, not the session, and python-pkcs11 logs out
# when a logged-in session closes. So one anchor session holds the login while any KMS on the
# token is open; each KMS works in its own session. A PIN that differs from the one logged in
# with is refused (compared by HMAC under a per-process key: the PIN itself is not kept).

@dataclass
class _Login:
    anchor: Any
    pin_tag: bytes
    refs: int = 0


_PIN_TAG_KEY = os.urandom(32)
_logins: dict[tuple[str, str], _Login] = {}
_logins_lock = threading.Lock()
_generation = [0]  # bumped when the library is re-initialised: every session before it is dead


def _reinitialise(cfg: Pkcs11Config, seen: int) -> None:
    """C_Finalize + C_Initialize, once per loss (``seen`` is the generation the caller lost):
    a PKCS#11 library only notices a token that came back after re-initialising. Every session
    and login in the process dies with it, so all logins are forgotten and every KMS reconnects."""
    with _logins_lock:
        if _generation[0] != seen:
            return  # another KMS already re-initialised since
        try:
            pkcs11.lib(cfg.module).reinitialize()
        except (p11e.PKCS11Error, OSError) as e:
            raise KMSUnavailable(f"PKCS#11 token {cfg.token_label!r} is unavailable "
                                 f"(re-initialising the library failed: {type(e).__name__})") from None
        finally:
            _logins.clear()  # the handles died with the old initialisation
            _generation[0] += 1


def _pin_tag(pin: str) -> bytes:
    return hmac.digest(_PIN_TAG_KEY, pin.encode(), "sha256")


def _token(cfg: Pkcs11Config) -> Any:
    try:
        lib = pkcs11.lib(cfg.module)
    except (p11e.PKCS11Error, OSError) as e:
        raise KMSUnavailable(f"cannot load PKCS#11 module {cfg.module} ({type(e).__name__})") from None
    try:
        return lib.get_token(token_label=cfg.token_label)
    except p11e.NoSuchToken:
        raise KMSUnavailable(f"no PKCS#11 token labelled {cfg.token_label!r} in {cfg.module}") from None
    except p11e.MultipleTokensReturned:
        raise KMSUnavailable(f"several PKCS#11 tokens are labelled {cfg.token_label!r}") from None
    except p11e.PKCS11Error as e:
        raise KMSUnavailable(f"PKCS#11 token {cfg.token_label!r}: {type(e).__name__}") from None


def _connect(cfg: Pkcs11Config) -> Any:
    """A read-write session on the token, logged in through the process-wide anchor."""
    with _logins_lock:
        token = _token(cfg)
        key = (cfg.module, cfg.token_label)
        login = _logins.get(key)
        pin = cfg.read_pin()
        tag = _pin_tag(pin)
        if login is None:
            try:
                anchor = token.open(rw=True, user_pin=pin)
            except p11e.PKCS11Error as e:
                reason = _LOGIN_REASONS.get(type(e), type(e).__name__)
                raise KMSUnavailable(f"PKCS#11 login to token {cfg.token_label!r} failed: {reason}") from None
            login = _logins[key] = _Login(anchor, tag)
        elif not hmac.compare_digest(login.pin_tag, tag):
            raise KMSUnavailable(
                f"PKCS#11 login to token {cfg.token_label!r} failed: the PIN differs from the one "
                "this process is logged in with"
            )
        try:
            session = token.open(rw=True)
        except p11e.PKCS11Error as e:
            if not login.refs:
                _drop_login(key)
            raise KMSUnavailable(f"PKCS#11 token {cfg.token_label!r}: open session failed "
                                 f"({type(e).__name__})") from None
        login.refs += 1
        return session


def _disconnect(cfg: Pkcs11Config, session: Any) -> None:
    with _logins_lock:
        with contextlib.suppress(p11e.PKCS11Error):  # a session that died with the token
            session.close()
        key = (cfg.module, cfg.token_label)
        login = _logins.get(key)
        if login is not None:
            login.refs -= 1
            if login.refs <= 0:
                _drop_login(key)


def _drop_login(key: tuple[str, str]) -> None:
    login = _logins.pop(key)
    with contextlib.suppress(p11e.PKCS11Error):
        login.anchor.close()  # logs out


@contextlib.contextmanager
def token_session(config: Pkcs11Config) -> Iterator[Any]:
    """A raw python-pkcs11 session sharing this process's login: for inventory tooling and tests,
    which must not log in a second time (nor log everyone out on close)."""
    session = _connect(config)
    try:
        yield session
    finally:
        _disconnect(config, session)


# --- the token's keys -------------------------------------------------------------------------

@dataclass(frozen=True)
class _Obj:
    oid: bytes
    key: Any  # pkcs11.SecretKey bound to this KMS's session


@dataclass
class _Index:
    """What the token holds, from one scan: class -> version -> objects (sorted by CKA_ID)."""

    keks: dict[str, dict[int, list[_Obj]]] = field(default_factory=dict)
    macs: dict[str, list[_Obj]] = field(default_factory=dict)
    at: float = float("-inf")

    def current(self, cls: str) -> int:
        versions = self.keks.get(cls)
        if not versions:
            raise KeyNotFound(f"no KEK for class {cls!r}")
        return max(versions)

    def find(self, cls: str, version: int, oid: bytes) -> _Obj | None:
        return next((o for o in self.keks.get(cls, {}).get(version, ()) if o.oid == oid), None)

    def missing(self, kid: str) -> Exception:
        """Why ``kid`` cannot unwrap, judged on a fresh scan."""
        cls, version = parse_kek_id(kid)
        versions = self.keks.get(cls, {})
        if version in versions:
            return KeyIntegrityError(f"wrapped key under {kid} names no object of that KEK (tampered)")
        if versions and version < max(versions):
            return KeyDestroyed(f"KEK {kid} was destroyed")
        return KeyNotFound(f"no KEK {kid}")


class _Stale(Exception):
    """The index lacks what was asked for: scan the token once more before answering."""


class _TokenLost(Exception):
    """A scan found none of this deployment's keys in a token that held them."""


def _sealed(attrs: dict[Any, Any], key_type: KeyType) -> bool:
    return bool(
        attrs[Attribute.KEY_TYPE] == key_type
        and attrs[Attribute.VALUE_LEN] == _KEY_BITS // 8
        and attrs[Attribute.SENSITIVE] and attrs[Attribute.ALWAYS_SENSITIVE]
        and not attrs[Attribute.EXTRACTABLE] and attrs[Attribute.NEVER_EXTRACTABLE]
        and attrs[Attribute.LOCAL]
        and len(attrs[Attribute.ID]) == _OID
    )


def _bind(kid: str, oid: bytes, aad: bytes) -> bytes:
    return _WRAP_AAD + kid.encode() + b"\x00" + oid + aad


class Pkcs11KMS:
    """KEKs in a PKCS#11 token. Open with :meth:`create` or :meth:`open`; implements kms.base.KMS.

    One session per KMS, serialised by a lock (python-pkcs11 sessions are not for concurrent use).
    """

    def __init__(self, config: Pkcs11Config) -> None:
        self.config = config
        self._lock = threading.RLock()
        self._index = _Index()
        self._memo: LruTtlCache[bytes, bytes] = LruTtlCache(config.mac_cache, float("inf"), time.monotonic)
        self._memo_key = os.urandom(32)
        self._gen = _generation[0]
        self._session = _connect(config)
        self._closed = False
        self._ready = False  # set once the token was seen holding this deployment's keys
        self._lost = False
        self._retry_at = 0.0

    def __repr__(self) -> str:
        return f"Pkcs11KMS(module={self.config.module!r}, token={self.config.token_label!r})"

    # --- opening -------------------------------------------------------------------------
    @classmethod
    def create(
        cls, config: Pkcs11Config, classes: tuple[str, ...] = ("pii", "payment", "health")
    ) -> Pkcs11KMS:
        """Generate the MAC secrets and a v1 KEK per class in the token; refuses a token that
        already holds eventward keys. On failure nothing it generated is left behind."""
        for c in classes:
            check_class(c)

        def initialise(idx: _Index, final: bool) -> None:
            if idx.keks or idx.macs:
                raise ConflictError(f"token {config.token_label!r} already holds eventward keys; "
                                    "refusing to initialise it again")
            made: list[Any] = []
            try:
                for name in (MAC_SUBJECT, MAC_LEDGER):
                    made.append(kms._generate(KeyType.GENERIC_SECRET, MAC_PREFIX + name))
                for c in classes:
                    made.append(kms._generate(KeyType.AES, kek_id(c, 1)))
            except BaseException:
                for obj in made:
                    with contextlib.suppress(p11e.PKCS11Error):  # the original error is what matters
                        obj.destroy()
                raise

        kms = cls(config)
        try:
            kms._run("initialise the token", initialise, 0.0)
        except BaseException:
            kms.close()
            raise
        kms._ready = True
        return kms

    @classmethod
    def open(cls, config: Pkcs11Config) -> Pkcs11KMS:
        kms = cls(config)
        try:
            if MAC_SUBJECT not in kms._run("list keys", lambda idx, final: idx, 0.0).macs:
                raise KMSUnavailable(f"token {config.token_label!r} holds no eventward keys: initialise it "
                                     "first (KeyService.init with this KMS)")
        except BaseException:
            kms.close()
            raise
        kms._ready = True
        return kms

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._index = _Index()
            self._memo.clear()
            if self._gen == _generation[0]:  # else its login died with a re-initialisation
                _disconnect(self.config, self._session)

    # --- the token --------------------------------------------------------------------------
    def _run(self, what: str, op: Callable[[_Index, bool], T], max_age: float) -> T:
        """Run ``op`` on an index at most ``max_age`` seconds old; if it finds the index stale or a
        handle vanished, rescan and run it once more (``final``). PKCS#11 errors fail closed."""
        with self._lock:
            if self._closed:
                raise KMSUnavailable(f"the PKCS#11 KMS on token {self.config.token_label!r} is closed")
            if self._lost or self._gen != _generation[0]:
                self._reconnect()
            try:
                idx = self._index
                if time.monotonic() - idx.at > max_age:
                    idx = self._scan()
                try:
                    return op(idx, False)
                except (_Stale, *_GONE):
                    return op(self._scan(), True)
            except _TokenLost:
                self._lose()
                raise KMSUnavailable(
                    f"PKCS#11 token {self.config.token_label!r} no longer shows this deployment's keys "
                    f"(removed or unreachable): {what} failed; retry once it is back"
                ) from None
            except p11e.PKCS11Error as e:
                if isinstance(e, _LOST):
                    self._lose()
                raise KMSUnavailable(
                    f"PKCS#11 token {self.config.token_label!r}: {what} failed ({type(e).__name__})"
                ) from None

    def _lose(self) -> None:
        self._lost = True
        self._index = _Index()
        self._retry_at = time.monotonic() + RECONNECT_INTERVAL_S

    def _reconnect(self) -> None:
        """After a loss: re-initialise the library (once per process and loss), log in again and
        check the token holds this deployment's keys. At most every RECONNECT_INTERVAL_S."""
        if self._lost and time.monotonic() < self._retry_at:
            raise KMSUnavailable(f"PKCS#11 token {self.config.token_label!r} is unavailable; retrying shortly")
        self._retry_at = time.monotonic() + RECONNECT_INTERVAL_S
        if self._lost:
            _reinitialise(self.config, self._gen)
        gen = _generation[0]
        try:
            self._session = _connect(self.config)
        except KMSUnavailable:
            self._gen = gen  # the next attempt re-initialises again
            self._lose()
            raise
        self._gen = gen
        self._index = _Index()
        try:
            self._scan()
        except _TokenLost:
            self._lose()
            raise KMSUnavailable(f"PKCS#11 token {self.config.token_label!r} does not hold this deployment's "
                                 "keys yet; retry once it is back") from None
        except p11e.PKCS11Error as e:
            self._lose()
            raise KMSUnavailable(
                f"PKCS#11 token {self.config.token_label!r}: reconnecting failed ({type(e).__name__})"
            ) from None
        self._lost = False
        log.warning("PKCS#11 token %r is back; reconnected", self.config.token_label)

    def _scan(self) -> _Index:
        for _ in range(2):
            try:
                return self._scan_once()
            except _GONE:
                continue  # an object vanished mid-scan (destroyed elsewhere): scan again
        return self._scan_once()

    def _scan_once(self) -> _Index:
        idx = _Index(at=time.monotonic())
        for obj in self._session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY}):
            attrs = obj.get_attributes(_SCAN)
            label = attrs[Attribute.LABEL]
            if label in _MAC_LABELS:
                key_type, what, slot = KeyType.GENERIC_SECRET, f"MAC secret {label}", idx.macs.setdefault(
                    label[len(MAC_PREFIX):], [])
            else:
                try:
                    cls, version = parse_kek_id(label)
                except KeyNotFound:
                    continue  # not ours: a shared token may hold other applications' keys
                key_type, what, slot = KeyType.AES, f"KEK {label}", idx.keks.setdefault(cls, {}).setdefault(
                    version, [])
            if not _sealed(attrs, key_type):
                raise KeyIntegrityError(
                    f"token {self.config.token_label!r}: {what} is not a sealed 256-bit key generated in the "
                    "token (imported, extractable or once exposed); refusing to use the token"
                )
            slot.append(_Obj(bytes(attrs[Attribute.ID]), obj))
        for versions in idx.keks.values():
            for objs in versions.values():
                objs.sort(key=lambda o: o.oid)
        for objs in idx.macs.values():
            objs.sort(key=lambda o: o.oid)
        if self._ready and MAC_SUBJECT not in idx.macs:
            raise _TokenLost  # this KMS saw its keys before: the token went away, they did not vanish
        self._index = idx
        return idx

    def _generate(self, key_type: KeyType, label: str) -> Any:
        return self._session.generate_key(
            key_type, _KEY_BITS, id=os.urandom(_OID), label=label, store=True, template=_TEMPLATES[key_type]
        )

    def _invalidate(self) -> None:
        self._index = _Index()

    # --- reading ----------------------------------------------------------------------------
    def current(self, cls: str) -> str:
        return kek_id(cls, self._run("list keys", lambda idx, final: idx.current(cls), 0.0))

    def epoch(self, cls: str) -> int:
        return self._run("list keys", lambda idx, final: idx.current(cls), 0.0)

    def versions(self, cls: str) -> list[str]:
        return [kek_id(cls, v) for v in sorted(self._live(cls)[1])]

    def destroyed(self, cls: str) -> list[str]:
        current, live = self._live(cls)
        return [kek_id(cls, v) for v in range(1, current) if v not in live]

    def _live(self, cls: str) -> tuple[int, frozenset[int]]:
        """(current version, live versions); KeyNotFound for an unknown class, as the local KMS."""
        return self._run("list keys", lambda idx, final: (idx.current(cls), frozenset(idx.keks[cls])), 0.0)

    def classes(self) -> list[str]:
        return sorted(self._run("list keys", lambda idx, final: idx.keks, 0.0))

    # --- wrapping ---------------------------------------------------------------------------
    def wrap(self, cls: str, dek: bytes, aad: bytes) -> tuple[str, bytes]:
        def encrypt(idx: _Index, final: bool) -> tuple[str, bytes]:
            if cls not in idx.keks and not final:
                raise _Stale
            version = idx.current(cls)
            obj = idx.keks[cls][version][0]
            kid = kek_id(cls, version)
            iv = os.urandom(_IV)
            sealed = obj.key.encrypt(
                dek, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(iv, _bind(kid, obj.oid, aad), 128)
            )
            return kid, _FORMAT + obj.oid + iv + sealed

        with self._lock:
            try:
                return self._run(f"wrap under class {cls!r}", encrypt, self.config.refresh_s)
            except KeyNotFound:
                self.rotate(cls)  # first use of a user-defined class creates its v1
                return self._run(f"wrap under class {cls!r}", encrypt, self.config.refresh_s)

    def unwrap(self, kek_id: str, wrapped: bytes, aad: bytes) -> bytes:
        cls, version = parse_kek_id(kek_id)
        if len(wrapped) < 1 + _OID + _IV + _TAG or wrapped[:1] != _FORMAT:
            raise KeyIntegrityError(f"wrapped key under {kek_id} is malformed")
        oid, iv, sealed = wrapped[1 : 1 + _OID], wrapped[1 + _OID : 1 + _OID + _IV], wrapped[1 + _OID + _IV :]

        def decrypt(idx: _Index, final: bool) -> bytes:
            obj = idx.find(cls, version, oid)
            if obj is None:
                if not final:
                    raise _Stale
                raise idx.missing(kek_id)
            try:
                return bytes(obj.key.decrypt(
                    sealed, mechanism=Mechanism.AES_GCM,
                    mechanism_param=GCMParams(iv, _bind(kek_id, oid, aad), 128),
                ))
            except _BAD_CIPHERTEXT:
                raise KeyIntegrityError(
                    f"wrapped key under {kek_id} failed authentication (tampered, or moved to another "
                    "context)"
                ) from None

        return self._run(f"unwrap under {kek_id}", decrypt, float("inf"))

    def unwrap_many(self, items: Sequence[tuple[str, bytes, bytes]]) -> list[bytes | EventwardError]:
        """``unwrap`` of each (kek id, wrapped, aad) of a read batch in one locked token call (one
        index check, one rescan at most for the whole batch): each outcome is the DEK or the
        refusal ``unwrap`` would raise (KeyDestroyed, KeyNotFound, KeyIntegrityError). Every
        wrapped key is still opened and checked by the token on its own; a token error is an
        outage for the whole call (KMSUnavailable), as for one unwrap."""
        out: list[bytes | EventwardError] = []
        todo: list[tuple[int, str, str, int, bytes, bytes, bytes, bytes]] = []
        for i, (kid, wrapped, aad) in enumerate(items):
            try:
                cls, version = parse_kek_id(kid)
                if len(wrapped) < 1 + _OID + _IV + _TAG or wrapped[:1] != _FORMAT:
                    raise KeyIntegrityError(f"wrapped key under {kid} is malformed")
            except (KeyNotFound, KeyIntegrityError) as e:
                out.append(e)
                continue
            out.append(b"")  # replaced below
            todo.append((i, kid, cls, version, wrapped[1 : 1 + _OID], wrapped[1 + _OID : 1 + _OID + _IV],
                         wrapped[1 + _OID + _IV :], aad))

        def decrypt(idx: _Index, final: bool) -> list[bytes | EventwardError]:
            got: list[bytes | EventwardError] = []
            for _, kid, cls, version, oid, iv, sealed, aad in todo:
                obj = idx.find(cls, version, oid)
                if obj is None:
                    if not final:
                        raise _Stale  # the whole batch once more, on a fresh scan
                    got.append(idx.missing(kid))  # type: ignore[arg-type]
                    continue
                try:
                    got.append(bytes(obj.key.decrypt(
                        sealed, mechanism=Mechanism.AES_GCM,
                        mechanism_param=GCMParams(iv, _bind(kid, oid, aad), 128),
                    )))
                except _BAD_CIPHERTEXT:
                    got.append(KeyIntegrityError(
                        f"wrapped key under {kid} failed authentication (tampered, or moved to another context)"
                    ))
            return got

        if todo:
            for item, dek in zip(todo, self._run(f"unwrap {len(todo)} keys", decrypt, float("inf")), strict=True):
                out[item[0]] = dek
        return out

    def mac(self, name: str, data: bytes) -> bytes:
        memo = None
        if name == MAC_SUBJECT and self._memo.max_entries > 0:
            memo = hashlib.blake2b(data, key=self._memo_key, digest_size=32).digest()
            hit = self._memo.get(memo)
            if hit is not None:
                return hit

        def sign(idx: _Index, final: bool) -> bytes:
            objs = idx.macs.get(name)
            if not objs:
                if not final:
                    raise _Stale
                raise KeyNotFound(f"no MAC secret {name!r} in token {self.config.token_label!r}")
            return bytes(objs[0].key.sign(data, mechanism=Mechanism.SHA256_HMAC))

        out = self._run(f"HMAC under {name!r}", sign, float("inf"))
        if memo is not None:
            self._memo.put(memo, out)
        return out

    # --- changing ---------------------------------------------------------------------------
    def rotate(self, cls: str) -> str:
        check_class(cls)

        def generate(idx: _Index, final: bool) -> str:
            kid = kek_id(cls, max(idx.keks.get(cls, {0: []})) + 1)
            self._generate(KeyType.AES, kid)
            return kid

        with self._lock:
            try:
                return self._run(f"rotate class {cls!r}", generate, 0.0)
            finally:
                self._invalidate()

    def destroy(self, kek_id: str) -> None:
        """C_DestroyObject on every object of the version: the key is gone from the token."""
        cls, version = parse_kek_id(kek_id)

        def drop(idx: _Index, final: bool) -> None:
            current = idx.current(cls)
            if version == current:
                raise ConflictError(f"cannot destroy the current KEK {kek_id}; rotate first")
            objs = idx.keks[cls].get(version)
            if objs is None:
                if version < current:
                    return  # already destroyed
                raise KeyNotFound(f"no KEK {kek_id}")
            for obj in objs:
                obj.key.destroy()

        with self._lock:
            try:
                self._run(f"destroy {kek_id}", drop, 0.0)
            finally:
                self._invalidate()


__all__ = ["MAC_PREFIX", "Pkcs11Config", "Pkcs11KMS", "softhsm_module", "token_session"]
