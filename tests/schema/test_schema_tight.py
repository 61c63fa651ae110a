"""The tight validator (json_tight.py) only ever says "valid" for data the reference validator
(fastjsonschema's generated code and the worded slow path, ``problem()``) accepts too, uses the
same linear-time matchers and format checks, and leaves everything outside its subset to the
reference: verdicts and errors of ``validate`` are unchanged."""

from __future__ import annotations

import copy

import fastjsonschema
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventward._internal.schema import compile_schema
from eventward._internal.schema import json_validate as jv
from eventward._internal.schema.compiled import non_finite
from eventward._internal.schema.formats import FORMATS
from eventward._internal.schema.json_schema import normalize
from eventward._internal.schema.json_tight import compile_tight
from eventward.errors import ValidationError

from .conftest import SENTINEL, order_event, order_schema
from .test_schema_fastpath import json_values, mutated_orders

ORDER = compile_schema(order_schema())


def reference(compiled, data) -> tuple[str, str] | None:
    err = compiled.problem(data)
    return None if err is None else (err.path, err.rule)


def tight_accepts(compiled, data) -> bool:
    """What validate() asks the tight validator: only once the data is JSON (encodable, finite)
    within the size limit, which validate checks first."""
    try:
        raw = orjson.dumps(data)
    except TypeError:
        return False
    if len(raw) > compiled.max_event_bytes or non_finite(data) is not None:
        return False
    return compiled._tight(data)


def outcome(compiled, data) -> tuple[str, str] | None:
    try:
        compiled.validate(data)
    except ValidationError as e:
        return (e.path, e.rule)
    return None


def test_the_order_schema_gets_a_tight_validator_that_accepts_valid_orders():
    assert ORDER._tight is not None
    assert ORDER._tight(order_event()) is True
    assert ORDER.problem(order_event()) is None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_orders())
def test_tight_accepts_only_what_the_reference_accepts(data):
    if tight_accepts(ORDER, data):
        assert ORDER.problem(data) is None
        ORDER._fast(data)  # raises if fastjsonschema disagrees
    assert outcome(ORDER, data) == reference(ORDER, data)


_PATTERNS = ["^SKU-[0-9]{4}$", "^[a-z]+$", "ab+c", "^(x|yz)*$", "[0-9]"]
_STRINGS = ["", "a", "abc", "SKU-1234", "SKU-12345", "xyzx", "9", "jane@example.org", "not an email",
            "2026-01-02T03:04:05Z", "2026-02-30T03:04:05Z", "host.example", "::1", SENTINEL]


@st.composite
def leaf_schemas(draw: st.DrawFn) -> dict:
    kind = draw(st.sampled_from(["string", "integer", "number", "boolean", "null", "enum", "nullable"]))
    if kind == "enum":
        node: dict = {"enum": draw(st.lists(st.sampled_from(_STRINGS), min_size=1, max_size=3, unique=True))}
        if draw(st.booleans()):
            node["type"] = draw(st.sampled_from(["string", ["string", "null"]]))
        return node
    node = {"type": ["string", "null"] if kind == "nullable" else kind}
    if kind in ("string", "nullable"):
        lo, hi = sorted(draw(st.lists(st.integers(0, 12), min_size=2, max_size=2)))
        if draw(st.booleans()):
            node["minLength"] = lo
        if draw(st.integers(0, 3)):
            node["maxLength"] = hi
        if draw(st.integers(0, 2)) == 0:
            node["pattern"] = draw(st.sampled_from(_PATTERNS))
        if draw(st.integers(0, 2)) == 0:
            node["format"] = draw(st.sampled_from(sorted(FORMATS)))
    elif kind in ("integer", "number"):
        for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            if draw(st.booleans()):
                node[key] = draw(st.integers(-5, 5) | st.floats(-5, 5, allow_nan=False))
    return node


def schemas(depth: int = 2) -> st.SearchStrategy[dict]:
    if depth == 0:
        return leaf_schemas()
    return st.one_of(leaf_schemas(), objects(depth), arrays(depth))


