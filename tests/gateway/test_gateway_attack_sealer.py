"""Attacks on who sealed an event, on every consuming path: the SDK Consumer, ``eventward
consume`` and the gateway's consume, all over one real Deployment (Cedar policy, trust
registry, key service) behind an mTLS gateway.

Genuine events are published by ``orders-svc`` over HTTPS. The attacker seals batches of its
own with a key the trust registry really holds, so every seal verifies:

* ``analytics-svc`` (a reader: no publish grant) seals an OrderPlaced on the topic;
* ``fuzzer`` (may publish anything) seals with its dead-letter key;
* ``fuzzer`` claims orders-svc's producer instance with sequence 10^15, or pre-claims the
  event id orders-svc is about to use.

Each consumer gets exactly the genuine events (nothing good lost), the attacker's events are
refused with their reason code and are in the dead-letter stream, and replay protection
still holds within one producer (orders-svc's own stale or repeated events are refused).
The attacker's field tokens come from the key service as orders-svc's would: these attacks
are on who sealed, not on key release.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from eventward._internal import envelope
from eventward._internal.cli import app
from eventward._internal.client.trust import DEAD_LETTER
from eventward._internal.crypto import seal as sealing
from eventward._internal.crypto.seal import Signer
from eventward._internal.gateway.groups import group_id

from .gw_deployment import ADMIN, ANALYTICS, FUZZER, ORDERS, SHIPPING, TYPE, cloudevent, order, topic

Consumed = tuple[list[tuple[str, str]], list[str]]  # ([(event id, producer)], dead-letter reasons)


def publish(world: Any, t: str, n: int, *, ids: list[str] | None = None) -> list[tuple[str, str]]:
    """Genuine events from orders-svc through the gateway (one producer instance per topic)."""
    events = [cloudevent(order(i), id_=ids[i] if ids else None) for i in range(n)]
    r = world.publish(ORDERS, t, events)
    assert r.status == 200, r.json
    return [(i, ORDERS) for i in r.json["ids"]]


def forge(
    world: Any,
    t: str,
    signer: Signer,
    n: int,
    *,
    instance: str = "attacker",
    first_seq: int = 0,
    ids: list[str] | None = None,
) -> list[tuple[str, str]]:
    """A batch sealed by ``signer`` (a key the trust registry holds) with well-formed,
    decryptable OrderPlaced events, appended straight to the log."""
    version = world.dep.registry.active(TYPE)
    raws, out = [], []
    for i in range(n):
        eid = ids[i] if ids else str(uuid.uuid4())
        data, subject = world.dep.encryptor.encrypt(
            eid, order(900 + i), version.spec, principal=ORDERS, topic=t, event_type=TYPE
        )
        ext: dict[str, Any] = {
            envelope.EXT_PRODUCER: signer.principal,
            envelope.EXT_SEQ: first_seq + i,
            envelope.EXT_SCHEMA: version.version,
        }
        if subject is not None:
            ext[envelope.EXT_SUBJECT] = subject
        raws.append(envelope.encode(envelope.make(TYPE, "/attacker", data, id_=eid, extensions=ext)))
        out.append((eid, signer.principal))
    batch = f"forged-{uuid.uuid4().hex}"
    blob = sealing.seal(signer, instance=instance, stream=t, batch=batch, first_seq=first_seq, events=raws)
    world.dep.transport.append(t, batch, raws, blob)
    return out


def instance_at(world: Any, t: str, offset: int) -> str:
    (rec,) = world.dep.transport.read(t, offset, 1)
    return sealing.parse(rec.seal).instance


def reasons(world: Any, t: str, group: str) -> list[str]:
    return sorted(d.reason for d in world.dead_letters(SHIPPING, t) if d.group == group)


def consume_sdk(world: Any, t: str) -> Consumed:
    group = f"sdk-{uuid.uuid4().hex[:8]}"
    c = world.dep.consumer(SHIPPING, t, group=group, from_beginning=True)
    got: list[Any] = []
    stats = c.run(got.append, idle_timeout=0)
    c.close()
    assert sum(stats.refused.values()) == stats.dead_lettered
    return [(e.id, e.producer) for e in got], reasons(world, t, group)


def consume_cli(world: Any, t: str) -> Consumed:
    group = f"cli-{uuid.uuid4().hex[:8]}"
    args = ["--home", str(world.home.root), "consume", t, "--as", SHIPPING, "--group", group]
    r = CliRunner().invoke(app, [*args, "--from-beginning", "--idle", "0"], env={"EVENTWARD_PRINCIPAL": None})
    assert r.exit_code == 0, r.output
    events = [orjson.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    found = reasons(world, t, group)
    for reason in set(found):
        assert f"{reason}={found.count(reason)}" in r.stderr  # the summary names each refusal
    return [(e["id"], e[envelope.EXT_PRODUCER]) for e in events], found


def consume_gateway(world: Any, t: str) -> Consumed:
    group = f"gw-{uuid.uuid4().hex[:8]}"
    r = world.consume(SHIPPING, t, group, max_events=1000)
    assert r.status == 200, r.json
    got = [(d["event"]["id"], d["event"][envelope.EXT_PRODUCER]) for d in r.json["events"]]
    return got, reasons(world, t, group_id(SHIPPING, group))


@pytest.fixture(params=["sdk", "cli", "gateway"])
def consume(request: pytest.FixtureRequest) -> Callable[[Any, str], Consumed]:
    return {"sdk": consume_sdk, "cli": consume_cli, "gateway": consume_gateway}[request.param]


def test_attack_unauthorized_sealer_delivered(dep_world, consume) -> None:
    """analytics-svc may read orders, not publish them: its validly sealed OrderPlaced is refused."""
    t = topic()
    before = publish(dep_world, t, 2)
    forged = forge(dep_world, t, dep_world.dep.trust.signer_for(ANALYTICS), 3)
    after = publish(dep_world, t, 2)
    got, dead = consume(dep_world, t)
    assert got == before + after
    assert not set(forged) & set(got)
    assert dead == ["unauthorized_producer"] * 3


def test_attack_dead_letter_key_seals_topic(dep_world, consume) -> None:
    """fuzzer may publish anything, but its dead-letter key seals dead letters only."""
    t = topic()
    dl_key = dep_world.dep.trust.ensure(FUZZER, by=ADMIN, purpose=DEAD_LETTER)
    assert dl_key.kid != dep_world.dep.trust.signer_for(FUZZER).kid
    before = publish(dep_world, t, 2)
    forged = forge(dep_world, t, dl_key, 2)
    sealed = forge(dep_world, t, dep_world.dep.trust.signer_for(FUZZER), 1)  # its seal key: fine
    after = publish(dep_world, t, 1)
    got, dead = consume(dep_world, t)
    assert got == before + sealed + after
    assert not set(forged) & set(got)
    assert dead == ["dead_letter_key"] * 2


def test_attack_replay_state_poisoned_by_other_producer(dep_world, consume) -> None:
    """A producer claiming orders-svc's instance with sequence 10^15 touches only its own state."""
    t = topic()
    first = publish(dep_world, t, 2)
    victim = instance_at(dep_world, t, 0)
    poison = forge(dep_world, t, dep_world.dep.trust.signer_for(FUZZER), 1, instance=victim, first_seq=10**15)
    second = publish(dep_world, t, 2)
    assert instance_at(dep_world, t, 3) == victim  # the same genuine producer instance, continuing
    # orders-svc's own instance going back in sequence is still refused: order holds per producer.
    stale = forge(dep_world, t, dep_world.dep.trust.signer_for(ORDERS), 1, instance=victim, first_seq=0)
    later = publish(dep_world, t, 1)
    got, dead = consume(dep_world, t)
    assert got == first + poison + second + later
    assert not set(stale) & set(got)
    assert dead == ["out_of_order"]


def test_attack_event_id_preclaimed(dep_world, consume) -> None:
    """An id another producer used first does not make orders-svc's event a duplicate."""
    t = topic()
    dep_world.dep.transport.create_stream(t)
    wanted = str(uuid.uuid4())  # ids are chosen by the sender and may be predictable
    claimed = forge(dep_world, t, dep_world.dep.trust.signer_for(FUZZER), 1, ids=[wanted])
    genuine = publish(dep_world, t, 2, ids=[wanted, str(uuid.uuid4())])
    again = publish(dep_world, t, 1, ids=[wanted])  # orders-svc repeating its own id: still a duplicate
    later = publish(dep_world, t, 1)
    got, dead = consume(dep_world, t)
    assert got == claimed + genuine + later
    assert claimed[0][0] == genuine[0][0] == again[0][0] == wanted
    assert dead == ["duplicate"]
