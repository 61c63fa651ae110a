"""Schema poisoning: every change that weakens protection is held until a security approval."""

from __future__ import annotations

import pytest

from eventward._internal.schema import Mode
from eventward.errors import AccessDenied

from .conftest import SENTINEL, TYPE, activate, mutate, order_event, order_schema

POISONINGS = [
    # (name, change to the active order schema, expected (path, kind) findings)
    (
        "tag removed",
        lambda d: mutate(d, "customer.email", x_eventward=None),
        {("$.customer.email", "tag_removed")},
    ),
    (
        "tag removed in array items",
        lambda d: mutate(d, "items[].note", x_eventward=None),
        {("$.items[].note", "tag_removed")},
    ),
    (
        "class downgraded",
        lambda d: mutate(d, "customer.name", x_eventward={"class": "internal"}),
        {("$.customer.name", "tag_class_changed")},
    ),
    (
        "deterministic added",
        lambda d: mutate(d, "customer.name", x_eventward={"class": "pii", "deterministic": True}),
        {("$.customer.name", "tag_deterministic_added")},
    ),
    (
        "subject field changed",
        lambda d: mutate(
            mutate(d, "customer.id", x_eventward=None), "order_id", x_eventward={"subject": True, "public": True}
        ),
        {("$.order_id", "subject_changed")},
    ),
    (
        "pattern removed",
        lambda d: mutate(d, "items[].sku", pattern=None),
        {("$.items[].sku", "pattern_loosened")},
    ),
    (
        "enum widened",
        lambda d: mutate(d, "customer.tier", enum=["standard", "gold", "platinum"]),
        {("$.customer.tier", "enum_widened")},
    ),
    ("enum removed", lambda d: mutate(d, "customer.tier", enum=None), {("$.customer.tier", "enum_widened")}),
    (
        "unknown fields allowed",
        lambda d: mutate(d, "customer", additionalProperties=True),
        {("$.customer", "unknown_fields_allowed")},
    ),
    (
        "unknown fields allowed by a schema",
        lambda d: mutate(d, "", additionalProperties={"type": "string"}),
        {("$", "unknown_fields_allowed")},
    ),
    (
        "bigger maxLength",
        lambda d: mutate(d, "customer.name", maxLength=100_000),
        {("$.customer.name", "max_length_raised")},
    ),
    (
        "maxLength removed (default 4096 > 100)",
        lambda d: mutate(d, "customer.name", maxLength=None),
        {("$.customer.name", "max_length_raised")},
    ),
    ("bigger maxItems", lambda d: mutate(d, "items", maxItems=900), {("$.items", "max_items_raised")}),
    (
        "size limit raised",
        lambda d: {**d, "x-eventward-max-bytes": 1024 * 1024},
        {("$", "size_limit_raised")},
    ),
    (
        "type widened",
        lambda d: mutate(d, "items[].qty", type=["integer", "string"]),
        {("$.items[].qty", "type_widened")},
    ),
    (
        "integer widened to number",
        lambda d: mutate(d, "items[].qty", type="number"),
        {("$.items[].qty", "type_widened")},
    ),
    (
        "maximum raised",
        lambda d: mutate(d, "items[].qty", maximum=10_000),
        {("$.items[].qty", "maximum_raised")},
    ),
    (
        "minimum lowered",
        lambda d: mutate(d, "items[].qty", minimum=-5),
        {("$.items[].qty", "minimum_lowered")},
    ),
    (
        "format removed",
        lambda d: mutate(d, "customer.email", format=None),
        {("$.customer.email", "format_loosened")},
    ),
]


@pytest.mark.parametrize(("name", "change", "expected"), POISONINGS, ids=[p[0] for p in POISONINGS])
def test_poisoning_held_until_security_approval(registry, name, change, expected):
    activate(registry, order_schema())
    p = registry.propose("alice", TYPE, change(order_schema()))
    assert p.report.compatible, p.report.compatibility
    found = {(f.path, f.kind) for f in p.report.security}
    assert found == expected
    assert all(f.against == 1 for f in p.report.security)
    assert p.needs_security_approval

    v = registry.approve("bob", TYPE, p.version)  # the normal approval alone does not activate
    assert v.state == "proposed" and v.approved("schema") and not v.approved("security")
    assert registry.active(TYPE).version == 1
    with pytest.raises(AccessDenied):  # bob holds no ApproveSecurity grant
        registry.approve("bob", TYPE, p.version, security=True)
    with pytest.raises(AccessDenied):  # the proposer can never give it either
        registry.approve("alice", TYPE, p.version, security=True)
    assert registry.active(TYPE).version == 1
    registry.active(TYPE).validate(order_event())  # the strict version keeps serving

    v = registry.approve("sec", TYPE, p.version, security=True)
    assert v.state == "active" and registry.active(TYPE).version == p.version


