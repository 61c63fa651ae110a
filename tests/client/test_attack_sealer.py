"""Who sealed an event matters, not only that the seal verifies (SDK Consumer, AllowList world).

The same four attacks run on the SDK, CLI and gateway paths over a real Deployment in
tests/gateway/test_gateway_attack_sealer.py; here: that the sealer check costs one decision
per (producer, type) per batch, that it follows the policy as it is now, that consumers
write their dead letters under their dead-letter key, and that replay state of one producer
is out of another's reach while order and dedup still hold within each producer.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from eventward._internal import envelope
from eventward._internal.client.trust import DEAD_LETTER, SEAL
from eventward._internal.crypto import seal as sealing
from eventward._internal.crypto.seal import Signer
from eventward._internal.policy.base import PUBLISH, Decision, Resource

from .client_world import ADMIN, ANALYST, PRODUCER, READER, TOPIC, TYPE, customer

OTHER = "other-svc"  # a second producer with a publish grant of its own


class Counting:
    """An authorizer that counts the Publish questions it is asked."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.publish_asks = inner, 0

    def decide(
        self, principal: str, action: str, resource: Resource, context: Mapping[str, Any] | None = None
    ) -> Decision:
        if action == PUBLISH:
            self.publish_asks += 1
        return self.inner.decide(principal, action, resource, context)


def produce(world: Any, n: int) -> list[str]:
    """One genuine batch from the producer."""
    with world.producer() as p:
        return [p.send(TYPE, customer(i)) for i in range(n)]


def forge(
    world: Any, signer: Signer, n: int, *, instance: str = "attacker", first_seq: int = 0, ids: list[str] | None = None
) -> list[str]:
    """A batch sealed by ``signer`` with decryptable events (tokens as the producer would get them)."""
    version = world.schemas.active(TYPE)
    raws, out = [], []
    for i in range(n):
        eid = ids[i] if ids else str(uuid.uuid4())
        data, subject = world.enc.encrypt(eid, customer(500 + i), version.spec, principal=PRODUCER)
        ext = {envelope.EXT_PRODUCER: signer.principal, envelope.EXT_SEQ: first_seq + i, envelope.EXT_SCHEMA: 1}
        if subject is not None:
            ext[envelope.EXT_SUBJECT] = subject
        raws.append(envelope.encode(envelope.make(TYPE, "/attacker", data, id_=eid, extensions=ext)))
        out.append(eid)
    batch = f"forged-{uuid.uuid4().hex}"
    blob = sealing.seal(signer, instance=instance, stream=TOPIC, batch=batch, first_seq=first_seq, events=raws)
    if TOPIC not in world.log.streams():
        world.log.create_stream(TOPIC)
    world.log.append(TOPIC, batch, raws, blob)
    return out


def consume(world: Any, principal: str = READER, **kw: Any) -> tuple[list[tuple[str, str]], dict[str, int]]:
    got, stats = world.consume(world.consumer(principal, group=f"g-{uuid.uuid4().hex[:8]}", **kw))
    return [(e.id, e.producer) for e in got], stats.refused


def test_attack_unauthorized_sealer_one_decision_per_batch(world) -> None:
    before = produce(world, 4)
    forged = forge(world, world.trust.signer_for(ANALYST), 5)  # a reader's registered key, no publish grant
    after = produce(world, 4)
    counting = Counting(world.auth)
    c = world.consumer(READER)
    c._authorizer = counting
    got, stats = world.consume(c)
    assert [e.id for e in got] == before + after and stats.refused == {"unauthorized_producer": 5}
    assert counting.publish_asks == 3  # one per batch, not one per event
    dead = world.dlq(READER).list(principal=READER)
    assert [(d.code, d.reason, d.event_id) for d in dead] == [("forbidden", "unauthorized_producer", i) for i in forged]
    refusals = world.audit.find("Subscribe", outcome="error", reason="unauthorized_producer")
    assert {e.meta["producer"] for e in refusals} == {ANALYST}
    # The policy in force decides: once the producer's grant is withdrawn, its events are refused too.
    world.auth.revoke(PRODUCER, PUBLISH, ("Topic", TOPIC))
    got, refused = consume(world)
    assert got == [] and refused == {"unauthorized_producer": 13}


