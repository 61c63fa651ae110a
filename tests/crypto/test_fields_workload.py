"""The shared benchmark workload: its JSON Schema is strict, accepts every generated event,
and tags exactly the fields ORDER_SPEC encrypts."""

from __future__ import annotations

import fastjsonschema
import orjson
import pytest
from bench.workload import ORDER_JSON_SCHEMA, ORDER_SPEC, order_placed

from eventward._internal.fieldspec import FieldRule, FieldSpec


def tagged(schema: dict, prefix: str = "") -> tuple[list[FieldRule], list[str]]:
    rules: list[FieldRule] = []
    subjects: list[str] = []
    for name, sub in schema.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        tag = sub.get("x-eventward", {})
        if "class" in tag:
            rules.append(FieldRule(path, tag["class"], tag.get("deterministic", False)))
        if tag.get("subject"):
            subjects.append(path)
        if sub.get("type") == "array":
            r, s = tagged(sub["items"], path + "[]")
        else:
            r, s = tagged(sub, path)
        rules += r
        subjects += s
    return rules, subjects


def walk(schema: dict):
    yield schema
    for sub in schema.get("properties", {}).values():
        yield from walk(sub)
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"])


def test_schema_tags_match_the_field_spec():
    rules, subjects = tagged(ORDER_JSON_SCHEMA)
    assert FieldSpec(tuple(rules), subjects[0]) == ORDER_SPEC and len(subjects) == 1


def test_schema_is_strict():
    assert ORDER_JSON_SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    for node in walk(ORDER_JSON_SCHEMA):
        if node.get("type") == "object":
            assert node["additionalProperties"] is False
        if node.get("type") == "string" and "enum" not in node:
            assert 0 < node["maxLength"] <= 254
        if node.get("type") == "array":
            assert node["maxItems"] <= 100


def test_generated_events_are_valid_sized_and_spread_over_customers():
    validate = fastjsonschema.compile(ORDER_JSON_SCHEMA)
    events = [order_placed(i) for i in range(3000)]
    for e in events:
        validate(e)
    sizes = [len(orjson.dumps(e)) for e in events]
    assert min(sizes) >= 560 and max(sizes) <= 640
    assert len({e["customer"]["id"] for e in events}) == 1000
    assert order_placed(12345) == order_placed(12345)  # deterministic


@pytest.mark.parametrize("bad", [
    {"customer": {"id": "cust-000001", "name": "x", "email": "a@b.c", "extra": 1}},
    {"customer": {"id": "cust-000001", "name": "x" * 201, "email": "a@b.c"}},
])
def test_schema_refuses_unknown_fields_and_oversize_values(bad):
    validate = fastjsonschema.compile(ORDER_JSON_SCHEMA)
    event = {**order_placed(1), **bad}
    with pytest.raises(fastjsonschema.JsonSchemaException):
        validate(event)
