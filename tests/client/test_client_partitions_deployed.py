"""Partitions as deployed: the count comes from policy.yaml, and every per-topic rule (Publish
and Subscribe grants, require_hybrid, the NATS streams ``nats up`` creates, the direct-path
auditor's topic) applies to a topic's partition streams."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import yaml

from eventward._internal.cli.nats import compiled_authorization
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward._internal.log.partitions import partition_streams
from eventward.errors import AccessDenied, SealError

POLICY = """\
principals:
  admin: {type: user, roles: [admin]}
  alice: {type: user, roles: [author]}
  bob: {type: user, roles: [approver]}
  meter-svc: {type: service, roles: [writer]}
  billing: {type: service, roles: [reader]}
  nosy: {type: service, roles: []}
roles:
  admin:
    - {allow: manage_policy}
    - {allow: rotate_keys, producer: "*"}
    - {allow: forget, subject: "*"}
  author:
    - {allow: [propose_schema, read_schema], schema: "*"}
  approver:
    - {allow: [approve_schema, read_schema], schema: "*"}
  writer:
    - {allow: publish, topic: readings}
  reader:
    - {allow: subscribe, topic: readings}
resources:
  Topic:
    readings: {partitions: 3}
"""
READING = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"meter": {"type": "string", "maxLength": 20}, "kwh": {"type": "integer"}},
    "required": ["meter", "kwh"],
}
TOPIC = "readings"


def open_home(root: Path, config: dict | None = None) -> Deployment:
    home = Home(root)
    if config is not None:
        home.ensure().config.write_text(yaml.safe_dump(config))
    d = Deployment.init(home, admin="admin", policy_yaml=POLICY)
    d.trust.ensure("meter-svc", by="admin")
    prop = d.registry.propose("alice", "Reading", READING)
    d.registry.approve("bob", "Reading", prop.version)
    return d


@pytest.fixture
def dep(tmp_path: Path) -> Iterator[Deployment]:
    d = open_home(tmp_path / "home")
    yield d
    d.close()


def produce(d: Deployment, n: int) -> list[str]:
    with d.producer("meter-svc", TOPIC) as p:
        assert p.partitions == 3  # from policy.yaml
        return [p.send("Reading", {"meter": f"m-{i}", "kwh": i}) for i in range(n)]


def test_deployed_producer_and_group_members_use_the_policy_count(dep: Deployment) -> None:
    sent = produce(dep, 60)
    assert dep.policy.partitions(TOPIC) == 3 and dep.policy.topic_of("readings.p2") == TOPIC
    assert {s for s in dep.transport.streams() if s.startswith(TOPIC)} == set(partition_streams(TOPIC, 3))
    got: list[str] = []
    for m in range(2):  # two members of one group, in one process here: each with its own journal
        c = dep.consumer("billing", TOPIC, group="bill", from_beginning=True, partition_of=(m, 2))
        assert c.partitions == ([0, 2] if m == 0 else [1])
        stats = c.run(lambda e: got.append(e.id), idle_timeout=0)
        assert not stats.refused
    assert Counter(got) == Counter(sent)


def test_attack_consumer_without_subscribe_gets_no_partition(dep: Deployment) -> None:
    produce(dep, 5)
    with pytest.raises(AccessDenied):
        dep.consumer("nosy", TOPIC, partitions=[1])


def test_attack_classical_seal_on_a_partition_of_a_hybrid_only_topic(tmp_path: Path) -> None:
    """``seals.require_hybrid: [readings]`` closes the topic to Ed25519-only seals: partition
    streams are the topic, so their classical seals are refused too (not just partition 0's)."""
    d = open_home(tmp_path / "home", {"seals": {"require_hybrid": [TOPIC]}})
    try:
        produce(d, 30)
        refused: Counter[str] = Counter()
        for stream in partition_streams(TOPIC, 3):
            for rec in d.transport.read(stream, 0, 100):
                try:
                    d.verifier.verify_record(rec)
                except SealError as e:
                    refused[e.reason] += 1
        assert refused == Counter({"hybrid_required": 30})
    finally:
        d.close()


def test_nats_up_creates_the_partition_streams(dep: Deployment) -> None:
    _, topics = compiled_authorization(dep.home)
    assert {"readings", "readings.p1", "readings.p2", "readings.dlq"} <= set(topics)
    assert "readings.p3" not in topics


def test_direct_path_auditor_decides_a_partition_batch_as_its_topic(dep: Deployment) -> None:
    """``serve``'s reconciler checks the sealer's Publish grant per batch: a batch on
    ``readings.p1`` is the writer's batch of ``readings``, recorded, not refused as
    ``unauthorized_producer`` with a critical alert."""
    from eventward._internal.control.reconciler import DirectAuditor
    from eventward._internal.log import framing
    from eventward._internal.log.nats import TailedBatch

    produce(dep, 30)
    recs = dep.transport.read("readings.p1", 0, 100)
    assert recs
    batch = [r for r in recs if r.batch == recs[0].batch]
    dep.transport.tail = None  # type: ignore[attr-defined]  # stands in for the NATS transport here
    auditor = DirectAuditor(dep, grace_s=0.0)
    try:
        tailed = TailedBatch("readings.p1", 1, 0, framing.Batch(recs[0].batch, [r.data for r in batch], recs[0].seal))
        verdict = auditor._verdict(tailed, {}, time.time() + 120)
        assert verdict.reason == "" and verdict.event is not None
        assert verdict.event.principal == "meter-svc" and verdict.event.resource == f"Topic::{TOPIC}"
    finally:
        auditor.stop()


def test_guard_scan_reads_every_partition(dep: Deployment) -> None:
    from eventward._internal.cli.guard import _scan_topic
    from eventward._internal.guard.scan import ScanReport

    produce(dep, 24)
    report = ScanReport()
    _scan_topic(dep, TOPIC, None, report)
    assert report.events == 24 and report.skipped == 0


def test_gateway_groups_read_every_partition_and_commit_each(dep: Deployment) -> None:
    """Gateway groups keep one offset per partition stream: a fetch reads every partition (each in
    order), an ack commits one partition, and what was acked is never delivered again."""
    from eventward._internal.gateway.groups import ConsumerGroups, SharedGuard, group_id, partition_of
    from eventward._internal.gateway.groupstore import GroupStore

    sent = produce(dep, 60)
    groups = ConsumerGroups(
        dep.transport, GroupStore.open_sqlite(dep.home.root / "consumers" / "gateway.db"), SharedGuard,
        lambda p, t, g, guard: dep.consumer(p, t, group=g, guard=guard),
    )
    try:
        first = groups.fetch("billing", TOPIC, "web", 9)
        assert len(first.deliveries) == 9 and {partition_of(TOPIC, d.stream) for d in first.deliveries} == {0, 1, 2}
        assert groups.fetch("billing", TOPIC, "web", 9).deliveries == first.deliveries  # nothing acked yet
        got: list[str] = []
        last: dict[str, int] = {}
        for _ in range(30):
            f = groups.fetch("billing", TOPIC, "web", 9)
            if not f.deliveries:
                break
            for d in f.deliveries:
                assert d.offset > last.get(d.stream, -1)  # in order within its partition
                last[d.stream] = d.offset
                got.append(d.id)
            for stream in partition_streams(TOPIC, 3):  # commit each partition on its own
                mine = [d.offset for d in f.deliveries if d.stream == stream]
                if mine:
                    assert groups.ack("billing", TOPIC, "web", max(mine) + 1, stream) == max(mine) + 1
        assert Counter(got) == Counter(sent)  # nothing lost, nothing delivered twice after its ack
        gid = group_id("billing", "web")
        assert all(dep.transport.committed(gid, s) == dep.transport.end_offset(s) for s in partition_streams(TOPIC, 3))
    finally:
        groups.close()


def test_reconciled_publish_records_name_the_topic_of_a_partition(dep: Deployment) -> None:
    """A producer killed before writing its Publish records: the records the next open derives
    from the sealed batches name the topic (as the producer's own would) and the partition stream."""
    from eventward._internal.audit.base import NullAudit
    from eventward._internal.audit.log import PUBLISHED_ACTION
    from eventward._internal.client.producer import Producer

    p = Producer(TOPIC, principal="meter-svc", transport=dep.transport, signer=dep.trust.signer_for("meter-svc"),
                 schemas=dep.registry, encryptor=dep.encryptor, authorizer=dep.policy, audit=NullAudit(),
                 partitions=3)
    for i in range(30):
        p.send("Reading", {"meter": f"m-{i}", "kwh": i})
    p.close()
    done = dep.reconcile_audit(grace_s=0)
    assert done.records_added >= 3
    recs = [r for r in dep.audit.tail(50) if r.action == PUBLISHED_ACTION and r.meta.get("reconciled")]
    assert {r.meta["stream"] for r in recs} == set(partition_streams(TOPIC, 3))
    assert {r.resource for r in recs} == {f"Topic::{TOPIC}"}
    assert all(r.outcome == "ok" and r.principal == "meter-svc" for r in recs)


def test_cli_consume_as_a_member_of_the_group(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from eventward._internal.cli import app
    from eventward.errors import InputError

    d = open_home(tmp_path / "home")
    try:
        sent = produce(d, 30)
        ends = {s: d.transport.end_offset(s) for s in partition_streams(TOPIC, 3)}
    finally:
        d.close()
    home = ["--home", str(tmp_path / "home")]
    runner = CliRunner()
    ids: list[str] = []
    for m in ("0/2", "1/2"):
        r = runner.invoke(app, [*home, "consume", TOPIC, "--as", "billing", "--from-beginning", "--idle", "0",
                                "--member", m])
        assert r.exit_code == 0, r.output
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
        ids += [orjson.loads(ln)["id"] for ln in lines]
        expect = ends[TOPIC] + ends[f"{TOPIC}.p2"] if m == "0/2" else ends[f"{TOPIC}.p1"]
        assert len(lines) == expect
    assert Counter(ids) == Counter(sent)
    r = runner.invoke(app, [*home, "consume", TOPIC, "--as", "billing", "--member", "2/2"])
    assert r.exit_code != 0 and isinstance(r.exception, InputError)  # member 2 of 2 does not exist


def test_every_member_of_a_split_group_answers_erasure_notices(dep: Deployment) -> None:
    """Members run in processes of their own, each with its own key cache and hooks: an erasure
    is complete only once each member answered, not when the first one did for the group."""
    members = [dep.consumer("billing", TOPIC, group="bill", partition_of=(m, 2)) for m in range(2)]
    assert [c.notice_group for c in members] == ["bill [member 0/2]", "bill [member 1/2]"]
    assert {"bill [member 0/2]", "bill [member 1/2]"} <= set(dep.notices.groups())
    dep.keys.subject_hash("meter-7")  # the subject has a pseudonym (as its first event would make)
    dep.forget("meter-7", principal="admin")
    due = dep.notices.due("bill [member 1/2]")
    assert len(due) == 1
    assert members[0].check_notices() == 1
    status = dep.notices.status(due[0])
    assert status is not None and [g.group for g in status.pending()] == ["bill [member 1/2]"]
    assert members[1].check_notices() == 1
    assert not dep.notices.status(due[0]).pending()
