"""AWS KMS: KEKs are KMS keys in an AWS account; key material never leaves AWS.

One symmetric KMS key per (class, version), named by the alias ``alias/<prefix>/<class>/v<N>``.
AWS's own automatic rotation is not used on purpose: it keeps every old backing key under the same
key id forever, so a KEK epoch could never end. A separate key per version can: ``destroy`` disables
it at once and schedules its deletion (AWS's minimum waiting period is 7 days), and eventward
refuses any key that is not ``Enabled`` itself, before asking AWS, so a version is dead from the
moment it is destroyed whatever the waiting period (and on emulators that do not enforce state).
A DEK is wrapped by ``Encrypt`` with the caller's context in the encryption context (AWS's AAD);
``Decrypt`` names the expected key id, so a blob moved to another version fails. The MAC secrets are
HMAC_256 keys used through ``GenerateMac``.

Credentials come from boto3's usual chain (environment, profile, instance role), never from
eventward's configuration. Transport failures, throttling and access denials fail closed as
:class:`KMSUnavailable`.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import boto3
import botocore.config
import botocore.exceptions as bx

from eventward._internal.fieldspec import check_class
from eventward._internal.keys.cache import LruTtlCache
from eventward._internal.keys.kms.base import MAC_LEDGER, MAC_SUBJECT, config_from_mapping, kek_id, parse_kek_id
from eventward.errors import ConfigError, ConflictError, KeyDestroyed, KeyIntegrityError, KeyNotFound, KMSUnavailable

T = TypeVar("T")

_FORMAT = b"\x04"  # 0x01 local keyring, 0x02 PKCS#11, 0x03 Transit
_PREFIX = re.compile(r"^[a-z][a-z0-9\-]{0,31}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]$")
_CONTEXT_KEY = "eventward"
_UNAVAILABLE = {
    "AccessDeniedException", "DependencyTimeoutException", "KMSInternalException", "ThrottlingException",
    "LimitExceededException", "UnrecognizedClientException", "ExpiredTokenException", "InvalidSignatureException",
}


@dataclass(frozen=True)
class AwsKmsConfig:
    """Region and naming; ``endpoint_url`` only for a VPC endpoint or a test server. ``refresh_s``
    bounds how long a key's state is trusted after another process rotated or destroyed it."""

    region: str
    key_prefix: str = "eventward"
    endpoint_url: str | None = None
    profile: str | None = None
    deletion_window_days: int = 7
    timeout_s: float = 5.0
    refresh_s: float = 1.0
    mac_cache: int = 65_536

    def __post_init__(self) -> None:
        if not isinstance(self.region, str) or not _REGION.match(self.region):
            raise ConfigError("aws.region must be an AWS region such as eu-west-1")
        if not isinstance(self.key_prefix, str) or not _PREFIX.match(self.key_prefix):
            raise ConfigError("aws.key_prefix must be 1..32 of a-z, 0-9, '-' starting with a letter")
        if self.endpoint_url is not None and not (
                isinstance(self.endpoint_url, str) and re.match(r"^https?://[^\s/]+/?$", self.endpoint_url)):
            raise ConfigError("aws.endpoint_url must be an http(s):// URL")
        if self.profile is not None and not isinstance(self.profile, str):
            raise ConfigError("aws.profile must be a profile name")
        if not isinstance(self.deletion_window_days, int) or not 7 <= self.deletion_window_days <= 30:
            raise ConfigError("aws.deletion_window_days must be an integer from 7 to 30 (AWS's bounds)")
        for name in ("timeout_s", "refresh_s"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or isinstance(v, bool) or v < 0 or (name == "timeout_s" and v == 0):
                raise ConfigError(f"aws.{name} must be a positive number of seconds")
        if not isinstance(self.mac_cache, int) or isinstance(self.mac_cache, bool) or self.mac_cache < 0:
            raise ConfigError("aws.mac_cache must be an integer >= 0")

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any], where: str = "kms.aws") -> AwsKmsConfig:
        """From a config section; credentials in the YAML are refused by name."""
        secrets = sorted(k for k in doc if str(k).lower() in ("aws_access_key_id", "aws_secret_access_key",
                                                               "access_key", "secret_key", "session_token")
                         ) if isinstance(doc, Mapping) else []
        if secrets:
            raise ConfigError(f"{where}: never put AWS credentials in configuration ({', '.join(secrets)}); "
                              "use the environment, a profile or an instance role")
        return config_from_mapping(cls, doc, where, required="region is")


