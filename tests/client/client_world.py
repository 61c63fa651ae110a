"""A complete eventward client stack on one deployment home, for tests and subprocesses.

Real parts everywhere (SQLite log and trust registry, Ed25519 seals, AES-GCM field
encryption, compiled JSON Schemas); the schema source is a small stand-in with the
registry's ``active``/``get`` shape.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eventward._internal.audit.base import MemoryAudit, MetaValue
from eventward._internal.audit.records import make_entry
from eventward._internal.client.consumer import Consumer
from eventward._internal.client.dlq import DeadLetters
from eventward._internal.client.producer import Producer
from eventward._internal.client.replay import ReplayGuard
from eventward._internal.client.trust import TrustRegistry
from eventward._internal.client.types import Delivered, RunStats
from eventward._internal.client.verify import SealVerifier
from eventward._internal.crypto.fields import FieldEncryptor
from eventward._internal.home import Home
from eventward._internal.keys.memory import MemoryKeys
from eventward._internal.log.embedded import EmbeddedLog
from eventward._internal.policy.base import (
    DECRYPT,
    ENCRYPT,
    PUBLISH,
    REDRIVE_DLQ,
    REPLAY,
    ROTATE_KEYS,
    SUBSCRIBE,
    AllowList,
)
from eventward._internal.schema.compiled import CompiledSchema, compile_schema
from eventward.errors import NotFoundError

TOPIC = "customers"
TYPE = "CustomerRegistered"
PRODUCER = "signup-svc"
READER = "billing"  # cleared for pii
ANALYST = "analytics"  # subscribes, not cleared for pii
OPS = "ops"  # may replay and redrive
ADMIN = "admin"
INTRUDER = "intruder"  # no grants at all

SENTINEL_EMAIL = "zq-sentinel-4471@pii.example"
SENTINEL_NAME = "Quillon Sentinelworth"

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["customer_id", "email", "name", "plan"],
    "properties": {
        "customer_id": {"type": "string", "maxLength": 40, "x-eventward": {"subject": True, "public": True}},
        "email": {"type": "string", "maxLength": 200, "x-eventward": {"class": "pii"}},
        "name": {"type": "string", "maxLength": 200, "x-eventward": {"class": "pii"}},
        "plan": {"type": "string", "enum": ["free", "pro"]},
        "note": {"type": "string", "maxLength": 4000},
    },
}


def customer(i: int, **over: Any) -> dict[str, Any]:
    d = {
        "customer_id": f"c-{i}",
        "email": f"{i}-{SENTINEL_EMAIL}",
        "name": f"{SENTINEL_NAME} {i}",
        "plan": "pro",
    }
    d.update(over)
    return d


@dataclass(frozen=True)
class Version:
    type: str
    version: int
    compiled: CompiledSchema

    @property
    def spec(self) -> Any:
        return self.compiled.spec

    @property
    def max_event_bytes(self) -> int:
        return self.compiled.max_event_bytes

    def validate(self, data: Any) -> None:
        self.compiled.validate(data)


class Schemas:
    """The registry's read side: ``active(type)`` and ``get(type, version)``."""

    def __init__(self) -> None:
        self.versions = {(TYPE, 1): Version(TYPE, 1, compile_schema(SCHEMA))}

    def active(self, type_: str) -> Version:
        return self.get(type_, max((v for t, v in self.versions if t == type_), default=0))

    def get(self, type_: str, version: int) -> Version:
        try:
            return self.versions[(type_, version)]
        except KeyError:
            raise NotFoundError(f"no schema {type_} v{version}") from None


class StrictAudit(MemoryAudit):
    """MemoryAudit that also applies the audit log's record rules (no payload keys, sizes)."""

    def record(
        self,
        action: str,
        *,
        principal: str,
        resource: str,
        outcome: str = "ok",
        reason: str = "",
        **meta: MetaValue,
    ) -> None:
        make_entry(action, principal=principal, resource=resource, outcome=outcome, reason=reason, meta=meta)
        super().record(action, principal=principal, resource=resource, outcome=outcome, reason=reason, **meta)

    def find(self, action: str, **match: Any) -> list[Any]:
        return [
            e
            for e in self.events
            if e.action == action
            and all(
                (getattr(e, k) if k in ("outcome", "reason", "principal") else e.meta.get(k)) == v
                for k, v in match.items()
            )
        ]


