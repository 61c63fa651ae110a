"""``eventward.connect``: a service's producers and consumers in client mode.

The principal is the identity in the service's directory (its enrolled keys and certificate),
never an argument. Producers and consumers are the same classes as in home mode, given remote
seams: data keys, schemas and the service's own policy decisions come from the control plane;
seals are made with the service's own key and verified against anchor-signed trust entries;
events go straight to the broker with the service's own credentials. Nothing of the control
plane's (keyring, key store, audit key, CA key, other principals' keys) is ever here.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, suppress
from pathlib import Path
from typing import Any

import orjson

from eventward._internal import envelope
from eventward._internal.audit.log import ObservedAudit
from eventward._internal.client.consumer import Consumer
from eventward._internal.client.dlq import DeadLetters
from eventward._internal.client.producer import Producer
from eventward._internal.client.replay import ReplayGuard
from eventward._internal.client.verify import SealVerifier
from eventward._internal.control.client import (
    ClientAuthorizer,
    ControlAPI,
    NoticeFollower,
    RemoteKeys,
    RemoteNotices,
    RemoteSchemas,
    SignedTrust,
)
from eventward._internal.control.identity import ServiceIdentity
from eventward._internal.crypto.fields import FieldEncryptor
from eventward._internal.fieldspec import FieldSpec
from eventward._internal.home import Home
from eventward._internal.log.base import Record, Transport
from eventward.errors import EventwardError, KeyNotFound


class _PreparingCipher:
    """FieldEncryptor over RemoteKeys that fetches a batch's keys in one request: ``prepare_many``
    before a producer encrypts a ``send_many`` call, ``prefetch`` before a consumer reads a batch
    (the hooks the Producer and Consumer call when their encryptor has them)."""

    def __init__(self, keys: RemoteKeys) -> None:
        self._keys = keys
        self._fields = FieldEncryptor(keys)
        self.schemas: dict[str, RemoteSchemas] = {}  # per topic, registered by Client
        # The FieldEncryptor's own per-event and per-batch calls, bound here rather than wrapped
        # (a wrapper's argument packing was ~1 us of each event): ``want_keys`` collects a read
        # batch's key ids as the consumer parses it, ``resolve_wanted`` fills the batch's memo from
        # the keys ``prefetch_wanted`` fetched (RemoteKeys.decryption_keys asks nothing),
        # ``decrypt_many`` decrypts the batch ahead from that memo and ``batch_current`` says when
        # those outcomes went stale (an erasure notice moves RemoteKeys.revocations), and
        # ``decrypt`` opens an event's fields on its own.
        self.want_keys = self._fields.want_keys
        self.resolve_wanted = self._fields.resolve_wanted
        self.decrypt_many = self._fields.decrypt_many
        self.batch_current = self._fields.batch_current
        self.decrypt = self._fields.decrypt

    def prepare_many(self, topic: str, event_type: str, spec: FieldSpec, events: Sequence[Any], *,
                     principal: str | None = None) -> None:
        """The call's keys in one request (the principal is this service's, the control plane's to decide)."""
        if spec.classes:
            classes = sorted(spec.classes)
            subjects = dict.fromkeys(spec.subject_of(e) for e in events if isinstance(e, dict))
            self._keys.prepare(topic, event_type, [(s, c, 1) for s in subjects for c in classes])

    def prefetch(self, topic: str, records: Sequence[Record]) -> None:
        """The key ids the batch's events carry (their classes from the schema the event names),
        fetched in one request per event type; malformed events are left for the consumer to refuse."""
        schemas = self.schemas.get(topic)
        if schemas is None:
            return
        wanted: dict[str, dict[str, tuple[str, str | None]]] = {}
        for rec in records:
            try:
                env = orjson.loads(rec.data)
                spec = schemas.get(env["type"], env[envelope.EXT_SCHEMA]).spec
                shash = env.get(envelope.EXT_SUBJECT)
                for t in spec.targets(env["data"]):
                    token = t.container[t.key]
                    if isinstance(token, str) and token.count(".") >= 3:
                        wanted.setdefault(env["type"], {})[token.split(".")[2]] = (t.rule.cls, shash)
            except (orjson.JSONDecodeError, KeyError, TypeError, EventwardError):
                continue
        for event_type, kids in wanted.items():
            self._keys.prefetch(topic, event_type, [(kid, cls, shash) for kid, (cls, shash) in kids.items()])

    def prefetch_wanted(self, topic: str, wanted: dict[str | None, dict[tuple[str, str, str | None], None]]) -> None:
        """``prefetch`` from the key ids the consumer collected while parsing the batch (so no
        record is parsed twice for it): one request per event type (per REQUEST_KEYS keys)."""
        for event_type, items in wanted.items():
            if event_type is not None and items:
                self._keys.prefetch(topic, event_type, list(dict.fromkeys(items)))

    def encrypt(self, event_id: str, data: dict[str, Any], spec: FieldSpec, *, principal: str,
                topic: str | None = None, event_type: str | None = None) -> tuple[dict[str, Any], str | None]:
        """Encrypt with the keys ``prepare_many`` fetched for the call; an event whose subject was
        not prepared (``send``, or caches dropped by an erasure notice meanwhile) fetches its keys
        and is encrypted again from the start: nothing of the first attempt is kept or spent
        (the subject's pseudonym is the first thing asked, before any key)."""
        try:
            return self._fields.encrypt(event_id, data, spec, principal=principal, topic=topic, event_type=event_type)
        except KeyNotFound:
            if not spec.classes or topic is None or event_type is None:
                raise
        self._keys.prepare(topic, event_type, [(spec.subject_of(data), c, 1) for c in sorted(spec.classes)])
        return self._fields.encrypt(event_id, data, spec, principal=principal, topic=topic, event_type=event_type)

    def encrypt_many(
        self, ids: Sequence[str], events: Sequence[Any], spec: FieldSpec, *, principal: str,
        topic: str | None = None, event_type: str | None = None,
    ) -> list[tuple[dict[str, Any], str | None]]:
        """FieldEncryptor.encrypt_many with the keys ``prepare_many`` fetched for the call (a
        producer's ``send_many``). If an erasure notice dropped them meanwhile, the call's keys are
        fetched again in one request and the whole call encrypted again from the start: nothing of
        the first attempt is kept (fresh nonces; its key uses stay counted, which only makes a
        key's ``max_uses`` bound come sooner)."""
        try:
            return self._fields.encrypt_many(ids, events, spec, principal=principal, topic=topic,
                                             event_type=event_type)
        except KeyNotFound:
            if not spec.classes or topic is None or event_type is None:
                raise
        self.prepare_many(topic, event_type, spec, events, principal=principal)
        return self._fields.encrypt_many(ids, events, spec, principal=principal, topic=topic, event_type=event_type)

    def reading_batch(self) -> AbstractContextManager[None]:
        return self._fields.reading_batch()

    def clear_cache(self) -> None:
        self._fields.clear_cache()


