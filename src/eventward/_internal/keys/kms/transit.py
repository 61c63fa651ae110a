"""Vault / OpenBao Transit KMS: KEKs live in the Transit engine of a networked server, never here.

One Transit key per class (``<prefix>.kek.<class>``, type aes256-gcm96, not exportable, no
plaintext backup): Transit's key versions are eventward's KEK versions, so ``pii.v3`` is version 3
of ``<prefix>.kek.pii``. A DEK is wrapped by ``transit/encrypt`` with the caller's context as AEAD
associated data; the wrapped bytes are Transit's own ciphertext (``vault:v3:...``), whose version
must match the KEK id it is stored under. Destroying a version is Transit's ``trim``: it deletes
every version below a bound for good, so versions end oldest first (the order KeyService uses).
The MAC secrets are separate Transit keys used only through ``transit/hmac`` at version 1.

The token comes from an environment variable or a 0600 file, never from configuration. It needs
only the Transit paths of its prefix (docs/kms.md gives the policy). Any transport or server
failure is :class:`KMSUnavailable`: callers stop and retry, they never treat it as a missing key.
"""

from __future__ import annotations

import base64
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import hvac
import requests
from hvac import exceptions as hv

from eventward._internal.fieldspec import check_class
from eventward._internal.home import read_secret
from eventward._internal.keys.cache import LruTtlCache
from eventward._internal.keys.kms.base import MAC_LEDGER, MAC_SUBJECT, config_from_mapping, kek_id, parse_kek_id
from eventward.errors import ConfigError, ConflictError, KeyDestroyed, KeyIntegrityError, KeyNotFound, KMSUnavailable

T = TypeVar("T")

_FORMAT = b"\x03"  # 0x01 local keyring, 0x02 PKCS#11: a blob names the backend that made it
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")
_PREFIX = re.compile(r"^[a-z][a-z0-9\-]{0,31}$")
_CIPHERTEXT = re.compile(rb"^vault:v([1-9][0-9]{0,8}):[A-Za-z0-9+/=]{1,4096}$")
_BAD_TAG = "message authentication failed"
_TOO_OLD = "too old"


def _number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def call_transit(what: str, op: Callable[[], T], *, any_refusal: bool = False) -> T:
    """One Transit server call: a refused token, a server or transport failure (and, with
    ``any_refusal``, any other refusal) fail closed as KMSUnavailable naming ``what``, never the token."""
    try:
        return op()
    except (hv.Forbidden, hv.Unauthorized):
        raise KMSUnavailable(f"Transit refused the token for: {what} (revoked, expired or no policy)") from None
    except (hv.VaultDown, hv.InternalServerError, hv.BadGateway, hv.RateLimitExceeded):
        raise KMSUnavailable(f"Transit server unavailable for: {what}") from None
    except hv.VaultError as e:
        if not any_refusal:
            raise
        raise KMSUnavailable(f"Transit refused: {what} ({type(e).__name__})") from None
    except requests.RequestException as e:
        raise KMSUnavailable(f"Transit server unreachable for: {what} ({type(e).__name__})") from None


