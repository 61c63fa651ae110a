"""Every stored batch has its Publish audit record, even when its producer was killed.

The producer records Publish through the buffered audit log after the append; kill -9 in
between used to leave stored events with no audit record. An embedded home reconciles on
open: missing records are derived from the batch's seal (never the payload) and marked.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from eventward._internal import demo
from eventward._internal.audit.log import AuditLog
from eventward._internal.audit.verify import verify_log
from eventward._internal.crypto import seal as sealing
from eventward._internal.deployment import Deployment
from eventward._internal.envelope import decode
from eventward._internal.home import Home

PROC = str(Path(__file__).with_name("audit_proc.py"))
ROOT = Path(__file__).resolve().parents[2]


POLICY = """\
principals:
  admin: {type: user, roles: [eventward-admin]}
  alice: {type: user, roles: [schema-author]}
  bob: {type: user, roles: [schema-admin]}
  orders-svc: {type: service, roles: [writer]}
roles:
  eventward-admin:
    - {allow: manage_policy}
    - {allow: rotate_keys, producer: "*"}
    - {allow: read_audit}
  schema-author:
    - {allow: [propose_schema, read_schema], schema: "*"}
  schema-admin:
    - {allow: [approve_schema, read_schema], schema: "*"}
  writer:
    - {allow: publish, topic: orders, event_types: [Tick]}