class Client:
    """One service's view of a deployment. Close it (or use ``with``) to stop following notices."""

    def __init__(self, identity: ServiceIdentity, api: ControlAPI, transport: Transport, *,
                 follow_notices: bool = True, key_ttl: float = 300.0, key_max_uses: int = 100_000,
                 notice_wait: float = 10.0) -> None:
        self.identity = identity
        self.principal = identity.principal
        if api.principal != self.principal:
            raise ValueError("the control-plane connection authenticates another identity than this directory's")
        self.api = api
        self.transport = transport
        anchor = identity.anchor_key()
        self.keys = RemoteKeys(api, ttl=key_ttl, max_uses=key_max_uses)
        self.trust = SignedTrust(api, anchor)
        self.trust.refresh(force=True)
        self.authorizer = ClientAuthorizer(api, self.trust)
        self.verifier = SealVerifier(self.trust)
        self.cipher = _PreparingCipher(self.keys)
        self.notices = NoticeFollower(api, anchor, self.keys, self.trust, self.authorizer, wait=notice_wait)
        if follow_notices:
            self.notices.start()
        self._closers: list[Any] = []

    def _schemas(self, topic: str) -> RemoteSchemas:
        schemas = self.cipher.schemas.get(topic)
        if schemas is None:
            schemas = self.cipher.schemas[topic] = RemoteSchemas(self.api, topic)
        return schemas

    def producer(self, topic: str, **kw: Any) -> Producer:
        kw.setdefault("partitions", self._partitions(topic))  # routed as the control plane's policy says
        return Producer(
            topic, principal=self.principal, transport=self.transport, signer=self.identity.signer("seal"),
            schemas=self._schemas(topic), encryptor=self.cipher, authorizer=self.authorizer,
            audit=ObservedAudit(), **kw,
        )

    def consumer(self, topic: str, *, group: str | None = None, **kw: Any) -> Consumer:
        """As home mode's: a partitioned topic is read whole unless ``partitions=[...]`` or
        ``partition_of=(member, members)`` splits the group; a member keeps its own replay state and
        answers erasure notices itself."""
        partition_count = kw.pop("partition_count", None) or self._partitions(topic)  # before anything is opened
        name = group or self.principal
        if kw.get("partition_of") is not None or kw.get("partitions") is not None:
            part = ("member-{}-of-{}".format(*kw["partition_of"]) if kw.get("partition_of") is not None
                    else "partitions-" + "-".join(map(str, kw["partitions"])))
            name = f"{name}.{part}"  # a group name the control API accepts (letters, digits, '._-')
            kw.setdefault("notice_group", name)
        guard = ReplayGuard.open(Home(self.identity.state_dir), name)
        self._closers.append(guard)
        dlq = DeadLetters(topic, transport=self.transport, verifier=self.verifier, authorizer=self.authorizer,
                          audit=ObservedAudit(), signer=self.identity.signer("dead_letter"))
        notices = RemoteNotices(self.api, self.notices)  # empty answers kept while no notice says otherwise
        notices.register(name)  # it must acknowledge every later forget
        return Consumer(
            topic, principal=self.principal, transport=self.transport, verifier=self.verifier,
            schemas=self._schemas(topic), encryptor=self.cipher, authorizer=self.authorizer, guard=guard,
            dlq=dlq, audit=ObservedAudit(), group=group, notices=notices,
            partition_count=partition_count, **kw,
        )

    def _partitions(self, topic: str) -> int:
        return int(self.api.topic(topic)["partitions"])

    def close(self) -> None:
        self.notices.stop()
        for part in reversed(self._closers):
            with suppress(Exception):
                part.close()
        self._closers.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(directory: str | Path, *, api: ControlAPI | None = None, transport: Transport | None = None,
            **kw: Any) -> Client:
    """A client for the enrolled service in ``directory``. ``api`` defaults to the control plane
    named in the grant over mTLS; ``transport`` to NATS with the service's own certificate."""
    identity = ServiceIdentity(Path(directory))
    grant = identity.grant()
    if api is None:
        from eventward._internal.control.http import HttpControlAPI

        api = HttpControlAPI.for_identity(identity)
    if transport is None:
        from eventward._internal.config import NatsConfig
        from eventward._internal.log.nats import NatsTransport

        servers = grant.get("nats_servers") or []
        if not servers:
            raise ValueError("the grant names no NATS servers: pass transport=")
        transport = NatsTransport.from_config(NatsConfig(
            servers=list(servers), ca=str(identity.ca_path), cert=str(identity.tls_cert_path),
            key=str(identity.tls_key_path)))
    return Client(identity, api, transport, **kw)
