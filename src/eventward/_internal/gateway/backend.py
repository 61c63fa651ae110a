"""What the gateway asks of a deployment: the operations behind each HTTP route.

The gateway authenticates, limits, parses and maps errors; a GatewayBackend does the work with
the same enforcement as the Python SDK (schema validation, policy, encryption, seals, replay
protection, audit) for the authenticated ``principal`` it is handed. Backends raise typed
eventward errors (AccessDenied, ValidationError, NotFoundError...) and the gateway turns them
into problem details. Methods are async so a backend may wait (long polls) without a thread.

Raw data-subject ids arrive only in request bodies (``forget``/``hold``/``release``), never in
URLs, which end up in access logs and proxies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from eventward._internal.policy.base import Decision, Resource


@dataclass(frozen=True)
class PublishResult:
    ids: list[str]  # event ids in request order
    first_offset: int | None = None


@dataclass(frozen=True)
class Delivery:
    offset: int
    event: dict[str, Any]  # a CloudEvent, decrypted as far as the principal is cleared
    partition: int = 0  # of a partitioned topic (offsets are per partition)


@dataclass(frozen=True)
class ConsumeResult:
    deliveries: list[Delivery]
    lag: int = 0  # events after the last delivered one, for metrics and clients


@dataclass(frozen=True)
class SchemaVersion:
    event_type: str
    version: int
    format: str  # "json" or "avro"
    schema: dict[str, Any]
    status: str = "approved"  # "pending" or "approved"


@dataclass(frozen=True)
class SchemaSummary:
    event_type: str
    latest_version: int
    pending: int = 0


@dataclass(frozen=True)
class SchemaProposal:
    proposal_id: str
    event_type: str
    version: int
    status: str  # "pending", "approved"
    security_changes: list[str] = field(default_factory=list)  # rule names, e.g. "removed_sensitivity_tag"


@dataclass(frozen=True)
class SchemaCheck:
    compatible: bool
    problems: list[str] = field(default_factory=list)
    security_changes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Checkpoint:
    tree_size: int
    root_hash: str  # hex
    timestamp: str  # RFC 3339
    signature: str  # base64url
    key_id: str


@dataclass(frozen=True)
class InclusionProof:
    index: int
    tree_size: int
    leaf_hash: str  # hex
    path: list[str]  # hex, RFC 6962 audit path


@dataclass(frozen=True)
class ErasureCertificate:
    certificate_id: str
    subject_hash: str  # keyed hash, never the raw subject id
    keys_destroyed: int
    issued_at: str  # RFC 3339
    complete_after: str  # RFC 3339: when KEK rotation makes erasure cryptographically complete
    audit_index: int
    signature: str  # base64url
    document: str = ""  # the full signed certificate (claims, proof, checkpoint) for offline checks


class GatewayBackend(Protocol):
    async def control(self, method: str, principal: str, *args: Any) -> Any:
        """Call ``ControlPlane.<method>(principal, *args)`` (control.plane): the control API's answers,
        for the authenticated ``principal`` only. Raises what the control plane raises."""
        ...

    async def control_notices(self, principal: str, after: float, wait: float) -> dict[str, str]:
        """A signed notice of what changed since ``after``, waiting up to ``wait`` s without holding
        a worker thread."""
        ...

    async def publish(
        self, principal: str, topic: str, events: Sequence[Mapping[str, Any]]
    ) -> PublishResult: ...

    async def consume(
        self, principal: str, topic: str, group: str, max_events: int, wait_s: float
    ) -> ConsumeResult:
        """Up to ``max_events`` from ``group``'s committed position; waits up to ``wait_s`` for the first."""
        ...

    async def ack(self, principal: str, topic: str, group: str, offset: int, partition: int = 0) -> int:
        """Commit: ``group`` has processed everything before ``offset`` of ``partition``. Returns
        the committed offset."""
        ...

    async def propose_schema(
        self, principal: str, event_type: str, schema: Mapping[str, Any], fmt: str
    ) -> SchemaProposal: ...

    async def approve_schema(
        self, principal: str, event_type: str, proposal_id: str, security: bool
    ) -> SchemaVersion: ...

    async def list_schemas(self, principal: str) -> list[SchemaSummary]: ...

    async def show_schema(self, principal: str, event_type: str, version: int | None) -> SchemaVersion: ...

    async def check_schema(
        self, principal: str, event_type: str, schema: Mapping[str, Any], fmt: str
    ) -> SchemaCheck: ...

    async def unwrap(self, principal: str, kid: str, cls: str) -> bytes:
        """The DEK named by ``kid`` if ``principal`` may Decrypt ``cls`` (audited by the key service)."""
        ...

    async def forget(
        self, principal: str, subject: str, reason: str = "", close_epoch: bool = False
    ) -> ErasureCertificate:
        """Crypto-shred ``subject`` (Forget), recording ``reason`` (a code); ``close_epoch`` also
        rotates its classes' KEKs and destroys the versions that wrapped its keys (RotateKeys)."""
        ...

    async def hold(self, principal: str, subject: str, reason: str) -> None: ...

    async def release(self, principal: str, subject: str) -> None: ...

    async def audit_checkpoint(self, principal: str) -> Checkpoint: ...

    async def audit_prove(self, principal: str, index: int, tree_size: int | None) -> InclusionProof: ...

    async def audit_certificate(self, principal: str, certificate_id: str) -> ErasureCertificate: ...

    async def audit_records(self, principal: str, n: int) -> list[dict[str, Any]]:
        """The newest ``n`` audit records (ReadAudit), oldest first: the AuditRecord document."""
        ...

    async def alerts(self, principal: str, n: int) -> list[dict[str, Any]]:
        """The newest ``n`` recorded alerts (ReadAudit), oldest first: the Alert document."""
        ...

    async def lag(self, principal: str) -> list[dict[str, Any]]:
        """Every consumer group's lag per stream (ReadAudit): the GroupLag document."""
        ...

    async def keys_status(self, principal: str) -> dict[str, Any]:
        """Classes, KEK versions and counts (ReadAudit: it is audit metadata): the KeyStatus document."""
        ...

    async def dead_letters(
        self, principal: str, topic: str, include_resolved: bool, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``limit`` dead letters of ``topic`` (Subscribe), metadata only, and whether more exist."""
        ...

    async def approve_service(
        self, principal: str, request: bytes, may_seal: Mapping[str, Sequence[str]], days: int,
        control_urls: Sequence[str], nats_servers: Sequence[str],
    ) -> bytes:
        """The grant for an enrollment request, if ``principal`` may RotateKeys on the service's
        producer (decided first: nothing is certified or trusted otherwise)."""
        ...

    async def explain(
        self,
        principal: str,
        about: str,
        action: str,
        resource: Resource,
        context: Mapping[str, Any] | None = None,
    ) -> Decision:
        """Why ``about`` may or may not do ``action`` on ``resource`` (explaining for someone else
        is itself an authorized operation). ``context`` holds request attributes such as
        ``event_type``, which Publish grants may be restricted to."""
        ...
