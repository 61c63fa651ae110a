"""Deployment configuration (``eventward.yaml`` in the home): which transport, and tunables.

Configuration chooses the transport for SDK, CLI and gateway alike. Unknown keys are
refused by name (a typo must not silently fall back to a default), and every value is
type-checked before anything starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from eventward.errors import ConfigError

TRANSPORTS = ("embedded", "nats", "kafka")


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
    extra: dict[str, Any] = field(default_factory=dict)


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
class Config:
    transport: str = "embedded"
    max_event_bytes: int = 1024 * 1024
    nats: NatsConfig = field(default_factory=NatsConfig)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    producer: ProducerConfig = field(default_factory=ProducerConfig)
    consumer: ConsumerConfig = field(default_factory=ConsumerConfig)
    kms: dict[str, Any] = field(default_factory=lambda: {"backend": "local"})
    gateway: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Config:
        if not path.exists():
            return cls()
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark else ""
            raise ConfigError(f"{path.name} is not valid YAML{where}") from None
        cfg = _build(cls, doc, path.name)
        if cfg.transport not in TRANSPORTS:
            raise ConfigError(f"{path.name}: transport must be one of {', '.join(TRANSPORTS)}")
        if cfg.consumer.uncleared not in ("redact", "token"):
            raise ConfigError(f"{path.name}: consumer.uncleared must be 'redact' or 'token'")
        return cfg

    def dump(self) -> str:
        from dataclasses import asdict

        return yaml.safe_dump(asdict(self), sort_keys=False)


def _build(kind: type, doc: Any, where: str) -> Any:
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a mapping")
    known = {f.name: f for f in fields(kind)}
    unknown = sorted(set(doc) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}")
    kwargs: dict[str, Any] = {}
    for name, value in doc.items():
        f = known[name]
        default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
        path = f"{where}.{name}"
        if hasattr(default, "__dataclass_fields__"):
            kwargs[name] = _build(type(default), value, path)
        elif value is not None and default is not None and not _same_kind(default, value):
            raise ConfigError(f"{path}: expected {type(default).__name__}, got {type(value).__name__}")
        else:
            kwargs[name] = value
    return kind(**kwargs)


def _same_kind(default: Any, value: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    return isinstance(value, type(default))
