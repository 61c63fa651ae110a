"""The KMS seam: holds one versioned key-encryption key (KEK) per sensitivity class.

KEK bytes never cross this protocol: callers hand in a DEK and get it back wrapped, so an HSM
(PKCS#11: CKM_AES_GCM wrap, CKM_SHA256_HMAC) can implement it as well as the local keyring.
KEK ids are ``<class>.v<N>``; N is the class *epoch* that erasure receipts refer to.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, Protocol, TypeVar

from eventward.errors import ConfigError, KeyNotFound

C = TypeVar("C")

_KEK_ID = re.compile(r"^([a-z][a-z0-9_\-]{0,31})\.v([1-9][0-9]{0,8})$")

# Names of the keyed-MAC secrets a KMS holds (created at init, never exported).
MAC_SUBJECT = "subject"
MAC_LEDGER = "ledger"


def kek_id(cls: str, version: int) -> str:
    return f"{cls}.v{version}"


def parse_kek_id(kid: str) -> tuple[str, int]:
    """Split ``pii.v3`` into ``("pii", 3)``; a malformed id can only be forged, so it is not found."""
    m = _KEK_ID.match(kid)
    if not m:
        raise KeyNotFound("malformed KEK id")
    return m.group(1), int(m.group(2))


class KMS(Protocol):
    """Every method may raise KMSUnavailable (the KMS or token did not answer: fail closed, nothing
    changed, retry later); class names are checked by ``fieldspec.check_class`` (InputError).
    Implementations are thread-safe and several processes may share one KMS."""

    def wrap(self, cls: str, dek: bytes, aad: bytes) -> tuple[str, bytes]:
        """Wrap ``dek`` under the current KEK of ``cls`` (the class's first KEK is created on first
        use): (kek id, wrapped bytes). ``aad`` is bound to the result: unwrap needs the same."""
        ...

    def unwrap(self, kek_id: str, wrapped: bytes, aad: bytes) -> bytes:
        """The DEK ``wrapped`` holds. Raises KeyDestroyed (that KEK version was destroyed),
        KeyNotFound (no such KEK, or a malformed id: it can only be forged) and KeyIntegrityError
        (``wrapped`` or ``aad`` altered, or the row moved to another kid)."""
        ...

    def rotate(self, cls: str) -> str:
        """Start a new KEK version for ``cls`` (version 1 for a new class); returns its id. Older
        versions still unwrap until destroyed; new wraps use the new one."""
        ...

    def destroy(self, kek_id: str) -> None:
        """Remove a non-current KEK version for good; unwrap with it raises KeyDestroyed afterwards.
        Idempotent for a destroyed version; ConflictError for the current one (rotate first);
        KeyNotFound for a version or class that never existed."""
        ...

    def current(self, cls: str) -> str:
        """Id of the KEK new wraps of ``cls`` use. KeyNotFound for a class with no KEK yet."""
        ...

    def versions(self, cls: str) -> list[str]:
        """Live (not destroyed) KEK ids of ``cls``, oldest first. KeyNotFound for an unknown class."""
        ...

    def destroyed(self, cls: str) -> list[str]:
        """Destroyed KEK ids of ``cls``, oldest first (what erasure receipts call ended epochs).
        KeyNotFound for an unknown class."""
        ...

    def epoch(self, cls: str) -> int:
        """Current KEK version number of ``cls`` (the N of ``<class>.vN``). KeyNotFound as ``current``."""
        ...

    def classes(self) -> list[str]:
        """Every class that has a KEK, sorted; ``[]`` before the first wrap or rotation."""
        ...

    def mac(self, name: str, data: bytes) -> bytes:
        """HMAC-SHA256 of ``data`` under the named deployment secret (MAC_SUBJECT, MAC_LEDGER),
        created on first use and never exported; the same input gives the same 32 bytes in every
        process of the deployment."""
        ...

    def close(self) -> None:
        """Release sessions and connections; idempotent. The instance is not used afterwards
        (later calls fail with KMSUnavailable)."""
        ...


def config_from_mapping(cls: type[C], doc: Mapping[str, Any], where: str, *, required: str) -> C:
    """A backend's config dataclass from its ``kms.<backend>`` section: unknown keys are refused by
    name, a missing required field names ``required``; the dataclass checks the values (callers
    refuse secrets placed in the section before calling, each naming where the secret belongs)."""
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{where} must be a mapping")
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in doc if k not in known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    for key, value in doc.items():  # NaN passes every "< 0" bound (a timeout of NaN never expires)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}.{key}: must be a finite number")
    try:
        return cls(**dict(doc))
    except TypeError:
        raise ConfigError(f"{where}: {required} required") from None
    except ConfigError as e:  # the dataclass names the field; say which section it is in
        raise ConfigError(f"{where}: {e}") from None
