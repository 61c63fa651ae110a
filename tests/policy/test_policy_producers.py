"""RotateKeys on producers: the trust registry's signing-key changes decided by the Cedar engine.

RotateKeys applies to two kinds: Class (KEKs) and Producer (signing keys in the trust registry),
chosen by the grant's resource key. A grant on one kind never reaches the other, a service may
be limited to its own keys, and the end-to-end test runs the real TrustRegistry against a real
policy store, engine and audit log."""

from __future__ import annotations

import json

import pytest

from eventward._internal.audit.log import AuditLog
from eventward._internal.client.trust import ACTIVE, TrustRegistry
from eventward._internal.home import Home
from eventward._internal.policy import base
from eventward._internal.policy.base import check
from eventward._internal.policy.compile_kafka import compile_kafka
from eventward._internal.policy.compile_nats import compile_nats
from eventward._internal.policy.engine import PolicyEngine
from eventward._internal.policy.spec import parse
from eventward._internal.policy.store import PolicyStore
from eventward.errors import AccessDenied, InputError, PolicyError

R = base.ROTATE_KEYS

PRODUCERS = """
principals:
  admin: {type: user, roles: [eventward-admin]}
  orders-svc: {type: service, roles: [own-keys]}
  orders-eu: {type: service, roles: []}
  billing-svc: {type: service, roles: [billing]}
  platform: {type: service, roles: [orders-team]}
  dpo: {type: user, roles: [kek-rotation]}
roles:
  eventward-admin:
    - {allow: manage_policy}
    - {allow: rotate_keys, producers: "*"}
  own-keys:
    - {allow: rotate_keys, producers: [orders-svc]}
  orders-team:
    - {allow: rotate_keys, producer: "orders-", match: prefixed}
  billing:
    - {allow: subscribe, topic: billing}
  kek-rotation:
    - {allow: rotate_keys, class: "*"}
"""


@pytest.fixture
def engine(home, audit, clock):
    store = PolicyStore.open(home, audit=audit, clock=clock)
    store.init(PRODUCERS)
    e = PolicyEngine.open(home, audit=audit, clock=clock)
    yield e
    e.close()
    store.close()


# principal, resource, allowed, deciding policy (None: default deny)
MATRIX = [
    ("admin", ("Producer", "orders-svc"), True, "role:eventward-admin:1"),
    ("admin", ("Producer", "anyone-at-all"), True, "role:eventward-admin:1"),
    ("admin", ("Class", "pii"), False, None),  # signing keys are not KEKs
    ("orders-svc", ("Producer", "orders-svc"), True, "role:own-keys:0"),
    ("orders-svc", ("Producer", "billing-svc"), False, None),  # only its own keys
    ("orders-svc", ("Producer", "orders-svc2"), False, None),  # literal never matches a longer name
    ("orders-svc", ("Producer", "Orders-svc"), False, None),  # case matters
    ("orders-svc", ("Class", "pii"), False, None),
    ("platform", ("Producer", "orders-eu"), True, "role:orders-team:0"),  # prefixed "orders-"
    ("platform", ("Producer", "orders-svc"), True, "role:orders-team:0"),
    ("platform", ("Producer", "orders"), False, None),  # the prefix needs the dash
    ("platform", ("Producer", "platform"), False, None),
    ("billing-svc", ("Producer", "billing-svc"), False, None),  # no grant, not even on itself
    ("orders-eu", ("Producer", "orders-eu"), False, None),
    ("dpo", ("Class", "pii"), True, "role:kek-rotation:0"),
    ("dpo", ("Producer", "orders-svc"), False, None),  # KEK rotation does not reach signing keys
    ("mallory", ("Producer", "orders-svc"), False, None),
]


@pytest.mark.parametrize(("principal", "resource", "allowed", "policy"), MATRIX)
def test_rotate_keys_decision_matrix(engine, principal, resource, allowed, policy):
    d = engine.decide(principal, R, resource)
    assert d.allowed is allowed, d.explain()
    if policy is None:
        assert d.policies == () and d.missing
        with pytest.raises(AccessDenied) as ei:
            check(engine, principal, R, resource)
        assert ei.value.explanation == d
    else:
        assert d.policies == (policy,)