def test_changed_pattern_needs_mode_none_and_security_approval(registry):
    activate(registry, order_schema())
    loose = mutate(order_schema(), "order_id", pattern="^ord-.*$")
    assert {f.kind for f in registry.check(TYPE, loose).compatibility} == {"pattern_changed"}
    registry.set_mode("bob", TYPE, Mode.NONE)
    p = registry.propose("alice", TYPE, loose)
    assert {(f.path, f.kind) for f in p.report.security} == {("$.order_id", "pattern_loosened")}
    assert registry.approve("bob", TYPE, p.version).state == "proposed"


def test_every_regression_of_one_change_is_reported(registry):
    activate(registry, order_schema())
    doc = mutate(order_schema(), "customer.email", x_eventward=None, maxLength=5000, format=None)
    doc = mutate(doc, "customer", additionalProperties=True)
    doc["x-eventward-max-bytes"] = 500_000
    p = registry.propose("alice", TYPE, doc)
    assert {f.kind for f in p.report.security} == {
        "tag_removed",
        "max_length_raised",
        "format_loosened",
        "unknown_fields_allowed",
        "size_limit_raised",
    }


def test_tightening_needs_only_the_normal_approval(registry):
    activate(registry, order_schema())
    registry.set_mode("bob", TYPE, Mode.FORWARD)  # old readers accept data under tighter rules
    doc = mutate(order_schema(), "customer.name", maxLength=50)
    doc = mutate(doc, "customer.email", x_eventward={"class": "pii"})  # randomized instead of deterministic
    p = registry.propose("alice", TYPE, doc)
    assert p.report.compatible and p.report.security == ()
    assert registry.approve("bob", TYPE, p.version).state == "active"


def test_new_optional_tagged_field_needs_only_the_normal_approval(registry):
    activate(registry, order_schema())
    doc = mutate(order_schema(), "customer.phone", type="string", maxLength=20, x_eventward={"class": "pii"})
    p = registry.propose("alice", TYPE, doc)
    assert p.report.compatible and p.report.security == ()
    v = registry.approve("bob", TYPE, p.version)
    assert v.state == "active" and "customer.phone" in {r.path for r in v.spec.rules}


def test_new_tags_are_not_regressions(registry):
    activate(registry, order_schema())
    doc = mutate(order_schema(), "order_id", x_eventward={"class": "internal"})
    p = registry.propose("alice", TYPE, doc)
    assert p.report.security == ()


def test_format_change_is_a_security_finding(registry):
    activate(registry, order_schema())
    registry.set_mode("bob", TYPE, Mode.NONE)
    avro = {"type": "record", "name": "Order", "fields": [{"name": "order_id", "type": "string"}]}
    p = registry.propose("alice", TYPE, avro, "avro")
    kinds = {f.kind for f in p.report.security}
    assert {"format_changed", "tag_removed", "subject_changed"} <= kinds


AVRO_V1 = {
    "type": "record",
    "name": "Payment",
    "fields": [
        {"name": "uid", "type": "string", "x-eventward": {"subject": True, "public": True}},
        {"name": "card", "type": "string", "x-eventward": {"class": "payment"}},
        {"name": "amount", "type": "int"},
        {"name": "status", "type": {"type": "enum", "name": "S", "symbols": ["OK", "FAILED"]}},
    ],
}


def avro_with(field: str, **changes) -> dict:
    fields = [dict(f, **changes) if f["name"] == field else f for f in AVRO_V1["fields"]]
    return {**AVRO_V1, "fields": [{k: v for k, v in f.items() if v is not None} for f in fields]}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (avro_with("card", **{"x-eventward": None}), {("$.card", "tag_removed")}),
        (avro_with("card", **{"x-eventward": {"class": "public"}}), {("$.card", "tag_class_changed")}),
        (avro_with("amount", type="long"), {("$.amount", "type_widened")}),
        (avro_with("amount", type=["null", "int"]), {("$.amount", "type_widened")}),
        (
            avro_with("status", type={"type": "enum", "name": "S", "symbols": ["OK", "FAILED", "ANY"]}),
            {("$.status", "enum_widened")},
        ),
        ({**AVRO_V1, "x-eventward-max-bytes": 900_000}, {("$", "size_limit_raised")}),
    ],
)
def test_avro_poisoning_held(registry, change, expected):
    activate(registry, AVRO_V1, "avro")
    p = registry.propose("alice", TYPE, change, "avro")
    assert p.report.compatible, p.report.compatibility
    assert {(f.path, f.kind) for f in p.report.security} == expected
    assert registry.approve("bob", TYPE, p.version).state == "proposed"
    assert registry.active(TYPE).version == 1


def test_findings_and_errors_never_carry_schema_example_values(registry):
    """Schema documents may hold examples/descriptions; reports carry paths and kinds only."""
    doc = mutate(order_schema(), "customer.email", description=SENTINEL, examples=[SENTINEL])
    activate(registry, doc)
    p = registry.propose("alice", TYPE, mutate(doc, "customer.email", x_eventward=None))
    assert SENTINEL not in repr(p.report)
