"""Attacks on the sealed log: every refusal is typed, dead-lettered, and costs nothing good.

Each test produces genuine batches, attacks the SQLite file (or the trust registry) the way
someone with file access would, then consumes: the attacked events are refused with a
reason code and land in the DLQ; every genuine event of the other batches is delivered.
"""

from __future__ import annotations

import struct
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from eventward._internal import envelope
from eventward._internal.client.trust import TrustRegistry
from eventward._internal.crypto import seal as sealing
from eventward._internal.crypto.fields import REDACTED
from eventward._internal.crypto.seal import Signer
from eventward.errors import AccessDenied

from .client_world import (
    ADMIN,
    ANALYST,
    INTRUDER,
    OPS,
    PRODUCER,
    READER,
    SENTINEL_EMAIL,
    TOPIC,
    TYPE,
    customer,
)


def produce(world, batches=3, per=3, **kw) -> list[list[str]]:
    out = []
    with world.producer(**kw) as p:
        for b in range(batches):
            out.append([p.send(TYPE, customer(b * per + i)) for i in range(per)])
            p.flush()
    return out


def consume_and_check(world, good: list[str], refused: dict[str, int], principal=READER, **kw):
    c = world.consumer(principal, **kw)
    got, stats = world.consume(c)
    assert [e.id for e in got] == good  # every genuine event, in log order
    assert stats.refused == refused
    assert all(e.verified for e in got)
    dead = world.dlq(principal).list(principal=principal)
    assert sorted(d.reason for d in dead) == sorted(r for r, n in refused.items() for _ in range(n))
    return got, stats, dead


def flat(batches, skip=()) -> list[str]:
    return [i for b in batches for i in b if i not in skip]


def batch_row(db, n: int) -> tuple[int, bytes]:
    return db.execute(
        "SELECT id, seal FROM batches WHERE stream = ? ORDER BY id LIMIT 1 OFFSET ?", (TOPIC, n)
    ).fetchone()


def test_forged_signature_is_refused(world):
    ids = produce(world)
    db = world.db()
    bid, blob = batch_row(db, 1)
    sig_at = 4 + struct.unpack(">I", blob[:4])[0]
    forged = bytearray(blob)
    forged[sig_at + 7] ^= 0x40
    db.execute("UPDATE batches SET seal = ? WHERE id = ?", (bytes(forged), bid))
    _, _, dead = consume_and_check(world, flat([ids[0], ids[2]]), {"bad_signature": 3})
    assert {d.code for d in dead} == {"bad_seal"} and [d.offset for d in dead] == [3, 4, 5]


def test_revoked_key_refuses_its_batches_and_rotation_keeps_old_ones(world):
    old = produce(world, batches=1)
    old_kid = world.trust.signer_for(PRODUCER).kid
    world.trust.rotate(PRODUCER, by=ADMIN)
    new = produce(world, batches=1)
    c = world.consumer()
    got, _ = world.consume(c)
    assert [e.id for e in got] == flat(old + new)  # a retired key still verifies what it sealed
    world.trust.revoke(old_kid, by=ADMIN)
    _, stats, _ = consume_and_check(world, flat(new), {"revoked_key": 3}, principal=OPS)
    assert stats.delivered == 3


def test_unknown_key_and_borrowed_key_are_refused(world):
    good = produce(world, batches=1)
    rogue = Signer(PRODUCER, Ed25519PrivateKey.generate())  # claims to be the producer, unknown key
    with world.producer(signer=rogue) as p:
        forged_ids = [p.send(TYPE, customer(100 + i)) for i in range(2)]
    borrowed = Signer(
        PRODUCER,
        Ed25519PrivateKey.from_private_bytes(
            (world.home.producer_keys / f"{ANALYST}.{world.trust.signer_for(ANALYST).kid}.key").read_bytes()
        ),
    )
    with world.producer(signer=borrowed) as p:  # a real key of another principal
        forged_ids += [p.send(TYPE, customer(200))]
    later = produce(world, batches=1)
    got, _, _ = consume_and_check(world, flat(good + later), {"unknown_key": 2, "wrong_producer": 1})
    assert not {e.id for e in got} & set(forged_ids)


def test_one_changed_byte_in_a_stored_event(world):
    ids = produce(world)
    db = world.db()
    (data,) = db.execute("SELECT data FROM events WHERE stream = ? AND offset = 4", (TOPIC,)).fetchone()
    changed = data.replace(b'"plan":"pro"', b'"plan":"prp"')
    assert changed != data and len(changed) == len(data)
    db.execute("UPDATE events SET data = ? WHERE stream = ? AND offset = 4", (changed, TOPIC))
    _, _, dead = consume_and_check(world, flat(ids, skip={ids[1][1]}), {"digest_mismatch": 1})
    assert dead[0].original == changed  # kept exactly as stored


