"""The gateway's real backend: every HTTP operation served by a Deployment, as the SDK would.

Publishing goes through the SDK Producer, consuming through the SDK Consumer (see
``publishing`` and ``groups``), schema changes through the Registry's two-person control, key
release through KeyService.decryption_key (Decrypt authorization and audit inside), erasure
through Deployment.forget. Operations the library leaves to its caller to authorize (schema
reads, audit reads, explaining someone else's decision) are checked here against the same
policy engine, whose denials are audited.

SQLite and crypto block, so all of it runs on a bounded thread pool, never on the event loop:
one slow disk or a long decrypt does not stall other connections. Long polls wait on the loop
(woken by this gateway's publishes, else re-polled every ``poll_interval``), not in a thread.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any, TypeVar

from eventward._internal.audit.certificate import ACTION as CERTIFICATE_ACTION
from eventward._internal.audit.certificate import KIND as CERTIFICATE_KIND
from eventward._internal.audit.certificate import Certificate
from eventward._internal.audit.log import AUDIT_RESOURCE, AuditLog
from eventward._internal.client.consumer import Consumer
from eventward._internal.client.replay import ReplayGuard, group_dir
from eventward._internal.control.plane import ControlPlane
from eventward._internal.deployment import Deployment
from eventward._internal.gateway import backend as api
from eventward._internal.gateway.groups import ConsumerGroups, Fetched, SharedGuard, legacy_state, partition_of
from eventward._internal.gateway.groupstore import GROUP_LOCK, PG_TABLES, GroupStore
from eventward._internal.gateway.publishing import Publisher, outgoing
from eventward._internal.gateway.quota import SharedBuckets
from eventward._internal.home import Home
from eventward._internal.log.names import check_stream_name
from eventward._internal.log.partitions import partition_stream
from eventward._internal.policy.base import (
    MANAGE_POLICY,
    PROPOSE_SCHEMA,
    PUBLISH,
    READ_AUDIT,
    READ_SCHEMA,
    SUBSCRIBE,
    Decision,
    Resource,
    check,
)
from eventward._internal.policy.store import POLICY_RESOURCE
from eventward._internal.schema.model import CheckReport, Finding, State
from eventward._internal.schema.model import SchemaVersion as RegistryVersion
from eventward.errors import AccessDenied, AuditIntegrityError, InputError, NotFoundError

T = TypeVar("T")
log = logging.getLogger("eventward.gateway")

_PROPOSAL = re.compile(r"v([1-9][0-9]{0,9})\Z")
_CERTIFICATE = re.compile(r"erasure-(0|[1-9][0-9]{0,17})\Z")
# Hold reasons are codes, as Deployment.forget's are: free text invites PII into the audit log.
_REASON_CODE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}\Z")
DEFAULT_HOLD_REASON = "legal-hold"
_MAX_TEXT = 128  # finding texts in responses


class DeploymentBackend:
    """A GatewayBackend over ``deployment``; ``close`` closes the deployment too if ``owned``."""

    def __init__(
        self,
        deployment: Deployment,
        *,
        owned: bool = False,
        workers: int | None = None,
        max_groups: int = 256,
        poll_interval: float = 0.2,
    ) -> None:
        self.deployment = deployment
        self._owned = owned
        self._poll = poll_interval
        self._pool = ThreadPoolExecutor(
            max_workers=workers or min(16, 4 * (os.cpu_count() or 1)), thread_name_prefix="eventward-gw"
        )
        self._publisher = Publisher(deployment.producer)
        store = open_group_store(deployment)
        self._groups = ConsumerGroups(
            deployment.transport, store, self._new_guard, self._make_consumer,
            legacy=self._legacy_state, max_groups=max_groups,
        )
        # On PostgreSQL, quotas are charged in the shared database too (replicas share them).
        self.shared_quota = SharedBuckets(store.database) if store.database is not None else None
        self._waiters: dict[str, asyncio.Event] = {}  # long polls waiting for a topic
        self._published: dict[str, int] = {}  # publishes per topic through this gateway
        self._control: ControlPlane | None = None

    def __repr__(self) -> str:
        return f"DeploymentBackend(home={str(self.deployment.home.root)!r})"

    @property
    def audit(self) -> AuditLog:
        """Where the gateway's own records (authentication failures) belong too."""
        return self.deployment.audit

    def close(self) -> None:
        self._publisher.close()
        self._groups.close()
        self._pool.shutdown(wait=True)
        if self._control is not None:
            self._control.close()
        if self._owned:
            self.deployment.close()

    # --- control API (client mode) --------------------------------------------------------
    @property
    def control_plane(self) -> ControlPlane:
        """Opened on first use: a gateway nobody asks for keys never creates the anchor key."""
        if self._control is None:
            self._control = ControlPlane.open(self.deployment)
        return self._control

    _CONTROL_CALLS = frozenset({"encryption_keys", "decryption_keys", "schema", "topic", "trust_entries", "decide",
                                "register_group", "erasures_due", "acknowledge", "audit_consistency"})

    async def control(self, method: str, principal: str, *args: Any) -> Any:
        if method not in self._CONTROL_CALLS:
            raise InputError(f"unknown control call {method!r}")
        return await self._run(getattr(self.control_plane, method), principal, *args)

    async def control_notices(self, principal: str, after: float, wait: float) -> dict[str, str]:
        """Polls the key store's epoch (one small read every 100 ms) on the event loop's timer,
        so a thousand waiting clients hold no worker threads."""
        plane = self.control_plane
        epoch = await self._run(plane.epoch)
        if await self._run(plane.erased_after, after):  # a forget between the client's polls: answer now
            wait = 0.0
        deadline = asyncio.get_running_loop().time() + max(0.0, wait)
        while asyncio.get_running_loop().time() < deadline and await self._run(plane.epoch) == epoch:
            await asyncio.sleep(0.1)
        return await self._run(plane.notices, principal, after, 0.0)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args))

    def _allow(
        self, principal: str, action: str, resource: Resource, context: Mapping[str, Any] | None = None
    ) -> None:
        check(self.deployment.policy, principal, action, resource, context)

    # --- events -----------------------------------------------------------------------------
    async def publish(
        self, principal: str, topic: str, events: Sequence[Mapping[str, Any]]
    ) -> api.PublishResult:
        ids = await self._run(self._publish, principal, topic, events)
        self._published[topic] = self._published.get(topic, 0) + 1
        waiter = self._waiters.pop(topic, None)
        if waiter is not None:
            waiter.set()
        return api.PublishResult(ids)

    def _publish(self, principal: str, topic: str, events: Sequence[Mapping[str, Any]]) -> list[str]:
        check_stream_name(topic)
        batch = outgoing(events)
        # Authorized before a producer exists: a principal with no grant gets 403, whatever else it lacks.
        for type_ in sorted({e.type for e in batch}):
            self._allow(principal, PUBLISH, ("Topic", topic), {"event_type": type_})
        return self._publisher.publish(principal, topic, batch)

    async def consume(
        self, principal: str, topic: str, group: str, max_events: int, wait_s: float
    ) -> api.ConsumeResult:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        seen = self._published.get(topic, 0)
        fetched = await self._run(self._fetch, principal, topic, group, max_events)
        while not fetched.deliveries and (remaining := deadline - loop.time()) > 0:
            # The loop thread runs publish's bookkeeping too: a publish since the fetch began shows
            # in the counter, and one after this check sets the waiter. A waiter is only made
            # after a fetch authorized the topic (no growth from unauthorized names).
            if self._published.get(topic, 0) == seen:
                waiter = self._waiters.setdefault(topic, asyncio.Event())
                with suppress(TimeoutError):  # events appended by other processes: found by polling
                    await asyncio.wait_for(waiter.wait(), timeout=min(remaining, self._poll))
            seen = self._published.get(topic, 0)
            fetched = await self._run(self._fetch, principal, topic, group, max_events)
        return api.ConsumeResult(
            [api.Delivery(d.offset, d.to_json(), partition_of(topic, d.stream)) for d in fetched.deliveries],
            lag=fetched.lag,
        )

    def _fetch(self, principal: str, topic: str, group: str, max_events: int) -> Fetched:
        check_stream_name(topic)
        self._allow(principal, SUBSCRIBE, ("Topic", topic))
        return self._groups.fetch(principal, topic, group, max_events)

    async def ack(self, principal: str, topic: str, group: str, offset: int, partition: int = 0) -> int:
        return await self._run(self._ack, principal, topic, group, offset, partition)

    def _ack(self, principal: str, topic: str, group: str, offset: int, partition: int) -> int:
        check_stream_name(topic)
        self._allow(principal, SUBSCRIBE, ("Topic", topic))
        count = self.deployment.policy.partitions(topic)
        if type(partition) is not int or not 0 <= partition < count:
            raise InputError(f"partition must be 0..{count - 1} for topic {topic!r}", path="partition")
        return self._groups.ack(principal, topic, group, offset, partition_stream(topic, partition))

    def _guard_windows(self) -> dict[str, Any]:
        """The replay windows Deployment.consumer uses."""
        cfg = self.deployment.config.consumer
        return {"freshness": cfg.freshness_s, "window_ids": cfg.dedup_window,
                "window_seconds": max(48 * 3600, 2 * cfg.freshness_s)}

    def _new_guard(self) -> SharedGuard:
        return SharedGuard(**self._guard_windows())

    def _legacy_state(self, gid: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]] | None:
        """A group's replay state from its home file (gateways before the group store), if any."""
        home = self.deployment.home
        if not (group_dir(home) / hashlib.sha256(gid.encode()).hexdigest()[:32]).with_suffix(".db").exists():
            return None
        guard = ReplayGuard.open(home, gid, **self._guard_windows())
        try:
            return legacy_state(guard)
        finally:
            guard.close()

    def _make_consumer(self, principal: str, topic: str, group: str, guard: ReplayGuard) -> Consumer:
        try:
            return self.deployment.consumer(principal, topic, group=group, guard=guard)
        except NotFoundError:
            raise NotFoundError(
                f"{principal} has no signing key (consumers seal the dead letters they write): an "
                f"administrator must run 'eventward trust register {principal}'"
            ) from None

    # --- schemas ----------------------------------------------------------------------------
    async def propose_schema(
        self, principal: str, event_type: str, schema: Mapping[str, Any], fmt: str
    ) -> api.SchemaProposal:
        p = await self._run(self.deployment.registry.propose, principal, event_type, schema, fmt)
        return api.SchemaProposal(
            f"v{p.version}", p.type, p.version, "pending", _findings(p.report.security)
        )

    async def approve_schema(
        self, principal: str, event_type: str, proposal_id: str, security: bool
    ) -> api.SchemaVersion:
        m = _PROPOSAL.match(proposal_id)
        if m is None:
            raise NotFoundError(f"no proposal {proposal_id!r} for {event_type} (proposal ids look like v2)")

        def approve() -> RegistryVersion:
            return self.deployment.registry.approve(principal, event_type, int(m.group(1)), security=security)

        return _version(await self._run(approve))

    async def list_schemas(self, principal: str) -> list[api.SchemaSummary]:
        return await self._run(self._list_schemas, principal)

    def _list_schemas(self, principal: str) -> list[api.SchemaSummary]:
        # Filtered, not refused: explain() does not audit the schemas a listing leaves out.
        policy = self.deployment.policy
        return [
            api.SchemaSummary(s.type, s.active or 0, 1 if s.pending else 0)
            for s in self.deployment.registry.list()
            if policy.explain(principal, READ_SCHEMA, ("Schema", s.type)).allowed
        ]

    async def show_schema(self, principal: str, event_type: str, version: int | None) -> api.SchemaVersion:
        def show() -> RegistryVersion:
            self._allow(principal, READ_SCHEMA, ("Schema", event_type))
            return self.deployment.registry.get(event_type, version)

        return _version(await self._run(show))

    async def check_schema(
        self, principal: str, event_type: str, schema: Mapping[str, Any], fmt: str
    ) -> api.SchemaCheck:
        def dry_run() -> CheckReport:
            self._allow(principal, PROPOSE_SCHEMA, ("Schema", event_type))  # a dry run of a proposal
            return self.deployment.registry.check(event_type, schema, fmt)

        r = await self._run(dry_run)
        return api.SchemaCheck(
            r.compatible, [str(f)[:1024] for f in r.compatibility], _findings(r.security)
        )

    # --- keys and subjects ------------------------------------------------------------------
    async def unwrap(self, principal: str, kid: str, cls: str) -> bytes:
        def unwrap() -> bytes:
            dek = self.deployment.keys.decryption_key(kid, cls, principal=principal)
            # The key service audits unwraps from its store, not cache hits (in-process decrypts);
            # a key leaving the deployment is always recorded.
            self.deployment.audit.record(
                "key.release", principal=principal, resource=f"class:{cls}", kid=kid, via="gateway"
            )
            return dek

        return await self._run(unwrap)

    async def forget(
        self, principal: str, subject: str, reason: str = "", close_epoch: bool = False
    ) -> api.ErasureCertificate:
        def forget() -> Certificate:
            return self.deployment.forget(
                subject, principal=principal, reason=reason, close_epoch=close_epoch
            ).certificate

        return _certificate(await self._run(forget))

    async def hold(self, principal: str, subject: str, reason: str) -> None:
        code = reason or DEFAULT_HOLD_REASON
        if not _REASON_CODE.match(code):
            raise InputError(
                "a hold reason must be a short code such as 'litigation-2026-17' (lowercase letters, digits, "
                "'.', '_', '-'): free text could carry personal data into the audit log",
                path="reason",
                rule="pattern",
            )

        def hold() -> None:
            self.deployment.keys.hold(subject, principal=principal, reason=code)

        await self._run(hold)

    async def release(self, principal: str, subject: str) -> None:
        def release() -> None:
            self.deployment.keys.release(subject, principal=principal)

        await self._run(release)

    # --- operator reads and enrollment (the CLI's client mode) ------------------------------
    async def audit_records(self, principal: str, n: int) -> list[dict[str, Any]]:
        def tail() -> list[dict[str, Any]]:
            self._allow(principal, READ_AUDIT, AUDIT_RESOURCE)
            return [{"index": r.index, "time": r.time, "principal": r.principal, "action": r.action,
                     "resource": r.resource, "outcome": r.outcome, "reason": r.reason, "meta": dict(r.meta)}
                    for r in self.deployment.audit.tail(n)]

        return await self._run(tail)

    async def alerts(self, principal: str, n: int) -> list[dict[str, Any]]:
        from eventward._internal.monitor.alerts import as_json, recorded_alerts

        def listing() -> list[dict[str, Any]]:
            self._allow(principal, READ_AUDIT, AUDIT_RESOURCE)
            return [as_json(i, a) for i, a in recorded_alerts(self.deployment.audit)[-n:]]

        return await self._run(listing)

    async def lag(self, principal: str) -> list[dict[str, Any]]:
        from eventward._internal.monitor.lag import group_lags

        def listing() -> list[dict[str, Any]]:
            self._allow(principal, READ_AUDIT, AUDIT_RESOURCE)  # as `eventward lag`: it names every group
            return [{"group": g.group, "stream": g.stream, "committed": g.committed, "end": g.end, "lag": g.lag}
                    for g in group_lags(self.deployment.transport)]

        return await self._run(listing)

    async def keys_status(self, principal: str) -> dict[str, Any]:
        def status() -> dict[str, Any]:
            self._allow(principal, READ_AUDIT, AUDIT_RESOURCE)  # as `eventward keys status`: audit metadata
            st = self.deployment.keys.status()
            return {
                "classes": [{"class": c.cls, "kek": c.kek_id, "live_keks": list(c.live_keks),
                             "destroyed_keks": list(c.destroyed_keks), "deks": c.deks, "subjects": c.subjects,
                             "erased_keys": c.erased_keys} for c in st.classes],
                "legal_holds": st.holds, "erasures": st.erasures, "revocation_epoch": st.revocation_epoch,
            }

        return await self._run(status)

    async def dead_letters(
        self, principal: str, topic: str, include_resolved: bool, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        def listing() -> tuple[list[dict[str, Any]], bool]:
            check_stream_name(topic)
            # Subscribe is decided by the listing itself (and audited when denied), as in `dlq list`
            entries = self.deployment.dead_letters(principal, topic).list(
                principal=principal, include_resolved=include_resolved)
            return [dict(e.summary()) for e in entries[:limit]], len(entries) > limit

        return await self._run(listing)

    async def approve_service(
        self, principal: str, request: bytes, may_seal: Mapping[str, Sequence[str]], days: int,
        control_urls: Sequence[str], nats_servers: Sequence[str],
    ) -> bytes:
        from eventward._internal.control.identity import EnrollmentRequest
        from eventward._internal.policy.base import ROTATE_KEYS

        def approve() -> bytes:
            service = EnrollmentRequest.parse(request).principal
            # decided before the CSR is certified or recorded: a refused approval changes nothing
            self._allow(principal, ROTATE_KEYS, ("Producer", service))
            grant = self.control_plane.approve(
                principal, request, {t: list(types) for t, types in may_seal.items()}, days=days,
                control_urls=control_urls, nats_servers=nats_servers)
            from eventward._internal.certstore import apply_nats_pins

            try:  # NATS admits the new certificate at once, as `eventward service approve` does
                apply_nats_pins(self.deployment.home.certs, self.deployment.home.run_dir / "nats")
            except OSError as e:
                log.warning("approved %s but could not reload NATS pins: %s", service, type(e).__name__)
            return grant

        return await self._run(approve)

    # --- audit ------------------------------------------------------------------------------
    async def audit_checkpoint(self, principal: str) -> api.Checkpoint:
        def checkpoint() -> Any:
            self._allow(principal, READ_AUDIT, AUDIT_RESOURCE)
            return self.deployment.audit.checkpoint()

        cp = await self._run(checkpoint)
        return api.Checkpoint(cp.size, cp.root.hex(), cp.time, _note_signature(cp.text), cp.origin)

    async def audit_prove(self, principal: str, index: int, tree_size: int | None) -> api.InclusionProof:
        def prove() -> Any:
            self._allow(principal, READ_AUDIT, AUDIT_RESOURCE)
            return self.deployment.audit.prove(index, tree_size)

        p = await self._run(prove)
        return api.InclusionProof(p.index, p.tree_size, p.leaf_hash.hex(), [h.hex() for h in p.hashes])

    async def audit_certificate(self, principal: str, certificate_id: str) -> api.ErasureCertificate:
        return _certificate(await self._run(self._find_certificate, principal, certificate_id))

    def _find_certificate(self, principal: str, certificate_id: str) -> Certificate:
        self._allow(principal, READ_AUDIT, AUDIT_RESOURCE)
        m = _CERTIFICATE.match(certificate_id)
        missing = NotFoundError(f"no erasure certificate {certificate_id!r}")
        if m is None:
            raise missing
        index = int(m.group(1))
        log = self.deployment.audit
        if index >= log.size():
            raise missing
        rec = log.get(index)
        subject_hash = rec.meta.get("subject_hash")
        if rec.action != CERTIFICATE_ACTION or not isinstance(subject_hash, str):
            raise missing
        for idx, doc in log.attachments(CERTIFICATE_KIND, subject_hash):
            if idx == index:
                return Certificate.from_json(doc)
        raise missing

    # --- policy -----------------------------------------------------------------------------
    async def explain(
        self,
        principal: str,
        about: str,
        action: str,
        resource: Resource,
        context: Mapping[str, Any] | None = None,
    ) -> Decision:
        return await self._run(self._explain, principal, about, action, resource, context)

    def _explain(
        self, principal: str, about: str, action: str, resource: Resource, context: Mapping[str, Any] | None
    ) -> Decision:
        """Anyone may have their own decisions explained; another principal's reveal that
        principal's grants, so they need ManagePolicy (policy admins) or ReadAudit (auditors)."""
        policy = self.deployment.policy
        if about != principal and not policy.explain(principal, MANAGE_POLICY, POLICY_RESOURCE).allowed:
            d = policy.decide(principal, READ_AUDIT, AUDIT_RESOURCE)  # a denial here is audited
            if not d.allowed:
                raise AccessDenied(
                    f"{principal} may not explain decisions for other principals "
                    "(needs ManagePolicy or ReadAudit)",
                    explanation=d,
                )
        return policy.explain(about, action, resource, context)


def open_group_store(dep: Deployment) -> GroupStore:
    """Where gateway groups live: the shared database with ``store.backend: postgres`` (every
    replica serves every group), else ``consumers/gateway.db`` in the home."""
    if dep.config.store.backend == "postgres":
        from eventward._internal.store.sqlcompat import open_pg_tables

        return GroupStore.open_pg(open_pg_tables(dep.home, PG_TABLES, GROUP_LOCK))
    return GroupStore.open_sqlite(group_dir(dep.home.ensure()) / "gateway.db")


def gateway_backend(home: Home) -> DeploymentBackend:
    """What ``eventward serve`` loads by default: the home's deployment, owned by the backend."""
    return DeploymentBackend(Deployment.open(home), owned=True)


# --- mapping to the gateway's shapes ---------------------------------------------------------
def _findings(findings: Sequence[Finding]) -> list[str]:
    return [f"{f.path}: {f.kind}"[:_MAX_TEXT] for f in findings]


def _version(v: RegistryVersion) -> api.SchemaVersion:
    status = "approved" if v.state in (State.ACTIVE, State.SUPERSEDED) else "pending"
    return api.SchemaVersion(v.type, v.version, v.fmt, dict(v.document), status)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _note_signature(text: str) -> str:
    """The signature line of a C2SP signed note (key hash || Ed25519 signature), base64url."""
    last = text.rstrip("\n").rsplit("\n", 1)[-1]
    try:
        return _b64url(base64.b64decode(last.rsplit(" ", 1)[-1], validate=True))
    except ValueError:
        raise AuditIntegrityError("checkpoint has no readable signature line") from None


def _certificate(c: Certificate) -> api.ErasureCertificate:
    """The gateway's summary, with the full signed document (proof and checkpoint) for offline
    verification. The erasure is complete in every live store at ``erased_at``; residual copies
    (backups) become unrecoverable when the KEK versions the document names are rotated away."""
    claims = c.claims
    destroyed = claims["dek_versions_destroyed"]
    return api.ErasureCertificate(
        f"erasure-{c.index}",
        c.subject_hash,
        destroyed if isinstance(destroyed, int) else sum(destroyed.values()),
        str(claims["issued_at"]),
        str(claims["erased_at"]),
        c.index,
        _b64url(c.signature),
        c.to_json(),
    )
