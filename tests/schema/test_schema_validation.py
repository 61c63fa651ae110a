"""Validating events: strict by default, errors that name path and rule and never carry a value."""

from __future__ import annotations

import copy

import pytest

from eventward._internal.schema import compile_schema
from eventward.errors import ValidationError

from .conftest import SENTINEL, order_event, order_schema

INJECTION = "' OR 1=1 --" * 1000


@pytest.fixture(scope="module")
def order():
    return compile_schema(order_schema())


def assert_no_value(err: ValidationError, *values: str) -> None:
    """The error, its repr, details and chain carry none of the values."""
    texts = [str(err), repr(err), err.message, repr(err.details)]
    for v in values:
        for t in texts:
            assert v not in t
    assert err.__cause__ is None and err.__context__ is None


def invalid(compiled, data) -> ValidationError:
    with pytest.raises(ValidationError) as ei:
        compiled.validate(data)
    return ei.value


def test_valid_event_passes_and_is_not_modified(order):
    e = order_event()
    before = copy.deepcopy(e)
    order.validate(e)
    assert e == before  # no defaults injected


@pytest.mark.parametrize(
    ("where", "path"),
    [("root", "$"), ("customer", "$.customer"), ("item", "$.items[1]")],
)
def test_unknown_fields_refused_at_every_level(order, where, path):
    e = order_event()
    target = {"root": e, "customer": e["customer"], "item": e["items"][1]}[where]
    target[SENTINEL] = SENTINEL  # an attacker-chosen key and value
    err = invalid(order, e)
    assert (err.path, err.rule) == (path, "additionalProperties")
    assert err.message == f"{path}: additionalProperties"
    assert_no_value(err, SENTINEL)


@pytest.mark.parametrize(
    ("mutate", "path", "rule"),
    [
        (lambda e: e["items"][0].__setitem__("qty", "2"), "$.items[0].qty", "type"),
        (lambda e: e["items"][0].__setitem__("qty", True), "$.items[0].qty", "type"),
        (lambda e: e["items"][1].__setitem__("qty", 101), "$.items[1].qty", "maximum"),
        (lambda e: e["customer"].__setitem__("tier", SENTINEL), "$.customer.tier", "enum"),
        (lambda e: e.__setitem__("order_id", SENTINEL), "$.order_id", "pattern"),
        (lambda e: e["customer"].__setitem__("email", SENTINEL + "@@"), "$.customer.email", "format"),
        (lambda e: e["customer"].__setitem__("name", INJECTION), "$.customer.name", "maxLength"),
        (lambda e: e["customer"].pop("email"), "$.customer.email", "required"),
        (lambda e: e.__setitem__("customer", SENTINEL), "$.customer", "type"),
        (lambda e: e.__setitem__("tags", ["x"] * 1001), "$.tags", "maxItems"),
    ],
)
def test_bad_values_refused_with_path_and_rule_only(order, mutate, path, rule):
    e = order_event()
    mutate(e)
    err = invalid(order, e)
    assert (err.path, err.rule) == (path, rule)
    assert err.message == f"{path}: {rule}"
    assert_no_value(err, SENTINEL, "' OR 1=1")


def test_strings_and_arrays_bounded_by_default():
    c = compile_schema(
        {
            "type": "object",
            "properties": {"s": {"type": "string"}, "a": {"type": "array", "items": {"type": "integer"}}},
        }
    )
    c.validate({"s": "x" * 4096, "a": [1] * 1000})
    assert invalid(c, {"s": "x" * 4097}).rule == "maxLength"
    assert invalid(c, {"a": [1] * 1001}).rule == "maxItems"


def test_explicit_additional_properties_true_is_respected():
    open_ = compile_schema(
        {"type": "object", "additionalProperties": True, "properties": {"a": {"type": "string"}}}
    )
    strict = compile_schema({"type": "object", "properties": {"a": {"type": "string"}}})
    extra = {"a": "x", "anything": {"b": 1}}
    open_.validate(extra)  # the explicit choice wins over the strict default...
    assert invalid(strict, extra).rule == "additionalProperties"  # ...which refuses the same event
    assert invalid(open_, {"a": 1, "anything": 1}).rule == "type"  # declared properties still checked


def test_oversize_payload_refused_before_schema_checks(order):
    e = order_event()
    e["customer"]["name"] = SENTINEL
    e["items"] = [{"sku": "SKU-0001", "qty": 1, "note": SENTINEL * 5}] * 50
    small = compile_schema({**order_schema(), "x-eventward-max-bytes": 2000})
    err = invalid(small, e)
    assert (err.path, err.rule) == ("$", "maxBytes")
    assert "limit is 2000" in err.message
    assert_no_value(err, SENTINEL)


def test_non_json_data_refused(order):
    for bad in ({"order_id": {1, 2}}, {"order_id": object()}, {1: "x"}, {"n": 2**70}):
        err = invalid(order, bad)
        assert (err.path, err.rule) == ("$", "json")


