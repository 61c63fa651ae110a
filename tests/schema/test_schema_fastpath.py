"""The validator's hot path against its slow path: ``CompiledSchema.validate`` (size check and
the generated function, no wrapper) refuses exactly what ``problem()`` refuses, with the same
path and rule; the lean definition handed to fastjsonschema (length bounds implied by an enum
dropped) gives the same verdicts and errors as the normalized tree itself; formats bound as
defaults behave as the keyword partial did."""

from __future__ import annotations

import copy
import decimal
from functools import partial

import fastjsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventward._internal.schema import compile_schema
from eventward._internal.schema import json_validate as jv
from eventward._internal.schema.formats import FORMATS
from eventward._internal.schema.json_schema import DRAFT_07, normalize
from eventward.errors import ValidationError

from .conftest import SENTINEL, order_event, order_schema

ORDER = compile_schema(order_schema())
SMALL = compile_schema({**order_schema(), "x-eventward-max-bytes": 400})

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["standard", "gold", "ord-1234", "SKU-0001", "a@b.c", SENTINEL])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def mutated_orders(draw: st.DrawFn) -> dict:
    """Valid orders with a few values replaced, keys added or removed, anywhere."""
    event = order_event()
    for _ in range(draw(st.integers(0, 3))):
        customer, items = event.get("customer"), event.get("items")
        containers = [event, *([customer] if isinstance(customer, dict) else [])]
        containers += [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []
        target = draw(st.sampled_from(containers))
        action = draw(st.sampled_from(("set", "add", "drop")))
        if action == "drop" and target:
            target.pop(draw(st.sampled_from(sorted(target))))
        elif action == "add":
            target[draw(st.text(min_size=1, max_size=6))] = draw(json_values)
        elif target:
            target[draw(st.sampled_from(sorted(target)))] = draw(json_values)
    return event


def outcome(compiled, data) -> tuple[str, str] | None:
    try:
        compiled.validate(data)
    except ValidationError as e:
        return (e.path, e.rule)
    return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_orders())
def test_hot_path_and_slow_path_agree(data):
    for compiled in (ORDER, SMALL):
        slow = compiled.problem(data)
        assert outcome(compiled, data) == (None if slow is None else (slow.path, slow.rule))


@pytest.mark.parametrize(
    "bad",
    [
        {"order_id": decimal.Decimal("1")},  # a number fastjsonschema accepts, not JSON
        {"n": 2**70},
        {"order_id": "ord-\ud800"},  # lone surrogate: not encodable as JSON text
        {1: "x"},
    ],
    ids=["decimal", "bigint", "surrogate", "int-key"],
)
def test_hot_path_still_refuses_non_json_data(bad):
    loose = compile_schema({"type": "object", "additionalProperties": True, "properties": {}})
    for compiled in (ORDER, loose):
        with pytest.raises(ValidationError) as ei:
            compiled.validate({**order_event(), **bad} if compiled is ORDER else bad)
        assert (ei.value.path, ei.value.rule) == ("$", "json")


def test_hot_path_refuses_oversize_before_the_schema():
    e = order_event()
    e["items"] = [{"sku": "SKU-0001", "qty": 1, "note": SENTINEL}] * 20
    ORDER.validate(e)  # valid under the default limit
    with pytest.raises(ValidationError) as ei:
        SMALL.validate(e)
    assert (ei.value.path, ei.value.rule) == ("$", "maxBytes")
    assert SENTINEL not in str(ei.value)


def test_avro_schemas_keep_the_generic_path():
    avro = compile_schema(
        {"type": "record", "name": "E", "fields": [{"name": "a", "type": "string"}]}, "avro"
    )
    assert avro._fast is None
    avro.validate({"a": "x"})
    with pytest.raises(ValidationError):
        avro.validate({"a": 1})


def reference_check(tree: dict, names: frozenset[str]):
    """The normalized tree compiled as is (no lean copy, keyword partial), errors worded alike."""
    fn = fastjsonschema.compile(
        {**tree, "$schema": DRAFT_07}, formats=FORMATS, use_default=False, detailed_exceptions=True
    )

    def check(data: object) -> tuple[str, str] | None:
        try:
            fn(data)
        except fastjsonschema.JsonSchemaValueException as e:
            err = jv._error(e, names)
            return (err.path, err.rule)
        return None

    return check


