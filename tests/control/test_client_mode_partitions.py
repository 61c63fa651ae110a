"""Client mode on a partitioned topic: services learn the partition count from the control plane
(the policy lives there, not with them), so producers route and group members split as in home mode."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from client.test_client_partitions_deployed import TOPIC, open_home
from eventward._internal.control.client import LocalControlAPI
from eventward._internal.control.connect import Client
from eventward._internal.control.identity import ServiceIdentity
from eventward._internal.control.plane import ControlPlane
from eventward._internal.log.embedded import EmbeddedLog
from eventward._internal.log.partitions import partition_streams
from eventward.errors import AccessDenied


@pytest.fixture
def world(tmp_path: Path):
    dep = open_home(tmp_path / "control-plane")
    plane = ControlPlane.open(dep)
    clients: list[Client] = []

    def client(principal: str, may_seal: dict[str, list[str]]) -> Client:
        ident = ServiceIdentity.create(tmp_path / "services" / principal, principal)
        ident.install(plane.approve("admin", ident.request_path.read_bytes(), may_seal))
        c = Client(ident, LocalControlAPI(plane, principal), EmbeddedLog.open(dep.home), notice_wait=0.5)
        clients.append(c)
        return c

    yield dep, client
    for c in clients:
        c.close()
        c.transport.close()
    plane.close()
    dep.close()


def test_client_mode_producer_routes_and_members_split_by_the_control_planes_count(world) -> None:
    dep, client = world
    with client("meter-svc", {TOPIC: ["Reading"]}).producer(TOPIC) as p:
        assert p.partitions == 3  # from the control plane's policy, not given by hand
        sent = [p.send("Reading", {"meter": f"m-{i}", "kwh": i}) for i in range(45)]
    assert {s for s in dep.transport.streams() if s.startswith(TOPIC)} == set(partition_streams(TOPIC, 3))
    billing = client("billing", {})
    got: list[str] = []
    for m in range(2):  # two members of one group, each with its own replay state and erasure answers
        c = billing.consumer(TOPIC, group="bill", from_beginning=True, partition_of=(m, 2))
        assert c.partition_count == 3 and c.partitions == ([0, 2] if m == 0 else [1])
        assert not c.run(lambda e: got.append(e.id), idle_timeout=0).refused
    assert Counter(got) == Counter(sent)
    whole = billing.consumer(TOPIC, group="all", from_beginning=True)  # default: every partition
    seen: list[str] = []
    whole.run(lambda e: seen.append(e.id), idle_timeout=0)
    assert sorted(seen) == sorted(sent)


def test_attack_service_outside_the_topic_learns_nothing_of_it(world) -> None:
    dep, client = world
    nosy = client("nosy", {})
    before = dep.audit.size()
    with pytest.raises(AccessDenied):
        nosy.producer(TOPIC)
    with pytest.raises(AccessDenied):
        nosy.consumer(TOPIC)
    denied = [r for r in dep.audit.tail(5) if r.action == "control.topic"]
    assert dep.audit.size() > before and denied and all(r.outcome == "denied" for r in denied)
