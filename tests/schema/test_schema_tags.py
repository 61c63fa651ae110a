"""Sensitivity tags in schemas become the FieldSpec that drives encryption; bad tags are refused."""

from __future__ import annotations

import pytest

from eventward._internal.fieldspec import FieldRule, FieldSpec
from eventward._internal.schema import compile_schema
from eventward.errors import SchemaError

from .conftest import mutate, order_schema

ORDER_EXPECTED = FieldSpec(
    (
        FieldRule("customer.email", "pii", deterministic=True),
        FieldRule("customer.name", "pii"),
        FieldRule("items[].note", "payment"),
        FieldRule("tags[]", "pii"),
    ),
    subject_path="customer.id",
)


def test_nested_and_array_spec():
    assert compile_schema(order_schema()).spec == ORDER_EXPECTED


def test_tags_through_refs_and_beside_refs():
    doc = {
        "type": "object",
        "$defs": {
            "Email": {"type": "string", "maxLength": 254, "x-eventward": {"class": "pii"}},
            "Text": {"type": "string", "maxLength": 50},
            "Line": {
                "type": "object",
                "properties": {"card": {"type": "string", "x-eventward": {"class": "payment"}}},
            },
        },
        "properties": {
            "home": {"$ref": "#/$defs/Email"},
            "work": {"$ref": "#/$defs/Email"},
            "secret": {"$ref": "#/$defs/Text", "x-eventward": {"class": "health"}},
            "lines": {"type": "array", "items": {"$ref": "#/$defs/Line"}},
        },
    }
    spec = compile_schema(doc).spec
    assert spec == FieldSpec(
        (
            FieldRule("home", "pii"),
            FieldRule("work", "pii"),
            FieldRule("secret", "health"),
            FieldRule("lines[].card", "payment"),
        )
    )


def test_tag_both_at_ref_and_target_refused():
    doc = {
        "type": "object",
        "$defs": {"E": {"type": "string", "x-eventward": {"class": "pii"}}},
        "properties": {"e": {"$ref": "#/$defs/E", "x-eventward": {"class": "health"}}},
    }
    with pytest.raises(SchemaError, match=r"\$.e: x-eventward given both"):
        compile_schema(doc)


@pytest.mark.parametrize(
    ("tag", "needle"),
    [
        ("pii", "must be an object"),
        ({}, "needs a class or"),
        ({"class": "PII"}, "lowercase"),
        ({"class": 7}, "must be a string"),
        ({"class": "pii", "deterministic": "yes"}, "booleans"),
        ({"deterministic": True}, "deterministic needs a class"),
        ({"class": "pii", "encrypt": True}, "'encrypt' is unknown"),
        ({"subject": 1}, "booleans"),
    ],
)
def test_malformed_annotation_refused_naming_the_path(tag, needle):
    doc = mutate(order_schema(), "customer.email", x_eventward=tag)
    with pytest.raises(SchemaError) as ei:
        compile_schema(doc)
    assert ei.value.message.startswith("$.customer.email: ")
    assert needle in ei.value.message


@pytest.mark.parametrize(
    ("doc", "path", "needle"),
    [
        ({"type": "object", "x-eventward": {"class": "pii"}}, "$", "named field"),
        (
            {"type": "object", "additionalProperties": {"type": "string", "x-eventward": {"class": "pii"}}},
            "$.*",
            "named field",
        ),
        (
            {
                "type": "object",
                "patternProperties": {"^a": {"type": "string", "x-eventward": {"class": "pii"}}},
            },
            "$.*",
            "named field",
        ),
        (
            {
                "type": "object",
                "properties": {
                    "m": {
                        "type": "array",
                        "items": {
                            "type": "array",
                            "items": {"type": "string", "x-eventward": {"class": "pii"}},
                        },
                    }
                },
            },
            "$.m[][]",
            "named field",
        ),
        (
            {
                "type": "object",
                "properties": {
                    "c": {
                        "type": "object",
                        "x-eventward": {"class": "pii"},
                        "properties": {"e": {"type": "string", "x-eventward": {"class": "health"}}},
                    }
                },
            },
            "$.c.e",
            "nested inside",
        ),
        (
            {
                "type": "object",
                "properties": {"bad name": {"type": "string", "x-eventward": {"class": "pii"}}},
            },
            "$.bad name",
            "letters, digits",
        ),
    ],
)
def test_misplaced_tags_refused(doc, path, needle):
    with pytest.raises(SchemaError) as ei:
        compile_schema(doc)
    assert ei.value.message.startswith(f"{path}: ")
    assert needle in ei.value.message


SUBJECT = {"x-eventward": {"subject": True, "public": True}}