@dataclass(frozen=True)
class TransitConfig:
    """Where the Transit engine is and where the token comes from (a variable name or a 0600 file).

    ``refresh_s`` bounds how long a cached view of key versions is trusted after another control
    plane replica rotated; ``mac_cache`` memoises subject MACs (0 disables)."""

    url: str
    token_env: str | None = None
    token_file: Path | None = None
    mount: str = "transit"
    key_prefix: str = "eventward"
    ca_cert: Path | None = None
    timeout_s: float = 5.0
    refresh_s: float = 1.0
    mac_cache: int = 65_536

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not re.match(r"^https?://[^\s/]+(/.*)?$", self.url):
            raise ConfigError("transit.url must be an http(s):// URL of the Vault/OpenBao server")
        if (self.token_env is None) == (self.token_file is None):
            raise ConfigError("transit needs exactly one token source: token_env (a variable name) or token_file")
        if self.token_env is not None and not (isinstance(self.token_env, str) and _ENV_NAME.match(self.token_env)):
            raise ConfigError("transit.token_env must name an environment variable (A-Z, 0-9, _), not hold the token")
        for name in ("token_file", "ca_cert"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                if not isinstance(value, str):
                    raise ConfigError(f"transit.{name} must be a path")
                object.__setattr__(self, name, Path(value))
        if not isinstance(self.mount, str) or not re.match(r"^[a-z0-9][a-z0-9_\-/]{0,63}$", self.mount):
            raise ConfigError("transit.mount must be a mount path such as 'transit'")
        if not isinstance(self.key_prefix, str) or not _PREFIX.match(self.key_prefix):
            raise ConfigError("transit.key_prefix must be 1..32 of a-z, 0-9, '-' starting with a letter")
        if not _number(self.timeout_s) or self.timeout_s <= 0:
            raise ConfigError("transit.timeout_s must be a number of seconds > 0")
        if not _number(self.refresh_s) or self.refresh_s < 0:
            raise ConfigError("transit.refresh_s must be a number of seconds >= 0")
        if not isinstance(self.mac_cache, int) or isinstance(self.mac_cache, bool) or self.mac_cache < 0:
            raise ConfigError("transit.mac_cache must be an integer >= 0")

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any], where: str = "kms.transit") -> TransitConfig:
        """From a config section; unknown keys and a literal token are refused by name."""
        if isinstance(doc, Mapping) and "token" in doc:
            raise ConfigError(f"{where}: never put the token in configuration; use token_env or token_file")
        return config_from_mapping(cls, doc, where, required="url is")

    def read_token(self) -> str:
        if self.token_env is not None:
            token = os.environ.get(self.token_env, "")
            if not token:
                raise KMSUnavailable("the environment variable named by transit.token_env is not set or empty")
            return token
        assert self.token_file is not None
        token = read_secret(self.token_file).decode(errors="replace").strip()
        if not token:
            raise KMSUnavailable(f"token file {self.token_file} is empty")
        return token


@dataclass(frozen=True)
class _Key:
    """One Transit key as last read, and when: live versions are ``min_live..latest``."""

    latest: int
    min_live: int
    at: float


