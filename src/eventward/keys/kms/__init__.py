"""KMS backends behind one seam (kms.base.KMS) and the one place that picks one from configuration.

``local`` is the keyring file next to the master key (KeyService opens it); the others keep KEKs
outside the process: ``pkcs11`` (an HSM token), ``transit`` (Vault/OpenBao Transit), ``aws``
(AWS KMS). Each backend module is imported only when configured, so its client library is needed
only by deployments that use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eventward.errors import ConfigError
from eventward.keys.kms.base import KMS

BACKENDS = ("local", "pkcs11", "transit", "aws")


def backend_name(doc: Mapping[str, Any]) -> str:
    """The configured backend, refused by name when unknown."""
    backend = doc.get("backend", "local")
    if backend not in BACKENDS:
        raise ConfigError(f"kms.backend must be one of {', '.join(BACKENDS)}")
    return str(backend)


def connect_kms(doc: Mapping[str, Any], *, create: bool) -> KMS | None:
    """Open (or, at init, create) the configured external KMS; None selects the local keyring."""
    backend = backend_name(doc)
    if backend == "local":
        return None
    section = doc.get(backend, {})
    where = f"kms.{backend}"
    if backend == "pkcs11":
        from eventward.keys.kms.pkcs11 import Pkcs11Config, Pkcs11KMS

        p11 = Pkcs11Config.from_mapping(section, where=where)
        return Pkcs11KMS.create(p11) if create else Pkcs11KMS.open(p11)
    if backend == "transit":
        from eventward.keys.kms.transit import TransitConfig, TransitKMS

        transit = TransitConfig.from_mapping(section, where=where)
        return TransitKMS.create(transit) if create else TransitKMS.open(transit)
    from eventward.keys.kms.aws import AwsKMS, AwsKmsConfig

    aws = AwsKmsConfig.from_mapping(section, where=where)
    return AwsKMS.create(aws) if create else AwsKMS.open(aws)
