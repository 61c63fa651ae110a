"""JSON Schema compatibility matrix: (old, new, mode) -> exactly the expected findings."""

from __future__ import annotations

import pytest

from eventward._internal.schema import Mode, compile_schema
from eventward._internal.schema.compat import check
from eventward.errors import SchemaIncompatible

from .conftest import TYPE, activate


def obj(props: dict, required: list | None = None, **extra) -> dict:
    return {"type": "object", "properties": props, "required": required or [], **extra}


S = {"type": "string", "maxLength": 100}
I = {"type": "integer"}  # noqa: E741
BASE = obj({"id": S, "n": I})

B, F, FULL, NONE = Mode.BACKWARD, Mode.FORWARD, Mode.FULL, Mode.NONE

CASES = [
    # name, old, new, mode, expected {(direction, path, kind)}
    ("identical", BASE, BASE, FULL, set()),
    ("optional field added: backward ok", BASE, obj({"id": S, "n": I, "x": S}), B, set()),
    (
        "optional field added: old closed reader refuses it",
        BASE,
        obj({"id": S, "n": I, "x": S}),
        F,
        {("forward", "$.x", "property_removed")},
    ),
    (
        "required field added",
        BASE,
        obj({"id": S, "n": I, "x": S}, ["x"]),
        FULL,
        {("backward", "$.x", "required_added"), ("forward", "$.x", "property_removed")},
    ),
    ("field removed", BASE, obj({"id": S}), B, {("backward", "$.n", "property_removed")}),
    ("field removed: forward ok", BASE, obj({"id": S}), F, set()),
    ("field made required", BASE, obj({"id": S, "n": I}, ["n"]), B, {("backward", "$.n", "required_added")}),
    (
        "type narrowed",
        obj({"n": {"type": "number"}}),
        obj({"n": I}),
        FULL,
        {("backward", "$.n", "type_narrowed")},
    ),
    (
        "type widened",
        obj({"n": I}),
        obj({"n": {"type": "number"}}),
        FULL,
        {("forward", "$.n", "type_narrowed")},
    ),
    (
        "made nullable",
        obj({"id": S}),
        obj({"id": {**S, "type": ["string", "null"]}}),
        FULL,
        {("forward", "$.id", "type_narrowed")},
    ),
    (
        "enum narrowed",
        obj({"c": {"type": "string", "enum": ["a", "b"]}}),
        obj({"c": {"type": "string", "enum": ["a"]}}),
        B,
        {("backward", "$.c", "enum_narrowed")},
    ),
    (
        "enum added",
        obj({"c": S}),
        obj({"c": {**S, "enum": ["a"]}}),
        B,
        {("backward", "$.c", "enum_narrowed")},
    ),
    (
        "enum widened",
        obj({"c": {"type": "string", "enum": ["a"]}}),
        obj({"c": {"type": "string", "enum": ["a", "b"]}}),
        FULL,
        {("forward", "$.c", "enum_narrowed")},
    ),
    ("const to enum", obj({"c": {"const": "a"}}), obj({"c": {"enum": ["a", "b"]}}), B, set()),
    (
        "maxLength lowered",
        BASE,
        obj({"id": {**S, "maxLength": 10}, "n": I}),
        FULL,
        {("backward", "$.id", "max_length_lowered")},
    ),
    (
        "minLength raised",
        BASE,
        obj({"id": {**S, "minLength": 3}, "n": I}),
        B,
        {("backward", "$.id", "min_length_raised")},
    ),
    (
        "pattern added",
        BASE,
        obj({"id": {**S, "pattern": "^a"}, "n": I}),
        FULL,
        {("backward", "$.id", "pattern_changed")},
    ),
    (
        "pattern changed",
        obj({"id": {**S, "pattern": "^a"}}),
        obj({"id": {**S, "pattern": "^b"}}),
        FULL,
        {("backward", "$.id", "pattern_changed"), ("forward", "$.id", "pattern_changed")},
    ),
    (
        "format added",
        obj({"id": S}),
        obj({"id": {**S, "format": "email"}}),
        B,
        {("backward", "$.id", "format_changed")},
    ),
    (
        "maximum lowered",
        obj({"n": {**I, "maximum": 10}}),
        obj({"n": {**I, "maximum": 5}}),
        FULL,
        {("backward", "$.n", "maximum_lowered")},
    ),
    (
        "maximum made exclusive",
        obj({"n": {**I, "maximum": 10}}),
        obj({"n": {**I, "exclusiveMaximum": 10}}),
        B,
        {("backward", "$.n", "maximum_lowered")},
    ),
    (
        "minimum raised",
        obj({"n": I}),
        obj({"n": {**I, "minimum": 0}}),
        B,
        {("backward", "$.n", "minimum_raised")},
    ),
    (
        "multipleOf added",
        obj({"n": I}),
        obj({"n": {**I, "multipleOf": 5}}),
        B,
        {("backward", "$.n", "multiple_of_changed")},
    ),
    (
        "multipleOf refined",
        obj({"n": {**I, "multipleOf": 2}}),
        obj({"n": {**I, "multipleOf": 4}}),
        FULL,
        {("backward", "$.n", "multiple_of_changed")},
    ),
    (
        "additionalProperties true -> false",
        obj({"id": S}, additionalProperties=True),
        obj({"id": S}),
        FULL,
        {("backward", "$", "additional_properties_closed")},
    ),
    (
        "additionalProperties false -> true",
        obj({"id": S}),
        obj({"id": S}, additionalProperties=True),
        FULL,
        {("forward", "$", "additional_properties_closed")},
    ),
    (
        "open writer, reader adds a typed field",
        obj({"id": S}, additionalProperties=True),
        obj({"id": S, "x": I}, additionalProperties=True),
        B,
        {("backward", "$.x", "type_narrowed")},
    ),
    (
        "nested bound in array items",
        obj({"items": {"type": "array", "items": obj({"q": {**I, "maximum": 9}})}}),
        obj({"items": {"type": "array", "items": obj({"q": {**I, "maximum": 3}})}}),
        B,
        {("backward", "$.items[].q", "maximum_lowered")},
    ),
    (
        "maxItems lowered",
        obj({"a": {"type": "array", "items": S, "maxItems": 9}}),
        obj({"a": {"type": "array", "items": S, "maxItems": 3}}),
        B,
        {("backward", "$.a", "max_items_lowered")},
    ),
    (
        "uniqueItems added",
        obj({"a": {"type": "array", "items": S}}),
        obj({"a": {"type": "array", "items": S, "uniqueItems": True}}),
        B,
        {("backward", "$.a", "unique_items_added")},
    ),
    (
        "default bound applies: explicit 4096 equals absent",
        obj({"s": {"type": "string"}}),
        obj({"s": {"type": "string", "maxLength": 4096}}),
        FULL,
        set(),
    ),
    (
        "everything breaks: every finding reported",
        BASE,
        obj({"id": {**S, "maxLength": 5}, "z": I}, ["z"]),
        B,
        {
            ("backward", "$.id", "max_length_lowered"),
            ("backward", "$.n", "property_removed"),
            ("backward", "$.z", "required_added"),
        },
    ),
    ("NONE accepts anything", BASE, obj({"other": I}, ["other"]), NONE, set()),
]


