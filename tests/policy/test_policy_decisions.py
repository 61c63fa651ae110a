"""Decision matrices (ACL, RBAC, ABAC), Kafka pattern edge cases, event types, time windows,
and a read-only principal trying to escalate. Every denial must be explained."""

from __future__ import annotations

import logging

import pytest

from eventward._internal.policy import base
from eventward._internal.policy.base import check
from eventward.errors import AccessDenied, InputError, PolicyError

from .support import ABAC as ABAC_CEDAR
from .support import POLICY, utc

P, S, D = base.PUBLISH, base.SUBSCRIBE, base.DECRYPT

# principal, action, resource, context, allowed, deciding policy (None: default deny)
ACL_RBAC = [
    # literal vs prefixed vs wildcard (Kafka resource-pattern semantics)
    ("shipping-svc", S, ("Topic", "orders"), None, True, "role:shipping:0"),
    (
        "shipping-svc",
        S,
        ("Topic", "orders-archive"),
        None,
        False,
        None,
    ),  # literal never matches a longer name
    ("shipping-svc", S, ("Topic", "orders.eu"), None, True, "role:shipping:1"),  # prefixed "orders."
    ("shipping-svc", S, ("Topic", "orders."), None, True, "role:shipping:1"),
    ("shipping-svc", S, ("Topic", "ordersX"), None, False, None),  # "orders." prefix needs the dot
    ("shipping-svc", S, ("Topic", "Orders"), None, False, None),  # case matters
    ("shipping-svc", S, ("Topic", "payments"), None, False, None),
    ("shipping-svc", P, ("Topic", "orders"), {"event_type": "OrderPlaced"}, False, None),  # read != write
    ("archiver", S, ("Topic", "orders-archive"), None, True, "role:archiver:0"),  # prefixed "orders"
    ("archiver", S, ("Topic", "orders"), None, True, "role:archiver:0"),
    ("archiver", base.REPLAY, ("Topic", "orders.eu"), None, True, "role:archiver:0"),
    ("archiver", S, ("Topic", "order"), None, False, None),
    ("analytics-svc", S, ("Topic", "anything-at-all"), None, True, "role:analytics:0"),  # "*"
    ("analytics-svc", S, ("Topic", "*"), None, True, "role:analytics:0"),
    ("analytics-svc", S, ("Topic", "payments"), None, False, "role:analytics:1"),  # forbid beats permit
    ("analytics-svc", S, ("Topic", "payments.dlq"), None, False, "role:analytics:1"),  # DLQ shares policy
    ("analytics-svc", S, ("Topic", "payments-archive"), None, True, "role:analytics:0"),
    ("analytics-svc", P, ("Topic", "anything"), {"event_type": "X"}, False, None),
    # event-type level grants
    ("orders-svc", P, ("Topic", "orders"), {"event_type": "OrderPlaced"}, True, "role:order-writer:0"),
    ("orders-svc", P, ("Topic", "orders"), {"event_type": "OrderCancelled"}, True, "role:order-writer:0"),
    ("orders-svc", P, ("Topic", "orders"), {"event_type": "OrderPaymentProcessed"}, False, None),
    (
        "orders-svc",
        P,
        ("Topic", "orders"),
        None,
        False,
        None,
    ),  # no event type: the limited grant does not apply
    ("orders-svc", P, ("Topic", "orders.dlq"), {"event_type": "OrderPlaced"}, True, "role:order-writer:0"),
    ("orders-svc", P, ("Topic", "orders-archive"), {"event_type": "OrderPlaced"}, False, None),
    # class clearances
    ("shipping-svc", D, ("Class", "pii"), None, True, "role:shipping:2"),
    ("shipping-svc", D, ("Class", "payment"), None, False, None),
    ("analytics-svc", D, ("Class", "pii"), None, False, None),
    # control plane
    ("alice", base.APPROVE_SCHEMA, ("Schema", "OrderPlaced"), None, True, "role:schema-admin:0"),
    ("alice", base.APPROVE_SECURITY, ("Schema", "OrderPlaced"), None, True, "role:security-admin:0"),
    ("alice", base.MANAGE_POLICY, ("Policy", "active"), None, True, "role:policy-admin:0"),
    ("alice", base.FORGET, ("Subject", "9f86d081884c7d65"), None, False, None),
    ("dpo", base.FORGET, ("Subject", "9f86d081884c7d65"), None, True, "role:privacy:0"),
    ("dpo", base.HOLD, ("Subject", "9f86d081884c7d65"), None, True, "role:privacy:0"),
    ("dpo", base.ROTATE_KEYS, ("Class", "payment"), None, True, "role:privacy:1"),
    ("dpo", base.ROTATE_KEYS, ("Class", "health"), None, False, None),
    ("auditor", base.READ_AUDIT, ("Audit", "log"), None, True, "role:read-only:1"),
    ("dpo", base.READ_AUDIT, ("Audit", "log"), None, False, None),
    # undeclared principal: deny by default
    ("mallory", S, ("Topic", "orders"), None, False, None),
]