@st.composite
def objects(draw: st.DrawFn, depth: int = 2) -> dict:
    props = draw(st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), schemas(depth - 1), max_size=3))
    node: dict = {"type": "object", "properties": props}
    if props:
        node["required"] = draw(st.lists(st.sampled_from(sorted(props)), unique=True))
    if draw(st.booleans()):
        node["additionalProperties"] = draw(st.booleans())
    for key in ("minProperties", "maxProperties"):
        if draw(st.integers(0, 3)) == 0:
            node[key] = draw(st.integers(0, 3)) if key == "minProperties" else draw(st.integers(3, 5))
    return node


@st.composite
def arrays(draw: st.DrawFn, depth: int = 2) -> dict:
    node: dict = {"type": "array", "items": draw(schemas(depth - 1))}
    if draw(st.booleans()):
        node["minItems"] = draw(st.integers(0, 2))
    if draw(st.booleans()):
        node["maxItems"] = draw(st.integers(2, 4))
    return node


def values_for(schema: dict) -> st.SearchStrategy:
    """Values near the schema (often valid) mixed with arbitrary JSON values."""
    t = schema.get("type")
    if "enum" in schema:
        near: st.SearchStrategy = st.sampled_from(schema["enum"])
    elif t == "object":
        props = schema["properties"]
        near = st.fixed_dictionaries({}, optional={k: values_for(v) for k, v in props.items()}) | st.builds(
            lambda d, extra: {**d, **extra},
            st.fixed_dictionaries({k: values_for(v) for k, v in props.items()}),
            st.dictionaries(st.sampled_from(["a", "z"]), json_values, max_size=1),
        )
    elif t == "array":
        near = st.lists(values_for(schema["items"]), max_size=4)
    elif t in ("integer", "number"):
        bounds = [schema[k] for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum") if k in schema]
        edges = sorted({b + d for b in bounds for d in (-1, -0.5, 0, 0.5, 1)} | {int(b) for b in bounds}, key=repr)
        near = st.integers(-7, 7) | st.floats(-7, 7, allow_nan=False) | st.booleans()
        if edges:
            near = st.sampled_from(edges) | near
    elif t == "boolean":
        near = st.booleans() | st.integers(0, 1)
    elif t == "null":
        near = st.none()
    else:
        lo, hi = schema.get("minLength", 0), min(schema.get("maxLength", 12), 12)
        near = st.sampled_from(_STRINGS) | st.text(max_size=8) | st.none()
        near = st.text(alphabet="abxyz9-", min_size=max(0, lo - 1), max_size=hi + 1) | near
    return near | json_values


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_tight_never_accepts_what_the_reference_refuses_on_random_schemas(data):
    root = data.draw(objects(3))
    compiled = compile_schema(root)
    assert compiled._tight is not None  # every generated schema is inside the subset
    values = values_for(compiled.tree)  # built once: the same strategy for each of the six draws
    for _ in range(6):
        value = data.draw(values)
        if tight_accepts(compiled, value):
            assert compiled.problem(value) is None, value
        assert outcome(compiled, value) == reference(compiled, value)


@pytest.mark.parametrize(
    "node",
    [
        {"type": "integer", "multipleOf": 3},
        {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        {"type": "object", "patternProperties": {"^x": {"type": "string"}}, "additionalProperties": False},
        {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}},
        {"enum": [1, True, "a"]},
    ],
    ids=["multipleOf", "uniqueItems", "patternProperties", "additional-schema", "non-string-enum"],
)
def test_keywords_outside_the_subset_leave_validation_to_fastjsonschema(node):
    compiled = compile_schema({"type": "object", "properties": {"f": node}})
    assert compiled._tight is None
    compiled.validate({})  # the reference path still runs


class _Str(str):
    pass


@pytest.mark.parametrize(
    "change",
    [
        {"order_id": _Str("ord-0001")},  # a str subclass: the reference accepts it, tight does not decide
        {"items": ({"sku": "SKU-0001", "qty": 2},)},  # a tuple: same
        {"customer": {"id": "c", "email": "jane@example.org", "tier": True}},
        {"items": [{"sku": "SKU-0001", "qty": 2.0}]},  # 2.0 is an integer to JSON Schema
        {"items": [{"sku": "SKU-0001", "qty": True}]},  # a bool is not
        {"items": [{"sku": "SKU-0001\n", "qty": 1}]},  # "$" must not match before a newline
        {"customer": {"id": "c", "email": "jane@localhost"}},  # format: no TLD
        {"customer": {"id": "c", "email": "jane@example.org", "extra": 1}},  # closed object
    ],
    ids=["str-subclass", "tuple", "bool-in-enum", "float-integer", "bool-integer", "newline", "email", "extra-key"],
)
def test_exact_types_and_edge_values_keep_the_reference_verdict(change):
    data = {**copy.deepcopy(order_event()), **change}
    assert ORDER._tight(data) is False
    assert outcome(ORDER, data) == reference(ORDER, data)


def test_tight_uses_the_linear_time_matchers_and_the_standard_formats():
    """Never weakened: every pattern runs on the RE2 / proven-linear twin the normalizer made,
    every format on formats.py, and nothing else is callable from the generated code."""
    doc = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "pattern": "^(x|yz)*$"},  # not provably linear on re: RE2
            "b": {"type": "string", "pattern": "^SKU-[0-9]{4}$"},  # proven linear: Python re
            "c": {"type": "string", "format": "email"},
        },
    }
    norm = normalize(doc)
    tight = compile_tight(norm.tree, norm.patterns)
    assert tight is not None
    callables = [v for k, v in tight.__globals__.items() if k.startswith("_c") and callable(v)]
    twins = {id(m) for m in norm.patterns.values()}
    assert len(callables) == 3
    for fn in callables:
        assert id(getattr(fn, "__self__", None)) in twins or fn is FORMATS["email"]
    assert type(norm.patterns["^(x|yz)*$"]).__name__ == "LinearRegex"
    assert tight({"a": "x" * 5000 + "!"}) is False  # linear: returns at once, refused


