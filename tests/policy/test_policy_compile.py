"""Broker compilers: exact Kafka pattern mapping, DENY rules, and nothing over-granted: what a
broker cannot express (event types, non-token prefixes, attributes, time, classes) is listed."""

from __future__ import annotations

import json
import re
import shlex

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventward._internal.policy.broker import NOTES_HEADER, overlaps
from eventward._internal.policy.compile_cedar import compile_policy
from eventward._internal.policy.compile_kafka import compile_kafka
from eventward._internal.policy.compile_nats import compile_nats, nats_inbox_prefix, nats_subject, token
from eventward._internal.policy.evaluator import Evaluator
from eventward._internal.policy.spec import Grant, parse
from eventward.errors import PolicyError

from .support import ABAC, POLICY


def nats_users(text: str) -> dict[str, dict]:
    users = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith('{"user"'):
            u = json.loads(line)
            users[u["user"]] = u["permissions"]
    return users


def notes(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if NOTES_HEADER in line)
    return lines[start + 1 :]


def kafka_acls(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if not line.startswith("kafka-acls.sh"):
            continue
        args = shlex.split(line)
        acl = {"ops": [args[i + 1] for i, a in enumerate(args) if a == "--operation"]}
        for flag in (
            "--allow-principal",
            "--deny-principal",
            "--topic",
            "--group",
            "--resource-pattern-type",
        ):
            if flag in args:
                acl[flag.strip("-")] = args[args.index(flag) + 1]
        out.append(acl)
    return out


@pytest.fixture(scope="module")
def reference():
    spec = parse(POLICY)
    return spec, compile_policy(spec, {"abac.cedar": ABAC})


# --- NATS ---------------------------------------------------------------------------------------


def test_nats_literal_prefixed_and_wildcard(reference):
    spec, _ = reference
    text = compile_nats(spec)
    users = nats_users(text)
    ship = users["shipping-svc"]["subscribe"]["allow"]
    assert "ew.orders" in ship and "ew.orders.dlq" in ship  # literal + its DLQ
    assert "ew.orders.>" in ship  # PREFIXED "orders." on token boundary
    assert not any(s in ship for s in ("ew.>", "ew.orders*", "ew.orders-archive"))
    assert users["analytics-svc"]["subscribe"]["allow"][0] == "ew.>"
    assert users["analytics-svc"]["subscribe"]["deny"] == ["ew.payments", "ew.payments.dlq"]
    assert nats_inbox_prefix("shipping-svc") + ".>" in ship


def test_nats_does_not_over_grant(reference):
    spec, _ = reference
    text = compile_nats(spec)
    users = nats_users(text)
    # archiver: PREFIXED "orders" (no trailing dot) cannot be expressed with token wildcards
    assert users["archiver"]["subscribe"] == {"deny": [">"]}
    # orders-svc: an event-type limited publish gives its topic (eventward enforces the types)
    writer = users["orders-svc"]["publish"]
    assert permitted(writer, "ew.orders") and permitted(writer, "$JS.API.STREAM.INFO.EW_orders")
    for other in ("ew.payments", "ew.orders.eu", "ew.>", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.CREATE.EW_orders"):
        assert not permitted(writer, other), other
    # control-plane principals get nothing at the broker; an empty allow list would mean "everything"
    for p in ("alice", "auditor", "dpo", "batch-job"):
        assert users[p] == {"publish": {"deny": [">"]}, "subscribe": {"deny": [">"]}}
    listed = "\n".join(notes(text))
    assert "archiver: role:archiver:0" in listed and "token boundary" in listed
    assert "orders-svc: role:order-writer:0" in listed and "event types are enforced by eventward" in listed
    assert "shipping-svc: role:shipping:2" in listed and "eventward-level action" in listed


def test_nats_hand_written_forbid_withholds_overlapping_allows(reference):
    spec, compiled = reference
    text = compile_nats(spec, compiled)
    users = nats_users(text)
    # no-external-hr forbids Subscribe hr unless principal.zone == internal: the broker cannot
    # evaluate that, so the "*" grants it may cut are withheld rather than granted topic-wide.
    assert users["analytics-svc"]["subscribe"] == {"deny": [">"]}
    assert users["bi-svc"]["subscribe"] == {"deny": [">"]}
    assert "ew.orders" in users["shipping-svc"]["subscribe"]["allow"]  # literal orders cannot be hr
    listed = "\n".join(notes(text))
    assert "analytics-svc: role:analytics:0" in listed and "withheld" in listed and "no-external-hr" in listed
    assert "batch-window hand-written Cedar policy (abac.cedar)" in listed


def test_nats_inexpressible_deny_withholds_overlapping_allow():
    spec = parse(
        """
principals:
  a: {type: service, roles: [r]}
roles:
  r:
    - {allow: subscribe, topic: "*"}
    - {allow: subscribe, topic: audit-log}
    - {deny: subscribe, topic: pay, match: prefixed}
"""
    )
    users = nats_users(compile_nats(spec))
    allow = users["a"]["subscribe"]["allow"]
    assert "ew.>" not in allow  # would leak ew.payments, which the prefix deny forbids
    assert "ew.audit-log" in allow  # cannot match the "pay" prefix: safe to grant


def test_nats_jetstream_read_api_denied_with_the_topic(reference):
    spec, _ = reference
    users = nats_users(compile_nats(spec))
    deny = users["analytics-svc"]["publish"]["deny"]
    assert "$JS.API.STREAM.MSG.GET.EW_payments" in deny and "$JS.API.DIRECT.GET.EW_payments" in deny
    allow = users["shipping-svc"]["publish"]["allow"]
    assert "$JS.API.STREAM.MSG.GET.EW_orders" in allow
    assert not any("EW_orders_2E" in s and ">" in s for s in allow)  # no stream-prefix grants


def test_nats_subject_mapping():
    assert nats_subject("orders") == "ew.orders"
    assert nats_subject("orders.eu") == "ew.orders.eu"
    for bad in ("", "a..b", ".a", "a.", "a b", "a*", "a>", "ew.>", "x\n"):
        with pytest.raises(PolicyError):
            nats_subject(bad)


@given(st.text(max_size=12), st.text(max_size=12))
def test_token_is_one_injective_nats_token(a, b):
    ta, tb = token(a), token(b)
    assert re.fullmatch(r"[A-Za-z0-9_-]*", ta)
    assert (ta == tb) == (a == b)


# --- Kafka --------------------------------------------------------------------------------------


def test_kafka_patterns_operations_and_groups(reference):
    spec, _ = reference
    acls = kafka_acls(compile_kafka(spec))
    ship = [a for a in acls if a.get("allow-principal") == "User:shipping-svc"]
    topics = {(a.get("topic"), a["resource-pattern-type"]) for a in ship if "topic" in a}
    assert topics == {("orders", "literal"), ("orders.dlq", "literal"), ("orders.", "prefixed")}
    ops = {a["topic"]: a["ops"] for a in ship if "topic" in a}
    # the DLQ rule shared with NATS: subscribers read the DLQ and append their dead letters to it
    assert ops == {"orders": ["Read", "Describe"], "orders.dlq": ["Read", "Describe", "Write"],
                   "orders.": ["Read", "Describe"]}
    # the SDK's default group is the bare principal name; named groups are "<principal>.<name>"
    groups = [(a["group"], a["resource-pattern-type"], a["ops"]) for a in ship if "group" in a]
    assert groups == [("shipping-svc", "literal", ["Read"]), ("shipping-svc.", "prefixed", ["Read"])]
    arch = [a for a in acls if a.get("allow-principal") == "User:archiver" and "topic" in a]
    assert [(a["topic"], a["resource-pattern-type"]) for a in arch] == [("orders", "prefixed")]
    wildcard = [a for a in acls if a.get("allow-principal") == "User:analytics-svc" and "topic" in a]
    assert [(a["topic"], a["resource-pattern-type"]) for a in wildcard] == [("*", "literal")]
    denies = [a for a in acls if "deny-principal" in a]
    assert {(a["deny-principal"], a["topic"], tuple(a["ops"])) for a in denies} == {
        ("User:analytics-svc", "payments", ("Read",)),
        ("User:analytics-svc", "payments.dlq", ("Read", "Write")),
        ("User:bi-svc", "payments", ("Read",)),
        ("User:bi-svc", "payments.dlq", ("Read", "Write")),
    }


def test_kafka_event_types_give_the_topic_and_control_plane_is_listed(reference):
    spec, compiled = reference
    text = compile_kafka(spec, compiled)
    acls = kafka_acls(text)
    writer = {(a["topic"], tuple(a["ops"])) for a in acls if a.get("allow-principal") == "User:orders-svc"}
    assert writer == {("orders", ("Write", "Describe")), ("orders.dlq", ("Write", "Describe"))}
    assert not any(a.get("allow-principal") in ("User:alice", "User:dpo", "User:auditor") for a in acls)
    listed = "\n".join(notes(text))
    assert "orders-svc: role:order-writer:0" in listed and "event types are enforced by eventward" in listed
    assert "dpo: role:privacy:1" in listed
    # with hand-written forbids, "*" grants that no-external-hr may cut are withheld
    assert not any(a.get("allow-principal") == "User:analytics-svc" for a in acls)
    assert all(line.startswith(("#", "kafka-acls.sh", "set -e")) for line in text.splitlines() if line)


def test_kafka_event_typed_deny_is_left_to_eventward():
    spec = parse(
        """
principals:
  a: {type: service, roles: [r]}
roles:
  r:
    - {allow: subscribe, topic: orders}
    - {allow: subscribe, topic: shipments}
    - {deny: subscribe, topic: orders, event_types: [Refund]}
"""
    )
    text = compile_kafka(spec)
    acls = kafka_acls(text)
    topics = {a["topic"] for a in acls if "allow-principal" in a and "topic" in a}
    assert topics == {"orders", "orders.dlq", "shipments", "shipments.dlq"}
    assert not any("deny-principal" in a for a in acls)  # a topic deny would also stop the other types
    assert "a: role:r:2 {deny: subscribe, topic: orders, event_types: [Refund]}" in "\n".join(notes(text))


@pytest.mark.parametrize(
    "name", ['a"b', "x; rm -rf /", "$(reboot)", "a b", "-rf", "ünïcode", "a\nb", "user:x"]
)
def test_hostile_names_never_reach_broker_configs(name):
    text = f"principals:\n  {json.dumps(name)}: {{type: service, roles: []}}\nroles: {{}}\n"
    with pytest.raises(PolicyError) as ei:
        parse(text)
    assert ei.value.path.startswith("principals.")
    topic = f"principals: {{}}\nroles:\n  r: [{{allow: publish, topic: {json.dumps(name)}}}]\n"
    with pytest.raises(PolicyError):
        parse(topic)


OVERLAP = [
    ({"names": ("*",)}, {"names": ("x",)}, True),
    ({"names": ("orders",)}, {"names": ("orders-archive",)}, False),
    ({"names": ("orders",)}, {"names": ("ord",), "match": "prefixed"}, True),
    ({"names": ("orders.",), "match": "prefixed"}, {"names": ("orders",)}, False),
    ({"names": ("orders.",), "match": "prefixed"}, {"names": ("orders.eu",)}, True),
    ({"names": ("a",), "match": "prefixed"}, {"names": ("ab",), "match": "prefixed"}, True),
    ({"names": ("a",), "match": "prefixed"}, {"names": ("b",), "match": "prefixed"}, False),
    ({"names": ("o",), "event_types": ("A",)}, {"names": ("o",), "event_types": ("B",)}, False),
    ({"names": ("o",), "event_types": ("A",)}, {"names": ("o",)}, True),
]


@pytest.mark.parametrize(("a", "b", "expected"), OVERLAP)
def test_overlap(a, b, expected):
    def g(kw, effect):
        return Grant(role="r", index=0, effect=effect, actions=("Subscribe",), kind="Topic", **kw)

    assert overlaps(g(a, "allow"), g(b, "deny")) is expected
    assert overlaps(g(b, "allow"), g(a, "deny")) is expected


def test_prefix_never_reaches_a_dlq_whose_source_it_does_not_grant():
    # "orders." matches the topic orders.dlq at the broker, but orders.dlq is the DLQ of
    # orders, which eventward decides as orders: not granted by the prefix.
    spec = parse(
        """
principals:
  eu: {type: service, roles: [eu]}
  both: {type: service, roles: [eu, all-orders]}
roles:
  eu: [{allow: subscribe, topic: "orders.", match: prefixed}]
  all-orders: [{allow: subscribe, topic: orders}]
"""
    )
    ev = Evaluator(1, spec, compile_policy(spec))
    assert ev.evaluate("eu", "Subscribe", ("Topic", "orders.eu"), None, 0).allowed
    assert not ev.evaluate("eu", "Subscribe", ("Topic", "orders.dlq"), None, 0).allowed
    assert ev.evaluate("both", "Subscribe", ("Topic", "orders.dlq"), None, 0).allowed
    nats = nats_users(compile_nats(spec))
    assert nats["eu"]["subscribe"]["deny"] == ["ew.orders.dlq"]
    assert nats["both"]["subscribe"]["deny"] == []
    kafka = kafka_acls(compile_kafka(spec))
    denies = [(a["deny-principal"], a["topic"]) for a in kafka if "deny-principal" in a]
    assert denies == [("User:eu", "orders.dlq")]


def test_literal_dlq_grant_is_refused():
    with pytest.raises(PolicyError, match="DLQ of orders"):
        parse("principals: {}\nroles:\n  r: [{allow: subscribe, topic: orders.dlq}]\n")


# --- NATS: what the transport and the dead-letter writer need, and nothing more ----------------


def nats_match(pattern: str, subject: str) -> bool:
    """nats-server subject matching: ``*`` is one token, ``>`` one or more trailing tokens."""
    p, s = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or tok not in ("*", s[i]):
            return False
    return len(p) == len(s)


def permitted(perms: dict, subject: str) -> bool:
    allowed = any(nats_match(a, subject) for a in perms.get("allow", []))
    return allowed and not any(nats_match(d, subject) for d in perms.get("deny", []))


WIDE = parse(
    """
principals:
  all-reader: {type: service, roles: [all-reader]}
  all-writer: {type: service, roles: [all-writer]}
  one-reader: {type: service, roles: [one-reader]}
  no-pay: {type: service, roles: [no-pay]}
  no-pay-prefix: {type: service, roles: [no-pay-prefix]}
roles:
  all-reader: [{allow: subscribe, topic: "*"}]
  all-writer: [{allow: publish, topic: "*"}]
  one-reader: [{allow: subscribe, topic: orders.eu}]
  no-pay:
    - {allow: subscribe, topic: "*"}
    - {deny: subscribe, topic: pay.eu}
    - {deny: subscribe, topic: cards}
  no-pay-prefix:
    - {allow: subscribe, topic: "*"}
    - {deny: subscribe, topic: "pay.", match: prefixed}
"""
)
SAMPLE_TOPICS = ("orders", "orders.eu", "Payments_2025-x")


@pytest.mark.parametrize("topic", SAMPLE_TOPICS)
def test_nats_wildcard_grants_cover_everything_the_transport_uses(topic):
    from eventward._internal.log import nats as transport

    users = nats_users(compile_nats(WIDE))
    reader, writer = users["all-reader"]["publish"], users["all-writer"]["publish"]
    for s in transport.consumer_permissions(topic, "all-reader") + transport.consumer_permissions(topic):
        assert permitted(reader, s), s  # $JS.API.DIRECT.GET.* was missing: every read failed
    for s in transport.producer_permissions(topic):
        assert permitted(writer, s), s  # $JS.API.STREAM.NAMES was missing
    assert not permitted(writer, "$JS.API.DIRECT.GET." + transport.stream_name(topic))  # writers do not read
    assert not permitted(reader, transport.subject_for(topic))  # readers do not publish events


@pytest.mark.parametrize("principal", ["one-reader", "all-reader"])
def test_nats_subscribers_may_append_to_their_topics_dlq(principal):
    from eventward._internal.log import nats as transport

    perms = nats_users(compile_nats(WIDE))[principal]["publish"]
    dlq = "orders.eu.dlq"
    needed = transport.producer_permissions(dlq)
    assert all(permitted(perms, s) for s in needed), needed
    assert not permitted(perms, "ew.orders.eu")  # the DLQ, never the topic itself
    assert not permitted(perms, "$JS.API.STREAM.NAMES")
    assert permitted(perms, "ew.shipments.dlq") is (principal == "all-reader")


def test_nats_subscribe_denies_reach_the_dlq_on_the_publish_side():
    text = compile_nats(WIDE)
    perms = nats_users(text)["no-pay"]["publish"]
    assert permitted(perms, "ew.orders.dlq") and permitted(perms, "ew.payments.dlq")
    assert permitted(perms, "ew.pay.dlq") and permitted(perms, "ew.pay.eu.x.dlq")
    for denied in ("ew.pay.eu.dlq", "ew.cards.dlq"):
        assert not permitted(perms, denied), denied
    # a prefix deny is inexpressible for JetStream streams: the "*" grant's stream access (and so
    # its DLQ appends) is withheld altogether rather than granted past the deny
    users = nats_users(text)
    assert users["no-pay-prefix"]["publish"] == {"deny": [">"]}
    assert users["no-pay-prefix"]["subscribe"]["deny"] == ["ew.pay.>"]
    deep = "ew." + ".".join("abcdefgh") + ".dlq"
    assert permitted(perms, deep) and not permitted(perms, "ew." + ".".join("abcdefghi") + ".dlq")
    assert "dead letters are appendable at the broker for topics of up to 8" in "\n".join(notes(text))


def test_nats_dlq_append_is_not_granted_without_jetstream_access(reference):
    spec, _ = reference
    users = nats_users(compile_nats(spec))
    # shipping-svc: literal orders (DLQ append granted) and prefix "orders." (no JetStream access)
    ship = users["shipping-svc"]["publish"]
    assert permitted(ship, "ew.orders.dlq") and not permitted(ship, "ew.orders.eu.dlq")
    assert users["archiver"]["publish"] == {"deny": [">"]}
    assert not permitted(users["analytics-svc"]["publish"], "ew.payments.dlq")


def test_kafka_prefix_never_reaches_another_principals_groups():
    spec = parse(
        """
principals:
  app: {type: service, roles: [r]}
  app.billing: {type: service, roles: [r]}
roles:
  r: [{allow: subscribe, topic: orders}]
"""
    )
    acls = kafka_acls(compile_kafka(spec))
    groups = {
        (a.get("allow-principal") or "deny " + a["deny-principal"], a["group"], a["resource-pattern-type"])
        for a in acls
        if "group" in a
    }
    assert groups == {
        ("User:app", "app", "literal"),
        ("User:app", "app.", "prefixed"),
        ("deny User:app", "app.billing", "literal"),  # the default group of app.billing
        ("deny User:app", "app.billing.", "prefixed"),
        ("User:app.billing", "app.billing", "literal"),
        ("User:app.billing", "app.billing.", "prefixed"),
    }


def test_shipped_example_policy_gives_each_service_its_topic_on_both_brokers():
    """The README's NATS/Kafka path: orders-svc's type-limited publish and shipping-svc's reads
    (with dead-letter appends) are granted the same way by both compilers, and nothing else."""
    from importlib import resources

    from eventward._internal.log import nats as transport

    spec = parse(resources.files("eventward._internal.examples").joinpath("policy.yaml").read_text())
    users = nats_users(compile_nats(spec))
    writer, reader = users["orders-svc"]["publish"], users["shipping-svc"]["publish"]
    assert all(permitted(writer, s) for s in transport.producer_permissions("orders"))
    assert all(permitted(reader, s) for s in transport.consumer_permissions("orders", "shipping-svc"))
    assert all(permitted(reader, s) for s in transport.producer_permissions("orders.dlq"))
    assert not permitted(reader, "ew.orders") and not permitted(writer, "$JS.API.DIRECT.GET.EW_orders")
    assert not any(permitted(users[p]["publish"], "$JS.API.STREAM.NAMES") for p in users)
    kafka = {
        (a["allow-principal"], a["topic"], tuple(a["ops"]))
        for a in kafka_acls(compile_kafka(spec))
        if "allow-principal" in a and "topic" in a
    }
    assert {(p, t, ops) for p, t, ops in kafka if p in ("User:orders-svc", "User:shipping-svc")} == {
        ("User:orders-svc", "orders", ("Write", "Describe")),
        ("User:orders-svc", "orders.dlq", ("Write", "Describe")),
        ("User:shipping-svc", "orders", ("Read", "Describe")),
        ("User:shipping-svc", "orders.dlq", ("Read", "Describe", "Write")),
    }
