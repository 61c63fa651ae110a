"""Client mode: services that hold only their own keys, against a control plane that holds the rest."""

from __future__ import annotations

import time

import orjson
import pytest

from eventward._internal import demo
from eventward._internal.control.client import ControlPlaneUnavailable, LocalControlAPI
from eventward._internal.control.identity import ServiceIdentity
from eventward._internal.crypto import seal as sealing
from eventward.errors import AccessDenied, ConflictError, InputError

ERASED, REDACTED = "[erased]", "[redacted]"
FORBIDDEN_FILES = {"master.key", "keyring.bin", "keys.db", "audit.key", "ca.key", "control-anchor.key",
                   "registry.db", "trust.db", "policy"}


def produce(world, n: int = 6) -> list[str]:
    client = world.client(demo.PRODUCER)
    with client.producer(demo.TOPIC) as p:
        ids = [p.send(demo.EVENT_TYPE, demo.order(i)) for i in range(n)]
        p.flush()
    return ids


def read(client, group: str) -> list:
    seen: list = []
    consumer = client.consumer(demo.TOPIC, group=group, from_beginning=True)
    try:
        consumer.run(seen.append, idle_timeout=0.3)
    finally:
        consumer.close()
    return seen


def test_services_read_per_clearance_and_hold_only_their_own_keys(world):
    ids = produce(world)
    shipping = read(world.client(demo.SHIPPING), "s")
    analytics = read(world.client(demo.ANALYTICS), "a")
    names = {c[1] for c in demo.CUSTOMERS}
    assert [e.id for e in shipping] == ids and {e.data["customer"]["name"] for e in shipping} <= names
    assert [e.id for e in analytics] == ids and {e.data["customer"]["name"] for e in analytics} == {REDACTED}
    for ident in world.identities.values():
        files = {p.name for p in ident.root.rglob("*")}
        assert not files & FORBIDDEN_FILES, files & FORBIDDEN_FILES
        assert {"seal.key", "dead-letter.key", "tls.key", "tls.crt", "grant.json"} <= files
        for p in ident.root.rglob("*"):  # nothing of another principal's
            if p.is_file():
                other = {x for x in demo.pii_values() if x.encode() in p.read_bytes()}
                assert not other, p


def test_attack_uncleared_consumer_asks_for_pii_keys_directly(world):
    produce(world)
    rec = world.dep.transport.read(demo.TOPIC, 0, 1)[0]
    token = orjson.loads(rec.data)["data"]["customer"]["name"]
    kid = token.split(".")[2]
    api = LocalControlAPI(world.plane, demo.ANALYTICS)
    answer = api.decryption_keys(demo.TOPIC, demo.EVENT_TYPE, [(kid, "pii", None)])
    assert answer == {kid: "forbidden"}
    denials = [e for e in world.dep.audit.tail(50) if e.action == "control.decrypt_keys" and e.outcome == "denied"]
    assert denials and denials[-1].principal == demo.ANALYTICS and kid not in repr(denials[-1])


def test_attack_producer_cannot_publish_a_type_or_topic_it_is_not_granted(world):
    client = world.client(demo.ANALYTICS)  # may subscribe, never publish
    with pytest.raises(AccessDenied), client.producer(demo.TOPIC) as p:
        p.send(demo.EVENT_TYPE, demo.order(0))
        p.flush()
    assert world.dep.transport.end_offset(demo.TOPIC) == 0


def test_attack_service_seals_as_another_principal(world):
    """analytics-svc holds its own key only; a batch it seals naming orders-svc never verifies,
    and one sealed honestly by it is refused as an unauthorized producer."""
    produce(world, 2)
    intruder = world.client(demo.ANALYTICS)
    raw = world.dep.transport.read(demo.TOPIC, 0, 2)
    events = [r.data for r in raw]
    for claimed in (demo.PRODUCER, demo.ANALYTICS):
        signer = intruder.identity.signer("seal")
        signer.principal = claimed  # lie about who seals
        batch = f"forged-{claimed}"
        blob = sealing.seal(signer, instance="x", stream=demo.TOPIC, batch=batch, first_seq=10**6,
                            events=events)
        world.dep.transport.append(demo.TOPIC, batch, events, blob)
    seen = read(world.client(demo.SHIPPING), "s2")
    assert len(seen) == 2  # the genuine two, each once
    letters = [orjson.loads(r.data)["data"] for r in world.dep.transport.read(f"{demo.TOPIC}.dlq", 0, 10)]
    forged = {f"forged-{demo.PRODUCER}", f"forged-{demo.ANALYTICS}"}
    assert len(letters) == 4 and {d["batch"] for d in letters} == forged
    assert all(d["code"] in ("bad_seal", "forbidden") for d in letters), [d["reason"] for d in letters]