def test_generated_code_holds_no_schema_text():
    """Names and values from the schema are bound as constants, never written into the source:
    a property name cannot inject code."""
    evil = "a'] or __import__('os').system('exit') or v['"
    doc = {"type": "object", "properties": {evil: {"type": "string", "enum": [evil]}}, "required": [evil]}
    compiled = compile_schema(doc)
    assert compiled._tight is not None
    assert compiled._tight({evil: evil}) is True
    assert compiled._tight({evil: "x"}) is False
    with pytest.raises(ValidationError):
        compiled.validate({evil: "x"})


def test_deep_nesting_falls_back_instead_of_failing():
    node: dict = {"type": "string"}
    for _ in range(18):
        node = {"type": "array", "items": node}
    compiled = compile_schema({"type": "object", "properties": {"deep": node}})
    assert compiled._tight is None  # more nested loops than one Python function may hold
    value: object = "x"
    for _ in range(18):
        value = [value]
    compiled.validate({"deep": value})


def test_reference_functions_are_unchanged_by_the_tight_path():
    """The check object used by problem() never consults the tight validator."""
    check = jv.compile_json(normalize(order_schema()))
    assert check.tight is not None
    check.tight = lambda data: True  # a broken tight validator would not fool problem()
    assert check({"order_id": 1}) is not None
    assert isinstance(check.fast, type(fastjsonschema.compile({"type": "string"})))


_BOUNDED = [
    {"type": "string", "minLength": 2, "maxLength": 4},
    {"type": ["string", "null"], "minLength": 1, "maxLength": 1},
    {"type": "string", "enum": ["ab", "abcde"], "maxLength": 4},
    {"type": "integer", "minimum": 1, "maximum": 3},
    {"type": "integer", "exclusiveMinimum": 1, "exclusiveMaximum": 3},
    {"type": "number", "minimum": 0.5, "maximum": 2.5},
    {"type": "number", "exclusiveMinimum": 0.5, "exclusiveMaximum": 2.5},
    {"type": "number", "exclusiveMinimum": 1, "maximum": 1.5},
    {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2},
    {"type": "object", "properties": {"x": {"type": "integer"}}, "minProperties": 1, "maxProperties": 1,
     "additionalProperties": True},
]
_EDGES = ["", "a", "ab", "abc", "abcd", "abcde", None, -1, 0, 0.5, 1, 1.0, 1.25, 1.5, 2, 2.5, 3, 3.5, 4, True,
          [], [1], [1, 2], [1, 2, 3], [1.5], {}, {"x": 1}, {"x": 1, "y": 2}, {"y": "s"}]


