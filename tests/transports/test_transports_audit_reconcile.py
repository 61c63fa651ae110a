"""On NATS the batch lives in the broker and the Publish record in the home's audit log.

A producer killed between the PubAck and its audit flush leaves batches in JetStream with no
record; nothing reconciles them on open (the opening principal may not read every topic), so
``reconcile`` is run explicitly, and the guarantee README states is: after it runs, every batch
sealed more than the grace period ago has exactly one Publish record.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.client_world import World
from eventward._internal.audit.log import AuditLog
from eventward._internal.audit.reconcile import reconcile
from eventward._internal.client.trust import ACTIVE, TrustedKey
from eventward._internal.client.verify import SealVerifier
from eventward._internal.crypto import seal as sealing
from eventward._internal.home import Home
from eventward._internal.log import natsserver

from .conftest import nats_client

PROC = str(Path(__file__).resolve().parents[1] / "client" / "audit_proc.py")


class _Keys:
    def __init__(self, signer: sealing.Signer) -> None:
        self.key = TrustedKey(signer.kid, signer.principal, signer.public_key(), ACTIVE, 0.0)

    def resolve(self, kid: str) -> TrustedKey:
        assert kid == self.key.kid
        return self.key


def test_attack_publish_records_lost_with_the_producer_are_restored_on_nats(
    nats_node: natsserver.Node, tmp_path: Path
) -> None:
    t = nats_client(nats_node)
    stream = f"orders.{uuid.uuid4().hex[:10]}"
    t.create_stream(stream)
    signer = sealing.Signer("orders-svc", Ed25519PrivateKey.generate())
    now = time.time()
    batches = []
    # what a producer killed after its PubAcks leaves: batches 0 and 1 had their records
    # flushed, 2 and 3 lost theirs with the process's audit buffer
    for i in range(4):
        events = [f'{{"n":{i},"k":{k}}}'.encode() for k in range(3)]
        bid = f"inst-{i * 3}"
        sealed_at = now if i == 3 else now - 600
        blob = sealing.seal(
            signer, instance="inst", stream=stream, batch=bid, first_seq=i * 3, events=events, time=sealed_at
        )
        t.append(stream, bid, events, blob)
        batches.append(bid)
    verifier = SealVerifier(_Keys(signer))
    try:
        with AuditLog.open(Home(tmp_path / "home")) as audit:
            for bid in batches[:2]:
                audit.record("Publish", principal="orders-svc", resource=f"Topic::{stream}", stream=stream, batch=bid)
            assert audit.unpublished(stream, batches) == batches[2:]
            # the node is shared with other tests: reconcile this test's stream only
            first = reconcile(audit, t, source="nats", verify=verifier.verify_seal, streams=[stream])
            assert (first.records_added, first.held_back) == (1, 1)  # the fresh batch may be a live producer's
            assert audit.unpublished(stream, batches) == batches[3:]
            again = reconcile(audit, t, source="nats", verify=verifier.verify_seal, grace_s=0, streams=[stream])
            assert again.records_added == 1
            assert audit.unpublished(stream, batches) == []
            rec = [r for r in audit.tail(10) if r.meta.get("reconciled")]
            assert [r.meta["batch"] for r in rec] == batches[2:]
            assert all(r.principal == "orders-svc" and r.meta["seal"] == "verified" for r in rec)
            assert [(r.meta["first_seq"], r.meta["last_seq"], r.meta["first_offset"]) for r in rec] == [
                (6, 8, 6),
                (9, 11, 9),
            ]
            assert reconcile(audit, t, source="nats", grace_s=0, streams=[stream]).records_added == 0
    finally:
        t.close()


def test_attack_kill9_producer_loses_audit_on_nats(nats_node: natsserver.Node, tmp_path: Path) -> None:
    """A real producer process over NATS, auditing to the home's buffered log, killed mid-stream."""
    world = World(tmp_path / "home")  # registers the producer's signing key in the home
    topic = f"audit.{uuid.uuid4().hex[:10]}"
    t = nats_client(nats_node)
    t.create_stream(topic)
    proc = subprocess.Popen(
        [sys.executable, PROC, "nats", str(world.home.root), nats_node.url(tls=False), topic],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(300):
            assert proc.stdout.readline(), "producer exited early"  # type: ignore[union-attr]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    try:
        with AuditLog.open(world.home) as audit:
            records, end = [], t.end_offset(topic)
            while len(records) < end:  # a read returns a page, not the whole stream
                records += t.read(topic, len(records), end - len(records))
            stored = list(dict.fromkeys(r.batch for r in records))
            missing = audit.unpublished(topic, stored)
            assert missing, "the kill left every record written: the attack did not bite"
            # nothing reconciles NATS on open; run explicitly, every producer being dead
            check = world.verifier().verify_seal
            result = reconcile(audit, t, source="nats", verify=check, grace_s=0, streams=[topic])
            assert result.records_added == len(missing)
            assert audit.unpublished(topic, stored) == []
            added = [r for r in audit.tail(len(missing)) if r.meta.get("reconciled")]
            assert [r.meta["batch"] for r in added] == missing
            assert all(r.principal == world.trust.signer_for("signup-svc").principal for r in added)
            assert all(r.outcome == "ok" and r.meta["seal"] == "verified" for r in added)
    finally:
        t.close()
        world.close()