def grants() -> AllowList:
    a = AllowList()
    a.grant(PRODUCER, PUBLISH, ("Topic", TOPIC))
    a.grant(PRODUCER, ENCRYPT, ("Class", "pii"))
    for p in (READER, ANALYST, OPS):
        a.grant(p, SUBSCRIBE, ("Topic", TOPIC))
    for p in (READER, OPS):
        a.grant(p, DECRYPT, ("Class", "pii"))
    a.grant(OPS, REPLAY, ("Topic", TOPIC))
    a.grant(OPS, REDRIVE_DLQ, ("Topic", TOPIC))
    a.grant(ADMIN, ROTATE_KEYS, ("Producer", "*"))
    return a


class World:
    def __init__(self, root: Path, *, keys: Any = None, register: bool = True) -> None:
        self.home = Home(root).ensure()
        self.auth = grants()
        self.audit = StrictAudit()
        self.log = EmbeddedLog.open(self.home)
        self.trust = TrustRegistry.open(self.home, self.auth, self.audit)
        self.keys = keys or MemoryKeys(self.auth)
        self.enc = FieldEncryptor(self.keys)
        self.schemas = Schemas()
        self._closers: list[Any] = [self.log, self.trust]
        if register:
            for p in (PRODUCER, READER, ANALYST, OPS):
                self.trust.ensure(p, by=ADMIN)

    def producer(self, principal: str = PRODUCER, topic: str = TOPIC, **kw: Any) -> Producer:
        kw.setdefault("max_delay_ms", 60_000)
        return Producer(
            topic,
            principal=principal,
            transport=kw.pop("transport", self.log),
            signer=kw.pop("signer", None) or self.trust.signer_for(principal),
            schemas=self.schemas,
            encryptor=self.enc,
            authorizer=self.auth,
            audit=self.audit,
            **kw,
        )

    def verifier(self, **kw: Any) -> SealVerifier:
        return SealVerifier(self.trust, **kw)

    def dlq(self, principal: str = READER, topic: str = TOPIC, **kw: Any) -> DeadLetters:
        signer = self.trust.dead_letter_signer(principal) if self.trust.list(principal) else None
        return DeadLetters(
            topic,
            transport=kw.pop("transport", self.log),
            verifier=self.verifier(),
            authorizer=self.auth,
            audit=self.audit,
            signer=signer,
            **kw,
        )

    def consumer(
        self,
        principal: str = READER,
        topic: str = TOPIC,
        *,
        group: str | None = None,
        guard: dict[str, Any] | None = None,
        **kw: Any,
    ) -> Consumer:
        g = ReplayGuard.open(self.home, group or principal, **(guard or {}))
        self._closers.append(g)
        kw.setdefault("from_beginning", True)
        kw.setdefault("backoff", 0.001)
        return Consumer(
            topic,
            principal=principal,
            transport=kw.pop("transport", self.log),
            verifier=kw.pop("verifier", None) or self.verifier(),
            schemas=self.schemas,
            encryptor=self.enc,
            authorizer=self.auth,
            guard=g,
            dlq=kw.pop("dlq", None) or self.dlq(principal, topic),
            audit=self.audit,
            group=group,
            **kw,
        )

    def consume(self, consumer: Consumer, **kw: Any) -> tuple[list[Delivered], RunStats]:
        got: list[Delivered] = []
        kw.setdefault("idle_timeout", 0)
        stats = consumer.run(got.append, **kw)
        return got, stats

    def db(self) -> sqlite3.Connection:
        """A raw connection to the log file: what an attacker with file access has."""
        return sqlite3.connect(self.home.log_db, isolation_level=None)

    def close(self) -> None:
        for c in reversed(self._closers):
            c.close()
