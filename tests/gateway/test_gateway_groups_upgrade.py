"""A gateway group from before the group store: its position and replay state carry over.

Gateways before the store kept a group's offset in the transport and its replay state in a
journal file in the home. The first fetch after the upgrade reads on from the transport's offset
and imports that state once, so nothing is delivered again and an acked id stays a duplicate.
"""

from __future__ import annotations

from eventward._internal.client.replay import ReplayGuard, group_dir
from eventward._internal.gateway.groups import group_id
from eventward._internal.gateway.groupstore import GroupStore

from .gw_deployment import ORDERS, SHIPPING, cloudevent, order, topic


def test_a_group_from_before_the_store_keeps_its_offset_and_replay_state(dep_world) -> None:
    t = topic()
    events = [cloudevent(order(i)) for i in range(3)]
    assert dep_world.publish(ORDERS, t, events).status == 200
    ids = [e["id"] for e in events]
    gid = group_id(SHIPPING, "from-before")
    old = ReplayGuard.open(dep_world.dep.home, gid)  # what the old gateway left behind
    old.settle(producer=ORDERS, stream=t, offset=0, event_id=ids[0], instance="i-old", seq=1, status="ok")
    old.close()
    dep_world.dep.transport.commit(gid, t, 1)

    r = dep_world.consume(SHIPPING, t, "from-before")
    assert r.status == 200 and [e["event"]["id"] for e in r.json["events"]] == ids[1:]
    store = GroupStore.open_sqlite(group_dir(dep_world.dep.home) / "gateway.db")
    try:
        seen = [row[:5] for row in store.changes(gid, None).seen]
    finally:
        store.close()
    assert (ORDERS, ids[0], t, 0, "ok") in seen
    assert dep_world.ack(SHIPPING, t, "from-before", 3).json["committed"] == 3
