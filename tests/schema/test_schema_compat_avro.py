"""Avro compatibility matrix, by the specification's schema-resolution rules."""

from __future__ import annotations

import pytest

from eventward._internal.schema import Mode, compile_schema
from eventward._internal.schema.compat import check
from eventward.errors import SchemaIncompatible

from .conftest import TYPE, activate


def rec(*fields: dict, name: str = "Order", **extra) -> dict:
    return {"type": "record", "name": name, "namespace": "com.example", "fields": list(fields), **extra}


def f(name: str, type_, **extra) -> dict:
    return {"name": name, "type": type_, **extra}


def enum(*symbols: str, **extra) -> dict:
    return {"type": "enum", "name": "Status", "symbols": list(symbols), **extra}


ID = f("id", "string")
B, F, FULL, NONE = Mode.BACKWARD, Mode.FORWARD, Mode.FULL, Mode.NONE

CASES = [
    # name, old, new, mode, expected {(direction, path, kind)}
    ("identical", rec(ID), rec(ID), FULL, set()),
    ("field added with default", rec(ID), rec(ID, f("n", "int", default=0)), FULL, set()),
    (
        "field added without default",
        rec(ID),
        rec(ID, f("n", "int")),
        FULL,
        {("backward", "$.n", "field_added_without_default")},
    ),
    (
        "field removed (no default)",
        rec(ID, f("n", "int")),
        rec(ID),
        FULL,
        {("forward", "$.n", "field_added_without_default")},
    ),
    ("field removed (had default)", rec(ID, f("n", "int", default=0)), rec(ID), FULL, set()),
    ("field renamed with alias", rec(ID, f("n", "int")), rec(ID, f("count", "int", aliases=["n"])), B, set()),
    (
        "field renamed without alias",
        rec(ID, f("n", "int")),
        rec(ID, f("count", "int")),
        B,
        {("backward", "$.count", "field_added_without_default")},
    ),
    ("int -> long", rec(f("n", "int")), rec(f("n", "long")), FULL, {("forward", "$.n", "type_mismatch")}),
    ("long -> int", rec(f("n", "long")), rec(f("n", "int")), B, {("backward", "$.n", "type_mismatch")}),
    ("int -> double", rec(f("n", "int")), rec(f("n", "double")), B, set()),
    ("long -> float", rec(f("n", "long")), rec(f("n", "float")), B, set()),
    ("float -> double", rec(f("n", "float")), rec(f("n", "double")), B, set()),
    (
        "double -> float",
        rec(f("n", "double")),
        rec(f("n", "float")),
        B,
        {("backward", "$.n", "type_mismatch")},
    ),
    ("string <-> bytes", rec(f("s", "string")), rec(f("s", "bytes")), FULL, set()),
    (
        "string -> int",
        rec(f("s", "string")),
        rec(f("s", "int")),
        FULL,
        {("backward", "$.s", "type_mismatch"), ("forward", "$.s", "type_mismatch")},
    ),
    (
        "enum symbol added",
        rec(f("st", enum("A", "B"))),
        rec(f("st", enum("A", "B", "C"))),
        FULL,
        {("forward", "$.st", "enum_symbol_missing")},
    ),
    (
        "enum symbol added, old reader has a default",
        rec(f("st", enum("A", "B", default="A"))),
        rec(f("st", enum("A", "B", "C"))),
        F,
        set(),
    ),
    (
        "enum symbol removed",
        rec(f("st", enum("A", "B"))),
        rec(f("st", enum("A"))),
        B,
        {("backward", "$.st", "enum_symbol_missing")},
    ),
    (
        "enum renamed",
        rec(f("st", enum("A"))),
        rec(f("st", {**enum("A"), "name": "State"})),
        B,
        {("backward", "$.st", "name_changed")},
    ),
    (
        "enum renamed with alias",
        rec(f("st", enum("A"))),
        rec(f("st", {**enum("A"), "name": "State", "aliases": ["Status"]})),
        B,
        set(),
    ),
    (
        "made nullable",
        rec(f("s", "string")),
        rec(f("s", ["null", "string"], default=None)),
        FULL,
        {("forward", "$.s", "type_mismatch")},
    ),
    (
        "union branch added",
        rec(f("u", ["null", "string"])),
        rec(f("u", ["null", "string", "int"])),
        FULL,
        {("forward", "$.u", "union_branch_missing")},
    ),
    (
        "union branch removed",
        rec(f("u", ["null", "string", "int"])),
        rec(f("u", ["null", "string"])),
        B,
        {("backward", "$.u", "union_branch_missing")},
    ),
    ("union branch promoted", rec(f("u", ["null", "int"])), rec(f("u", ["null", "long"])), B, set()),
    ("record renamed", rec(ID), rec(ID, name="Purchase"), B, {("backward", "$", "name_changed")}),
    ("record renamed with alias", rec(ID), rec(ID, name="Purchase", aliases=["Order"]), B, set()),
    ("namespace changed (unqualified names match)", rec(ID), {**rec(ID), "namespace": "org.other"}, B, set()),
    (
        "fixed size changed",
        rec(f("h", {"type": "fixed", "name": "H", "size": 16})),
        rec(f("h", {"type": "fixed", "name": "H", "size": 32})),
        B,
        {("backward", "$.h", "fixed_size_changed")},
    ),
    (
        "array items promoted",
        rec(f("a", {"type": "array", "items": "int"})),
        rec(f("a", {"type": "array", "items": "long"})),
        FULL,
        {("forward", "$.a[]", "type_mismatch")},
    ),
    (
        "map values narrowed",
        rec(f("m", {"type": "map", "values": "long"})),
        rec(f("m", {"type": "map", "values": "int"})),
        B,
        {("backward", "$.m.*", "type_mismatch")},
    ),
    (
        "array -> map",
        rec(f("a", {"type": "array", "items": "int"})),
        rec(f("a", {"type": "map", "values": "int"})),
        B,
        {("backward", "$.a", "type_mismatch")},
    ),
    (
        "nested record field added without default",
        rec(f("c", rec(f("id", "string"), name="Customer"))),
        rec(f("c", rec(f("id", "string"), f("email", "string"), name="Customer"))),
        B,
        {("backward", "$.c.email", "field_added_without_default")},
    ),
    (
        "every break reported",
        rec(ID, f("n", "long"), f("st", enum("A", "B"))),
        rec(ID, f("n", "int"), f("st", enum("A")), f("x", "string")),
        B,
        {
            ("backward", "$.n", "type_mismatch"),
            ("backward", "$.st", "enum_symbol_missing"),
            ("backward", "$.x", "field_added_without_default"),
        },
    ),
    ("NONE accepts anything", rec(ID), rec(f("x", "int")), NONE, set()),
]