@dataclass(frozen=True)
class _Version:
    key_id: str
    enabled: bool
    at: float


class AwsKMS:
    """KEKs in AWS KMS. Open with :meth:`create` or :meth:`open`; implements kms.base.KMS."""

    def __init__(self, config: AwsKmsConfig) -> None:
        self.config = config
        self._lock = threading.RLock()
        self._versions: dict[tuple[str, int], _Version] = {}
        self._aliases_at = -1e18
        self._aliases: dict[str, str] = {}
        self._memo: LruTtlCache[tuple[str, bytes], bytes] = LruTtlCache(config.mac_cache, float("inf"), time.monotonic)
        session = boto3.session.Session(profile_name=config.profile, region_name=config.region)
        self._kms = session.client(
            "kms", endpoint_url=config.endpoint_url,
            config=botocore.config.Config(connect_timeout=config.timeout_s, read_timeout=config.timeout_s,
                                          retries={"max_attempts": 2}))
        self._closed = False

    def __repr__(self) -> str:
        return f"AwsKMS(region={self.config.region!r}, prefix={self.config.key_prefix!r})"

    @classmethod
    def create(cls, config: AwsKmsConfig, classes: tuple[str, ...] = ("pii", "payment", "health")) -> AwsKMS:
        """Create the MAC keys and a v1 KEK per class; refuses a prefix that already holds keys."""
        for c in classes:
            check_class(c)
        kms = cls(config)
        try:
            if kms._alias_map(0.0):
                raise ConflictError(f"AWS KMS already holds keys under alias/{config.key_prefix}/; "
                                    "refusing to initialise them again")
            for name in (MAC_SUBJECT, MAC_LEDGER):
                kms._new_key(kms._mac_alias(name), "HMAC_256", "GENERATE_VERIFY_MAC")
            for c in classes:
                kms._new_key(kms._kek_alias(c, 1), "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT")
        except BaseException:
            kms.close()
            raise
        return kms

    @classmethod
    def open(cls, config: AwsKmsConfig) -> AwsKMS:
        kms = cls(config)
        try:
            if kms._mac_alias(MAC_SUBJECT) not in kms._alias_map(0.0):
                raise KMSUnavailable(f"AWS KMS holds no eventward keys under alias/{config.key_prefix}/: "
                                     "initialise them first (eventward init with this KMS)")
        except BaseException:
            kms.close()
            raise
        return kms

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._versions.clear()
            self._memo.clear()

    # --- AWS calls ----------------------------------------------------------------------
    def _call(self, what: str, op: Callable[[], T]) -> T:
        if self._closed:
            raise KMSUnavailable("the AWS KMS is closed")
        try:
            return op()
        except bx.ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in _UNAVAILABLE:
                raise KMSUnavailable(f"AWS KMS refused or failed: {what} ({code})") from None
            raise
        except (bx.BotoCoreError, OSError) as e:
            raise KMSUnavailable(f"AWS KMS unreachable for: {what} ({type(e).__name__})") from None

    def _kek_alias(self, cls: str, version: int) -> str:
        return f"alias/{self.config.key_prefix}/{cls}/v{version}"

    def _mac_alias(self, name: str) -> str:
        return f"alias/{self.config.key_prefix}/mac/{name}"

    def _new_key(self, alias: str, spec: str, usage: str) -> str:
        def make() -> str:
            key_id = self._kms.create_key(
                KeySpec=spec, KeyUsage=usage, Description=f"eventward {alias}",
                Tags=[{"TagKey": "eventward", "TagValue": self.config.key_prefix}])["KeyMetadata"]["KeyId"]
            try:
                self._kms.create_alias(AliasName=alias, TargetKeyId=key_id)
            except bx.ClientError as e:
                # Another process made the same version first: keep one key per alias, drop ours.
                self._kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
                if e.response.get("Error", {}).get("Code") == "AlreadyExistsException":
                    raise ConflictError(f"{alias} was created concurrently") from None
                raise
            return key_id
        key_id = self._call(f"create {alias}", make)
        with self._lock:
            self._aliases[alias] = key_id
        return key_id

    def _alias_map(self, max_age: float) -> dict[str, str]:
        with self._lock:
            if time.monotonic() - self._aliases_at <= max_age:
                return self._aliases

        def page() -> dict[str, str]:
            out: dict[str, str] = {}
            prefix = f"alias/{self.config.key_prefix}/"
            for p in self._kms.get_paginator("list_aliases").paginate():
                for a in p["Aliases"]:
                    if a["AliasName"].startswith(prefix) and "TargetKeyId" in a:
                        out[a["AliasName"]] = a["TargetKeyId"]
            return out
        aliases = self._call("list aliases", page)
        with self._lock:
            self._aliases, self._aliases_at = aliases, time.monotonic()
        return aliases

    def _live(self, cls: str, max_age: float) -> list[int]:
        """Version numbers of ``cls`` whose alias still exists (enabled or not), ascending."""
        prefix = f"alias/{self.config.key_prefix}/{cls}/v"
        return sorted(int(a[len(prefix):]) for a in self._alias_map(max_age) if a.startswith(prefix)
                      and a[len(prefix):].isdigit())

    def _version(self, cls: str, version: int, max_age: float) -> _Version:
        with self._lock:
            v = self._versions.get((cls, version))
            if v is not None and time.monotonic() - v.at <= max_age:
                return v
        key_id = self._alias_map(max_age).get(self._kek_alias(cls, version)) or self._alias_map(0.0).get(
            self._kek_alias(cls, version))
        if key_id is None:
            if any(n > version for n in self._live(cls, 0.0)):
                raise KeyDestroyed(f"KEK {kek_id(cls, version)} was destroyed")
            raise KeyNotFound(f"no KEK {kek_id(cls, version)}")
        meta = self._call(f"describe {kek_id(cls, version)}", lambda: self._kms.describe_key(KeyId=key_id))
        enabled = meta["KeyMetadata"]["KeyState"] == "Enabled"
        v = _Version(key_id, enabled, time.monotonic())
        with self._lock:
            self._versions[(cls, version)] = v
        return v

    # --- the KMS protocol ---------------------------------------------------------------
    def _latest(self, cls: str, max_age: float) -> int:
        live = self._live(cls, max_age)
        if not live:
            raise KeyNotFound(f"no KEK for class {cls!r}")
        return live[-1]

    def current(self, cls: str) -> str:
        return kek_id(cls, self._latest(cls, self.config.refresh_s))

    def epoch(self, cls: str) -> int:
        return self._latest(cls, self.config.refresh_s)

    def versions(self, cls: str) -> list[str]:
        return [kek_id(cls, n) for n in self._live(cls, 0.0) if self._version(cls, n, 0.0).enabled]

    def destroyed(self, cls: str) -> list[str]:
        live = set(self.versions(cls))
        return [kek_id(cls, n) for n in range(1, self._latest(cls, 0.0)) if kek_id(cls, n) not in live]

    def classes(self) -> list[str]:
        prefix = f"alias/{self.config.key_prefix}/"
        return sorted({a[len(prefix):].split("/")[0] for a in self._alias_map(self.config.refresh_s)
                       if not a.startswith(prefix + "mac/")})

    def wrap(self, cls: str, dek: bytes, aad: bytes) -> tuple[str, bytes]:
        check_class(cls)
        try:
            version = self._latest(cls, self.config.refresh_s)
        except KeyNotFound:
            self._new_key(self._kek_alias(cls, 1), "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT")  # first use of a class
            version = 1
        v = self._version(cls, version, self.config.refresh_s)
        if not v.enabled:
            raise KMSUnavailable(f"the current KEK {kek_id(cls, version)} is not enabled in AWS KMS")
        blob = self._call(f"wrap under {kek_id(cls, version)}", lambda: self._kms.encrypt(
            KeyId=v.key_id, Plaintext=dek, EncryptionContext=_context(aad))["CiphertextBlob"])
        return kek_id(cls, version), _FORMAT + blob

    def unwrap(self, kek_id: str, wrapped: bytes, aad: bytes) -> bytes:
        cls, version = parse_kek_id(kek_id)
        if wrapped[:1] != _FORMAT or len(wrapped) < 2:
            raise KeyIntegrityError(f"wrapped key under {kek_id} is not an AWS KMS ciphertext")
        v = self._version(cls, version, self.config.refresh_s)
        if not v.enabled:
            raise KeyDestroyed(f"KEK {kek_id} was destroyed")

        def decrypt() -> bytes:
            try:
                return self._kms.decrypt(CiphertextBlob=wrapped[1:], KeyId=v.key_id,
                                         EncryptionContext=_context(aad))["Plaintext"]
            except bx.ClientError as e:
                if e.response.get("Error", {}).get("Code") != "AccessDeniedException":
                    raise
                # A blob naming a key we cannot use (forged or edited) is denied; our own key still
                # answering proves the credentials are fine, so the blob is what is wrong.
                self._kms.describe_key(KeyId=v.key_id)
                raise bx.ClientError({"Error": {"Code": "IncorrectKeyException"}}, "Decrypt") from None
        try:
            return self._call(f"unwrap under {kek_id}", decrypt)
        except bx.ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("DisabledException", "KMSInvalidStateException", "NotFoundException"):
                with self._lock:
                    self._versions.pop((cls, version), None)
                raise KeyDestroyed(f"KEK {kek_id} was destroyed") from None
            raise KeyIntegrityError(f"wrapped key under {kek_id} fails authentication (tampered/moved)") from None

    def mac(self, name: str, data: bytes) -> bytes:
        if name not in (MAC_SUBJECT, MAC_LEDGER):
            raise KeyNotFound("unknown MAC secret")
        memo = self._memo.get((name, data))
        if memo is not None:
            return memo
        key_id = self._alias_map(float("inf")).get(self._mac_alias(name))
        if key_id is None:
            raise KMSUnavailable(f"AWS KMS holds no MAC secret {name!r}")
        out = self._call(f"MAC with {name}", lambda: self._kms.generate_mac(
            KeyId=key_id, Message=data, MacAlgorithm="HMAC_SHA_256")["Mac"])
        self._memo.put((name, data), out)
        return out

    def rotate(self, cls: str) -> str:
        check_class(cls)
        try:
            version = self._latest(cls, 0.0) + 1
        except KeyNotFound:
            version = 1
        self._new_key(self._kek_alias(cls, version), "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT")
        return kek_id(cls, version)

    def destroy(self, kek_id: str) -> None:
        """Disable now and schedule deletion; eventward treats the version as gone from this call on."""
        cls, version = parse_kek_id(kek_id)
        if version >= self._latest(cls, 0.0):
            raise ConflictError(f"{kek_id} is the current KEK of {cls!r}; rotate before destroying it")
        try:
            v = self._version(cls, version, 0.0)
        except KeyDestroyed:
            return  # already gone: destroy is idempotent

        def end() -> None:
            self._kms.disable_key(KeyId=v.key_id)
            self._kms.schedule_key_deletion(KeyId=v.key_id, PendingWindowInDays=self.config.deletion_window_days)
        try:
            self._call(f"destroy {kek_id}", end)
        except bx.ClientError as e:
            if e.response.get("Error", {}).get("Code") != "KMSInvalidStateException":  # already pending
                raise KMSUnavailable(f"AWS KMS refused to destroy {kek_id}") from None
        with self._lock:
            self._versions[(cls, version)] = _Version(v.key_id, False, time.monotonic())


def _context(aad: bytes) -> dict[str, str]:
    """AWS's AAD is a string map: the caller's context, base64url, under one fixed name."""
    return {_CONTEXT_KEY: base64.urlsafe_b64encode(aad).decode()}