def test_event_dropped_from_a_batch_is_reported(world):
    ids = produce(world)
    world.db().execute("DELETE FROM events WHERE stream = ? AND offset = 4", (TOPIC,))
    _, stats, _ = consume_and_check(world, flat(ids, skip={ids[1][1]}), {})
    assert stats.gaps == 2  # the offset hole and the producer's sequence gap
    reasons = {e.reason for e in world.audit.events if e.outcome == "error"}
    assert {"offset_gap", "sequence_gap"} <= reasons


def test_stored_values_of_another_sqlite_type_are_refused_not_crashed_on(world):
    ids = produce(world)
    db = world.db()
    db.execute("UPDATE events SET data = CAST(data AS TEXT) WHERE stream = ? AND offset = 1", (TOPIC,))
    db.execute("UPDATE events SET data = 42 WHERE stream = ? AND offset = 2", (TOPIC,))
    bid, _ = batch_row(db, 2)
    db.execute("UPDATE batches SET seal = 'not a seal' WHERE id = ?", (bid,))
    # A TEXT copy of the same bytes still hashes the same: it is the same event.
    consume_and_check(world, [ids[0][0], ids[0][1], *ids[1]], {"digest_mismatch": 1, "malformed": 3})


def test_events_added_to_a_sealed_batch(world):
    ids = produce(world)
    db = world.db()
    bid, _ = batch_row(db, 0)
    (data,) = db.execute("SELECT data FROM events WHERE stream = ? AND offset = 0", (TOPIC,)).fetchone()
    fake = data.replace(b"pro", b"fre")
    end = world.log.end_offset(TOPIC)
    rows = [
        (TOPIC, end, bid, 3, data),  # beyond the sealed count
        (TOPIC, end + 1, bid, 1, fake),  # a sealed position, other bytes
        (TOPIC, end + 2, bid, 0, data),
    ]  # an exact copy of a sealed event: a replay
    db.executemany("INSERT INTO events(stream, offset, batch, idx, data) VALUES (?, ?, ?, ?, ?)", rows)
    db.execute("UPDATE streams SET next_offset = ? WHERE name = ?", (end + 3, TOPIC))
    consume_and_check(world, flat(ids), {"not_in_seal": 1, "digest_mismatch": 1, "duplicate": 1})


def test_events_reordered_within_a_sealed_batch(world):
    ids = produce(world)
    db = world.db()
    rows = dict(db.execute("SELECT offset, data FROM events WHERE stream = ? AND offset IN (3, 4)", (TOPIC,)))
    # Swap bytes and positions together, so each event still matches its sealed digest.
    db.execute("UPDATE events SET data = ?, idx = 1 WHERE stream = ? AND offset = 3", (rows[4], TOPIC))
    db.execute("UPDATE events SET data = ?, idx = 0 WHERE stream = ? AND offset = 4", (rows[3], TOPIC))
    consume_and_check(world, [*ids[0], ids[1][1], ids[1][2], *ids[2]], {"out_of_order": 1})


def test_unsealed_event_injected_into_the_file(world):
    ids = produce(world)
    env = envelope.make(
        TYPE, "evil", customer(9), extensions={"ewproducer": PRODUCER, "ewseq": 9, "ewschema": 1}
    )
    db = world.db()
    end = world.log.end_offset(TOPIC)
    db.execute(
        "INSERT INTO events(stream, offset, batch, idx, data) VALUES (?, ?, 424242, 0, ?)",
        (TOPIC, end, envelope.encode(env)),
    )
    db.execute("UPDATE streams SET next_offset = ? WHERE name = ?", (end + 1, TOPIC))
    more = produce(world, batches=1)
    consume_and_check(world, flat(ids + more), {"unsealed": 1})


def test_old_batch_reappended_under_a_new_batch_id(world):
    ids = produce(world)
    db = world.db()
    _, blob = batch_row(db, 0)
    old = [
        r[0]
        for r in db.execute(
            "SELECT data FROM events WHERE stream = ? AND offset < 3 ORDER BY offset", (TOPIC,)
        )
    ]
    world.log.append(TOPIC, "replayed-batch", old, blob)  # a perfectly valid seal, from another batch
    consume_and_check(world, flat(ids), {"batch_mismatch": 3})


