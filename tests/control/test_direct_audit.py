"""The direct path audited: a client-mode producer publishes straight to NATS (it holds no audit
key), and the control plane's reconciler reads the sealed batches back from the stream, writing
one Publish record per verified batch, a refusal and an alert for batches nobody may own, and
consumer-group progress. Real nats-server on 127.0.0.1, one per test, stopped by PID."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from eventward._internal import demo
from eventward._internal.audit.log import PUBLISHED_ACTION
from eventward._internal.audit.records import AuditRecord
from eventward._internal.audit.verify import verify_log
from eventward._internal.config import Config
from eventward._internal.control.client import LocalControlAPI
from eventward._internal.control.connect import Client
from eventward._internal.control.identity import ServiceIdentity
from eventward._internal.control.plane import ControlPlane
from eventward._internal.control.reconciler import (
    ALERT_RULE,
    DURABLE,
    PROGRESS_ACTION,
    REFUSED_ACTION,
    DirectAuditor,
    Pass,
)
from eventward._internal.crypto import seal as sealing
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward._internal.log import natsserver
from eventward._internal.log.nats import NatsTransport, subject_for
from eventward._internal.monitor.rules import ALERT_ACTION
from eventward.errors import ConfigError, KeyStoreUnavailable
from transports.conftest import FAST, port_block
from transports.nats_world import raw_publish

from .conftest import MAY_SEAL


@dataclass
class NatsWorld:
    root: Path
    url: str
    dep: Deployment
    plane: ControlPlane
    opened: list[Any]

    def nats(self) -> NatsTransport:
        t = NatsTransport(self.url, backoff=FAST, timeout_s=2.0)
        self.opened.append(t)
        return t

    def identity(self, principal: str) -> ServiceIdentity:
        ident = ServiceIdentity.create(self.root / "services" / principal, principal)
        ident.install(self.plane.approve(demo.ADMIN, ident.request_path.read_bytes(), MAY_SEAL[principal]))
        return ident

    def client(self, ident: ServiceIdentity) -> Client:
        c = Client(ident, LocalControlAPI(self.plane, ident.principal), self.nats(), follow_notices=False)
        self.opened.append(c)
        return c

    def auditor(self, **kw: Any) -> DirectAuditor:
        a = DirectAuditor(self.dep, **{"interval_s": 0.05, "progress_s": 0.05, "wait_s": 0.05, **kw})
        self.opened.append(a)
        return a

    def records(self, action: str) -> list[AuditRecord]:
        self.dep.audit.flush()
        return [r for r in self.dep.audit.since(0, 100_000) if r.action == action]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[NatsWorld]:
    node = natsserver.start_all(tmp_path / "nats", size=1, port=port_block(1))[0]
    opened: list[Any] = []
    try:
        home = Home(tmp_path / "control-plane")
        home.root.mkdir(mode=0o700)
        home.config.write_text(yaml.safe_dump(
            {"transport": "nats", "nats": {"servers": [node.url(tls=False)], "timeout_s": 2.0}}))
        dep = Deployment.init(home, admin=demo.ADMIN)
        opened.append(dep)
        demo.setup(dep, lambda *a: None)
        demo.schemas(dep, demo.DemoResult(), lambda *a: None)
        dep.transport.create_stream(demo.TOPIC)
        plane = ControlPlane.open(dep)
        opened.append(plane)
        yield NatsWorld(tmp_path, node.url(tls=False), dep, plane, opened)
    finally:
        for o in reversed(opened):
            (o.stop if isinstance(o, DirectAuditor) else o.close)()
        natsserver.stop(node)


def until(what: str, check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


def produce(c: Client, n: int, start: int = 0) -> None:
    with c.producer(demo.TOPIC, max_batch=2) as p:
        for i in range(start, start + n):
            p.send(demo.EVENT_TYPE, demo.order(i), source="/shop/checkout")
        p.flush()


def stored_batches(t: NatsTransport) -> list[str]:
    end = t.end_offset(demo.TOPIC)
    records = []
    while len(records) < end:
        records += t.read(demo.TOPIC, len(records), end - len(records))
    return list(dict.fromkeys(r.batch for r in records))


def direct_publishes(w: NatsWorld) -> list[AuditRecord]:
    return [r for r in w.records(PUBLISHED_ACTION) if r.meta.get("via") == "direct"]


def test_direct_publishes_are_audited_once_across_restarts(world: NatsWorld) -> None:
    producer = world.client(world.identity(demo.PRODUCER))
    raw = world.nats()
    produce(producer, 5)  # batches of 2, 2, 1: sealed by the service's own key, straight to NATS
    assert not direct_publishes(world), "nothing audits the direct path until the reconciler runs"

    first = world.auditor().start()
    batches = stored_batches(raw)
    recs = until("a Publish record per stored batch", lambda: len(direct_publishes(world)) == len(batches)
                 and direct_publishes(world))
    kid = producer.identity.signer("seal").kid
    assert [r.meta["batch"] for r in recs] == batches
    assert all(r.principal == demo.PRODUCER and r.outcome == "ok" and r.meta["seal"] == "verified"
               and r.meta["kid"] == kid and r.meta["types"] == f"{demo.EVENT_TYPE}:{r.meta['count']}" for r in recs)
    assert sum(r.meta["count"] for r in recs) == 5 and [r.meta["first_offset"] for r in recs] == [0, 2, 4]
    assert not any(v in str([r.meta for r in recs]) for v in demo.pii_values())  # metadata only
    first.stop()

    produce(producer, 3, start=5)
    second = world.auditor().start()  # a restarted serve: same control db, same durable consumer
    batches = stored_batches(raw)
    until("records for the new batches", lambda: len(direct_publishes(world)) >= len(batches))
    second.stop()
    third = world.auditor()
    assert third.run_once().published == 0  # a third start finds nothing left to do
    recs = direct_publishes(world)
    assert [r.meta["batch"] for r in recs] == batches  # each batch exactly once, in stream order
    # The offline command agrees: nothing is missing, so it adds nothing.
    assert world.dep.reconcile_audit(grace_s=0, streams=[demo.TOPIC]).records_added == 0
    assert verify_log(world.dep.audit).ok


def test_delivered_but_unrecorded_batches_are_replayed_after_a_crash(world: NatsWorld) -> None:
    """The durable consumer moves on delivery (AckNone); the control db says what was recorded."""
    producer = world.client(world.identity(demo.PRODUCER))
    produce(producer, 4)
    world.auditor().run_once()
    produce(producer, 4, start=4)
    # a crash after delivery, before the records: the server-side cursor ran ahead of the db
    ahead = world.nats().tail(demo.TOPIC, DURABLE, max_batches=10, wait_s=0.5)
    assert len(ahead) == 2 and world.nats().tail_position(demo.TOPIC, DURABLE) == 4
    again = world.auditor()
    assert again.run_once().published == 2
    assert [r.meta["batch"] for r in direct_publishes(world)] == stored_batches(world.nats())


def test_attack_forged_batch_on_stream(world: NatsWorld) -> None:
    """A batch sealed by a key nobody enrolled, claiming the real producer, injected straight into
    the stream (raw broker access): refused and alerted, never a Publish record for anyone."""
    producer = world.client(world.identity(demo.PRODUCER))
    raw = world.nats()
    produce(producer, 2)
    genuine = raw.read(demo.TOPIC, 0, 2)
    forger = sealing.Signer(demo.PRODUCER, Ed25519PrivateKey.generate())
    forged_id = f"forged-{uuid.uuid4().hex[:8]}"
    events = [r.data for r in genuine]  # real event bytes: only the sealing key is wrong
    raw.append(demo.TOPIC, forged_id, events, sealing.seal(
        forger, instance="x", stream=demo.TOPIC, batch=forged_id, first_seq=100, events=events))
    produce(producer, 1, start=2)  # the stream goes on after the forgery

    world.auditor().start()
    refused = until("a refusal", lambda: world.records(REFUSED_ACTION))
    until("the batch after the forgery audited", lambda: len(direct_publishes(world)) == 2)
    assert len(refused) == 1
    r = refused[0]
    assert r.outcome == "denied" and r.reason == "unknown_key" and r.principal == "eventward.reconciler"
    assert r.meta["batch"] == forged_id and r.meta["kid"] == forger.kid and r.meta["seq"] == 2
    alerts = [a for a in world.records(ALERT_ACTION) if a.meta.get("rule") == ALERT_RULE]
    assert len(alerts) == 1 and alerts[0].meta["severity"] == "critical" and alerts[0].reason == "unknown_key"
    assert forged_id not in {p.meta.get("batch") for p in world.records(PUBLISHED_ACTION)}
    assert all(p.principal == demo.PRODUCER for p in direct_publishes(world))
    # the offline reconcile must not attribute it either (the watermark moved past it)
    assert world.dep.reconcile_audit(grace_s=0, streams=[demo.TOPIC]).records_added == 0
    assert forged_id not in {p.meta.get("batch") for p in world.records(PUBLISHED_ACTION)}
    assert verify_log(world.dep.audit).ok
    again = world.auditor()  # a restart refuses nothing twice
    again.run_once()
    assert len(world.records(REFUSED_ACTION)) == 1


def test_attack_enrolled_key_seals_a_topic_it_was_not_granted(world: NatsWorld) -> None:
    """A real, enrolled service key (a consumer's) sealing orders: the seal verifies, the grant does not."""
    ident = world.identity(demo.ANALYTICS)
    producer = world.client(world.identity(demo.PRODUCER))
    produce(producer, 1)
    raw = world.nats()
    events = [r.data for r in raw.read(demo.TOPIC, 0, 1)]
    bid = f"{demo.ANALYTICS}-{uuid.uuid4().hex[:8]}"
    raw.append(demo.TOPIC, bid, events, sealing.seal(
        ident.signer("seal"), instance="i", stream=demo.TOPIC, batch=bid, first_seq=0, events=events))
    result = world.auditor().run_once()
    assert (result.published, result.refused) == (1, 1)
    (r,) = world.records(REFUSED_ACTION)
    assert r.reason == "unauthorized_producer" and r.meta["batch"] == bid
    assert {p.principal for p in world.records(PUBLISHED_ACTION)} == {demo.PRODUCER}


def _seal_raw(world: NatsWorld, ident: ServiceIdentity, events: list[bytes]) -> str:
    bid = f"{ident.principal}-{uuid.uuid4().hex[:8]}"
    world.nats().append(demo.TOPIC, bid, events, sealing.seal(
        ident.signer("seal"), instance="i", stream=demo.TOPIC, batch=bid, first_seq=0, events=events))
    return bid


def test_attack_enrolled_producer_seals_events_that_are_not_envelopes(world: NatsWorld) -> None:
    """The producer's own, granted key seals bytes that are no CloudEvent (or one without a type):
    the seal verifies, but a batch whose event types cannot be read is refused, never audited as a
    Publish of some type."""
    ident = world.identity(demo.PRODUCER)
    bids = [_seal_raw(world, ident, [b"not json"]), _seal_raw(world, ident, [b'{"id": "1", "data": {}}']),
            _seal_raw(world, ident, [b'["type", "x"]'])]
    result = world.auditor().run_once()
    assert (result.published, result.refused) == (0, 3)
    refused = world.records(REFUSED_ACTION)
    assert [r.meta["batch"] for r in refused] == bids and {r.reason for r in refused} == {"malformed_event"}
    assert not world.records(PUBLISHED_ACTION)


def test_attack_duplicate_type_key_is_read_as_consumers_read_it(world: NatsWorld) -> None:
    """An event naming a granted type first and an ungranted one last: JSON parsers (orjson, the
    consumers') keep the last, so the reconciler must decide on that one, not the first it sees."""
    ident = world.identity(demo.PRODUCER)
    doc = (b'{"specversion": "1.0", "id": "e1", "source": "/shop", "type": "%s", "type": "evil.type.v1", '
           b'"data": {"type": "%s"}}') % (demo.EVENT_TYPE.encode(), demo.EVENT_TYPE.encode())
    bid = _seal_raw(world, ident, [doc])
    result = world.auditor().run_once()
    assert (result.published, result.refused) == (0, 1)
    (r,) = world.records(REFUSED_ACTION)
    assert r.reason == "unauthorized_producer" and r.meta["batch"] == bid
    assert "evil" not in str(r.meta)  # the refusal names the batch, not the event's content


def test_consumer_group_progress_is_recorded_when_it_moves(world: NatsWorld) -> None:
    produce(world.client(world.identity(demo.PRODUCER)), 3)
    shipping = world.client(world.identity(demo.SHIPPING))
    auditor = world.auditor(progress_s=0.0)  # every pass looks
    c = shipping.consumer(demo.TOPIC, group="ship", from_beginning=True)
    try:
        seen: list[Any] = []
        c.run(seen.append, idle_timeout=0.3)
    finally:
        c.close()
    assert len(seen) == 3
    assert auditor.run_once().progress == 1
    (p,) = world.records(PROGRESS_ACTION)
    assert p.meta["group"] == "ship" and p.meta["committed"] == 3 and p.resource == f"Topic::{demo.TOPIC}"
    assert auditor.run_once().progress == 0  # it did not move: no record


def test_reconciler_knob_is_typed() -> None:
    cfg = Config.parse("reconciler: {enabled: false, grace_s: 5}")
    assert cfg.reconciler.enabled is False and cfg.reconciler.grace_s == 5
    with pytest.raises(ConfigError, match="reconciler"):
        Config.parse("reconciler: {interval_s: 0}")
    with pytest.raises(ConfigError, match="unknown"):
        Config.parse("reconciler: {enable: false}")


def test_serve_runs_the_reconciler(world: NatsWorld) -> None:
    """`eventward serve` over NATS starts the thread: the producer's batches get their records."""
    produce(world.client(world.identity(demo.PRODUCER)), 3)
    batches = stored_batches(world.nats())
    serve = subprocess.Popen(
        [str(Path(sys.executable).parent / "eventward"), "--home", str(world.dep.home.root), "serve",
         "--insecure-dev-no-auth", "--port", "0", "--no-monitor"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        recs = until("serve's Publish records", lambda: len(direct_publishes(world)) == len(batches)
                     and direct_publishes(world), timeout=30)
        assert [r.meta["batch"] for r in recs] == batches and {r.principal for r in recs} == {demo.PRODUCER}
    finally:
        serve.send_signal(signal.SIGINT)
        _, err = serve.communicate(timeout=30)
    assert "Traceback" not in err
    assert [r.meta["batch"] for r in direct_publishes(world)] == batches


def test_attack_foreign_message_on_stream_is_refused_not_skipped(world: NatsWorld) -> None:
    """Raw publish rights on the subject put a message that is no eventward batch at all into the
    stream: the reconciler refuses it by sequence (reason ``malformed``) and alerts, never skips it."""
    produce(world.client(world.identity(demo.PRODUCER)), 2)
    raw_publish(world.url, subject_for(demo.TOPIC), b'{"id": "x", "type": "OrderPlaced"}')
    result = world.auditor().run_once()
    assert (result.published, result.refused) == (1, 1)
    (r,) = world.records(REFUSED_ACTION)
    assert r.reason == "malformed" and r.meta["seq"] == 2 and "batch" not in r.meta
    assert [a.reason for a in world.records(ALERT_ACTION)] == ["malformed"]
    assert world.auditor().run_once() == Pass()  # remembered: nothing written twice


def test_a_failed_pass_loses_no_delivered_batch(world: NatsWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """The trust registry fails mid-pass after the broker delivered the batches (AckNone): the
    next pass re-reads them from the recorded floor, so none goes unaudited."""
    produce(world.client(world.identity(demo.PRODUCER)), 5)
    auditor = world.auditor()
    real = world.dep.verifier.verify_seal
    calls = {"n": 0}

    def flaky(*a: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyStoreUnavailable("trust store busy")
        return real(*a, **kw)

    monkeypatch.setattr(world.dep.verifier, "verify_seal", flaky)
    with pytest.raises(KeyStoreUnavailable):
        auditor.run_once()
    assert not direct_publishes(world)  # the pass's records are written together, or not at all
    assert world.nats().tail_position(demo.TOPIC, DURABLE) == 3  # yet the broker delivered them all
    assert auditor.run_once().published == 3
    assert [r.meta["batch"] for r in direct_publishes(world)] == stored_batches(world.nats())