@st.composite
def enum_schemas(draw: st.DrawFn) -> dict:
    props = {}
    for i in range(draw(st.integers(1, 3))):
        values = draw(st.lists(st.text(max_size=5) | st.integers(0, 3) | st.none(), min_size=1, max_size=4,
                               unique_by=repr))
        node: dict = {"enum": values}
        if draw(st.booleans()):
            types = ["string", ["string", "null"], ["string", "integer", "null"]]
            node["type"] = draw(st.sampled_from(types))
        for key in ("minLength", "maxLength"):
            if draw(st.booleans()):
                node[key] = draw(st.integers(0, 6))
        if node.get("minLength", 0) > node.get("maxLength", 99):
            node["minLength"], node["maxLength"] = node["maxLength"], node["minLength"]
        props[f"p{i}"] = node
    if draw(st.booleans()):
        props["nested"] = {"type": "object", "properties": {"q": {"type": "string", "enum": ["ab", "abcd"],
                                                               "maxLength": draw(st.integers(1, 5))}}}
    return {"type": "object", "properties": props}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(enum_schemas(), st.lists(st.text(max_size=7) | st.integers(0, 3) | st.none(), min_size=4, max_size=4))
def test_lean_definition_gives_the_same_verdicts_and_errors(doc, values):
    norm = normalize(doc)
    lean = jv.compile_json(norm)
    reference = reference_check(norm.tree, norm.names)
    names = sorted(norm.tree["properties"])
    candidates = [{}, {n: v for n, v in zip(names, values, strict=False)}]
    candidates += [{n: v} for n in names for v in values]
    candidates += [{"nested": {"q": v}} for v in values]
    for data in candidates:
        err = lean(data)
        assert (None if err is None else (err.path, err.rule)) == reference(data)


def test_lean_drops_only_bounds_the_enum_implies():
    tree = normalize(
        {
            "type": "object",
            "properties": {
                "a": {"type": "string", "enum": ["x", "yy"]},  # maxLength 4096 added, implied
                "b": {"type": "string", "enum": ["x", "yyy"], "maxLength": 2},  # "yyy" breaks it: kept
                "c": {"type": "string", "maxLength": 3},  # no enum: kept
                "d": {"type": "array", "items": {"type": "string", "enum": ["z"], "minLength": 1}},
            },
        }
    ).tree
    lean = jv._lean(tree)
    props = lean["properties"]
    assert "maxLength" not in props["a"] and props["b"]["maxLength"] == 2 and props["c"]["maxLength"] == 3
    assert "minLength" not in props["d"]["items"] and "maxLength" not in props["d"]["items"]
    assert tree["properties"]["a"]["maxLength"] == 4096  # the normalized tree itself is untouched
    assert lean["properties"]["a"]["enum"] == ["x", "yy"]


def test_formats_are_bound_as_defaults_and_behave_like_the_partial():
    norm = normalize(order_schema())
    check = jv.compile_json(norm)
    assert not isinstance(check.fast, partial)
    fn = fastjsonschema.compile(
        {**jv._lean(norm.tree), "$schema": DRAFT_07},
        formats=FORMATS,
        use_default=False,
        detailed_exceptions=False,
    )
    jv._use_linear_matchers(fn, norm)
    good, bad = order_event(), copy.deepcopy(order_event())
    bad["customer"]["email"] = "not an email"
    check.fast(good)
    fn(good)
    for f in (check.fast, fn):
        with pytest.raises(fastjsonschema.JsonSchemaValueException):
            f(bad)


def test_unexpected_generated_signature_keeps_the_partial():
    def other(data, formats=None, extra=None):  # not fastjsonschema's (data, custom_formats, name_prefix)
        return data

    p = partial(other, custom_formats=FORMATS)
    assert jv._bound_formats(p) is p
    q = partial(other, formats=FORMATS)
    assert jv._bound_formats(q) is q


def test_hot_path_matches_patterns_with_the_linear_time_twins():
    """The function the hot path calls reads the same swapped REGEX_PATTERNS table: RE2 for a
    pattern a backtracking engine could blow up on, never fastjsonschema's own ``re``."""
    from eventward._internal.schema.regex import LinearRegex
    from eventward.errors import SchemaSecurityError

    doc = {"type": "object", "properties": {"s": {"type": "string", "pattern": "(x+x+)+y"}}}
    with pytest.raises(SchemaSecurityError):  # nested quantifiers are refused at registration
        compile_schema(doc)
    doc["properties"]["s"]["pattern"] = "a[0-9]+b"
    compiled = compile_schema(doc)
    table = compiled._fast.__globals__["REGEX_PATTERNS"]
    assert isinstance(table["a[0-9]+b"], LinearRegex)
    compiled.validate({"s": "xa12b"})
    with pytest.raises(ValidationError) as ei:
        compiled.validate({"s": "x" * 4000})
    assert (ei.value.path, ei.value.rule) == ("$.s", "pattern")
