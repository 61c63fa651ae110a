"""The SDK's attack suite, consumed through the gateway: refused, dead-lettered, nothing good lost.

Events are published over HTTPS, then attacked the way someone with access to the log file or
the broker would: a batch sealed with a key the trust registry never saw, a flipped bit in a
genuine seal, a changed byte in a stored event, a genuine batch appended again, an event id
used twice. A consumer reading through the gateway gets exactly the genuine events, and every
attacked record is in the dead-letter stream with its reason.
"""

from __future__ import annotations

import struct
import uuid

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from eventward._internal.crypto import seal as sealing
from eventward._internal.gateway.groups import group_id

from .gw_deployment import ORDERS, SHIPPING, cloudevent, order, topic


def _publish(world, t: str, datas: list[dict]) -> list[str]:
    events = [cloudevent(d) for d in datas]
    r = world.publish(ORDERS, t, events)
    assert r.status == 200, r.json
    return r.json["ids"]


def _consume_all(world, t: str, group: str) -> tuple[list[str], int]:
    r = world.consume(SHIPPING, t, group, max_events=1000)
    assert r.status == 200, r.json
    events = r.json["events"]
    return [d["event"]["id"] for d in events], (events[-1]["offset"] + 1 if events else 0)


def _reasons(world, t: str, group: str) -> dict[int, str]:
    mine = group_id(SHIPPING, group)
    return {d.offset: d.reason for d in world.dead_letters(SHIPPING, t) if d.group == mine}


def test_forged_tampered_and_replayed_records_are_refused_and_genuine_ones_delivered(dep_world) -> None:
    t = topic()
    first = _publish(dep_world, t, [order(i) for i in range(3)])
    second = _publish(dep_world, t, [order(3), order(4)])
    genuine = dep_world.dep.transport.read(t, 0, 100)

    # 1. spoof: a batch sealed with a key the trust registry never registered
    forged = orjson.loads(genuine[0].data)
    forged["id"] = str(uuid.uuid4())
    forged["data"]["total"] = 0.01
    raw = orjson.dumps(forged)
    rogue = sealing.Signer(ORDERS, Ed25519PrivateKey.generate())
    blob = sealing.seal(rogue, instance="rogue", stream=t, batch="spoof-1", first_seq=10_000, events=[raw])
    spoof_at = dep_world.dep.transport.append(t, "spoof-1", [raw], blob)

    # 2. replay: the first genuine batch appended again under another batch id, seal unchanged
    batch1 = [r for r in genuine if r.batch == genuine[0].batch]
    replay_at = dep_world.dep.transport.append(t, "replay-1", [r.data for r in batch1], batch1[0].seal)

    # 3. tamper: a byte of a stored event changed (its total); 4. a flipped bit in a genuine seal
    third = _publish(dep_world, t, [order(0), order(1)])
    fourth = _publish(dep_world, t, [order(2)])
    tampered_at = dep_world.end(t) - 3
    db = dep_world.log_db()
    try:
        query = "SELECT data FROM events WHERE stream=? AND offset=?"
        (data,) = db.execute(query, (t, tampered_at)).fetchone()
        assert b'"total":19.5' in bytes(data)
        db.execute(
            "UPDATE events SET data=? WHERE stream=? AND offset=?",
            (bytes(data).replace(b'"total":19.5', b'"total":99.5'), t, tampered_at),
        )
        bid, seal_blob = db.execute(
            "SELECT id, seal FROM batches WHERE stream=? ORDER BY id DESC LIMIT 1", (t,)
        ).fetchone()
        sig_at = 4 + struct.unpack(">I", seal_blob[:4])[0]
        flipped = bytearray(seal_blob)
        flipped[sig_at + 7] ^= 0x40
        db.execute("UPDATE batches SET seal=? WHERE id=?", (bytes(flipped), bid))
    finally:
        db.close()
    bad_sig_at = dep_world.end(t) - 1

    ids, upto = _consume_all(dep_world, t, "attacked")
    assert ids == first + second + third[1:]  # every genuine, untouched event, in log order
    reasons = _reasons(dep_world, t, "attacked")
    assert reasons[spoof_at] == "unknown_key"
    assert {reasons[replay_at + i] for i in range(3)} == {"batch_mismatch"}
    assert reasons[tampered_at] == "digest_mismatch"
    assert reasons[bad_sig_at] == "bad_signature"
    assert len(reasons) == 6
    assert fourth  # published (and then attacked): refused, not delivered

    # Not acked yet: the same genuine events come back, and the refusals are not dead-lettered twice.
    assert _consume_all(dep_world, t, "attacked")[0] == ids
    assert len(_reasons(dep_world, t, "attacked")) == 6
    assert dep_world.ack(SHIPPING, t, "attacked", upto).status == 200
    assert _consume_all(dep_world, t, "attacked")[0] == []


def test_duplicate_event_ids_are_refused_before_and_after_the_ack(dep_world) -> None:
    t = topic()
    dup = str(uuid.uuid4())
    assert dep_world.publish(ORDERS, t, [cloudevent(order(1), id_=dup)]).status == 200
    assert dep_world.publish(ORDERS, t, [cloudevent(order(2), id_=dup)]).status == 200  # same id again

    ids, upto = _consume_all(dep_world, t, "dups")
    assert ids == [dup]  # the first copy only; the second is a replay, refused within the same fetch
    assert _reasons(dep_world, t, "dups") == {1: "duplicate"}
    assert dep_world.ack(SHIPPING, t, "dups", upto).status == 200

    # After the ack the id is in the group's durable guard: a third copy is refused too,
    # and since nothing deliverable precedes it, the group moves past it at once.
    assert dep_world.publish(ORDERS, t, [cloudevent(order(3), id_=dup)]).status == 200
    assert _consume_all(dep_world, t, "dups")[0] == []
    assert _reasons(dep_world, t, "dups") == {1: "duplicate", 2: "duplicate"}
    assert dep_world.dep.transport.committed(group_id(SHIPPING, "dups"), t) == 3


def test_a_refused_record_first_in_line_is_committed_so_polls_do_not_reexamine_it(dep_world) -> None:
    t = topic()
    raw = orjson.dumps({"specversion": "1.0", "id": "x", "source": "/x", "type": "OrderPlaced"})
    rogue = sealing.Signer(ORDERS, Ed25519PrivateKey.generate())
    blob = sealing.seal(rogue, instance="rogue", stream=t, batch="rogue-1", first_seq=0, events=[raw])
    dep_world.dep.transport.create_stream(t)
    dep_world.dep.transport.append(t, "rogue-1", [raw], blob)
    before = len(dep_world.audit_records())
    for _ in range(3):
        assert _consume_all(dep_world, t, "front")[0] == []
    assert dep_world.dep.transport.committed(group_id(SHIPPING, "front"), t) == 1
    assert _reasons(dep_world, t, "front") == {0: "unknown_key"}
    refusals = [
        r for r in dep_world.audit_records()[before:] if r.action == "Subscribe" and r.reason == "unknown_key"
    ]
    assert len(refusals) == 1  # examined once, not on every poll