# ABAC from abac.cedar: principal attributes and the request's network zone.
ABAC = [
    ("orders-svc", D, ("Class", "payment"), {"zone": "internal"}, True, "internal-decrypt"),
    ("orders-svc", D, ("Class", "payment"), {"zone": "dmz"}, False, None),
    ("orders-svc", D, ("Class", "payment"), None, False, None),
    ("analytics-svc", D, ("Class", "payment"), {"zone": "internal"}, False, None),  # principal.zone external
    ("bi-svc", S, ("Topic", "hr"), None, True, "role:analytics:0"),  # internal principal
    ("analytics-svc", S, ("Topic", "hr"), None, False, "no-external-hr"),  # forbid by attribute
    ("analytics-svc", S, ("Topic", "hr"), {"zone": "internal"}, False, "no-external-hr"),  # zone != attribute
]


@pytest.mark.parametrize(("principal", "action", "resource", "ctx", "allowed", "policy"), ACL_RBAC + ABAC)
def test_decision_matrix(engine, principal, action, resource, ctx, allowed, policy):
    d = engine.decide(principal, action, resource, ctx)
    assert d.allowed is allowed, d.explain()
    if policy is None:
        assert d.policies == ()
        assert d.missing, "a default denial must say what grant is missing"
    else:
        assert policy in d.policies
    if not allowed:
        with pytest.raises(AccessDenied) as ei:
            check(engine, principal, action, resource, ctx)
        assert ei.value.explanation == d


def test_forbid_explanation_names_the_forbid(engine):
    d = engine.explain("analytics-svc", S, ("Topic", "payments"))
    text = d.explain()
    assert "DENY analytics-svc Subscribe Topic::payments" in text
    assert "decided by: role:analytics:1" in text
    assert "forbidden by role:analytics:1 (policy.yaml roles.analytics[1])" in d.missing


def test_missing_grant_is_written_as_yaml(engine):
    d = engine.explain("shipping-svc", S, ("Topic", "payments"))
    assert d.missing.startswith("a role of shipping-svc with {allow: subscribe, topic: payments}")
    d = engine.explain("shipping-svc", D, ("Class", "payment"))
    assert "no policy permits shipping-svc Decrypt Class::payment" in d.missing
    assert "{allow: decrypt, class: payment}" in d.missing


def test_event_type_near_miss_is_explained(engine):
    d = engine.explain("orders-svc", P, ("Topic", "orders"), {"event_type": "OrderPaymentProcessed"})
    assert "event_types: [OrderPaymentProcessed]" in d.missing
    assert (
        "role:order-writer:0 allows publish Topic::orders only for event types [OrderPlaced, OrderCancelled]"
        in (d.missing)
    )


