"""Explicit acks over a real deployment: un-acked events come back, acked ones never do.

The group offset moves only when the client acks, a fetch that the client never acked is
redelivered even by a gateway restarted in between, and no principal can move another
principal's group by naming it.
"""

from __future__ import annotations

import asyncio
import threading
import time

from eventward._internal.gateway.backend import Delivery
from eventward._internal.gateway.deployment_backend import DeploymentBackend
from eventward._internal.gateway.groups import group_id

from .gw_deployment import ANALYTICS, ORDERS, SHIPPING, cloudevent, order, topic


def _ids(reply) -> list[str]:
    assert reply.status == 200, reply.json
    return [d["event"]["id"] for d in reply.json["events"]]


def _publish(world, t: str, n: int) -> list[str]:
    events = [cloudevent(order(i)) for i in range(n)]
    assert world.publish(ORDERS, t, events).status == 200
    return [e["id"] for e in events]


def test_unacked_events_are_redelivered_and_acked_ones_are_not(dep_world) -> None:
    t = topic()
    ids = _publish(dep_world, t, 5)
    first = dep_world.consume(SHIPPING, t, "g1", max_events=3)
    assert _ids(first) == ids[:3] and first.json["lag"] == 2
    assert _ids(dep_world.consume(SHIPPING, t, "g1", max_events=3)) == ids[:3]  # nothing acked yet

    last = first.json["events"][1]["offset"]  # ack the first two only
    r = dep_world.ack(SHIPPING, t, "g1", last + 1)
    assert r.status == 200 and r.json == {"group": "g1", "committed": last + 1}
    again = dep_world.consume(SHIPPING, t, "g1", max_events=10)
    assert _ids(again) == ids[2:]  # the un-acked third one is back, the acked two are not
    assert dep_world.ack(SHIPPING, t, "g1", again.json["events"][-1]["offset"] + 1).status == 200
    assert _ids(dep_world.consume(SHIPPING, t, "g1")) == []
    assert dep_world.dep.transport.committed(group_id(SHIPPING, "g1"), t) == dep_world.end(t)


def test_ack_cannot_skip_ahead_or_move_back(dep_world) -> None:
    t = topic()
    _publish(dep_world, t, 4)
    page = dep_world.consume(SHIPPING, t, "g2", max_events=2)
    upto = page.json["events"][-1]["offset"] + 1
    ahead = dep_world.ack(SHIPPING, t, "g2", upto + 1)  # past what was delivered
    assert ahead.status == 409 and ahead.json["code"] == "conflict"
    assert dep_world.dep.transport.committed(group_id(SHIPPING, "g2"), t) is None
    assert dep_world.ack(SHIPPING, t, "g2", upto).json["committed"] == upto
    back = dep_world.ack(SHIPPING, t, "g2", 0)  # idempotent, never backwards (that is a replay)
    assert back.status == 200 and back.json["committed"] == upto
    never = dep_world.ack(SHIPPING, t, "never-consumed", 1)
    assert never.status == 409


def test_groups_belong_to_their_principal(dep_world) -> None:
    t = topic()
    ids = _publish(dep_world, t, 3)
    mine = dep_world.consume(SHIPPING, t, "shared-name")
    assert _ids(mine) == ids
    # analytics-svc names the same group, consumes and acks everything ...
    theirs = dep_world.consume(ANALYTICS, t, "shared-name")
    assert _ids(theirs) == ids
    assert dep_world.ack(ANALYTICS, t, "shared-name", theirs.json["events"][-1]["offset"] + 1).status == 200
    # ... which moved its own group only: shipping's events are all still waiting for shipping
    assert _ids(dep_world.consume(SHIPPING, t, "shared-name")) == ids


def test_unacked_events_survive_a_gateway_restart(dep_world) -> None:
    t = topic()
    ids = _publish(dep_world, t, 3)

    def consume(backend: DeploymentBackend) -> list[Delivery]:
        return asyncio.run(backend.consume(SHIPPING, t, "restart", 10, 0)).deliveries

    before = DeploymentBackend(dep_world.dep)
    try:
        got = consume(before)
        assert [d.event["id"] for d in got] == ids
        assert asyncio.run(before.ack(SHIPPING, t, "restart", got[0].offset + 1)) == got[0].offset + 1
    finally:
        before.close()  # the gateway stops with two events delivered and not acked
    after = DeploymentBackend(dep_world.dep)
    try:
        assert [d.event["id"] for d in consume(after)] == ids[1:]
    finally:
        after.close()


def test_long_poll_wakes_up_when_an_event_is_published(dep_world) -> None:
    t = topic()
    _publish(dep_world, t, 1)
    page = dep_world.consume(SHIPPING, t, "poll")
    dep_world.ack(SHIPPING, t, "poll", page.json["events"][-1]["offset"] + 1)
    later = [cloudevent(order(7))]
    timer = threading.Timer(0.3, lambda: dep_world.publish(ORDERS, t, later))
    timer.start()
    started = time.monotonic()
    r = dep_world.consume(SHIPPING, t, "poll", wait=10)
    timer.join()
    assert _ids(r) == [later[0]["id"]]
    assert time.monotonic() - started < 5  # woken by the publish, not by the 10 s deadline
    empty_started = time.monotonic()
    assert _ids(dep_world.consume(SHIPPING, topic(), "poll-none", wait=0.4)) == []
    assert 0.35 <= time.monotonic() - empty_started < 5  # waited for its deadline, then returned


def test_consumer_lag_is_exported(dep_world) -> None:
    t = topic()
    _publish(dep_world, t, 4)
    dep_world.consume(SHIPPING, t, "lagging", max_events=1)
    text = dep_world.metrics.render()
    assert f'eventward_gateway_consumer_lag{{topic="{t}",group="lagging"}} 3' in text
