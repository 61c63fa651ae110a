"""A deployment: everything one home holds, opened once and wired through the seams.

The CLI, the gateway and Python applications all build their producers and consumers
here, so every path gets the same enforcement: the Cedar policy engine as the single
Authorizer, the tamper-evident audit log as the single AuditSink, the key service, the
schema registry, the trust registry, and the transport the configuration selects.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Collection, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Literal

from eventward._internal import monitor
from eventward._internal.audit.certificate import Certificate, issue_erasure_certificate
from eventward._internal.audit.log import AuditLog
from eventward._internal.audit.reconcile import DEFAULT_GRACE_S, Reconciled, reconcile
from eventward._internal.backup import anchor_keys
from eventward._internal.client.consumer import Consumer
from eventward._internal.client.dlq import DeadLetters
from eventward._internal.client.producer import Producer
from eventward._internal.client.replay import ReplayGuard
from eventward._internal.client.trust import TrustRegistry
from eventward._internal.client.verify import SealVerifier
from eventward._internal.config import Config
from eventward._internal.crypto.fields import FieldEncryptor
from eventward._internal.guard.producer_guard import ProducerGuard
from eventward._internal.guard.vault import forget_claims
from eventward._internal.home import Home
from eventward._internal.keys.kms import connect_kms
from eventward._internal.keys.kms.base import KMS
from eventward._internal.keys.kms.local import MODE_PASSPHRASE, LocalKMS
from eventward._internal.keys.notices import ErasureNotices
from eventward._internal.keys.service import ErasureReceipt, KeyService
from eventward._internal.log.base import Transport
from eventward._internal.policy.base import SUBSCRIBE, check
from eventward._internal.policy.engine import PolicyEngine
from eventward._internal.policy.store import PolicyStore
from eventward._internal.schema.registry import Registry
from eventward.errors import ConfigError, EventwardError

_log = logging.getLogger("eventward.deployment")

# Reasons are codes ("gdpr-art17"), never free text: free text invites PII into the audit log.
_REASON_CODE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
PASSPHRASE_ENV = "EVENTWARD_PASSPHRASE"  # noqa: S105 - the variable's name, not a secret

# A new deployment is deny-by-default except for the bootstrap administrator, who can
# manage policy, keys and the audit log and nothing else until a real policy is applied.
BOOTSTRAP_POLICY = """\
principals:
  {admin}: {{type: user, roles: [eventward-admin]}}
roles:
  eventward-admin:
    - {{allow: manage_policy}}
    - {{allow: [forget, hold]}}
    - {{allow: rotate_keys, class: "*"}}
    - {{allow: rotate_keys, producer: "*"}}
    - {{allow: read_audit}}
"""


def is_reason_code(reason: str) -> bool:
    """Whether ``reason`` is a code the audit log may carry as is (``forget`` maps others to a generic one)."""
    return bool(_REASON_CODE.fullmatch(reason))


def open_transport(home: Home, config: Config, principal: str | None = None) -> Transport:
    """The transport the configuration names; nothing above this knows which one runs.

    Broker credentials are per principal (NATS maps the client certificate to a user), so a
    ``<principal>`` placeholder in ``nats.cert``/``nats.key`` is filled with the acting principal.
    """
    if config.transport == "embedded":
        from eventward._internal.log.embedded import EmbeddedLog

        return EmbeddedLog.open(home)
    if config.transport == "nats":
        from dataclasses import replace

        from eventward._internal.log.nats import NatsTransport

        cfg = config.nats
        if principal is not None:
            cfg = replace(
                cfg,
                cert=cfg.cert.replace("<principal>", principal) if cfg.cert else None,
                key=cfg.key.replace("<principal>", principal) if cfg.key else None,
            )
        elif "<principal>" in f"{cfg.cert}{cfg.key}":
            raise ConfigError("nats.cert/key name <principal>: open the deployment as a principal")
        return NatsTransport.from_config(cfg)
    from eventward._internal.log.kafka import KafkaTransport

    return KafkaTransport.from_config(config.kafka)


def open_kms(home: Home, config: Config) -> KMS | None:
    """None selects the local keyring (the KeyService opens it); otherwise the configured external KMS."""
    return connect_kms(config.kms, create=False)


def _passphrase(home: Home) -> str | None:
    if home.keyring.exists() and LocalKMS.header_mode(home.keyring) == MODE_PASSPHRASE:
        value = os.environ.get(PASSPHRASE_ENV)
        if not value:
            raise ConfigError(f"the keyring is passphrase-protected: set {PASSPHRASE_ENV}")
        return value
    return None


@dataclass
class Forgotten:
    """What ``forget`` returns: the key service's receipt and the signed, logged certificate."""

    receipt: ErasureReceipt
    certificate: Certificate