def test_forget_reaches_a_client_mode_consumer_within_a_second(world):
    produce(world)
    shipping = world.client(demo.SHIPPING)
    before = read(shipping, "f1")
    assert all(e.data["customer"]["name"] != ERASED for e in before)  # keys now cached in the client
    world.dep.forget(demo.FORGOTTEN, principal=demo.ADMIN, reason="gdpr-art17")
    deadline = time.monotonic() + 1.0
    applied = shipping.notices.applied
    while shipping.notices.applied == applied and time.monotonic() < deadline:
        time.sleep(0.02)
    after = read(shipping, "f2")
    erased = [e for e in after if e.data["customer"]["name"] == ERASED]
    assert erased and len(erased) < len(after)
    assert all(e.data["customer"]["id"] for e in after)


class _Down:
    """A control plane that stopped answering (every replica down)."""

    def __init__(self, inner) -> None:
        self.inner, self.down, self.principal = inner, False, inner.principal

    def __getattr__(self, name):
        attr = getattr(self.inner, name)

        def call(*a, **kw):
            if self.down:
                raise ControlPlaneUnavailable("no control-plane replica answered")
            return attr(*a, **kw)
        return call


def test_attack_control_plane_down_fails_closed_and_loses_nothing(world):
    produce(world, 3)
    api = _Down(LocalControlAPI(world.plane, demo.SHIPPING))
    shipping = world.client(demo.SHIPPING, api=api, follow_notices=False)
    api.down = True
    with pytest.raises(ControlPlaneUnavailable):  # the topic's layout is the control plane's to say
        shipping.consumer(demo.TOPIC, group="down", from_beginning=True)
    api.down = False
    seen: list = []
    consumer = shipping.consumer(demo.TOPIC, group="down", from_beginning=True)
    api.down = True  # it goes down under a running consumer
    with pytest.raises(ControlPlaneUnavailable):
        consumer.run(seen.append, idle_timeout=0.3)
    consumer.close()
    assert seen == [] and world.dep.transport.end_offset(f"{demo.TOPIC}.dlq") == 0
    api.down = False
    consumer = shipping.consumer(demo.TOPIC, group="down", from_beginning=True)
    consumer.run(seen.append, idle_timeout=0.3)
    consumer.close()
    assert len(seen) == 3  # resumed at the first event

    papi = _Down(LocalControlAPI(world.plane, demo.PRODUCER))
    producer_client = world.client(demo.PRODUCER, api=papi, follow_notices=False)
    p = producer_client.producer(demo.TOPIC)
    papi.down = True
    with pytest.raises(ControlPlaneUnavailable):
        p.send(demo.EVENT_TYPE, demo.order(50))
    assert world.dep.transport.end_offset(demo.TOPIC) == 3  # nothing half-written


@pytest.mark.parametrize("mutate", [
    lambda d: d.update(principal="admin"),  # claims another identity than its proof
    lambda d: d.update(seal_key=d["dead_letter_key"]),
    lambda d: d.update(proof=d["proof"][:-4] + "AAAA"),
    lambda d: d.pop("csr"),
    lambda d: d.update(extra=1),
])
def test_attack_malformed_or_forged_enrollment_changes_nothing(world, tmp_path, mutate):
    ident = ServiceIdentity.create(tmp_path / "svc", "orders-svc")
    doc = orjson.loads(ident.request_path.read_bytes())
    mutate(doc)
    before = len(world.dep.trust.list())
    with pytest.raises((InputError, AccessDenied)):
        world.plane.approve(demo.ADMIN, orjson.dumps(doc), {demo.TOPIC: [demo.EVENT_TYPE]})
    assert len(world.dep.trust.list()) == before


def test_attack_enrollment_for_a_type_the_policy_does_not_allow(world, tmp_path):
    ident = ServiceIdentity.create(tmp_path / "svc", demo.ANALYTICS)
    before = len(world.dep.trust.list())
    with pytest.raises(AccessDenied):
        world.plane.approve(demo.ADMIN, ident.request_path.read_bytes(), {demo.TOPIC: [demo.EVENT_TYPE]})
    with pytest.raises(AccessDenied):  # only key administrators approve
        world.plane.approve(demo.SHIPPING, ident.request_path.read_bytes(), {})
    assert len(world.dep.trust.list()) == before


def test_attack_refused_approver_gets_no_certificate_signed(world, tmp_path, monkeypatch):
    import eventward._internal.control.plane as plane_mod

    signed = []
    real = plane_mod.certify_csr
    monkeypatch.setattr(plane_mod, "certify_csr", lambda *a, **kw: signed.append(a) or real(*a, **kw))
    ident = ServiceIdentity.create(tmp_path / "svc", demo.ANALYTICS)
    for by, may_seal in ((demo.SHIPPING, {}), (demo.ADMIN, {demo.TOPIC: [demo.EVENT_TYPE]})):
        with pytest.raises(AccessDenied):  # not a key administrator; a type the policy does not allow
            world.plane.approve(by, ident.request_path.read_bytes(), may_seal)
    assert signed == []  # refused before the CA signed anything
    world.plane.approve(demo.ADMIN, ident.request_path.read_bytes(), {})
    assert len(signed) == 1