def test_pattern_properties_key_never_shown():
    c = compile_schema(
        {
            "type": "object",
            "properties": {
                "attrs": {"type": "object", "patternProperties": {"^[a-z-]+$": {"type": "integer"}}}
            },
        }
    )
    c.validate({"attrs": {"a": 1, "b-c": 2}})
    err = invalid(c, {"attrs": {"jane-doe": SENTINEL}})
    assert (err.path, err.rule) == ("$.attrs.*", "type")
    assert_no_value(err, SENTINEL, "jane-doe")


def test_formats_checked_without_backtracking_regexes():
    c = compile_schema(
        {
            "type": "object",
            "properties": {
                "t": {"type": "string", "format": "date-time"},
                "u": {"type": "string", "format": "uuid"},
                "ip": {"type": "string", "format": "ipv4"},
                "h": {"type": "string", "format": "hostname"},
            },
        }
    )
    c.validate(
        {
            "t": "2026-01-02T03:04:05.123Z",
            "u": "0b0e7d8e-9d0c-4e7e-8a35-2f3c9e1b7a11",
            "ip": "10.0.0.1",
            "h": "api.example.com",
        }
    )
    for field, bad in (
        ("t", "2026-13-02T03:04:05Z"),
        ("u", "not-a-uuid"),
        ("ip", "10.0.0.256"),
        ("h", "-bad-"),
    ):
        assert invalid(c, {field: bad}).rule == "format"


def test_nullable_through_type_list():
    c = compile_schema({"type": "object", "properties": {"n": {"type": ["string", "null"], "maxLength": 3}}})
    c.validate({"n": None})
    c.validate({"n": "abc"})
    assert invalid(c, {"n": "abcd"}).rule == "maxLength"


# --- Avro ---------------------------------------------------------------------------------------

AVRO = {
    "type": "record",
    "name": "Order",
    "namespace": "com.example",
    "x-eventward-max-bytes": 20000,
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "qty", "type": "int"},
        {"name": "big", "type": "long", "default": 0},
        {"name": "price", "type": "double"},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID"]}},
        {"name": "note", "type": ["null", "string"], "default": None},
        {
            "name": "lines",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Line",
                    "fields": [{"name": "sku", "type": "string"}, {"name": "n", "type": "int"}],
                },
            },
        },
        {"name": "attrs", "type": {"type": "map", "values": "int"}, "default": {}},
        {"name": "hash", "type": {"type": "fixed", "name": "H", "size": 4}, "default": "abcd"},
    ],
}


def avro_event():
    return {
        "id": "o1",
        "qty": 2,
        "price": 9.5,
        "status": "NEW",
        "lines": [{"sku": "A", "n": 1}],
        "attrs": {"x": 1},
    }


@pytest.fixture(scope="module")
def avro():
    return compile_schema(AVRO, "avro")


def test_avro_valid_events(avro):
    for event in (avro_event(), {**avro_event(), "note": "hello", "big": 2**40, "hash": "1234", "price": 3}):
        before = copy.deepcopy(event)
        avro.validate(event)
        assert event == before  # validation never coerces or fills defaults into the event
    assert invalid(avro, {**avro_event(), "big": "2"}).rule == "type"  # and it does check: a string is no long


@pytest.mark.parametrize(
    ("mutate", "path", "rule"),
    [
        (lambda e: e.__setitem__(SENTINEL, 1), "$", "additionalProperties"),
        (lambda e: e["lines"][0].__setitem__("extra", SENTINEL), "$.lines[0]", "additionalProperties"),
        (lambda e: e.__setitem__("qty", "2"), "$.qty", "type"),
        (lambda e: e.__setitem__("qty", True), "$.qty", "type"),
        (lambda e: e.__setitem__("qty", 2**31), "$.qty", "range"),
        (lambda e: e.__setitem__("status", SENTINEL), "$.status", "enum"),
        (lambda e: e.pop("id"), "$.id", "required"),
        (lambda e: e.__setitem__("note", 5), "$.note", "type"),
        (lambda e: e.__setitem__("id", INJECTION), "$.id", "maxLength"),
        (lambda e: e["attrs"].__setitem__(SENTINEL, SENTINEL), "$.attrs.*", "type"),
        (lambda e: e["lines"][0].__setitem__("n", SENTINEL), "$.lines[0].n", "type"),
        (lambda e: e.__setitem__("hash", "toolong"), "$.hash", "size"),
    ],
)
def test_avro_bad_values_refused_with_path_and_rule_only(avro, mutate, path, rule):
    e = avro_event()
    mutate(e)
    err = invalid(avro, e)
    assert (err.path, err.rule) == (path, rule)
    assert_no_value(err, SENTINEL, "' OR 1=1")


def test_avro_oversize_refused(avro):
    e = avro_event()
    e["lines"] = [{"sku": SENTINEL, "n": 1}] * 1000
    err = invalid(avro, e)
    assert (err.path, err.rule) == ("$", "maxBytes")
    assert_no_value(err, SENTINEL)