@pytest.mark.parametrize(("name", "old", "new", "mode", "expected"), CASES, ids=[c[0] for c in CASES])
def test_compatibility_matrix(name, old, new, mode, expected):
    _, findings = check(mode, compile_schema(new), [(1, compile_schema(old))])
    assert {(f.direction, f.path, f.kind) for f in findings} == expected
    assert all(f.against == 1 for f in findings)


def test_transitive_mode_checks_every_accepted_version(registry):
    v1 = obj({"a": S, "b": S})
    v2 = obj({"a": S})  # drops b: only accepted under NONE
    v3 = obj({"a": S, "c": S})
    activate(registry, v1)
    registry.set_mode("bob", TYPE, Mode.NONE)
    activate(registry, v2)
    registry.set_mode("bob", TYPE, Mode.BACKWARD)
    assert registry.check(TYPE, v3).compatible  # fine against v2 alone
    registry.set_mode("bob", TYPE, Mode.BACKWARD_TRANSITIVE)
    report = registry.check(TYPE, v3)
    assert report.compared == (1, 2)
    assert {(f.against, f.path, f.kind) for f in report.compatibility} == {(1, "$.b", "property_removed")}
    with pytest.raises(SchemaIncompatible) as ei:
        registry.propose("alice", TYPE, v3)
    assert [f.kind for f in ei.value.findings] == ["property_removed"]
    assert "$.b" in ei.value.message


def test_rejected_versions_are_not_compared(registry):
    activate(registry, obj({"a": S}))
    p = registry.propose("alice", TYPE, obj({"a": S, "b": S}))
    registry.reject("bob", TYPE, p.version)
    registry.set_mode("bob", TYPE, Mode.FULL_TRANSITIVE)
    assert registry.check(TYPE, obj({"a": S})).compared == (1,)