class Deployment:
    """Open with ``Deployment.open(home)`` (or ``init`` for a new home); close when done."""

    def __init__(
        self,
        home: Home,
        config: Config,
        audit: AuditLog,
        policy: PolicyEngine,
        keys: KeyService,
        registry: Registry,
        trust: TrustRegistry,
        transport: Transport,
    ) -> None:
        self.home = home
        self.config = config
        self.audit = audit
        self.policy = policy
        self.keys = keys
        self.registry = registry
        self.trust = trust
        self.transport = transport
        self.encryptor = FieldEncryptor(keys)
        self.guard = ProducerGuard(audit)  # untagged PII/secrets, per x-eventward-guard (guard/modes.py)
        self.verifier = SealVerifier(trust, require_hybrid=config.seals.require_hybrid,
                                     topic_of=getattr(policy, "topic_of", None))
        self._closers: list[Any] = []
        # every forget notifies every consumer group, which acknowledges (keys/notices.py)
        self.notices = ErasureNotices.open(home, audit=audit)
        # every forget and KEK rotation anchors the key state in the audit log (see eventward._internal.backup)
        keys.on_change = lambda why: anchor_keys(audit, keys, reason=why)
        monitor.instrument(self)  # metrics: audit observer, per-batch transport and KMS timing (docs/monitoring.md)

    # --- lifecycle -------------------------------------------------------------------------
    @classmethod
    def init(
        cls,
        home: Home,
        *,
        admin: str = "admin",
        policy_yaml: str | None = None,
        passphrase: str | None = None,
        clock: Callable[[], float] = time.time,
        cedar_files: Mapping[str, str] | None = None,
    ) -> Deployment:
        """Create a new home: master key and keyring, key store, audit key, bootstrap policy.

        ``cedar_files`` (name -> text) are hand-written Cedar policies applied with ``policy_yaml``."""
        home.ensure()
        config = Config.load(home.config)
        if not home.config.exists():
            home.config.write_text(config.dump())
        if config.store.backend == "postgres":  # bind the database to this new deployment first
            from eventward._internal.store.binding import bind_new_home

            bind_new_home(home, config.store)
        audit = AuditLog.open(home)
        try:
            store = PolicyStore.open(home, audit=audit, clock=clock)
            try:
                if not store.active_version():
                    store.init(policy_yaml or BOOTSTRAP_POLICY.format(admin=admin), cedar_files)
            finally:
                store.close()
            if not home.keyring.exists():
                policy = PolicyEngine.open(home, audit=audit, clock=clock)
                try:
                    KeyService.init(
                        home, authorizer=policy, audit=audit, passphrase=passphrase, kms=_new_kms(home, config)
                    ).close()
                finally:
                    policy.close()
        finally:
            audit.close()
        return cls.open(home, passphrase=passphrase, clock=clock)

    @classmethod
    def open(
        cls,
        home: Home,
        *,
        passphrase: str | None = None,
        clock: Callable[[], float] = time.time,
        principal: str | None = None,
    ) -> Deployment:
        """``principal`` selects per-principal broker credentials (see ``open_transport``)."""
        home.require()
        config = Config.load(home.config)
        opened: list[Any] = []
        try:
            audit = AuditLog.open(home)
            opened.append(audit)
            policy = PolicyEngine.open(home, audit=audit, clock=clock)
            opened.append(policy)
            keys = KeyService.open(
                home,
                authorizer=policy,
                audit=audit,
                passphrase=passphrase if passphrase is not None else _passphrase(home),
                kms=open_kms(home, config),
            )
            opened.append(keys)
            registry = Registry.open(home, authorizer=policy, audit=audit)
            opened.append(registry)
            trust = TrustRegistry.open(home, policy, audit)
            opened.append(trust)
            transport = open_transport(home, config, principal)
            opened.append(transport)
        except BaseException:
            for part in reversed(opened):
                with suppress(Exception):
                    part.close()
            raise
        dep = cls(home, config, audit, policy, keys, registry, trust, transport)
        if config.transport == "embedded":  # the log is local: a crashed producer's records are restored here
            try:
                dep.reconcile_audit()
            except EventwardError as e:  # the next open tries again; the data itself is intact
                _log.warning("audit reconcile failed (%s); retried on the next open", e.code)
        return dep

    def close(self) -> None:
        for part in (*reversed(self._closers), self.notices, self.transport, self.trust, self.registry, self.keys,
                     self.policy):
            with suppress(Exception):
                part.close()
        self._closers.clear()
        self.audit.close()

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reconcile_audit(
        self, *, grace_s: float = DEFAULT_GRACE_S, streams: Collection[str] | None = None
    ) -> Reconciled:
        """Add the Publish records a killed producer never wrote (see ``audit.reconcile``).

        Runs on every open of an embedded home. On NATS or Kafka run it as a principal that may
        read the topics (``streams``: those topics; default every one the transport lists).
        ``grace_s=0`` only when no producer is running.
        """

        def check(blob: bytes, stream: str, batch: str) -> Any:
            return self.verifier.verify_seal(blob, stream, batch, fresh=True)

        return reconcile(
            self.audit, self.transport, source=self.config.transport, verify=check, grace_s=grace_s, streams=streams,
            topic_of=self.policy.topic_of,
        )

    # --- data plane ------------------------------------------------------------------------
    def producer(self, principal: str, topic: str, **kw: Any) -> Producer:
        """A producer sealing with ``principal``'s registered signing key."""
        cfg = self.config.producer
        opts: dict[str, Any] = {"max_batch": cfg.batch_max, "max_delay_ms": cfg.linger_ms, "guard": self.guard,
                                "partitions": self.policy.partitions(topic), **kw}
        return Producer(
            topic,
            principal=principal,
            transport=self.transport,
            signer=self.trust.signer_for(principal),
            schemas=self.registry,
            encryptor=self.encryptor,
            authorizer=self.policy,
            audit=self.audit,
            **opts,
        )

    def dead_letters(self, principal: str, topic: str) -> DeadLetters:
        """Dead letters of ``topic``. Reading needs no key; the first entry ``principal`` writes
        uses its dead-letter key (or its seal key), made on first use if it has none (see
        TrustRegistry.first_dead_letter_key: only authorized operations write dead letters)."""
        return DeadLetters(
            topic,
            transport=self.transport,
            verifier=self.verifier,
            authorizer=self.policy,
            audit=self.audit,
            signer=lambda: self.trust.first_dead_letter_key(principal),
        )

    def consumer(
        self,
        principal: str,
        topic: str,
        *,
        group: str | None = None,
        from_beginning: bool = False,
        uncleared: Literal["redact", "token"] | None = None,
        types: Collection[str] | None = None,
        guard: ReplayGuard | None = None,
        partitions: Collection[int] | None = None,
        partition_of: tuple[int, int] | None = None,
        **kw: Any,
    ) -> Consumer:
        """A consumer whose replay state persists per group in the home.

        A partitioned topic is read whole by default; ``partitions=[...]`` or
        ``partition_of=(member, members)`` splits a group across processes. A member keeps its
        replay state apart (the journal is one process's) and answers erasure notices itself
        (each process drops its own cached keys and runs its own hooks), under the group's name
        and its assignment; offsets stay the group's.

        Subscribe is decided first, before streams, keys or replay state are looked at: a
        principal the policy does not let in learns nothing else. No key step is needed: the
        dead-letter key is made when the consumer writes its first dead letter.
        """
        for ctx in [{}] if types is None else [{"event_type": t} for t in sorted(types)]:
            check(self.policy, principal, SUBSCRIBE, ("Topic", topic), ctx)  # denials are audited
        cfg = self.config.consumer
        name = group or principal
        if partition_of is not None or partitions is not None:
            part = "member {}/{}".format(*partition_of) if partition_of else "partitions " + ",".join(
                map(str, partitions or ()))
            name = f"{name} [{part}]"
        if guard is None:
            guard = ReplayGuard.open(
                self.home,
                name,
                freshness=cfg.freshness_s,
                window_ids=cfg.dedup_window,
                window_seconds=max(48 * 3600, 2 * cfg.freshness_s),
            )
            self._closers.append(guard)
        self.notices.register_group(name)  # it must acknowledge every later forget
        return Consumer(
            topic,
            principal=principal,
            transport=self.transport,
            verifier=self.verifier,
            schemas=self.registry,
            encryptor=self.encryptor,
            authorizer=self.policy,
            guard=guard,
            dlq=self.dead_letters(principal, topic),
            audit=self.audit,
            group=group,
            types=types,
            from_beginning=from_beginning,
            uncleared=uncleared or cfg.uncleared,  # type: ignore[arg-type]
            max_attempts=max(1, cfg.max_retries),
            notices=self.notices,
            partition_count=self.policy.partitions(topic),
            partitions=partitions,
            partition_of=partition_of,
            notice_group=name,
            **kw,
        )

    # --- control plane ---------------------------------------------------------------------
    def forget(self, subject: str, *, principal: str, reason: str = "", close_epoch: bool = False) -> Forgotten:
        """Crypto-shred a data subject and record a signed erasure certificate in the audit log.
        ``reason`` is a short code (InputError for free text, which could carry PII);
        ``close_epoch`` rotates the subject's classes at once (``forget --now``)."""
        code = reason or "erasure-request"
        started = time.perf_counter()
        receipt = self.keys.forget(subject, principal=principal, reason=code, close_epoch=close_epoch)
        forget_claims(self.home, receipt.subject_hash)  # claim-check vault entries too (guard/vault.py)
        cert = issue_erasure_certificate(self.audit, receipt, principal=principal, reason_code=code)
        if not receipt.nothing_to_erase:
            self.notices.issue(receipt.subject_hash, cert.index)
        monitor.metrics.forget_seconds.observe(time.perf_counter() - started)  # acknowledged: certificate issued
        return Forgotten(receipt, cert)

    def settle_in_doubt(self) -> list[Forgotten]:
        """Erasures of this process whose COMMIT failed but landed (PostgreSQL: a timeout during
        COMMIT): finished and certified here, as ``forget`` would have, since a retry through
        another replica finds the subject already gone. ``serve`` runs it every few seconds."""
        out = []
        for receipt, principal, reason in self.keys.settle_erasures():
            forget_claims(self.home, receipt.subject_hash)
            cert = issue_erasure_certificate(self.audit, receipt, principal=principal, reason_code=reason)
            self.notices.issue(receipt.subject_hash, cert.index)
            out.append(Forgotten(receipt, cert))
        return out


def _new_kms(home: Home, config: Config) -> KMS | None:
    """At init an external KMS gets its KEKs created; the local keyring is made by KeyService."""
    return connect_kms(config.kms, create=True)