@pytest.mark.parametrize(
    ("props", "required", "needle"),
    [
        (
            {"a": {"type": "string", **SUBJECT}, "b": {"type": "string", **SUBJECT}},
            ["a", "b"],
            "second data-subject",
        ),
        ({"a": {"type": "string", **SUBJECT}}, [], "must be required"),
        ({"a": {"type": ["string", "null"], **SUBJECT}}, ["a"], "string or integer"),
        ({"a": {"type": "object", **SUBJECT}}, ["a"], "string or integer"),
        ({"a": {"type": "array", "items": {"type": "string", **SUBJECT}}}, ["a"], "inside an array"),
        (
            {
                "a": {
                    "type": ["object", "null"],
                    "required": ["id"],
                    "properties": {"id": {"type": "string", **SUBJECT}},
                }
            },
            ["a"],
            "must be required and non-null",
        ),
    ],
)
def test_subject_rules(props, required, needle):
    with pytest.raises(SchemaError, match=needle):
        compile_schema({"type": "object", "required": required, "properties": props})


def test_subject_may_also_carry_a_class():
    doc = {
        "type": "object",
        "required": ["uid"],
        "properties": {
            "uid": {
                "type": "integer",
                "x-eventward": {"subject": True, "class": "pii", "deterministic": True},
            }
        },
    }
    assert compile_schema(doc).spec == FieldSpec((FieldRule("uid", "pii", True),), "uid")


AVRO = {
    "type": "record",
    "name": "Order",
    "namespace": "com.example",
    "fields": [
        {
            "name": "customer",
            "type": {
                "type": "record",
                "name": "Customer",
                "fields": [
                    {"name": "id", "type": "string", "x-eventward": {"subject": True, "public": True}},
                    {
                        "name": "email",
                        "type": "string",
                        "x-eventward": {"class": "pii", "deterministic": True},
                    },
                    {
                        "name": "phone",
                        "type": ["null", "string"],
                        "default": None,
                        "x-eventward": {"class": "pii"},
                    },
                ],
            },
        },
        {
            "name": "lines",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Line",
                    "fields": [
                        {"name": "card", "type": "string", "x-eventward": {"class": "payment"}},
                        {"name": "sku", "type": "string"},
                    ],
                },
            },
        },
        {"name": "last", "type": ["null", "Line"], "default": None},
        {"name": "notes", "type": {"type": "array", "items": "string"}, "x-eventward": {"class": "health"}},
    ],
}


def test_avro_spec_walks_records_arrays_unions_and_named_refs():
    spec = compile_schema(AVRO, "avro").spec
    assert spec == FieldSpec(
        (
            FieldRule("customer.email", "pii", True),
            FieldRule("customer.phone", "pii"),
            FieldRule("lines[].card", "payment"),
            FieldRule("last.card", "payment"),
            FieldRule("notes", "health"),
        ),
        subject_path="customer.id",
    )


def test_reusing_a_type_with_the_subject_refused():
    doc = {
        **AVRO,
        "fields": [*AVRO["fields"], {"name": "billing", "type": ["null", "Customer"], "default": None}],
    }
    with pytest.raises(SchemaError, match=r"\$.billing.id: a second data-subject field"):
        compile_schema(doc, "avro")


def test_avro_tag_on_a_type_refused():
    doc = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "e", "type": {"type": "string", "x-eventward": {"class": "pii"}}}],
    }
    with pytest.raises(SchemaError, match=r"\$.e: x-eventward belongs on a record field"):
        compile_schema(doc, "avro")


def test_avro_malformed_tag_names_the_field():
    doc = {"type": "record", "name": "R", "fields": [{"name": "e", "type": "string", "x-eventward": "pii"}]}
    with pytest.raises(SchemaError, match=r"^\$.e: x-eventward must be an object"):
        compile_schema(doc, "avro")


def test_avro_subject_with_default_or_in_union_refused():
    with_default = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "id", "type": "string", "default": "x", "x-eventward": {"subject": True, "public": True}}],
    }
    with pytest.raises(SchemaError, match="required"):
        compile_schema(with_default, "avro")
    nullable = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "id", "type": ["null", "string"], "x-eventward": {"subject": True, "public": True}}],
    }
    with pytest.raises(SchemaError, match="string or integer"):
        compile_schema(nullable, "avro")


def test_avro_tags_under_maps_refused():
    doc = {
        "type": "record",
        "name": "R",
        "fields": [
            {
                "name": "m",
                "type": {
                    "type": "map",
                    "values": {
                        "type": "record",
                        "name": "V",
                        "fields": [{"name": "x", "type": "string", "x-eventward": {"class": "pii"}}],
                    },
                },
            }
        ],
    }
    with pytest.raises(SchemaError, match=r"\$.m.\*.x: x-eventward can only tag"):
        compile_schema(doc, "avro")