def test_attack_dead_letter_key_seals_topic(world) -> None:
    world.auth.grant(ANALYST, PUBLISH, ("Topic", TOPIC))  # so only the key's purpose can stop it
    dl_key = world.trust.register(ANALYST, by=ADMIN, purpose=DEAD_LETTER)
    reader_dl = world.trust.register(READER, by=ADMIN, purpose=DEAD_LETTER)  # the consumer's own
    before = produce(world, 2)
    forged = forge(world, dl_key, 2)
    sealed = forge(world, world.trust.signer_for(ANALYST, SEAL), 1)  # its seal key may seal
    after = produce(world, 1)
    got, refused = consume(world)
    assert [i for i, _ in got] == before + sealed + after and refused == {"dead_letter_key": 2}
    assert not set(forged) & {i for i, _ in got}
    # A consumer with a dead-letter key writes its dead letters under it, and they verify.
    assert world.trust.dead_letter_signer(READER).kid == reader_dl.kid
    assert world.trust.info(reader_dl.kid).purpose == DEAD_LETTER
    entries = world.dlq(READER).list(principal=READER)
    assert [e.reason for e in entries] == ["dead_letter_key"] * 2
    (rec,) = world.log.read(f"{TOPIC}.dlq", 0, 1)
    assert sealing.parse(rec.seal).kid == reader_dl.kid


def test_attack_replay_state_poisoned_by_other_producer(world) -> None:
    world.auth.grant(OTHER, PUBLISH, ("Topic", TOPIC))
    other = world.trust.ensure(OTHER, by=ADMIN)
    with world.producer() as genuine:
        first = [genuine.send(TYPE, customer(i)) for i in range(2)]
        genuine.flush()
        poison = forge(world, other, 1, instance=genuine.instance, first_seq=10**15)
        second = [genuine.send(TYPE, customer(i)) for i in range(2)]
        genuine.flush()
        victim = genuine.instance
    stale = forge(world, world.trust.signer_for(PRODUCER), 1, instance=victim, first_seq=1)
    got, refused = consume(world)
    assert got == [(i, PRODUCER) for i in first] + [(poison[0], OTHER)] + [(i, PRODUCER) for i in second]
    assert refused == {"out_of_order": 1} and stale


def test_attack_event_id_preclaimed(world) -> None:
    world.auth.grant(OTHER, PUBLISH, ("Topic", TOPIC))
    other = world.trust.ensure(OTHER, by=ADMIN)
    claimed = forge(world, other, 2, ids=["order-1", "order-2"])
    with world.producer() as p:
        genuine = [p.send(TYPE, customer(1), id="order-1"), p.send(TYPE, customer(2))]
        p.flush()
        p.send(TYPE, customer(3), id="order-1")  # the same producer repeating an id: still a duplicate
        last = p.send(TYPE, customer(4))
    forge(world, other, 1, ids=["order-2"])  # ...and so is the other producer repeating its own
    got, refused = consume(world)
    assert got == [(i, OTHER) for i in claimed] + [(i, PRODUCER) for i in [*genuine, last]]
    assert refused == {"duplicate": 2}


CLI_POLICY = """\
principals:
  admin: {type: user, roles: [eventward-admin]}
  alice: {type: user, roles: [schema-author]}
  bob: {type: user, roles: [schema-admin]}
  signup: {type: service, roles: [writer]}
  billing: {type: service, roles: [reader]}
roles:
  eventward-admin:
    - {allow: manage_policy}
    - {allow: rotate_keys, producer: "*"}
  schema-author: [{allow: propose_schema, schema: "*"}]
  schema-admin: [{allow: approve_schema, schema: "*"}]
  writer:
    - {allow: publish, topic: customers, event_types: [CustomerRegistered]}
    - {allow: encrypt, class: pii, on_topics: [customers]}
  reader: [{allow: subscribe, topic: customers}]
"""