def test_attack_replayed_enrollment_is_refused(world):
    ident = world.enroll(demo.PRODUCER)
    with pytest.raises(ConflictError):
        world.plane.approve(demo.ADMIN, ident.request_path.read_bytes(), {demo.TOPIC: [demo.EVENT_TYPE]})


def test_attack_grant_from_another_anchor_is_not_installed(world, tmp_path):
    ident = ServiceIdentity.create(tmp_path / "svc", demo.SHIPPING)
    grant = orjson.loads(world.plane.approve(demo.ADMIN, ident.request_path.read_bytes(), {}))
    other = ServiceIdentity.create(tmp_path / "svc2", demo.SHIPPING)
    with pytest.raises(InputError, match="another TLS key"):
        other.install(orjson.dumps(grant))
    grant["statement"]["sig"] = grant["statement"]["sig"][::-1]
    with pytest.raises(InputError, match="not signed"):
        ident.install(orjson.dumps(grant))


def test_oversized_key_request_is_refused(world):
    api = LocalControlAPI(world.plane, demo.SHIPPING)
    with pytest.raises(InputError, match="at most"):
        api.decryption_keys(demo.TOPIC, demo.EVENT_TYPE, [("k", "pii", None)] * 1001)


class _Counting:
    def __init__(self, inner) -> None:
        self.inner, self.principal, self.calls = inner, inner.principal, []

    def __getattr__(self, name):
        attr = getattr(self.inner, name)

        def call(*a, **kw):
            self.calls.append(name)
            return attr(*a, **kw)
        return call


def test_batches_fetch_their_keys_in_one_request_each(world):
    papi = _Counting(LocalControlAPI(world.plane, demo.PRODUCER))
    producer = world.client(demo.PRODUCER, api=papi, follow_notices=False)
    with producer.producer(demo.TOPIC) as p:
        p.send_many(demo.EVENT_TYPE, [demo.order(i) for i in range(40)])
        p.flush()
    assert papi.calls.count("encryption_keys") == 1  # 40 events, 3 subjects: one request
    capi = _Counting(LocalControlAPI(world.plane, demo.SHIPPING))
    shipping = world.client(demo.SHIPPING, api=capi, follow_notices=False)
    seen = read(shipping, "batch")
    assert len(seen) == 40 and capi.calls.count("decryption_keys") == 1


def test_a_subject_returning_after_forget_is_readable_again(world):
    produce(world, 3)
    shipping = world.client(demo.SHIPPING)
    read(shipping, "r1")
    world.dep.forget(demo.FORGOTTEN, principal=demo.ADMIN, reason="gdpr-art17")
    deadline = time.monotonic() + 2
    applied = shipping.notices.applied
    while shipping.notices.applied == applied and time.monotonic() < deadline:
        time.sleep(0.02)
    producer = world.client(demo.PRODUCER)
    with producer.producer(demo.TOPIC) as p:
        again = p.send(demo.EVENT_TYPE, demo.order(1))  # order 1 is the forgotten customer's
        p.flush()
    after = {e.id: e for e in read(shipping, "r2")}
    assert after[again].data["customer"]["id"] == demo.FORGOTTEN
    assert after[again].data["customer"]["name"] not in (ERASED, REDACTED)
    assert sum(e.data["customer"]["name"] == ERASED for e in after.values()) >= 1


def test_attack_asking_about_other_principals_is_limited_to_publish_on_subscribed_topics(world):
    analytics = LocalControlAPI(world.plane, demo.ANALYTICS)  # subscribes to orders
    assert analytics.decide("Publish", ("Topic", demo.TOPIC), {"event_type": demo.EVENT_TYPE}, demo.PRODUCER)
    assert not analytics.decide("Publish", ("Topic", demo.TOPIC), {"event_type": demo.EVENT_TYPE}, demo.SHIPPING)
    with pytest.raises(AccessDenied):  # not a Publish question: another principal's rights stay private
        analytics.decide("Decrypt", ("Class", "pii"), {}, demo.SHIPPING)
    producer = LocalControlAPI(world.plane, demo.PRODUCER)  # may not subscribe to orders
    with pytest.raises(AccessDenied):
        producer.decide("Publish", ("Topic", demo.TOPIC), {"event_type": demo.EVENT_TYPE}, demo.ANALYTICS)


def test_home_registered_producer_keys_are_checked_against_the_policy(world):
    """Keys registered in home mode carry no enrolled grants: client-mode consumers ask the policy."""
    with world.dep.producer(demo.PRODUCER, demo.TOPIC) as p:  # the home's own orders-svc key
        ids = [p.send(demo.EVENT_TYPE, demo.order(i)) for i in range(2)]
        p.flush()
    seen = read(world.client(demo.SHIPPING), "home-keys")
    assert [e.id for e in seen] == ids
