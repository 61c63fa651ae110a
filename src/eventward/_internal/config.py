"""Deployment configuration (``eventward.yaml`` in the home): which transport, and tunables.

Configuration chooses the transport for SDK, CLI and gateway alike. Unknown keys are
refused by name (a typo must not silently fall back to a default), and every value is
type-checked before anything starts.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Any, Union, get_args, get_origin, get_type_hints

import yaml

from eventward._internal.casigner import PkiConfig
from eventward._internal.keys.kms import KmsConfig
from eventward.errors import ConfigError

if TYPE_CHECKING:
    from eventward._internal.home import Home

TRANSPORTS = ("embedded", "nats", "kafka")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_NONE = object()


@dataclass
class NatsConfig:
    servers: list[str] = field(default_factory=lambda: ["nats://127.0.0.1:4222"])
    replicas: int = 1
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password_env: str | None = None  # name of an environment variable, never the secret itself
    creds: str | None = None
    timeout_s: float = 5.0


@dataclass
class KafkaConfig:
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: str = "PLAINTEXT"
    ssl_ca: str | None = None
    ssl_cert: str | None = None
    ssl_key: str | None = None
    # librdkafka properties passed through as they are (e.g. ``linger.ms: 5``): scalars only, so a
    # nested mapping or a list is refused at load instead of by librdkafka at the first connect
    extra: dict[str, str | int | float | bool] = field(default_factory=dict)


@dataclass
class ProducerConfig:
    batch_max: int = 500
    linger_ms: int = 50


@dataclass
class ConsumerConfig:
    freshness_s: float = 24 * 3600.0
    dedup_window: int = 100_000
    max_retries: int = 3
    uncleared: str = "redact"  # or "token"


@dataclass
class SealsConfig:
    # Streams whose batches must carry hybrid (Ed25519 + ML-DSA-65) seals: exact names, or a
    # prefix ending in "*". A consumer refuses Ed25519-only seals there (reason hybrid_required).
    require_hybrid: list[str] = field(default_factory=list)


@dataclass
class KeysConfig:
    # A class's KEK epoch ends (rotate, re-wrap, destroy the old version in the KMS) once it is
    # older than this: ``keys rotate --due`` and ``serve`` (checked every ``rotate_check_s``).
    kek_max_age_days: float = 90.0
    rotate_check_s: float = 3600.0


@dataclass(frozen=True)
class ReconcilerConfig:
    # On NATS, ``serve`` tails every topic stream and audits the direct path: a Publish record per
    # verified sealed batch, a refusal and an alert for the others, consumer-group progress
    # (control/reconciler.py). ``grace_s`` holds batches of home-mode keys, whose producers write
    # their own records; client-mode (enrolled) keys are audited at once.
    enabled: bool = True
    interval_s: float = 1.0
    grace_s: float = 60.0
    progress_s: float = 10.0


STORE_BACKENDS = ("sqlite", "postgres")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_INLINE_DSN_KEYS = ("dsn", "url", "uri", "conninfo", "password")


@dataclass
class StoreConfig:
    # Where control-plane state lives: SQLite files in the home (default), or one PostgreSQL
    # database every replica shares. A DSN may hold a password, so it is never written here:
    # dsn_env names an environment variable, dsn_file a 0600 file (relative to the home).
    backend: str = "sqlite"
    dsn_env: str | None = None
    dsn_file: str | None = None
    pool_min: int = 1
    pool_max: int = 8
    connect_timeout_s: float = 5.0
    # Bound on every wait for the server's answer (a frozen or partitioned database answers
    # nothing, and PostgreSQL's own statement_timeout cannot fire then): past it, StoreUnavailable.
    statement_timeout_s: float = 5.0


def _refuse_inline_dsn(doc: Any, name: str) -> None:
    """A DSN (or password) written in the YAML is refused by name, never echoed."""
    store = doc.get("store") if isinstance(doc, dict) else None
    for key in _INLINE_DSN_KEYS:
        if isinstance(store, dict) and key in store:
            raise ConfigError(
                f"{name}: store.{key}: a DSN or password is never written in {name}; put the DSN in an "
                "environment variable named by store.dsn_env, or in a 0600 file named by store.dsn_file"
            )


def _check_store(s: StoreConfig, name: str) -> None:
    if s.backend not in STORE_BACKENDS:
        raise ConfigError(f"{name}: store.backend must be one of {', '.join(STORE_BACKENDS)}")
    if s.backend == "sqlite" and (s.dsn_env or s.dsn_file):
        raise ConfigError(f"{name}: store.dsn_env and store.dsn_file apply to store.backend: postgres only")
    if s.backend == "postgres" and bool(s.dsn_env) == bool(s.dsn_file):
        raise ConfigError(f"{name}: store.backend postgres needs exactly one of store.dsn_env, store.dsn_file")
    if s.dsn_env is not None and not _ENV_NAME.fullmatch(s.dsn_env):
        raise ConfigError(f"{name}: store.dsn_env is the name of an environment variable (letters, digits, _), "
                          "not the DSN itself")
    if s.dsn_file is not None and ("://" in s.dsn_file or "=" in s.dsn_file):
        raise ConfigError(f"{name}: store.dsn_file is the path of a file holding the DSN, not the DSN itself")
    if not (0 <= s.pool_min <= s.pool_max and s.pool_max >= 1 and s.connect_timeout_s > 0):
        raise ConfigError(f"{name}: store needs 0 <= pool_min <= pool_max, pool_max >= 1, connect_timeout_s > 0")
    if not (0 < s.statement_timeout_s <= 3600):
        raise ConfigError(f"{name}: store.statement_timeout_s must be > 0 and <= 3600 (seconds)")


AUTH_MODES = ("mtls", "jwt")
HARD_MAX_BATCH = 1000  # the OpenAPI document's maxItems; config may only lower it
HARD_MAX_CONSUME = 1000
# Safe out of the box: the principal is a plain CN (eventward._internal.pki's charset), which must come
# first in the RFC 4514 string (CN issued last in ASN.1 order, the usual way). The charset has no
# ',', '+' or '\\', so an escaped comma inside another attribute is never taken for an RDN boundary.
DEFAULT_PRINCIPAL_RULES = r"RULE:^CN=([A-Za-z0-9][A-Za-z0-9@._:-]{0,127})(,.*)?$/$1/"


@dataclass(frozen=True)
class TlsConfig:
    cert: str | None = None  # default: <home>/certs/gateway.crt
    key: str | None = None  # default: <home>/certs/gateway.key (must be mode 0600)
    client_ca: str | None = None  # default: <home>/certs/ca.crt (the deployment CA)
    handshake_timeout_s: float = 10.0
    crl: str | None = None  # default: <home>/certs/crl.pem when it exists
    reload_s: float = 5.0  # certificate, key, CA and CRL files re-read this often (0: never)
    expiry_warn_days: float = 14.0  # certificates in the home's book expiring sooner are alerted


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class GatewayConfig:
    """The ``gateway:`` section (``eventward serve``), parsed and checked once when the configuration
    loads: combinations that could never work (a burst smaller than a batch, an event larger than a
    request) are refused at startup rather than discovered by clients. Change a copy with
    ``dataclasses.replace``."""

    host: str = "127.0.0.1"
    port: int = 8443
    auth: str = "mtls"
    principal_mapping_rules: str = DEFAULT_PRINCIPAL_RULES
    tls: TlsConfig = field(default_factory=TlsConfig)
    jwt: JwtConfig = field(default_factory=JwtConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)

    @classmethod
    def from_mapping(
        cls, doc: dict[str, Any] | GatewayConfig | None, where: str = "eventward.yaml: gateway"
    ) -> GatewayConfig:
        """Check a ``gateway:`` section; ConfigError names the key at fault."""
        cfg: GatewayConfig = doc if isinstance(doc, GatewayConfig) else _build(cls, doc or {}, where)
        cfg.validate(where)
        return cfg

    @classmethod
    def load(cls, home: Home) -> GatewayConfig:
        return Config.load(home.config).gateway

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
            self._validate_jwt(where)

    def _validate_jwt(self, where: str) -> None:
        from eventward._internal.gateway.auth import alias_of_issuer  # the gateway's own parsers, loaded only for JWT
        from eventward._internal.gateway.jwks import check_algorithms
        from eventward._internal.gateway.mapping import parse_rules

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
        alias_of_issuer(j.issuer, j.issuer_alias)
        parse_rules(j.subject_rules)


@dataclass
class Config:
    transport: str = "embedded"
    max_event_bytes: int = 1024 * 1024
    nats: NatsConfig = field(default_factory=NatsConfig)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    producer: ProducerConfig = field(default_factory=ProducerConfig)
    consumer: ConsumerConfig = field(default_factory=ConsumerConfig)
    seals: SealsConfig = field(default_factory=SealsConfig)
    keys: KeysConfig = field(default_factory=KeysConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    reconciler: ReconcilerConfig = field(default_factory=ReconcilerConfig)
    kms: KmsConfig = field(default_factory=KmsConfig)
    # pki.ca_key: where the deployment CA's key lives: {backend: file} by default, or pkcs11 /
    # transit / aws with that backend's section (kms.<backend> reused if omitted: ca_key_config)
    pki: PkiConfig = field(default_factory=PkiConfig)
    gateway: GatewayConfig = field(default_factory=lambda: GatewayConfig())

    @classmethod
    def load(cls, path: Path) -> Config:
        if not path.exists():
            return cls()
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{path.name} is not UTF-8 text") from None
        except OSError as e:
            raise ConfigError(f"cannot read {path.name}: {e.strerror}") from None
        return cls.parse(text, path.name)

    @classmethod
    def parse(cls, text: str, name: str = "eventward.yaml") -> Config:
        """Check a configuration document; ConfigError names the key at fault."""
        try:
            doc = yaml.load(text, Loader=_LOADER) or {}  # noqa: S506 - a SafeLoader (libyaml's when available)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark else ""
            raise ConfigError(f"{name} is not valid YAML{where}") from None
        except RecursionError:  # the pure-Python loader on deeply nested input
            raise ConfigError(f"{name} is nested too deeply") from None
        except UnicodeEncodeError:  # lone surrogates: text no file could hold
            raise ConfigError(f"{name} is not valid Unicode text") from None
        _refuse_inline_dsn(doc, name)
        cfg = _build(cls, doc, name)
        if cfg.transport not in TRANSPORTS:
            raise ConfigError(f"{name}: transport must be one of {', '.join(TRANSPORTS)}")
        if any(not p or p == "*" for p in cfg.seals.require_hybrid):
            raise ConfigError(f"{name}: seals.require_hybrid entries are stream names or 'prefix*' (not empty)")
        if not (cfg.keys.kek_max_age_days > 0 and cfg.keys.rotate_check_s > 0):
            raise ConfigError(f"{name}: keys.kek_max_age_days and keys.rotate_check_s must be positive")
        rc = cfg.reconciler
        if not (rc.interval_s > 0 and rc.grace_s >= 0 and rc.progress_s > 0):
            raise ConfigError(f"{name}: reconciler.interval_s and progress_s must be positive, grace_s not negative")
        if cfg.consumer.uncleared not in ("redact", "token"):
            raise ConfigError(f"{name}: consumer.uncleared must be 'redact' or 'token'")
        _check_store(cfg.store, name)
        cfg.pki.ca_key.resolved(cfg.kms)  # a section left out must be found in kms.<backend>, now
        return cfg

    def dump(self) -> str:
        from dataclasses import asdict

        return yaml.safe_dump(_plain(asdict(self)), sort_keys=False)


def _plain(doc: Any) -> Any:
    """YAML-safe values: paths as text (backend sections hold ``Path`` fields)."""
    if isinstance(doc, dict):
        return {k: _plain(v) for k, v in doc.items()}
    if isinstance(doc, list | tuple):
        return [_plain(v) for v in doc]
    return str(doc) if isinstance(doc, Path) else doc


def _build(kind: type, doc: Any, where: str) -> Any:
    """A ``kind`` dataclass from a mapping, every value checked against the field's annotation
    (``int``, ``float``, ``str | None``, ``list[str]``, ``dict[str, Any]``, nested dataclasses;
    a nested one with a ``from_mapping`` parses its own section). A null value means the default."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a mapping")
    known = {f.name: f for f in fields(kind)}
    unknown = sorted({str(k) for k in doc} - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    hints = get_type_hints(kind)
    kwargs: dict[str, Any] = {}
    for name, value in doc.items():
        if not isinstance(name, str):
            raise ConfigError(f"{where}: unknown key(s) {name}")
        f = known[name]
        path = f"{where}.{name}"
        if value is None:
            continue  # the default
        default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
        if hasattr(type(default), "from_mapping"):  # kms, gateway: their own checks, once, at load
            kwargs[name] = type(default).from_mapping(value, f"{where}: {name}")
        elif hasattr(default, "__dataclass_fields__"):
            kwargs[name] = _build(type(default), value, path)
        else:
            kwargs[name] = _check_value(hints[name], value, path)
    return kind(**kwargs)


def _check_value(hint: Any, value: Any, path: str) -> Any:
    """``value`` if it fits ``hint``; ConfigError naming the key and the expected type otherwise."""
    args = [a for a in get_args(hint) if a is not type(None)]
    if get_origin(hint) in (Union, UnionType):  # X | None (a None value never gets here)
        return _check_value(args[0], value, path)
    origin = get_origin(hint) or hint
    if not _same_kind(origin, value):
        raise ConfigError(f"{path}: expected {_type_name(hint)}, got {type(value).__name__}")
    items = list(value) if origin in (list, dict) and args and args[0] is not Any else []
    bad = next((v for v in items if not _same_kind(args[0], v)), _NONE)
    if bad is not _NONE:
        what = "an item" if origin is list else "a key"
        raise ConfigError(f"{path}: expected {_type_name(hint)}, got {what} of type {type(bad).__name__}")
    if origin is dict and len(args) == 2 and args[1] is not Any:  # a mapping's values: scalars checked by name
        for key, item in value.items():
            if not any(_same_kind(a, item) for a in (get_args(args[1]) or (args[1],))):
                raise ConfigError(f"{path}.{key}: expected {_type_name(args[1])}, got {type(item).__name__}")
            _check_value(type(item), item, f"{path}.{key}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{path}: must be a finite number")
    return value


def _same_kind(expected: Any, value: Any) -> bool:
    if expected is Any:
        return True
    if expected is bool or isinstance(value, bool):
        return expected is bool and isinstance(value, bool)
    if expected is float:
        return isinstance(value, int | float)
    return isinstance(value, expected)


def _type_name(hint: Any) -> str:
    origin = get_origin(hint)
    if origin in (Union, UnionType):
        return " or ".join(_type_name(a) for a in get_args(hint) if a is not type(None))
    if origin is list:
        return "a list of " + _type_name(get_args(hint)[0]) if get_args(hint) else "list"
    if origin is dict:
        return "a mapping" if get_args(hint)[1:] in ((), (Any,)) else "a mapping of " + _type_name(get_args(hint)[1])
    return getattr(hint, "__name__", str(hint))
