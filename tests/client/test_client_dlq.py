"""Dead letters: exact bytes, no plaintext at rest, authenticated entries, audited redrive."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from eventward._internal import envelope
from eventward._internal.client.dlq import DLQ_TYPE, DeadLetters, dlq_stream
from eventward._internal.crypto import seal as sealing
from eventward._internal.crypto.seal import Signer
from eventward.errors import AccessDenied

from .client_world import (
    ADMIN,
    INTRUDER,
    OPS,
    PRODUCER,
    READER,
    SENTINEL_EMAIL,
    SENTINEL_NAME,
    TOPIC,
    TYPE,
    customer,
)


class Flaky:
    """A handler that fails on one event until fixed."""

    def __init__(self, bad_id: str) -> None:
        self.bad_id, self.fixed, self.calls, self.seen = bad_id, False, 0, []

    def __call__(self, event) -> None:
        if event.id == self.bad_id and not self.fixed:
            self.calls += 1
            raise RuntimeError(f"cannot handle {event.data['email']}")  # a message full of PII
        self.seen.append(event.id)


def home_bytes(world) -> bytes:
    return b"".join(p.read_bytes() for p in world.home.root.rglob("*") if p.is_file())


def test_failing_handler_dead_letters_encrypted_and_redrive_redelivers(world):
    with world.producer() as p:
        ids = [p.send(TYPE, customer(i)) for i in range(4)]
    handler = Flaky(ids[1])
    c = world.consumer(max_attempts=3)
    stats = c.run(handler, idle_timeout=0)
    assert handler.calls == 3 and handler.seen == [ids[0], ids[2], ids[3]]
    assert stats.dead_lettered == 1 and world.log.committed(READER, TOPIC) == 4
    [entry] = world.dlq().list(principal=READER)
    assert (entry.code, entry.reason, entry.offset, entry.attempts, entry.error) == (
        "handler_error",
        "handler_error",
        1,
        3,
        "RuntimeError",
    )
    assert entry.original == world.log.read(TOPIC, 1, 1)[0].data  # exactly as stored
    assert entry.seal == world.log.read(TOPIC, 1, 1)[0].seal
    raw = home_bytes(world)
    assert SENTINEL_EMAIL.encode() not in raw and SENTINEL_NAME.encode() not in raw
    assert SENTINEL_EMAIL.encode() not in entry.original
    assert base64.b64encode(entry.original) in raw  # the entry holds the original bytes verbatim

    with pytest.raises(AccessDenied):
        world.dlq().redrive(c, handler, principal=READER)  # Subscribe is not RedriveDLQ
    assert world.audit.find("dlq.redrive", outcome="denied", principal=READER)
    handler.fixed = True
    stats = world.dlq().redrive(c, handler, principal=OPS)
    assert stats.delivered == 1 and handler.seen[-1] == ids[1]
    assert world.audit.find("RedriveDLQ", principal=OPS, entries=1, delivered=1)
    assert world.dlq().list(principal=READER) == []  # resolved
    again = world.dlq().redrive(c, handler, principal=OPS)
    assert again.delivered == 0 and handler.seen.count(ids[1]) == 1
    # A restarted consumer of the group does not see it again either.
    c.close()
    handler2 = Flaky("none")
    world.consumer().run(handler2, idle_timeout=0)
    assert handler2.seen == []


def test_redrive_reverifies_the_original_seal(world):
    with world.producer() as p:
        ids = [p.send(TYPE, customer(i)) for i in range(3)]
    db = world.db()
    (data,) = db.execute("SELECT data FROM events WHERE offset = 0").fetchone()
    db.execute("UPDATE events SET data = ? WHERE offset = 0", (data.replace(b"pro", b"pr0"),))
    handler = Flaky(ids[2])
    c = world.consumer()
    c.run(handler, idle_timeout=0)
    assert [d.reason for d in world.dlq().list(principal=READER)] == ["digest_mismatch", "handler_error"]
    stats = world.dlq().redrive(c, handler, principal=OPS)  # handler still broken
    assert stats.delivered == 0 and stats.refused == {"digest_mismatch": 1, "handler_error": 1}
    assert handler.calls == 6
    world.trust.revoke(world.trust.signer_for(PRODUCER).kid, by=ADMIN)
    handler.fixed = True
    stats = world.dlq().redrive(c, handler, principal=OPS)  # the revocation reaches a running consumer
    assert stats.delivered == 0 and stats.refused == {"revoked_key": 2}
    assert handler.seen == [ids[1]]  # nothing new delivered
    assert len(world.dlq().list(principal=READER)) == 2  # both stay dead-lettered


def test_forged_dead_letters_are_ignored(world):
    with world.producer() as p:
        p.send(TYPE, customer(1))
    rogue = Signer(READER, Ed25519PrivateKey.generate())
    fake_original = envelope.encode(
        envelope.make(
            TYPE, "evil", customer(666), extensions={"ewproducer": PRODUCER, "ewseq": 0, "ewschema": 1}
        )
    )
    entry = envelope.encode(
        envelope.make(
            DLQ_TYPE,
            "evil",
            {
                "code": "handler_error",
                "reason": "handler_error",
                "stream": TOPIC,
                "offset": 0,
                "batch": "b",
                "index": 0,
                "event_id": "x",
                "event_type": TYPE,
                "attempts": 1,
                "error": "E",
                "group": READER,
                "original": base64.b64encode(fake_original).decode(),
                "seal": "",
            },
            extensions={"ewproducer": READER, "ewseq": 0},
        ),
        max_bytes=10**7,
    )
    world.log.create_stream(dlq_stream(TOPIC))
    world.log.append(
        dlq_stream(TOPIC),
        "forged",
        [entry],
        sealing.seal(
            rogue, instance="i", stream=dlq_stream(TOPIC), batch="forged", first_seq=0, events=[entry]
        ),
    )
    assert world.dlq().list(principal=READER) == []
    assert world.audit.find("dlq.list", outcome="error", reason="bad_seal", dlq_offset=0)
    seen = []
    assert world.dlq().redrive(world.consumer(), seen.append, principal=OPS).delivered == 0 and seen == []


def test_dead_letters_have_the_topic_access_policy(world):
    with pytest.raises(AccessDenied):
        world.dlq().list(principal=INTRUDER)
    with pytest.raises(AccessDenied):
        world.dlq().redrive(world.consumer(), lambda e: None, principal=INTRUDER)


def test_consumer_without_a_signing_key_cannot_dead_letter_and_commits_nothing(world, tmp_path):
    from eventward.errors import ConfigError

    with world.producer() as p:
        p.send(TYPE, customer(1))
    world.db().execute("UPDATE events SET data = ? WHERE offset = 0", (b"{}",))
    c = world.consumer(
        dlq=DeadLetters(TOPIC, transport=world.log, verifier=world.verifier(), authorizer=world.auth)
    )
    with pytest.raises(ConfigError):
        c.run(lambda e: None, idle_timeout=0)
    assert world.log.committed(READER, TOPIC) is None  # the refused event is not dropped