class TransitKMS:
    """KEKs in Vault/OpenBao Transit. Open with :meth:`create` or :meth:`open`; implements kms.base.KMS."""

    def __init__(self, config: TransitConfig) -> None:
        self.config = config
        self._lock = threading.RLock()
        self._keys: dict[str, _Key] = {}
        self._memo: LruTtlCache[tuple[str, bytes], bytes] = LruTtlCache(config.mac_cache, float("inf"), time.monotonic)
        verify: bool | str = str(config.ca_cert) if config.ca_cert else True
        self._client = hvac.Client(url=config.url, token=config.read_token(), verify=verify, timeout=config.timeout_s)
        self._closed = False

    def __repr__(self) -> str:  # never the token
        return f"TransitKMS(url={self.config.url!r}, mount={self.config.mount!r}, prefix={self.config.key_prefix!r})"

    # --- opening -------------------------------------------------------------------------
    @classmethod
    def create(cls, config: TransitConfig, classes: tuple[str, ...] = ("pii", "payment", "health")) -> TransitKMS:
        """Create the MAC keys and a v1 KEK per class; refuses a prefix that already holds keys."""
        for c in classes:
            check_class(c)
        kms = cls(config)
        try:
            if kms._call("list keys", kms._list):
                raise ConflictError(f"Transit mount {config.mount!r} already holds keys under prefix "
                                    f"{config.key_prefix!r}; refusing to initialise it again")
            for name in (MAC_SUBJECT, MAC_LEDGER):
                kms._create(kms._mac_name(name))
            for c in classes:
                kms._create(kms._kek_name(c))
        except BaseException:
            kms.close()
            raise
        return kms

    @classmethod
    def open(cls, config: TransitConfig) -> TransitKMS:
        kms = cls(config)
        try:
            names = kms._call("list keys", kms._list)
            if kms._mac_name(MAC_SUBJECT) not in names:
                raise KMSUnavailable(f"Transit prefix {config.key_prefix!r} holds no eventward keys: initialise it "
                                     "first (eventward init with this KMS)")
            for name in names:
                kms._check_sealed(name)
        except BaseException:
            kms.close()
            raise
        return kms

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._keys.clear()
                self._memo.clear()
                self._client.adapter.close()

    # --- names and server calls ---------------------------------------------------------
    def _kek_name(self, cls: str) -> str:
        return f"{self.config.key_prefix}.kek.{cls}"

    def _mac_name(self, name: str) -> str:
        return f"{self.config.key_prefix}.mac.{name}"

    @property
    def _transit(self) -> Any:
        return self._client.secrets.transit

    def _call(self, what: str, op: Callable[[], T]) -> T:
        """Run one server call; transport and server failures fail closed as KMSUnavailable."""
        if self._closed:
            raise KMSUnavailable("the Transit KMS is closed")
        return call_transit(what, op)

    def _list(self) -> list[str]:
        try:
            keys = self._transit.list_keys(mount_point=self.config.mount)["data"]["keys"]
        except hv.InvalidPath:
            return []  # nothing created yet
        prefix = self.config.key_prefix + "."
        return [k for k in keys if k.startswith(prefix)]

    def _create(self, name: str) -> None:
        self._call(f"create key {name}", lambda: self._transit.create_key(
            name, key_type="aes256-gcm96", exportable=False, allow_plaintext_backup=False,
            mount_point=self.config.mount))
        self._check_sealed(name)

    def _read(self, name: str) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            try:
                return self._transit.read_key(name, mount_point=self.config.mount)["data"]
            except hv.InvalidPath:
                raise KeyNotFound(f"no Transit key {name!r}") from None
        return self._call(f"read key {name}", read)

    def _check_sealed(self, name: str) -> None:
        """A key someone could export or back up in plaintext is a KEK someone may hold a copy of."""
        data = self._read(name)
        if data.get("exportable") or data.get("allow_plaintext_backup") or data.get("type") != "aes256-gcm96":
            raise KeyIntegrityError(f"Transit key {name!r} is exportable, backed up in plaintext or not "
                                    "aes256-gcm96; refusing to use it")

    def _key(self, cls: str, max_age: float) -> _Key:
        """The class key's versions, read again once older than ``max_age`` seconds."""
        with self._lock:
            known = self._keys.get(cls)
            if known is not None and time.monotonic() - known.at <= max_age:
                return known
        data = self._read(self._kek_name(cls))
        latest = int(data["latest_version"])
        live = [int(v) for v in data["keys"]]
        key = _Key(latest=latest, min_live=min(live) if live else latest + 1, at=time.monotonic())
        with self._lock:
            self._keys[cls] = key
        return key

    def _invalidate(self) -> None:
        with self._lock:
            self._keys.clear()

    # --- the KMS protocol ---------------------------------------------------------------
    def current(self, cls: str) -> str:
        return kek_id(cls, self._key(cls, self.config.refresh_s).latest)

    def epoch(self, cls: str) -> int:
        return self._key(cls, self.config.refresh_s).latest

    def versions(self, cls: str) -> list[str]:
        k = self._key(cls, 0.0)
        return [kek_id(cls, v) for v in range(k.min_live, k.latest + 1)]

    def destroyed(self, cls: str) -> list[str]:
        k = self._key(cls, 0.0)
        return [kek_id(cls, v) for v in range(1, k.min_live)]

    def classes(self) -> list[str]:
        prefix = f"{self.config.key_prefix}.kek."
        return sorted(n[len(prefix):] for n in self._call("list keys", self._list) if n.startswith(prefix))

    def wrap(self, cls: str, dek: bytes, aad: bytes) -> tuple[str, bytes]:
        check_class(cls)
        name = self._kek_name(cls)
        try:
            self._key(cls, float("inf"))
        except KeyNotFound:
            self._create(name)  # first use of a user-defined class creates its v1 (never Transit's upsert)

        def encrypt() -> dict[str, Any]:
            return self._transit.encrypt_data(
                name, plaintext=base64.b64encode(dek).decode(), associated_data=base64.b64encode(aad).decode(),
                mount_point=self.config.mount)["data"]
        try:
            data = self._call(f"wrap under class {cls!r}", encrypt)
        except (hv.InvalidRequest, hv.InvalidPath):
            raise KMSUnavailable(f"Transit refused to wrap under class {cls!r}") from None
        return kek_id(cls, int(data["key_version"])), _FORMAT + data["ciphertext"].encode()

    def unwrap(self, kek_id: str, wrapped: bytes, aad: bytes) -> bytes:
        cls, version = parse_kek_id(kek_id)
        m = _CIPHERTEXT.match(wrapped[1:]) if wrapped[:1] == _FORMAT else None
        if m is None or int(m.group(1)) != version:
            raise KeyIntegrityError(f"wrapped key under {kek_id} is not a Transit ciphertext of that version")
        key = self._key(cls, self.config.refresh_s)
        if version < key.min_live:
            raise KeyDestroyed(f"KEK {kek_id} was destroyed")
        if version > key.latest:
            key = self._key(cls, 0.0)
            if version > key.latest:
                raise KeyNotFound(f"no KEK {kek_id}")

        def decrypt() -> bytes:
            return base64.b64decode(self._transit.decrypt_data(
                self._kek_name(cls), ciphertext=m.group(0).decode(), associated_data=base64.b64encode(aad).decode(),
                mount_point=self.config.mount)["data"]["plaintext"])
        try:
            return self._call(f"unwrap under {kek_id}", decrypt)
        except hv.InvalidRequest as e:
            if _TOO_OLD in str(e):
                self._invalidate()
                raise KeyDestroyed(f"KEK {kek_id} was destroyed") from None
            if _BAD_TAG in str(e):
                raise KeyIntegrityError(f"wrapped key under {kek_id} fails authentication (tampered/moved)") from None
            raise KeyIntegrityError(f"Transit refused the wrapped key under {kek_id}") from None
        except hv.InvalidPath:
            raise KeyNotFound(f"no KEK {kek_id}") from None

    def mac(self, name: str, data: bytes) -> bytes:
        if name not in (MAC_SUBJECT, MAC_LEDGER):
            raise KeyNotFound("unknown MAC secret")
        memo = self._memo.get((name, data))
        if memo is not None:
            return memo

        def hmac() -> str:
            return self._transit.generate_hmac(
                self._mac_name(name), base64.b64encode(data).decode(), key_version=1, algorithm="sha2-256",
                mount_point=self.config.mount)["data"]["hmac"]
        try:
            out = base64.b64decode(self._call(f"MAC with {name}", hmac).split(":", 2)[2])
        except hv.InvalidPath:
            raise KMSUnavailable(f"Transit holds no MAC secret {name!r}") from None
        self._memo.put((name, data), out)
        return out

    def rotate(self, cls: str) -> str:
        check_class(cls)
        name = self._kek_name(cls)
        try:
            self._key(cls, 0.0)
        except KeyNotFound:
            self._create(name)
            return kek_id(cls, 1)
        self._call(f"rotate class {cls!r}", lambda: self._transit.rotate_key(name, mount_point=self.config.mount))
        return kek_id(cls, self._key(cls, 0.0).latest)

    def destroy(self, kek_id: str) -> None:
        """Trim every version up to ``kek_id``: Transit ends versions oldest first, for good."""
        cls, version = parse_kek_id(kek_id)
        name = self._kek_name(cls)
        key = self._key(cls, 0.0)
        if version >= key.latest:
            raise ConflictError(f"{kek_id} is the current KEK of {cls!r}; rotate before destroying it")
        if version < key.min_live:
            return  # already gone: destroy is idempotent
        if version > key.min_live:
            older = [f"{cls}.v{v}" for v in range(key.min_live, version)]
            raise ConflictError(f"Transit destroys KEK versions oldest first: destroy {', '.join(older)} first")

        def trim() -> None:
            # Two calls: hvac refuses min_encryption == min_decryption client-side; the server allows it.
            mount = self.config.mount
            self._transit.update_key_configuration(name, min_decryption_version=version + 1, mount_point=mount)
            self._transit.update_key_configuration(name, min_encryption_version=key.latest, mount_point=mount)
            self._transit.trim_key(name, min_version=version + 1, mount_point=mount)
        self._call(f"destroy {kek_id}", trim)
        self._invalidate()