def test_missing_grant_names_the_producer_key(engine):
    d = engine.explain("orders-svc", R, ("Producer", "billing-svc"))
    assert d.missing.startswith("a role of orders-svc with {allow: rotate_keys, producer: billing-svc}")
    assert "no policy permits orders-svc RotateKeys Producer::billing-svc" in d.missing
    d = engine.explain("orders-svc", R, ("Class", "pii"))
    assert "{allow: rotate_keys, class: pii}" in d.missing


def test_wrong_kind_is_explained_with_both_kinds(engine):
    d = engine.decide("admin", R, ("Topic", "orders"))
    assert not d.allowed and "RotateKeys applies to Class or Producer resources, not Topic" in d.missing
    d = engine.decide("admin", base.SUBSCRIBE, ("Producer", "orders-svc"))
    assert not d.allowed and "Subscribe applies to Topic resources, not Producer" in d.missing


GRANT_ERRORS = [
    ("{allow: rotate_keys}", "roles.r[0]", "missing class: or producer:"),
    ("{allow: rotate_keys, class: pii, producer: x}", "roles.r[0]", "one resource kind"),
    ("{allow: [rotate_keys, decrypt], producer: x}", "roles.r[0].producer", "does not apply"),
    ("{allow: publish, producers: [x]}", "roles.r[0].producers", "does not apply"),
    ("{allow: rotate_keys, producer: x, producers: [y]}", "roles.r[0]", "not both"),
    ('{allow: rotate_keys, producer: "a/../b"}', "roles.r[0].producer[0]", "not a valid producer name"),
    ('{allow: rotate_keys, producer: "x\\ny"}', "roles.r[0].producer[0]", "not a valid producer name"),
    ('{allow: rotate_keys, producer: "*", match: prefixed}', "roles.r[0].match", "literal wildcard"),
    ("{allow: rotate_keys, producer: x, event_types: [A]}", "roles.r[0].event_types", "only apply to topic"),
]


@pytest.mark.parametrize(("grant", "path", "needle"), GRANT_ERRORS)
def test_bad_producer_grants_name_the_yaml_key(grant, path, needle):
    with pytest.raises(PolicyError) as ei:
        parse(f"principals: {{}}\nroles:\n  r: [{grant}]\n")
    assert ei.value.path == path and needle in ei.value.message


def test_multi_action_grant_on_a_shared_kind_still_works():
    spec = parse("principals: {}\nroles:\n  r: [{allow: [rotate_keys, decrypt], class: pii}]\n")
    (g,) = spec.grants()
    assert g.kind == "Class" and g.to_yaml() == "{allow: [rotate_keys, decrypt], class: pii}"


def test_producer_attributes_drive_abac(home, audit, clock):
    """Producers are Cedar entities with declared attributes: a team may manage its own producers."""
    bot = "  ops-bot: {type: service, roles: [], attributes: {team: pay}}\n"
    yaml = PRODUCERS.replace("roles:\n  eventward-admin", bot + "roles:\n  eventward-admin")
    yaml += "resources:\n  Producer:\n    billing-svc: {team: pay}\n    orders-svc: {team: orders}\n"
    same_team = """
@id("team-owns-its-producers")
permit (principal, action == Eventward::Action::"RotateKeys", resource is Eventward::Producer)
when { principal has team && resource has team && principal.team == resource.team };
"""
    store = PolicyStore.open(home, audit=audit, clock=clock)
    store.init(yaml, {"teams.cedar": same_team})
    engine = PolicyEngine.open(home, audit=audit, clock=clock)
    try:
        d = engine.decide("ops-bot", R, ("Producer", "billing-svc"))
        assert d.allowed and d.policies == ("team-owns-its-producers",)
        assert not engine.decide("ops-bot", R, ("Producer", "orders-svc")).allowed
        assert not engine.decide("ops-bot", R, ("Producer", "undeclared")).allowed
        assert not engine.decide("ops-bot", R, ("Class", "pii")).allowed
    finally:
        engine.close()
        store.close()


def test_brokers_grant_nothing_for_producer_key_rotation():
    spec = parse(PRODUCERS)
    nats, kafka = compile_nats(spec), compile_kafka(spec)
    nothing = {"publish": {"deny": [">"]}, "subscribe": {"deny": [">"]}}
    assert json.dumps({"user": "admin", "permissions": nothing}) in nats
    assert "User:admin" not in "\n".join(line for line in kafka.splitlines() if not line.startswith("#"))
    assert 'admin: role:eventward-admin:1 {allow: rotate_keys, producer: "*"}: eventward-level action' in nats


