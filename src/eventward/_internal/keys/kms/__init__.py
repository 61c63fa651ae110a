"""KMS backends behind one seam (kms.base.KMS) and the one place that picks one from configuration.

``local`` is the keyring file next to the master key (KeyService opens it); the others keep KEKs
outside the process: ``pkcs11`` (an HSM token), ``transit`` (Vault/OpenBao Transit), ``aws``
(AWS KMS). Each backend module is imported only when configured, so its client library is needed
only by deployments that use it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eventward._internal.keys.kms.base import KMS
from eventward.errors import ConfigError

if TYPE_CHECKING:
    from eventward._internal.keys.kms.aws import AwsKmsConfig
    from eventward._internal.keys.kms.pkcs11 import Pkcs11Config
    from eventward._internal.keys.kms.transit import TransitConfig

BACKENDS = ("local", "pkcs11", "transit", "aws")
_SECTIONS = BACKENDS[1:]


def backend_name(doc: Mapping[str, Any]) -> str:
    """The configured backend, refused by name when unknown."""
    backend = doc.get("backend", "local")
    if backend not in BACKENDS:
        raise ConfigError(f"kms.backend must be one of {', '.join(BACKENDS)}")
    return str(backend)


@dataclass(frozen=True)
class KmsConfig(Mapping[str, Any]):
    """The ``kms:`` section of ``eventward.yaml``, parsed once when the configuration loads: the
    backend and each backend section present as that backend's own frozen config (unknown keys,
    missing fields and secrets written in the file refused by name, naming where they belong).

    It also reads as the mapping it was written as (``cfg.kms["transit"]`` is that section's
    plain form), for code that hands a section on, such as ``pki.ca_key`` reusing ``kms.<backend>``.
    """

    backend: str = "local"
    pkcs11: Pkcs11Config | None = None
    transit: TransitConfig | None = None
    aws: AwsKmsConfig | None = None

    def __post_init__(self) -> None:
        backend_name({"backend": self.backend})
        if self.backend != "local" and getattr(self, self.backend) is None:
            raise ConfigError(f"kms.backend is {self.backend}: the kms.{self.backend} section is required")

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any] | None, where: str = "kms") -> KmsConfig:
        """Check a ``kms:`` section. ConfigError names the key at fault, never a secret's value."""
        if isinstance(doc, KmsConfig):
            return doc
        doc = {} if doc is None else doc
        if not isinstance(doc, Mapping):
            raise ConfigError(f"{where} must be a mapping")
        unknown = sorted(str(k) for k in doc if k not in ("backend", *_SECTIONS))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
        backend = backend_name(doc)
        sections: dict[str, Any] = {}
        for name in _SECTIONS:
            section = doc.get(name)
            if section is None and name == backend:
                section = {}  # the backend's own checks then name its required fields
            if section is not None:
                sections[name] = _section_class(name).from_mapping(section, where=f"{where}.{name}")
        return cls(backend, **sections)

    # --- read as the mapping it was written as ------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        if key == "backend":
            return self.backend
        section = getattr(self, key, None) if key in _SECTIONS else None
        if section is None:
            raise KeyError(key)
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(section).items() if v is not None}

    def __iter__(self) -> Iterator[str]:
        yield "backend"
        yield from (name for name in _SECTIONS if getattr(self, name) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _section_class(name: str) -> Any:
    if name == "pkcs11":
        from eventward._internal.keys.kms.pkcs11 import Pkcs11Config

        return Pkcs11Config
    if name == "transit":
        from eventward._internal.keys.kms.transit import TransitConfig

        return TransitConfig
    from eventward._internal.keys.kms.aws import AwsKmsConfig

    return AwsKmsConfig


def connect_kms(config: KmsConfig | Mapping[str, Any], *, create: bool) -> KMS | None:
    """Open (or, at init, ``create``) the configured external KMS; None selects the local keyring
    (KeyService opens it). A mapping is parsed as ``KmsConfig.from_mapping`` would. Raises
    ConfigError for a bad section, KMSUnavailable when the KMS does not answer."""
    cfg = KmsConfig.from_mapping(config)
    if cfg.backend == "pkcs11" and cfg.pkcs11 is not None:
        from eventward._internal.keys.kms.pkcs11 import Pkcs11KMS

        return Pkcs11KMS.create(cfg.pkcs11) if create else Pkcs11KMS.open(cfg.pkcs11)
    if cfg.backend == "transit" and cfg.transit is not None:
        from eventward._internal.keys.kms.transit import TransitKMS

        return TransitKMS.create(cfg.transit) if create else TransitKMS.open(cfg.transit)
    if cfg.backend == "aws" and cfg.aws is not None:
        from eventward._internal.keys.kms.aws import AwsKMS

        return AwsKMS.create(cfg.aws) if create else AwsKMS.open(cfg.aws)
    return None
