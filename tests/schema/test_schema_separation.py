"""Separation of duties: a security-weakening change needs three distinct principals (proposer,
schema approver, security approver); nobody holding two roles can stand in for two of them."""

from __future__ import annotations

import contextlib
import itertools
from importlib import resources

import pytest

from eventward._internal.audit.base import MemoryAudit
from eventward._internal.home import Home
from eventward._internal.policy.base import APPROVE_SCHEMA, APPROVE_SECURITY, PROPOSE_SCHEMA, AllowList
from eventward._internal.policy.engine import PolicyEngine
from eventward._internal.policy.store import PolicyStore
from eventward._internal.schema import Registry
from eventward._internal.schema.registry import approvals_complete
from eventward.errors import AccessDenied, SeparationOfDuties

from .conftest import TYPE, activate, mutate, order_schema


def untagged() -> dict:
    return mutate(order_schema(), "customer.email", x_eventward=None)


def test_attack_security_approval_by_same_approver(registry, audit):
    """``sec`` holds ApproveSchema and ApproveSecurity: it may give one of the two, never both."""
    activate(registry, order_schema())
    p = registry.propose("alice", TYPE, untagged())
    assert p.needs_security_approval
    assert registry.approve("sec", TYPE, p.version).state == "proposed"
    with pytest.raises(SeparationOfDuties):
        registry.approve("sec", TYPE, p.version, security=True)
    assert registry.active(TYPE).version == 1
    assert audit.events[-1].outcome == "denied" and audit.events[-1].reason == "separation_of_duties"
    # the other order too: a security approval first, then the same principal's schema approval
    registry.reject("alice", TYPE, p.version)
    q = registry.propose("alice", TYPE, untagged())
    assert registry.approve("sec", TYPE, q.version, security=True).state == "proposed"
    with pytest.raises(SeparationOfDuties):
        registry.approve("sec", TYPE, q.version)
    assert registry.active(TYPE).version == 1
    # a distinct schema approver completes it
    assert registry.approve("bob", TYPE, q.version).state == "active"


@pytest.mark.parametrize(
    ("approvals", "needs_security", "complete"),
    [
        ([("schema", "bob"), ("security", "bob")], True, False),  # rows older code could write
        ([("schema", "alice"), ("security", "sec")], True, False),  # the proposer's own approval
        ([("schema", "bob"), ("security", "alice")], True, False),
        ([("schema", "bob")], True, False),
        ([("schema", "bob")], False, True),
        ([("schema", "bob"), ("security", "sec")], True, True),
        ([("schema", "bob"), ("schema", "sec"), ("security", "sec")], True, True),
    ],
)
def test_completeness_needs_distinct_principals(approvals, needs_security, complete):
    assert approvals_complete("alice", approvals, needs_security) is complete


def test_attack_proposer_self_security_approves(tmp_path):
    """The proposer holds every schema role: it can neither approve nor security-approve its change,
    and one more principal holding both approval roles cannot complete it alone."""
    authz = AllowList()
    for action in (PROPOSE_SCHEMA, APPROVE_SCHEMA, APPROVE_SECURITY):
        authz.grant("mallory", action, ("Schema", "*"))
        authz.grant("bob", action, ("Schema", "*"))
    audit = MemoryAudit()
    with Registry(tmp_path / "r.db", authorizer=authz, audit=audit) as reg:
        v1 = reg.propose("bob", TYPE, order_schema())
        assert reg.approve("mallory", TYPE, v1.version).state == "active"
        p = reg.propose("mallory", TYPE, untagged())
        with pytest.raises(AccessDenied):
            reg.approve("mallory", TYPE, p.version, security=True)
        assert reg.approve("bob", TYPE, p.version).state == "proposed"
        with pytest.raises(SeparationOfDuties):
            reg.approve("bob", TYPE, p.version, security=True)
        assert reg.active(TYPE).version == 1 and reg.get(TYPE, p.version).state == "proposed"
        assert [e.reason for e in audit.events if e.outcome == "denied"] == [
            "self_approval",
            "separation_of_duties",
        ]


def test_attack_two_principals_of_the_example_policy_cannot_remove_a_pii_tag(tmp_path):
    """With the shipped policy, no pair of principals activates a PII-tag removal, in any order
    of any approvals; the proposer plus bob (schema-admin) plus carol (security-admin) does."""
    home = Home(tmp_path / "home").ensure()
    text = resources.files("eventward._internal.examples").joinpath("policy.yaml").read_text()
    audit = MemoryAudit()
    store = PolicyStore.open(home, audit=audit)
    store.init(text)
    store.close()
    engine = PolicyEngine.open(home, audit=audit)
    try:
        reg = Registry(tmp_path / "r.db", authorizer=engine)
        principals = engine.principals()
        assert {"alice", "bob", "carol"} <= set(principals)
        reg.approve("bob", TYPE, reg.propose("alice", TYPE, order_schema()).version)
        for proposer, other in itertools.permutations(principals, 2):
            try:
                p = reg.propose(proposer, TYPE, untagged())
            except AccessDenied:
                continue
            for who, sec in itertools.product((proposer, other), (False, True)):
                with contextlib.suppress(AccessDenied):
                    reg.approve(who, TYPE, p.version, security=sec)
            assert reg.active(TYPE).version == 1, (proposer, other)
            reg.reject(proposer, TYPE, p.version)
        p = reg.propose("alice", TYPE, untagged())
        assert reg.approve("bob", TYPE, p.version).state == "proposed"
        assert reg.approve("carol", TYPE, p.version, security=True).state == "active"
        reg.close()
    finally:
        engine.close()
