"""Gateway configuration: the ``gateway:`` section of ``eventward.yaml``, checked before anything binds.

Every limit has a safe default, and combinations that could never work (a burst smaller than a
batch, an event larger than a request) are refused at startup rather than discovered by clients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eventward.config import _build
from eventward.errors import ConfigError
from eventward.gateway.jwks import check_algorithms
from eventward.gateway.mapping import DEFAULT_RULES
from eventward.home import Home
from eventward.pki import ca_paths

AUTH_MODES = ("mtls", "jwt")
SERVER_CERT = "gateway"  # <home>/certs/gateway.crt|.key, issued by the deployment CA
HARD_MAX_BATCH = 1000  # the OpenAPI document's maxItems; config may only lower it
HARD_MAX_CONSUME = 1000


@dataclass
class TlsConfig:
    cert: str | None = None  # default: <home>/certs/gateway.crt
    key: str | None = None  # default: <home>/certs/gateway.key (must be mode 0600)
    client_ca: str | None = None  # default: <home>/certs/ca.crt (the deployment CA)
    handshake_timeout_s: float = 10.0
    crl: str | None = None  # default: <home>/certs/crl.pem when it exists
    reload_s: float = 5.0  # certificate, key, CA and CRL files re-read this often (0: never)
    expiry_warn_days: float = 14.0  # certificates in the home's book expiring sooner are alerted


@dataclass
class JwtConfig:
    jwks_file: str | None = None
    jwks_url: str | None = None
    issuer: str = ""
    audience: str = ""
    algorithms: list[str] = field(default_factory=lambda: ["RS256", "ES256", "EdDSA"])
    principal_claim: str = "sub"
    leeway_s: float = 30.0
    fetch_timeout_s: float = 5.0
    refresh_s: float = 300.0
    # keys not refreshed successfully for this long are dropped: every token is refused (fail closed)
    max_key_age_s: float = 3600.0
    issuer_alias: str = ""  # default: the issuer URL's host name
    # Kafka-style rules over "<issuer-alias>:<sub>"; unmatched subjects become "jwt:<alias>:<sub>"
    subject_rules: str = ""


@dataclass
class LimitsConfig:
    max_body_bytes: int = 4 * 1024 * 1024
    max_event_bytes: int = 1024 * 1024
    max_batch_events: int = 500
    rate_events_per_s: float = 2000.0
    burst_events: int = 4000
    max_principals: int = 100_000  # token buckets kept (LRU)
    header_timeout_s: float = 10.0  # whole request head, from connect (slowloris)
    body_timeout_s: float = 30.0  # whole request body
    max_consume_events: int = 1000
    max_consume_bytes: int = 4 * 1024 * 1024
    max_wait_s: float = 30.0
    max_waiting_consumers: int = 256  # concurrent long polls; beyond it, polls return at once
    max_connections: int = 1024
    # per client IP, before authentication (no signature check or TLS-bound lookup for a flood)
    preauth_rate_per_ip_per_s: float = 1000.0
    preauth_burst_per_ip: int = 2000
    max_preauth_ips: int = 100_000


@dataclass
class GatewayConfig:
    host: str = "127.0.0.1"
    port: int = 8443
    auth: str = "mtls"
    principal_mapping_rules: str = DEFAULT_RULES
    tls: TlsConfig = field(default_factory=TlsConfig)
    jwt: JwtConfig = field(default_factory=JwtConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)

    @classmethod
    def from_mapping(
        cls, doc: dict[str, Any] | None, where: str = "eventward.yaml: gateway"
    ) -> GatewayConfig:
        cfg: GatewayConfig = _build(cls, doc or {}, where)
        cfg.validate(where)
        return cfg

    @classmethod
    def load(cls, home: Home) -> GatewayConfig:
        from eventward.config import Config

        return cls.from_mapping(Config.load(home.config).gateway)

    def validate(self, where: str = "gateway") -> None:
        if self.auth not in AUTH_MODES:
            raise ConfigError(f"{where}.auth must be one of {', '.join(AUTH_MODES)}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"{where}.port must be 0..65535")
        lim = self.limits
        for name in (
            "max_body_bytes",
            "max_event_bytes",
            "max_batch_events",
            "rate_events_per_s",
            "burst_events",
            "max_principals",
            "header_timeout_s",
            "body_timeout_s",
            "max_consume_events",
            "max_consume_bytes",
            "max_waiting_consumers",
            "max_connections",
            "preauth_rate_per_ip_per_s",
            "preauth_burst_per_ip",
            "max_preauth_ips",
        ):
            if getattr(lim, name) <= 0:
                raise ConfigError(f"{where}.limits.{name} must be positive")
        if lim.max_wait_s < 0:
            raise ConfigError(f"{where}.limits.max_wait_s must not be negative")
        if lim.max_batch_events > HARD_MAX_BATCH:
            raise ConfigError(f"{where}.limits.max_batch_events must be at most {HARD_MAX_BATCH}")
        if lim.max_consume_events > HARD_MAX_CONSUME:
            raise ConfigError(f"{where}.limits.max_consume_events must be at most {HARD_MAX_CONSUME}")
        if lim.burst_events < lim.max_batch_events:
            raise ConfigError(
                f"{where}.limits.burst_events must be >= max_batch_events (a full batch must fit)"
            )
        if lim.max_event_bytes > lim.max_body_bytes:
            raise ConfigError(f"{where}.limits.max_event_bytes must be <= max_body_bytes")
        if self.tls.reload_s < 0:
            raise ConfigError(f"{where}.tls.reload_s must not be negative")
        if self.tls.handshake_timeout_s <= 0:
            raise ConfigError(f"{where}.tls.handshake_timeout_s must be positive")
        if self.auth == "jwt":
            j = self.jwt
            if bool(j.jwks_file) == bool(j.jwks_url):
                raise ConfigError(f"{where}.jwt: set exactly one of jwks_file and jwks_url")
            if not j.issuer or not j.audience:
                raise ConfigError(
                    f"{where}.jwt: issuer and audience are required (tokens for others must fail)"
                )
            if not j.principal_claim:
                raise ConfigError(f"{where}.jwt.principal_claim must name a claim")
            if not 0 <= j.leeway_s <= 300:
                raise ConfigError(f"{where}.jwt.leeway_s must be 0..300 seconds")
            if j.fetch_timeout_s <= 0 or j.refresh_s <= 0:
                raise ConfigError(f"{where}.jwt: fetch_timeout_s and refresh_s must be positive")
            check_algorithms(list(j.algorithms))
            if j.max_key_age_s < j.refresh_s:
                raise ConfigError(f"{where}.jwt.max_key_age_s must be >= refresh_s")
            from eventward.gateway.auth import alias_of_issuer
            from eventward.gateway.mapping import parse_rules

            alias_of_issuer(j.issuer, j.issuer_alias)
            parse_rules(j.subject_rules)


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