def test_undeclared_principal_is_explained(engine):
    d = engine.explain("mallory", S, ("Topic", "orders"))
    assert not d.allowed and "mallory is not declared" in d.missing


def test_action_on_wrong_resource_kind_is_denied(engine):
    d = engine.decide("analytics-svc", S, ("Class", "pii"))
    assert not d.allowed and "Subscribe applies to Topic resources, not Class" in d.missing


# --- a read-only principal tries to escalate -------------------------------------------------

ESCALATIONS = [
    (base.PUBLISH, ("Topic", "orders"), {"event_type": "OrderPlaced"}, "{allow: publish, topic: orders"),
    (base.APPROVE_SCHEMA, ("Schema", "OrderPlaced"), None, "{allow: approve_schema, schema: OrderPlaced}"),
    (base.APPROVE_SECURITY, ("Schema", "OrderPlaced"), None, "{allow: approve_security"),
    (base.MANAGE_POLICY, ("Policy", "active"), None, "{allow: manage_policy, policy: active}"),
    (base.FORGET, ("Subject", "c0ffee"), None, "{allow: forget, subject: c0ffee}"),
    (base.DECRYPT, ("Class", "pii"), None, "{allow: decrypt, class: pii}"),
    (base.REDRIVE_DLQ, ("Topic", "orders.dlq"), None, "{allow: redrive_dlq, topic: orders}"),
]


@pytest.mark.parametrize(("action", "resource", "ctx", "grant"), ESCALATIONS)
def test_read_only_principal_cannot_escalate(engine, audit, caplog, action, resource, ctx, grant):
    assert engine.decide("auditor", base.READ_SCHEMA, ("Schema", "OrderPlaced")).allowed
    caplog.set_level(logging.INFO, logger="eventward.policy")
    with pytest.raises(AccessDenied) as ei:
        check(engine, "auditor", action, resource, ctx)
    d = ei.value.explanation
    assert grant in d.missing and "a role of auditor" in d.missing
    # logged and audited: who, what, which resource, which policies; outcome denied
    kind, rid = resource
    assert any(
        f"principal=auditor action={action} resource={kind}::{rid}" in r.getMessage() for r in caplog.records
    )
    rec = [e for e in audit.events if e.action == "authorize" and e.principal == "auditor"][-1]
    assert rec.outcome == "denied" and rec.resource == f"{kind}::{rid}" and rec.meta["requested"] == action
    assert rec.meta["policies"] == "default-deny"


# --- time windows with an injected clock --------------------------------------------------------


@pytest.mark.parametrize(
    ("hour", "minute", "allowed"),
    [
        (0, 59, False),
        (1, 0, True),
        (2, 30, True),
        (2, 59, True),
        (3, 0, False),
        (13, 0, False),
        (23, 59, False),
    ],
)
def test_batch_window_0100_to_0300_utc(engine, clock, hour, minute, allowed):
    clock.t = utc(2025, 3, 5, hour, minute) + 30
    d = engine.decide("batch-job", P, ("Topic", "reports"), {"event_type": "DailyReport"})
    assert d.allowed is allowed, d.explain()
    if allowed:
        assert d.policies == ("batch-window",)


def test_time_decisions_follow_the_clock_despite_the_cache(engine, clock):
    clock.t = utc(2025, 3, 5, 2, 59) + 10
    req = ("batch-job", P, ("Topic", "reports"), {"event_type": "DailyReport"})
    assert engine.decide(*req).allowed
    assert engine.decide(*req).allowed  # cached within the minute
    clock.t = utc(2025, 3, 5, 3, 0) + 1
    assert not engine.decide(*req).allowed  # the next minute is a new cache bucket
    clock.t = utc(2025, 3, 6, 1, 0)
    assert engine.decide(*req).allowed