def test_attack_dead_letter_key_seals_topic_cli(tmp_path) -> None:
    """A reader registered with only a dead-letter key consumes and dead-letters with it, and
    cannot produce; a batch sealed with that key on the topic is refused (eventward CLI)."""
    import orjson
    from typer.testing import CliRunner

    from eventward._internal.cli import app
    from eventward._internal.deployment import Deployment
    from eventward._internal.home import Home
    from eventward.errors import NotFoundError

    from .client_world import SCHEMA

    home = Home(tmp_path / "home")
    with Deployment.init(home, policy_yaml=CLI_POLICY) as dep:
        dep.registry.propose("alice", TYPE, SCHEMA)
        dep.registry.approve("bob", TYPE, 1)

    def run(*args: str, input: str | None = None) -> Any:
        return CliRunner().invoke(app, ["--home", str(home.root), *args], input=input, env={"COLUMNS": "300"})

    assert run("trust", "register", "signup", "--as", "admin").exit_code == 0
    r = run("trust", "register", "billing", "--purpose", "dead_letter", "--as", "admin")
    assert r.exit_code == 0 and "dead_letter" in r.output
    assert "dead_letter" in run("trust", "list", "--principal", "billing").output
    data = "\n".join(orjson.dumps({"type": TYPE, "data": customer(i)}).decode() for i in range(2))
    ids = run("produce", TOPIC, "-", "--as", "signup", input=data).stdout.split()
    r = run("produce", TOPIC, "-", "--as", "billing", input=data)
    assert isinstance(r.exception, NotFoundError) and r.stdout == ""  # a dead-letter key seals no events
    with Deployment.open(home) as dep:
        dl_key = dep.trust.signer_for("billing", DEAD_LETTER)
        (rec,) = dep.transport.read(TOPIC, 0, 1)
        env = orjson.loads(rec.data)
        env.update(id="forged-1", ewproducer="billing", ewseq=0)
        raw = orjson.dumps(env)
        blob = sealing.seal(dl_key, instance="x", stream=TOPIC, batch="forged", first_seq=0, events=[raw])
        dep.transport.append(TOPIC, "forged", [raw], blob)
    more = run("produce", TOPIC, "-", "--as", "signup", input=data).stdout.split()
    r = run("consume", TOPIC, "--as", "billing", "--from-beginning", "--idle", "0")
    assert r.exit_code == 0, r.output
    assert [orjson.loads(x)["id"] for x in r.stdout.splitlines()] == ids + more
    assert "dead_letter_key=1" in r.stderr
    listed = run("dlq", "list", TOPIC, "--as", "billing")
    assert listed.exit_code == 0 and "bad_seal/dead_letter_key" in listed.output
    with Deployment.open(home) as dep:
        (entry,) = dep.transport.read(f"{TOPIC}.dlq", 0, 1)
        assert sealing.parse(entry.seal).kid == dl_key.kid  # the dead letter is sealed by billing's key


def test_attack_unauthorized_sealer_on_replay_and_redrive(world) -> None:
    """An authorized replay and a DLQ redrive go through the same sealer check."""
    from .client_world import OPS

    before = produce(world, 2)
    forge(world, world.trust.signer_for(ANALYST), 2)
    seen: list[Any] = []
    stats = world.consumer(OPS).replay(seen.append, from_offset=0)
    assert [e.id for e in seen] == before and stats.refused == {"unauthorized_producer": 2}
    got, refused = consume(world, OPS)
    assert [i for i, _ in got] == before and refused == {"unauthorized_producer": 2}
    dlq = world.dlq(OPS)
    entries = [e for e in dlq.list(principal=OPS) if e.reason == "unauthorized_producer" and e.group.startswith("g-")]
    assert len(entries) == 2
    redriven: list[Any] = []
    offsets = [e.dlq_offset for e in entries]
    stats = dlq.redrive(world.consumer(OPS, group="redrive"), redriven.append, offsets, principal=OPS)
    assert redriven == [] and stats.refused == {"unauthorized_producer": 2}
    still = {e.dlq_offset for e in dlq.list(principal=OPS)}
    assert {e.dlq_offset for e in entries} <= still  # refused again: the entries stay unresolved
