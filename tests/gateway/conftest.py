"""Gateway fixtures: a test PKI, an in-memory GatewayBackend that enforces an AllowList, servers.

The in-memory backend stands in for the phase-2 Deployment. It authorizes every operation
with ``policy.base.check`` (deny by default), keeps raw data-subject ids only as hashes and
never puts a value into an error, so authorization and the perimeter are testable end to end.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from eventward._internal.audit.base import MemoryAudit
from eventward._internal.control.anchor import Anchor
from eventward._internal.control.plane import Released
from eventward._internal.gateway.backend import (
    Checkpoint,
    ConsumeResult,
    Delivery,
    ErasureCertificate,
    InclusionProof,
    PublishResult,
    SchemaCheck,
    SchemaProposal,
    SchemaSummary,
    SchemaVersion,
)
from eventward._internal.gateway.config import GatewayConfig
from eventward._internal.gateway.metrics import GatewayMetrics
from eventward._internal.gateway.server import create_server
from eventward._internal.home import Home
from eventward._internal.policy.base import (
    APPROVE_SCHEMA,
    DECRYPT,
    ENCRYPT,
    FORGET,
    HOLD,
    MANAGE_POLICY,
    PROPOSE_SCHEMA,
    PUBLISH,
    READ_AUDIT,
    READ_SCHEMA,
    ROTATE_KEYS,
    SUBSCRIBE,
    AllowList,
    Decision,
    Resource,
    check,
)
from eventward.errors import (
    AccessDenied,
    InputError,
    KeyNotFound,
    LegalHoldError,
    NotFoundError,
)

from .gw_support import Pki, ThreadedGateway, make_pki, make_signers, write_jwks

SENTINEL = "SENTINEL-4f1c-jane.doe@example.org"
ISSUER = "https://idp.test.local"
AUDIENCE = "eventward-gateway"
# the test IdP's service subjects map to plain principals; anything else is jwt:idp.test.local:<sub>
SUBJECT_RULES = r"RULE:^idp\.test\.local:(svc-[a-z]+|orders|fuzzer.*)$/$1/"


def make_authz() -> AllowList:
    a = AllowList()
    for who in ("orders", "billing", "dev"):
        a.grant(who, PUBLISH, ("Topic", "orders"))
    for who in ("reader", "dev", "orders"):
        a.grant(who, SUBSCRIBE, ("Topic", "orders"))
    a.grant("noisy", PUBLISH, ("Topic", "orders"))
    a.grant("quota-victim", PUBLISH, ("Topic", "orders"))
    a.grant("reader", DECRYPT, ("Class", "pii"))
    for action, kind in (
        (PROPOSE_SCHEMA, "Schema"),
        (READ_SCHEMA, "Schema"),
        (FORGET, "Subject"),
        (HOLD, "Subject"),
        (READ_AUDIT, "Audit"),
        (MANAGE_POLICY, "Policy"),
        (DECRYPT, "Class"),
    ):
        a.grant("admin", action, (kind, "*"))
    a.grant("approver", APPROVE_SCHEMA, ("Schema", "*"))
    a.grant("approver", READ_SCHEMA, ("Schema", "*"))
    return a


_ANCHOR = Anchor(Ed25519PrivateKey.generate())


class MemoryBackend:
    """An in-memory GatewayBackend: deny by default, metadata-only errors."""

    def __init__(self, authz: AllowList | None = None) -> None:
        self.authz = authz or make_authz()
        self.calls: list[tuple[str, str]] = []  # (operation, principal)
        self.topics: dict[str, list[dict[str, Any]]] = {"orders": []}
        self.commits: dict[tuple[str, str], int] = {}
        self.schemas: dict[str, list[SchemaVersion]] = {}
        self.proposals: dict[str, tuple[str, SchemaVersion]] = {}  # id -> (proposer, version)
        self.deks: dict[str, tuple[str, bytes]] = {"kid-pii-1": ("pii", bytes(range(32)))}
        self.held: set[str] = set()
        self.certificates: dict[str, ErasureCertificate] = {}
        self.audit_size = 0
        self._ids = itertools.count(1)

    def _check(self, op: str, principal: str, action: str, resource: Resource) -> None:
        self.calls.append((op, principal))
        check(self.authz, principal, action, resource)

    @staticmethod
    def _hash(subject: str) -> str:
        return hashlib.sha256(b"test-key:" + subject.encode()).hexdigest()

    async def publish(self, principal: str, topic: str, events: Sequence[Mapping[str, Any]]) -> PublishResult:
        self._check("publish", principal, PUBLISH, ("Topic", topic))
        log = self.topics.get(topic)
        if log is None:
            raise NotFoundError(f"topic {topic!r} does not exist")
        first = len(log)
        log.extend(dict(e) for e in events)
        self.audit_size += 1
        return PublishResult([str(e["id"]) for e in events], first)

    async def consume(
        self, principal: str, topic: str, group: str, max_events: int, wait_s: float
    ) -> ConsumeResult:
        self._check("consume", principal, SUBSCRIBE, ("Topic", topic))
        log = self.topics.get(topic)
        if log is None:
            raise NotFoundError(f"topic {topic!r} does not exist")
        start = self.commits.get((topic, group), 0)
        deadline = asyncio.get_running_loop().time() + wait_s
        while len(log) <= start and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        batch = [Delivery(i, log[i]) for i in range(start, min(len(log), start + max_events))]
        return ConsumeResult(batch, lag=len(log) - start - len(batch))

    async def ack(self, principal: str, topic: str, group: str, offset: int, partition: int = 0) -> int:
        self._check("ack", principal, SUBSCRIBE, ("Topic", topic))
        if partition:
            raise InputError(f"topic {topic!r} has one partition", path="partition")
        log = self.topics.get(topic)
        if log is None:
            raise NotFoundError(f"topic {topic!r} does not exist")
        if offset > len(log):
            raise InputError(f"offset {offset} is beyond the end of topic {topic!r}", path="offset")
        self.commits[(topic, group)] = offset
        return offset

    async def propose_schema(
        self, principal: str, event_type: str, schema: Mapping[str, Any], fmt: str
    ) -> SchemaProposal:
        self._check("propose_schema", principal, PROPOSE_SCHEMA, ("Schema", event_type))
        version = len(self.schemas.get(event_type, [])) + 1
        pid = f"p{next(self._ids)}"
        self.proposals[pid] = (principal, SchemaVersion(event_type, version, fmt, dict(schema), "pending"))
        return SchemaProposal(pid, event_type, version, "pending", [])

    async def approve_schema(
        self, principal: str, event_type: str, proposal_id: str, security: bool
    ) -> SchemaVersion:
        self._check("approve_schema", principal, APPROVE_SCHEMA, ("Schema", event_type))
        found = self.proposals.get(proposal_id)
        if found is None or found[1].event_type != event_type:
            raise NotFoundError(f"no pending proposal {proposal_id!r} for {event_type!r}")
        proposer, v = found
        if proposer == principal:
            raise AccessDenied("a schema change needs a second principal to approve it")
        approved = SchemaVersion(v.event_type, v.version, v.format, v.schema, "approved")
        self.schemas.setdefault(event_type, []).append(approved)
        del self.proposals[proposal_id]
        return approved

    async def list_schemas(self, principal: str) -> list[SchemaSummary]:
        self._check("list_schemas", principal, READ_SCHEMA, ("Schema", "*"))
        return [SchemaSummary(t, len(vs)) for t, vs in sorted(self.schemas.items())]

    async def show_schema(self, principal: str, event_type: str, version: int | None) -> SchemaVersion:
        self._check("show_schema", principal, READ_SCHEMA, ("Schema", event_type))
        versions = self.schemas.get(event_type, [])
        if not versions or (version is not None and version > len(versions)):
            raise NotFoundError(f"no schema version for {event_type!r}")
        return versions[(version or len(versions)) - 1]

    async def check_schema(
        self, principal: str, event_type: str, schema: Mapping[str, Any], fmt: str
    ) -> SchemaCheck:
        self._check("check_schema", principal, PROPOSE_SCHEMA, ("Schema", event_type))
        loosened = schema.get("additionalProperties", False) is not False
        return SchemaCheck(not loosened, [], ["allows_unknown_fields"] if loosened else [])

    async def control(self, method: str, principal: str, *args: Any) -> Any:
        """The control API in memory: key releases by the same grants as unwrap, nothing else known."""
        self.calls.append((f"control.{method}", principal))
        if method == "encryption_keys":
            topic, _, wanted = args
            check(self.authz, principal, PUBLISH, ("Topic", topic))
            for _, cls, _ in wanted:
                check(self.authz, principal, ENCRYPT, ("Class", cls))
            return [Released(f"kid-{cls}-1", bytes(32), None if s is None else self._hash(s)) for s, cls, _ in wanted]
        if method == "decryption_keys":
            topic, _, wanted = args
            check(self.authz, principal, SUBSCRIBE, ("Topic", topic))
            return {kid: (self.deks[kid][1] if kid in self.deks and self.authz.decide(
                principal, DECRYPT, ("Class", cls)).allowed else "forbidden") for kid, cls, _ in wanted}
        if method == "schema":
            raise NotFoundError(f"no schema {args[1]!r}")
        if method == "trust_entries":
            return []
        if method == "topic":
            if not any(self.authz.decide(principal, a, ("Topic", args[0])).allowed for a in (PUBLISH, SUBSCRIBE)):
                raise AccessDenied(f"{principal} may not publish or subscribe to {args[0]}")
            return {"topic": args[0], "partitions": 1}
        if method == "decide":
            action, resource, context = args[:3]
            return self.authz.decide(principal, action, resource, context).allowed
        if method == "register_group":
            return f"{principal}/{args[0]}"
        if method == "erasures_due":
            return []
        if method == "acknowledge":
            return False
        raise NotFoundError(f"no control call {method!r}")

    async def control_notices(self, principal: str, after: float, wait: float) -> dict[str, str]:
        self.calls.append(("control.notices", principal))
        return _ANCHOR.sign("notice", {"epoch": 0, "erased": [], "until": after, "revoked": [], "policy": 1})

    async def unwrap(self, principal: str, kid: str, cls: str) -> bytes:
        self._check("unwrap", principal, DECRYPT, ("Class", cls))
        found = self.deks.get(kid)
        if found is None or found[0] != cls:
            raise KeyNotFound(f"no {cls} key with id {kid!r}")
        return found[1]

    async def forget(
        self, principal: str, subject: str, reason: str = "", close_epoch: bool = False
    ) -> ErasureCertificate:
        h = self._hash(subject)
        self._check("forget", principal, FORGET, ("Subject", h))
        if h in self.held:
            raise LegalHoldError(f"subject {h[:16]} is under legal hold")
        cid = f"erasure-{next(self._ids)}"
        cert = ErasureCertificate(
            cid, h, 1, "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", self.audit_size, "c2ln"
        )
        self.certificates[cid] = cert
        return cert

    async def hold(self, principal: str, subject: str, reason: str) -> None:
        h = self._hash(subject)
        self._check("hold", principal, HOLD, ("Subject", h))
        self.held.add(h)

    async def release(self, principal: str, subject: str) -> None:
        h = self._hash(subject)
        self._check("release", principal, HOLD, ("Subject", h))
        self.held.discard(h)

    async def audit_checkpoint(self, principal: str) -> Checkpoint:
        self._check("audit_checkpoint", principal, READ_AUDIT, ("Audit", "log"))
        return Checkpoint(self.audit_size, "00" * 32, "2026-01-01T00:00:00Z", "c2ln", "audit-1")

    async def audit_prove(self, principal: str, index: int, tree_size: int | None) -> InclusionProof:
        self._check("audit_prove", principal, READ_AUDIT, ("Audit", "log"))
        size = tree_size or self.audit_size
        if index >= size or size > self.audit_size:
            raise NotFoundError(f"no audit record {index} in a tree of {size}")
        return InclusionProof(index, size, "ab" * 32, [])

    async def audit_certificate(self, principal: str, certificate_id: str) -> ErasureCertificate:
        self._check("audit_certificate", principal, READ_AUDIT, ("Audit", "log"))
        cert = self.certificates.get(certificate_id)
        if cert is None:
            raise NotFoundError(f"no erasure certificate {certificate_id!r}")
        return cert

    async def audit_records(self, principal: str, n: int) -> list[dict[str, Any]]:
        self._check("audit_records", principal, READ_AUDIT, ("Audit", "log"))
        return []

    async def alerts(self, principal: str, n: int) -> list[dict[str, Any]]:
        self._check("alerts", principal, READ_AUDIT, ("Audit", "log"))
        return []

    async def lag(self, principal: str) -> list[dict[str, Any]]:
        self._check("lag", principal, READ_AUDIT, ("Audit", "log"))
        return [{"group": g, "stream": t, "committed": c, "end": len(self.topics.get(t, [])),
                 "lag": max(0, len(self.topics.get(t, [])) - c)} for (t, g), c in self.commits.items()]

    async def keys_status(self, principal: str) -> dict[str, Any]:
        self._check("keys_status", principal, READ_AUDIT, ("Audit", "log"))
        return {"classes": [], "legal_holds": len(self.held), "erasures": len(self.certificates),
                "revocation_epoch": 0}

    async def dead_letters(
        self, principal: str, topic: str, include_resolved: bool, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        self._check("dead_letters", principal, SUBSCRIBE, ("Topic", topic))
        if topic not in self.topics:
            raise NotFoundError(f"topic {topic!r} does not exist")
        return [], False

    async def approve_service(
        self, principal: str, request: bytes, may_seal: Mapping[str, Sequence[str]], days: int,
        control_urls: Sequence[str], nats_servers: Sequence[str],
    ) -> bytes:
        self._check("approve_service", principal, ROTATE_KEYS, ("Producer", "*"))
        raise InputError("enrollment request is not JSON")  # the memory backend enrolls nobody

    async def explain(
        self,
        principal: str,
        about: str,
        action: str,
        resource: Resource,
        context: Mapping[str, Any] | None = None,
    ) -> Decision:
        self.calls.append(("explain", principal))
        if about != principal:
            check(self.authz, principal, MANAGE_POLICY, ("Policy", "*"))
        return self.authz.decide(about, action, resource, context)


def gateway_config(p: Pki, **overrides: Any) -> GatewayConfig:
    doc: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "tls": {"cert": str(p.server_cert), "key": str(p.server_key), "client_ca": str(p.ca_file)},
    }
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(doc.get(k), dict):
            doc[k] = {**doc[k], **v}
        else:
            doc[k] = v
    return GatewayConfig.from_mapping(doc)


@pytest.fixture(scope="session")
def gw_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("gateway-pki"))


@pytest.fixture(scope="session")
def signers() -> dict[str, Any]:
    return make_signers()


@pytest.fixture(scope="session")
def jwks_file(tmp_path_factory: pytest.TempPathFactory, signers: dict[str, Any]) -> Path:
    return write_jwks(tmp_path_factory.mktemp("jwks") / "jwks.json", list(signers.values()))


class Running:
    """A started gateway with its backend, metrics and audit, for assertions."""

    def __init__(
        self, gw: ThreadedGateway, backend: MemoryBackend, metrics: GatewayMetrics, audit: MemoryAudit
    ) -> None:
        self.gw, self.backend, self.metrics, self.audit = gw, backend, metrics, audit

    @property
    def port(self) -> int:
        return self.gw.port


def start_gateway(cfg: GatewayConfig, home: Path, **kw: Any) -> Running:
    backend, metrics, audit = MemoryBackend(), GatewayMetrics(), MemoryAudit()
    server = create_server(cfg, Home(home), backend, audit=audit, metrics=metrics, **kw)
    return Running(ThreadedGateway(server).start(), backend, metrics, audit)


@pytest.fixture(scope="module")
def mtls_gateway(gw_pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    rules = r"RULE:^CN=([a-zA-Z0-9._-]+),OU=services.*$/$1/,RULE:^CN=([A-Za-z0-9@._:-]+)$/$1/L"
    run = start_gateway(
        gateway_config(gw_pki, principal_mapping_rules=rules), tmp_path_factory.mktemp("home")
    )
    yield run
    run.gw.stop()


@pytest.fixture(scope="module")
def jwt_gateway(
    gw_pki: Pki, jwks_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    cfg = gateway_config(
        gw_pki,
        auth="jwt",
        jwt={"jwks_file": str(jwks_file), "issuer": ISSUER, "audience": AUDIENCE, "leeway_s": 5,
             "subject_rules": SUBJECT_RULES},
    )
    run = start_gateway(cfg, tmp_path_factory.mktemp("home"))
    yield run
    run.gw.stop()


def memory_backend(home: Home) -> MemoryBackend:
    """``--backend gateway.conftest:memory_backend`` for CLI tests (home unused)."""
    return MemoryBackend()


@pytest.fixture(scope="module")
def dep_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real Deployment home behind an mTLS gateway running DeploymentBackend (phase 2)."""
    from .gw_deployment import World

    world = World(tmp_path_factory.mktemp("gw-deployment"))
    yield world
    world.close()