@pytest.mark.parametrize("node", _BOUNDED, ids=lambda n: "-".join(k for k in n if k != "type"))
def test_bounds_at_their_edges_agree_with_the_reference(node):
    """Each bound at, just inside and just outside its edge: tight says valid exactly where the
    reference does (it decides every exact-typed value in this subset), never more."""
    compiled = compile_schema({"type": "object", "properties": {"f": node}, "required": ["f"]})
    assert compiled._tight is not None
    for value in _EDGES:
        data = {"f": value}
        ref = reference(compiled, data)
        if type(value) is float and value.is_integer() and "integer" in str(node["type"]):
            assert not compiled._tight(data)  # 1.0: left to the reference
            continue
        assert tight_accepts(compiled, data) == (ref is None), (node, value)


@st.composite
def swapped(draw: st.DrawFn, schema: dict) -> object:
    """A value for a closed object with some declared keys swapped for as many undeclared ones:
    the same size as a valid one (the tight validator checks closed objects by size and reads)."""
    props = schema["properties"]
    value = draw(st.fixed_dictionaries({k: values_for(v) for k, v in props.items()}))
    gone = draw(st.lists(st.sampled_from(sorted(props)), unique=True, min_size=1)) if props else []
    for i, k in enumerate(gone):
        value[f"{k}-x{i}"] = value.pop(k)
    return value


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_tight_never_accepts_a_closed_object_with_declared_keys_swapped_for_others(data):
    root = data.draw(objects(3))
    root["additionalProperties"] = False
    if data.draw(st.booleans()):
        root["required"] = sorted(root["properties"])  # every property required: the size check alone
    compiled = compile_schema(root)
    assert compiled._tight is not None
    value = data.draw(swapped(compiled.tree))
    if tight_accepts(compiled, value):
        assert compiled.problem(value) is None, value
    assert outcome(compiled, value) == reference(compiled, value)


def _closed(props: dict, optional: tuple[str, ...] = ()) -> dict:
    return {"type": "object", "additionalProperties": False, "properties": props,
            "required": [k for k in props if k not in optional]}


_S = {"type": "string", "maxLength": 40}
_I = {"type": "integer", "minimum": 0, "maximum": 10**6}
# The benchmark workload's shape (bench/workload.py): every object closed, some properties optional.
CLOSED_ORDER = compile_schema(_closed({
    "order_id": _S,
    "customer": _closed({"id": _S, "name": _S, "phone": _S, "tier": _S,
                         "address": _closed({"city": _S, "postcode": _S, "country": _S})},
                        optional=("phone", "address", "tier")),
    "items": {"type": "array", "items": _closed({"sku": _S, "quantity": _I, "note": _S}, optional=("note",))},
    "totals": _closed({"subtotal": _I, "total": _I}),
}))


def closed_order() -> dict:
    return {"order_id": "o-1",
            "customer": {"id": "c-1", "name": "Jane", "phone": "+1", "tier": "gold",
                         "address": {"city": "Lyon", "postcode": "69001", "country": "FR"}},
            "items": [{"sku": "S-1", "quantity": 2, "note": "gift"}, {"sku": "S-2", "quantity": 1}],
            "totals": {"subtotal": 3, "total": 3}}


@pytest.mark.parametrize("where", ["data", "customer", "address", "item", "optional", "totals", "added"])
def test_attack_a_closed_object_with_a_key_renamed_keeps_its_size_and_is_refused(where):
    """Every object closed: one key renamed to an undeclared one leaves the object's size
    unchanged (the tight validator checks closed objects by size and reads) and is refused."""
    event = closed_order()
    assert CLOSED_ORDER._tight(event) is True
    target = {"data": event, "customer": event["customer"], "address": event["customer"]["address"],
              "item": event["items"][1], "totals": event["totals"]}.get(where)
    if where == "optional":  # an optional key renamed: the required ones all there
        event["customer"]["tier_"] = event["customer"].pop("tier")
    elif where == "added":  # every declared key there, and one more
        event["totals"]["discount"] = 0
    else:
        name = next(iter(target))
        target[name + "_"] = target.pop(name)
    assert CLOSED_ORDER._tight(event) is False
    with pytest.raises(ValidationError):
        CLOSED_ORDER.validate(event)
    with pytest.raises(ValidationError):
        CLOSED_ORDER.validate_many([closed_order(), event])