def test_old_events_replayed_under_their_own_batch(world):
    ids = produce(world)
    db = world.db()
    bid, _ = batch_row(db, 0)
    end = world.log.end_offset(TOPIC)
    db.execute(
        "INSERT INTO events SELECT stream, offset + ?, batch, idx, data FROM events "
        "WHERE stream = ? AND batch = ?",
        (end, TOPIC, bid),
    )
    db.execute("UPDATE streams SET next_offset = ? WHERE name = ?", (end + 3, TOPIC))
    consume_and_check(world, flat(ids), {"duplicate": 3})


def test_duplicate_event_ids_are_refused(world):
    with world.producer() as p:
        first = p.send(TYPE, customer(1), id="order-1")
        p.flush()
        p.send(TYPE, customer(2), id="order-1")
        other = p.send(TYPE, customer(3))
    _, _, dead = consume_and_check(world, [first, other], {"duplicate": 1})
    assert dead[0].code == "replay" and dead[0].event_id == "order-1"


def test_envelope_must_match_its_seal(world):
    ids = produce(world, batches=1)
    signer = world.trust.signer_for(ANALYST)  # a legitimate principal forging the producer's name

    def crafted(producer: str, seq_shift: int, stream: str = TOPIC, batch: str = "x"):
        evs = [
            envelope.encode(
                envelope.make(
                    TYPE, "s", {}, extensions={"ewproducer": producer, "ewseq": i + seq_shift, "ewschema": 1}
                )
            )
            for i in range(2)
        ]
        blob = sealing.seal(signer, instance="i1", stream=stream, batch=batch, first_seq=0, events=evs)
        world.log.append(TOPIC, batch, evs, blob)

    crafted(PRODUCER, 0, batch="b-producer")  # envelope names another producer than the seal
    crafted(ANALYST, 5, batch="b-seq")  # ewseq outside the sealed range
    world.log.create_stream("elsewhere")
    crafted(ANALYST, 0, stream="elsewhere", batch="b-stream")  # sealed for another stream
    more = produce(world, batches=1)
    consume_and_check(world, flat(ids + more), {"wrong_producer": 2, "seq_mismatch": 2, "stream_mismatch": 2})


def test_stale_events_need_an_authorized_audited_replay(world):
    old = produce(world, batches=1, clock=lambda: time.time() - 48 * 3600)
    fresh = produce(world, batches=1)
    consume_and_check(world, flat(fresh), {"stale": 3})
    ops = world.consumer(OPS)
    with pytest.raises(AccessDenied):
        world.consumer(READER, group="r2").replay(lambda e: None, from_offset=0, by=READER)
    assert world.audit.find("Replay", outcome="denied", principal=READER)
    seen = []
    stats = ops.replay(seen.append, from_offset=0, to_offset=3)
    assert [e.id for e in seen] == flat(old) and stats.delivered == 3
    assert seen[0].data["email"] == f"0-{SENTINEL_EMAIL}"
    assert world.audit.find("Replay", outcome="ok", principal=OPS, from_offset=0, to_offset=3)
    assert world.log.committed(OPS, TOPIC) is None  # a replay moves no group offsets


def test_clearance_decides_who_reads_plaintext(world):
    ids = produce(world, batches=1)
    cleared, _ = world.consume(world.consumer(READER))
    uncleared, _ = world.consume(world.consumer(ANALYST))
    assert [e.id for e in cleared] == [e.id for e in uncleared] == ids[0]
    assert cleared[0].data == customer(0)
    assert uncleared[0].data == {**customer(0), "email": REDACTED, "name": REDACTED}
    tokens = world.consume(world.consumer(ANALYST, group="tok", uncleared="token"))[0]
    assert tokens[0].data["email"].startswith("ew") and SENTINEL_EMAIL not in tokens[0].data["email"]
    assert SENTINEL_EMAIL not in repr(cleared[0])


def test_consumer_without_subscribe_is_refused(world):
    produce(world, batches=1)
    c = world.consumer(INTRUDER)
    with pytest.raises(AccessDenied):
        world.consume(c)
    assert world.log.committed(INTRUDER, TOPIC) is None
    assert world.audit.find("Subscribe", outcome="denied", principal=INTRUDER)
    assert world.log.read(f"{TOPIC}.dlq", 0, 10) == []  # refused before touching anything


def test_retired_key_cannot_seal_new_batches(world, tmp_path):
    ids = produce(world, batches=1)
    stale_signer = world.trust.signer_for(PRODUCER)
    world.trust.rotate(PRODUCER, by=ADMIN)
    late = produce(world, batches=1, signer=stale_signer, clock=lambda: time.time() + 120)  # past the grace
    c = world.consumer(guard={"skew": 600})
    got, stats = world.consume(c)
    assert [e.id for e in got] == ids[0] and stats.refused == {"retired_key": 3}
    assert isinstance(world.trust, TrustRegistry) and late