# --- end to end: the trust registry under a real policy ---------------------------------------


@pytest.fixture
def world(tmp_path):
    home = Home(tmp_path / "deploy").ensure()
    PolicyStore.open(home).init(PRODUCERS)
    log = AuditLog.open(home, flush_ms=10)
    engine = PolicyEngine.open(home, audit=log)
    trust = TrustRegistry.open(home, engine, log)
    yield home, engine, trust, log
    trust.close()
    engine.close()
    log.close()


def test_trust_registry_under_a_real_policy(world):
    home, _, trust, log = world
    signer = trust.register("orders-svc", by="admin")
    assert signer.principal == "orders-svc" and trust.signer_for("orders-svc").kid == signer.kid
    rotated = trust.rotate("orders-svc", by="orders-svc")  # a service may rotate its own key
    assert trust.info(signer.kid).status != ACTIVE and trust.info(rotated.kid).status == ACTIVE

    with pytest.raises(AccessDenied) as ei:
        trust.register("billing-svc", by="orders-svc")  # ...but not register someone else's
    assert "{allow: rotate_keys, producer: billing-svc}" in ei.value.explanation.missing
    for attempt in (
        lambda: trust.register("billing-svc", by="billing-svc"),  # a non-admin, not even for itself
        lambda: trust.ensure("billing-svc", by="billing-svc"),
        lambda: trust.rotate("orders-svc", by="billing-svc"),
        lambda: trust.revoke(rotated.kid, by="billing-svc"),
        lambda: trust.register("billing-svc", by="dpo"),  # KEK rotation rights do not carry over
        lambda: trust.register("billing-svc", by="mallory"),
    ):
        with pytest.raises(AccessDenied):
            attempt()
    # nothing good lost, nothing bad gained
    assert trust.list("billing-svc") == [] and not list(home.producer_keys.glob("billing-svc.*"))
    assert trust.info(rotated.kid).status == ACTIVE and trust.signer_for("orders-svc").kid == rotated.kid

    log.flush()
    records = log.tail(100)
    ok = [(r.action, r.principal, r.resource) for r in records if r.outcome == "ok"]
    assert ("trust.register", "admin", "Producer::orders-svc") in ok
    assert ("trust.rotate", "orders-svc", "Producer::orders-svc") in ok
    denied = [r for r in records if r.outcome == "denied"]
    assert {(r.action, r.principal) for r in denied if r.action.startswith("trust.")} >= {
        ("trust.register", "orders-svc"),
        ("trust.register", "billing-svc"),
        ("trust.rotate", "billing-svc"),
        ("trust.revoke", "billing-svc"),
    }
    engine_denials = [r for r in denied if r.action == "authorize"]
    assert any(r.meta["requested"] == R and r.resource == "Producer::billing-svc" for r in engine_denials)


def test_granting_a_service_its_own_key_takes_effect_on_policy_change(world):
    home, engine, trust, _ = world
    with pytest.raises(AccessDenied):
        trust.register("billing-svc", by="billing-svc")
    v2 = PRODUCERS.replace(
        "    - {allow: subscribe, topic: billing}",
        "    - {allow: subscribe, topic: billing}\n    - {allow: rotate_keys, producer: billing-svc}",
    )
    store = PolicyStore.open(home)
    try:
        with pytest.raises(AccessDenied):
            store.apply("billing-svc", v2)  # it cannot grant itself the right
        store.apply("admin", v2)
    finally:
        store.close()
    engine.refresh()
    assert trust.register("billing-svc", by="billing-svc").principal == "billing-svc"
    with pytest.raises(AccessDenied):
        trust.rotate("orders-svc", by="billing-svc")


def test_producer_names_cannot_smuggle_a_newline(tmp_path):
    """``$`` in the name check accepted "orders-svc\\n"; an AllowList with ``Producer::*`` (the
    CLI's bootstrap authorizer) let it through to a key file named with a newline."""
    home = Home(tmp_path / "h").ensure()
    trust = TrustRegistry.open(home, base.AllowList([("admin", R, ("Producer", "*"))]))
    try:
        for bad in ("orders-svc\n", "orders-svc\r\n", "\norders-svc"):
            with pytest.raises(InputError):
                trust.register(bad, by="admin")
        assert trust.list() == [] and not any(home.producer_keys.glob("*"))
        assert trust.register("orders-svc", by="admin").principal == "orders-svc"
    finally:
        trust.close()