"""
TICK = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"n": {"type": "integer"}, "note": {"type": "string", "maxLength": 64}},
    "required": ["n"],
}
PAYLOAD_MARK = "payload-mark-Zq7Xw"  # carried in every event: must never reach the audit log


@pytest.fixture
def home(tmp_path: Path) -> Home:
    """A home with a publish grant, orders-svc's signing key and an approved schema without
    sensitive fields (the test is about audit records, not encryption)."""
    h = Home(tmp_path / "home")
    with Deployment.init(h, admin=demo.ADMIN, policy_yaml=POLICY) as dep:
        dep.trust.ensure(demo.PRODUCER, by=demo.ADMIN)
        prop = dep.registry.propose(demo.AUTHOR, "Tick", TICK)
        dep.registry.approve(demo.APPROVER, "Tick", prop.version)
    return h


def _publish_records(dep: Deployment) -> list[Any]:
    dep.audit.flush()
    return [r for r in dep.audit.tail(1_000_000) if r.action == "Publish" and "batch" in r.meta]


def _stored_batches(dep: Deployment, topic: str = demo.TOPIC) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for r in dep.transport.read(topic, 0, 1_000_000):
        out.setdefault(r.batch, []).append(r)
    return out


def _kill_producers_mid_stream(home: Home, n: int, events_each: int) -> list[str]:
    procs = [
        subprocess.Popen(
            [sys.executable, PROC, str(home.root)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(n)
    ]
    acked: list[str] = []
    try:
        for proc in procs:
            got = 0
            while got < events_each:
                line = proc.stdout.readline()  # type: ignore[union-attr]
                assert line, "producer exited early"
                acked.append(line.strip())
                got += 1
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
        for proc in procs:
            proc.wait(timeout=30)
    assert all(p.returncode == -signal.SIGKILL for p in procs)
    return acked


def test_attack_kill9_producer_loses_audit(home: Home) -> None:
    acked = _kill_producers_mid_stream(home, n=2, events_each=300)
    with Deployment.open(home) as dep:
        stored = _stored_batches(dep)
        ids = {decode(r.data)["id"] for rs in stored.values() for r in rs}
        assert set(acked) <= ids
        # the killed producers' buffered records are gone; their batches are too young for the
        # reconcile on open (a live producer could still be about to write them)
        missing = set(stored) - {r.meta["batch"] for r in _publish_records(dep)}
        assert missing, "the kill left no batch without its record: the attack did not bite"

        result = dep.reconcile_audit(grace_s=0)  # both producers are dead
        assert result.records_added == len(missing)
        records = _publish_records(dep)
        by_batch = Counter(r.meta["batch"] for r in records)
        assert set(stored) <= set(by_batch), "a stored batch has no Publish audit record"
        assert all(by_batch[b] == 1 for b in stored)  # and never two
        reconciled = [r for r in records if r.meta.get("reconciled")]
        assert {r.meta["batch"] for r in reconciled} == missing
        for r in reconciled:
            rs = stored[r.meta["batch"]]
            s = sealing.parse(rs[0].seal)
            assert r.principal == demo.PRODUCER and r.outcome == "ok" and r.meta["seal"] == "verified"
            assert r.resource == f"Topic::{demo.TOPIC}" and r.meta["stream"] == demo.TOPIC
            assert r.meta["count"] == len(rs) == s.count
            assert (r.meta["first_seq"], r.meta["last_seq"]) == (s.first_seq, s.last_seq)
            assert r.meta["first_offset"] == rs[0].offset and r.meta["kid"] == s.kid
        assert dep.reconcile_audit(grace_s=0).records_added == 0  # idempotent
    assert verify_log(home.audit_db).ok
    raw = b"".join(p.read_bytes() for p in home.root.glob("audit.db*"))
    assert PAYLOAD_MARK.encode() not in raw  # records come from seals, never from payloads


def test_attack_forged_batch_gets_a_refused_record_and_old_batches_are_reconciled_on_open(home: Home) -> None:
    now = time.time()
    with Deployment.open(home) as dep:
        dep.transport.create_stream(demo.TOPIC)
        signer = dep.trust.signer_for(demo.PRODUCER)
        raw = [b'{"opaque":1}', b'{"opaque":2}']

        def append(signer: sealing.Signer, batch: str, sealed_at: float) -> None:
            blob = sealing.seal(
                signer, instance="i1", stream=demo.TOPIC, batch=batch, first_seq=0, events=raw, time=sealed_at
            )
            dep.transport.append(demo.TOPIC, batch, raw, blob)

        with dep.producer(demo.PRODUCER, demo.TOPIC) as p:  # a batch with its own record
            p.send("Tick", {"n": 0})
        append(signer, "old-" + uuid.uuid4().hex, now - 7200)  # its producer died two hours ago
        append(sealing.Signer(demo.PRODUCER, Ed25519PrivateKey.generate()), "forged", now - 7200)
        append(signer, "young-" + uuid.uuid4().hex, now)  # maybe a live producer's
    with Deployment.open(home) as dep:  # the reconcile on open
        records = {r.meta["batch"]: r for r in _publish_records(dep)}
        stored = _stored_batches(dep)
        old = next(b for b in stored if b.startswith("old-"))
        young = next(b for b in stored if b.startswith("young-"))
        assert records[old].meta["reconciled"] is True and records[old].outcome == "ok"
        assert records["forged"].outcome == "error" and records["forged"].reason == "unknown_key"
        assert records["forged"].meta["seal"] == "refused"
        assert young not in records
        produced = [b for b in stored if b not in (old, young, "forged")]
        assert len(produced) == 1 and "reconciled" not in records[produced[0]].meta
        assert dep.reconcile_audit(grace_s=0).records_added == 1
        assert _publish_records(dep)[-1].meta["batch"] == young


def test_concurrent_reconcilers_add_one_record_per_batch(tmp_path: Path) -> None:
    """Two processes opening the home at once must not both add a record for one batch."""
    home = Home(tmp_path / "h")
    event = {
        "action": "Publish",
        "principal": "orders-svc",
        "resource": "Topic::t",
        "meta": {"stream": "t", "batch": "b1", "reconciled": True},
    }
    with AuditLog.open(home) as a, AuditLog.open(home) as b:
        assert a.unpublished("t", ["b1", "b2"]) == ["b1", "b2"]
        from eventward._internal.audit.base import AuditEvent

        e = AuditEvent(**{**event, "outcome": "ok"})  # type: ignore[arg-type]
        assert a.reconcile("embedded", "t", 5, [e]) == 1
        assert b.reconcile("embedded", "t", 3, [e]) == 0  # already there; the watermark never moves back
        assert b.watermark("embedded", "t") == 5
        assert a.unpublished("t", ["b1", "b2"]) == ["b2"]
        assert a.size() == 1
