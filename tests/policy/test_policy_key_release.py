"""Encrypt/Decrypt grants on a class, narrowed by the topic and event type a key is released for."""

from __future__ import annotations

import pytest

from eventward._internal.policy import base
from eventward._internal.policy.compile_cedar import compile_policy
from eventward._internal.policy.evaluator import Evaluator
from eventward._internal.policy.spec import parse
from eventward.errors import PolicyError

POLICY = """
principals:
  orders-svc: {type: service, roles: [writer]}
  shipping-svc: {type: service, roles: [reader]}
roles:
  writer:
    - {allow: encrypt, class: pii, on_topics: [orders], event_types: [OrderPlaced]}
  reader:
    - {allow: decrypt, classes: [pii, payment], on_topics: [orders]}
"""


def decide(ev: Evaluator, principal: str, action: str, cls: str, **ctx: str) -> bool:
    return ev.evaluate(principal, action, ("Class", cls), ctx or None, 0.0).allowed


def test_key_release_grants_are_narrowed_by_topic_and_type():
    spec = parse(POLICY)
    ev = Evaluator(1, spec, compile_policy(spec))
    E, D = base.ENCRYPT, base.DECRYPT
    assert decide(ev, "orders-svc", E, "pii", topic="orders", event_type="OrderPlaced")
    assert not decide(ev, "orders-svc", E, "pii", topic="orders", event_type="OrderCancelled")
    assert not decide(ev, "orders-svc", E, "pii", topic="payments", event_type="OrderPlaced")
    assert not decide(ev, "orders-svc", E, "pii")  # no context: the condition cannot hold
    assert not decide(ev, "orders-svc", E, "payment", topic="orders", event_type="OrderPlaced")
    assert not decide(ev, "orders-svc", D, "pii", topic="orders")  # encrypting is not reading
    assert decide(ev, "shipping-svc", D, "payment", topic="orders")
    assert decide(ev, "shipping-svc", D, "pii", topic="orders.dlq")  # its dead letters carry the same data
    assert not decide(ev, "shipping-svc", D, "pii", topic="orders-archive")
    assert not decide(ev, "shipping-svc", E, "pii", topic="orders")
    g = spec.roles["writer"][0]
    assert g.to_yaml() == "{allow: encrypt, class: pii, on_topics: [orders], event_types: [OrderPlaced]}"
    assert parse("roles:\n  writer:\n    - " + g.to_yaml() + "\n").roles["writer"][0] == g


@pytest.mark.parametrize(
    ("grant", "where"),
    [
        ("{allow: publish, topic: orders, on_topics: [orders]}", "on_topics"),
        ("{allow: rotate_keys, class: pii, on_topics: [orders]}", "on_topics"),
        ("{allow: rotate_keys, class: pii, event_types: [OrderPlaced]}", "event_types"),
        ("{allow: encrypt, class: pii, on_topics: [orders.dlq]}", "on_topics[0]"),
        ("{allow: encrypt, class: pii, on_topics: ['bad topic']}", "on_topics[0]"),
        ("{allow: encrypt, topic: orders}", "topic"),
    ],
)
def test_misplaced_key_release_conditions_are_refused_by_name(grant, where):
    with pytest.raises(PolicyError) as ei:
        parse(f"roles:\n  r:\n    - {grant}\n")
    assert where in ei.value.path


def test_a_denied_key_release_names_the_topic_condition_that_failed():
    spec = parse(POLICY)
    ev = Evaluator(1, spec, compile_policy(spec))
    d = ev.evaluate("orders-svc", base.ENCRYPT, ("Class", "pii"), {"topic": "payments", "event_type": "OrderPlaced"}, 0)
    assert "on_topics: [payments]" in d.missing
    assert "role:writer:0 allows encrypt Class::pii only on topics [orders]" in d.missing
    d = ev.evaluate("orders-svc", base.ENCRYPT, ("Class", "pii"), None, 0)
    assert "only with a topic in the request context" in d.missing