def test_caller_cannot_spoof_the_hour(engine, clock):
    clock.t = utc(2025, 3, 5, 12, 0)
    d = engine.decide("batch-job", P, ("Topic", "reports"), {"event_type": "X", "hour": 2, "now": 0})
    assert not d.allowed


# --- bad input is a typed error, not a Cedar traceback -------------------------------------------


@pytest.mark.parametrize(
    ("action", "resource", "ctx", "needle"),
    [
        ("Teleport", ("Topic", "orders"), None, "unknown action"),
        (S, ("Galaxy", "orders"), None, "unknown resource kind"),
        (S, "Topic::orders", None, "resource must be a (kind, id) tuple"),
        (S, ("Topic", ""), None, "invalid Topic id"),
        (S, ("Topic", "x" * 10_000), None, "invalid Topic id"),
        (S, ("Topic", "a\nb"), None, "invalid Topic id"),
        (S, ("Topic", "orders"), {"event_type": 42}, "context.event_type must be a string"),
        (S, ("Topic", "orders"), ["event_type"], "context must be a mapping"),
    ],
)
def test_bad_requests_raise_input_error(engine, action, resource, ctx, needle):
    with pytest.raises(InputError) as ei:
        engine.decide("shipping-svc", action, resource, ctx)
    assert needle in ei.value.message


def test_hostile_ids_cannot_inject_cedar(engine):
    # Quotes and Cedar syntax in ids are data (structured uids), never policy text.
    for rid in ['orders" || true || "', 'orders"]; permit(principal,action,resource);//', "orders\\"]:
        assert not engine.decide("shipping-svc", S, ("Topic", rid)).allowed
        assert not engine.decide('alice" || true', base.MANAGE_POLICY, ("Policy", "active")).allowed


def test_denial_logs_and_audit_carry_no_context_values(engine, audit, caplog):
    caplog.set_level(logging.DEBUG, logger="eventward.policy")
    secret = "jane.doe@example.com"
    engine.decide(
        "analytics-svc", D, ("Class", "pii"), {"event_type": "OrderPlaced", "email": secret, "zone": secret}
    )
    assert secret not in caplog.text
    for e in audit.events:
        assert secret not in repr(e)


def test_introspection(engine):
    assert set(engine.principals()) >= {"orders-svc", "shipping-svc", "alice", "auditor"}
    assert engine.principal_roles("alice") == ("schema-admin", "security-admin", "policy-admin")
    assert engine.principal_roles("mallory") == ()
    assert engine.version == 1


def test_cached_decisions_cannot_be_tampered_with(engine):
    d = engine.decide("analytics-svc", S, ("Topic", "payments"))
    with pytest.raises(TypeError):
        d.extra["forbidden"] = False  # type: ignore[index]
    with pytest.raises(AttributeError):
        d.allowed = True  # type: ignore[misc]
    assert not engine.decide("analytics-svc", S, ("Topic", "payments")).allowed


def test_oversize_policy_file_is_refused(store):
    with pytest.raises(PolicyError, match="larger than"):
        store.apply("alice", "#" * (2 << 20))
    assert store.active_version() == 1


def test_forbid_that_errors_at_runtime_fails_closed(store, engine):
    # Type-checks, but overflows at evaluation: Cedar alone would skip the forbid and allow.
    overflow = """
@id("overflowing-forbid")
forbid (principal, action == Eventward::Action::"Subscribe", resource == Eventward::Topic::"orders")
when { context.now * 1000000000000 > 0 };
"""
    store.apply("alice", POLICY, {"abac.cedar": ABAC_CEDAR, "overflow.cedar": overflow})
    engine.refresh()
    d = engine.decide("shipping-svc", S, ("Topic", "orders"))
    assert not d.allowed
    assert d.policies == ("overflowing-forbid",) and "failing closed" in d.missing
    assert any("overflow" in e for e in d.errors)
    assert engine.decide("shipping-svc", S, ("Topic", "orders.eu")).allowed  # forbid scope is orders only