@pytest.mark.parametrize(("name", "old", "new", "mode", "expected"), CASES, ids=[c[0] for c in CASES])
def test_avro_compatibility_matrix(name, old, new, mode, expected):
    _, findings = check(mode, compile_schema(new, "avro"), [(1, compile_schema(old, "avro"))])
    assert {(x.direction, x.path, x.kind) for x in findings} == expected


def test_avro_incompatible_proposal_refused_with_report(registry, audit):
    activate(registry, rec(ID), "avro")
    with pytest.raises(SchemaIncompatible) as ei:
        registry.propose("alice", TYPE, rec(ID, f("n", "int")), "avro")
    assert [(x.path, x.kind) for x in ei.value.findings] == [("$.n", "field_added_without_default")]
    assert registry.get(TYPE).version == 1 and len(registry.versions(TYPE)) == 1
    rec_ = audit.events[-1]
    assert (rec_.outcome, rec_.reason, rec_.meta["findings"]) == (
        "denied",
        "incompatible",
        "field_added_without_default",
    )


def test_format_change_is_incompatible_unless_mode_none(registry):
    activate(registry, rec(ID), "avro")
    json_doc = {"type": "object", "properties": {"id": {"type": "string"}}}
    report = registry.check(TYPE, json_doc, "json")
    assert [x.kind for x in report.compatibility] == ["format_changed"]
    registry.set_mode("bob", TYPE, Mode.NONE)
    assert registry.check(TYPE, json_doc, "json").compatible
