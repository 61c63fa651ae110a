"""Gateway configuration: the ``gateway:`` section of ``eventward.yaml``, checked before anything binds.

Every limit has a safe default, and combinations that could never work (a burst smaller than a
batch, an event larger than a request) are refused at startup rather than discovered by clients.
The settings dataclasses live in ``eventward._internal.config`` (parsed once, with the rest of the file, so
``Config.gateway`` is typed without importing the HTTP stack); this module re-exports them and
resolves the certificate files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eventward._internal.config import (
    AUTH_MODES,
    HARD_MAX_BATCH,
    HARD_MAX_CONSUME,
    GatewayConfig,
    JwtConfig,
    LimitsConfig,
    TlsConfig,
)
from eventward._internal.home import Home
from eventward._internal.pki import ca_paths

__all__ = [
    "AUTH_MODES", "HARD_MAX_BATCH", "HARD_MAX_CONSUME", "SERVER_CERT", "GatewayConfig", "JwtConfig",
    "LimitsConfig", "TlsConfig", "TlsFiles", "tls_files",
]

SERVER_CERT = "gateway"  # <home>/certs/gateway.crt|.key, issued by the deployment CA


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    client_ca: Path | None
    crl: Path | None = None


def tls_files(cfg: GatewayConfig, home: Home) -> TlsFiles:
    """Concrete certificate paths: configured ones, else the home's ``certs/`` defaults."""
    d = home.certs
    cert = Path(cfg.tls.cert) if cfg.tls.cert else d / f"{SERVER_CERT}.crt"
    key = Path(cfg.tls.key) if cfg.tls.key else d / f"{SERVER_CERT}.key"
    ca = Path(cfg.tls.client_ca) if cfg.tls.client_ca else ca_paths(d)[0]
    crl = Path(cfg.tls.crl) if cfg.tls.crl else (d / "crl.pem" if not cfg.tls.client_ca else None)
    if cfg.auth == "jwt" and not cfg.tls.client_ca and not ca.exists():
        return TlsFiles(cert, key, None)  # JWT mode without client certificates
    return TlsFiles(cert, key, ca, crl)
