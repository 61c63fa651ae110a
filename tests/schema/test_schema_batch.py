"""validate_many's batched string checks (batch.py, json_tight.compile_batch) never accept what
the reference (``problem()``: fastjsonschema's code with eventward's matchers and formats)
refuses, and validate_many still raises the first invalid event's own error.

The attack tests feed values that would slip through a careless batch: a separator inside a
value (two valid halves joined), engine differences (non-ASCII digits, ``$`` before a newline),
calendar and leap-second corners, special-use e-mail domains, a bad string deferred in an
earlier event than a structural error, strings deep in nested arrays, a settle boundary."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventward._internal.schema import compile_schema
from eventward._internal.schema import compiled as compiled_mod
from eventward._internal.schema.anchored import _atoms
from eventward._internal.schema.batch import _SEPARATORS, format_batch, pattern_batch
from eventward._internal.schema.compiled import non_finite
from eventward._internal.schema.formats import FORMATS
from eventward._internal.schema.regex import compile_pattern
from eventward.errors import SchemaError, SchemaSecurityError, ValidationError

from .conftest import order_event, order_schema
from .test_schema_tight import objects, values_for
from .test_schema_validate_many import date_times

ORDER = compile_schema(order_schema())
BATCHED_FORMATS = ("date", "date-time", "email", "time", "uuid")
SAMPLES = {
    "date-time": ["2026-01-01T00:00:00Z", "2024-02-29T23:59:60Z", "1999-12-31T23:59:59.123456789+01:00",
                  "2026-04-30t10:00:00z", "0001-01-01T00:00:00-23:59"],
    "date": ["2026-01-31", "2024-02-29", "2023-02-28", "0001-12-31", "9999-11-30"],
    "time": ["00:00:00Z", "23:59:60Z", "15:59:60-08:00", "12:30:00.5+01:00"],
    "email": ["ada@example.com", "a.b+c@sub.example.org", "x--y@example.com", "q@e.museum"],
    "uuid": ["123e4567-e89b-12d3-a456-426614174000", "ABCDEF01-2345-6789-ABCD-EF0123456789"],
    "^SKU-[0-9]{4}$": ["SKU-1234", "SKU-0000"],
    "^[a-z]+$": ["abc", "z"],
}
TRICKY = ["\x00", "\n", "\x01", "\x1f", "\x7f", "-", "--", ".", "@", "9", "\u0663", "\u212a", "Z", " ", "\u00e9",
          "60", "29", "31", "0000", ".test", ".LOCALHOST", "x" * 60]


def tricky(samples: list[str]) -> st.SearchStrategy[str]:
    """Valid samples, and samples with a tricky piece inserted, replaced, or two joined."""

    @st.composite
    def build(draw: st.DrawFn) -> str:
        s = draw(st.sampled_from(samples))
        op = draw(st.sampled_from(["keep", "insert", "replace", "join", "cut", "case"]))
        i = draw(st.integers(0, len(s)))
        piece = draw(st.sampled_from(TRICKY))
        if op == "insert":
            return s[:i] + piece + s[i:]
        if op == "replace":
            return s[:i] + piece + s[i + len(piece):]
        if op == "join":
            return s + draw(st.sampled_from(["\x00", "\n", "\x01"])) + draw(st.sampled_from(samples))
        if op == "cut":
            return s[:i]
        if op == "case":
            return s.swapcase()
        return s

    return build()


def strings_for(key: str) -> st.SearchStrategy[str]:
    extra = date_times() if key == "date-time" else st.nothing()
    return tricky(SAMPLES[key]) | extra | st.text(max_size=10)


@pytest.mark.parametrize("name", BATCHED_FORMATS)
def test_the_standard_formats_of_the_subset_are_batched(name):
    assert format_batch(name) is not None


@pytest.mark.parametrize("name", ["hostname", "ipv4", "ipv6", "uri"])
def test_other_formats_stay_per_value(name):
    assert format_batch(name) is None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_format_batch_accepts_only_values_the_format_accepts(data):
    name = data.draw(st.sampled_from(BATCHED_FORMATS))
    values = data.draw(st.lists(strings_for(name), max_size=6))
    check, one = format_batch(name), FORMATS[name]
    assert check is not None
    if check._joined(values):
        assert all(one(v) for v in values), values
    assert check(values) == all(bool(one(v)) for v in values)


_ATOMS = ["a", "b", "-", "\\.", "\\d", "\\w", ".", "[a-c]", "[^a]", "[0-9_]", "[\x00-z]", "\\$", "\n"]
_QUANTS = ["", "", "?", "*", "+", "{2}", "{1,3}", "{2,}"]


@st.composite
def anchored_patterns(draw: st.DrawFn) -> str:
    atoms = draw(st.lists(st.tuples(st.sampled_from(_ATOMS), st.sampled_from(_QUANTS)), min_size=1, max_size=4))
    return "^" + "".join(a + q for a, q in atoms) + "$"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(anchored_patterns(), st.lists(st.text(alphabet="ab-.9_$\x00\n\u0663\u00e9z", max_size=6), max_size=5))
def test_a_pattern_batch_accepts_only_what_the_reference_matcher_accepts(pattern, values):
    matcher = compile_pattern(pattern, "$")
    check = pattern_batch(pattern, matcher)
    if check is None:  # only RE2 matchers, or no character left to separate values with
        ranges = [r for atom in _atoms(pattern[1:-1]) or [] for r in atom[0]]
        covered = all(any(lo <= ord(c) <= hi for lo, hi in ranges) for c in _SEPARATORS)
        assert not isinstance(matcher, re.Pattern) or covered
        return
    if check._joined(values):
        assert all(matcher.search(v) for v in values), (pattern, values)
    assert check(values) == all(bool(matcher.search(v)) for v in values)


def near(schema: dict) -> st.SearchStrategy:
    """Values shaped by the schema, with tricky strings where it has a format or pattern."""
    t = schema.get("type")
    if "enum" in schema:
        return values_for(schema)
    if t == "object":
        props = schema.get("properties", {})
        return st.fixed_dictionaries({k: near(v) for k, v in props.items()}) | values_for(schema)
    if t == "array":
        return st.lists(near(schema["items"]), max_size=4) | values_for(schema)
    key = schema.get("format") or schema.get("pattern")
    if key in SAMPLES:
        return strings_for(key) | values_for(schema)
    return values_for(schema)


def batch_accepts(compiled, events: list) -> bool:
    """The accept path of validate_many without its per-event fallback."""
    batch = compiled._batch
    buckets = [[] for _ in batch.checks]
    collect = batch.make(*[b.append for b in buckets])
    for data in events:
        try:
            raw = orjson.dumps(data)
        except TypeError:
            return False
        if len(raw) > compiled.max_event_bytes or (not batch.finite and non_finite(data) is not None):
            return False
        if not collect(data):
            return False
    return all(check(b) for check, b in zip(batch.checks, buckets, strict=True))


def first_error(compiled, events: list) -> tuple[str, str, str] | None:
    for data in events:
        err = compiled.problem(data)
        if err is not None:
            return (err.path, err.rule, err.message)
    return None


def outcome(fn, events: list) -> tuple[str, str, str] | None:
    try:
        fn(events)
    except ValidationError as e:
        return (e.path, e.rule, e.message)
    return None


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_batch_never_accepts_what_problem_refuses_on_random_schemas(data):
    compiled = compile_schema(data.draw(objects(3)))
    values = near(compiled.tree)
    events = data.draw(st.lists(values, min_size=1, max_size=5))
    if compiled._batch is not None and batch_accepts(compiled, events):
        assert all(compiled.problem(e) is None for e in events), events
    assert outcome(compiled.validate_many, events) == first_error(compiled, events)


def mostly_valid(key: str) -> st.SearchStrategy[str]:
    valid = st.sampled_from(SAMPLES[key])
    return st.one_of(valid, valid, valid, tricky(SAMPLES[key]))


_LEAVES = [
    *(({"type": "string", "format": f}, key) for f in BATCHED_FORMATS for key in [f]),
    *(({"type": "string", "pattern": p}, p) for p in ("^SKU-[0-9]{4}$", "^[a-z]+$")),
    ({"type": ["string", "null"], "format": "date"}, "date"),
    ({"type": "integer", "minimum": 0, "maximum": 9}, None),
    ({"type": "number", "maximum": 9}, None),
]


@st.composite
def batch_cases(draw: st.DrawFn, depth: int = 3) -> tuple[dict, st.SearchStrategy]:
    """A schema whose string leaves carry batched checks, in objects and arrays, with a strategy
    for values that are mostly valid under it (tricky strings, floats for integers, NaN)."""
    kind = draw(st.sampled_from(["leaf", "object", "array"] if depth else ["leaf"]))
    if kind == "object" or depth == 3:
        names = draw(st.lists(st.sampled_from("abcd"), min_size=1, max_size=3, unique=True))
        subs = {n: draw(batch_cases(depth - 1)) for n in names}
        schema = {"type": "object", "properties": {n: sub for n, (sub, _) in subs.items()}, "required": names}
        return schema, st.fixed_dictionaries({n: vals for n, (_, vals) in subs.items()})
    if kind == "array":
        sub, vals = draw(batch_cases(depth - 1))
        return {"type": "array", "items": sub}, st.lists(vals, max_size=3)
    schema, key = draw(st.sampled_from(_LEAVES))
    if key is None:
        numbers = st.integers(0, 9)
        odd = st.sampled_from([1.0, True, 10, 2**70, 1.5, math.nan, math.inf, -math.inf])
        return schema, st.one_of(numbers, numbers, odd)
    strings = mostly_valid(key)
    return schema, (strings | st.none()) if "null" in schema["type"] else strings


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_batch_never_accepts_what_problem_refuses_on_batched_checks(data):
    schema, values = data.draw(batch_cases())
    compiled = compile_schema(schema)
    text = json.dumps(schema)
    assert (compiled._batch is not None) == ("format" in text or "pattern" in text)
    events = data.draw(st.lists(values, min_size=1, max_size=4))
    if compiled._batch is not None and batch_accepts(compiled, events):
        assert all(compiled.problem(e) is None for e in events), events
    assert outcome(compiled.validate_many, events) == first_error(compiled, events)


def _mutate_strings(event: dict, value: str) -> list[dict]:
    """Copies of ``event`` with one batched string location set to ``value`` each."""
    out = []
    for path in (("order_id",), ("customer", "email"), ("items", 0, "sku"), ("items", 1, "sku")):
        e = copy.deepcopy(event)
        target = e
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
        out.append(e)
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["^SKU-[0-9]{4}$", "email"]).flatmap(strings_for), st.integers(0, 3))
def test_validate_many_raises_the_first_invalid_events_error_on_the_order_schema(value, where):
    base = order_event()
    events = [copy.deepcopy(base) for _ in range(4)]
    events[where] = _mutate_strings(base, value)[where]
    assert outcome(ORDER.validate_many, events) == first_error(ORDER, events)


def test_the_order_schema_defers_every_pattern_and_format():
    assert ORDER._batch is not None
    assert ORDER._batch.finite  # closed everywhere, no "number": the NaN search is not needed
    assert len(ORDER._batch.checks) == 3  # ^ord-..., email, ^SKU-... (one bucket for every item)
    ORDER.validate_many([order_event() for _ in range(3)])


def test_a_pattern_outside_the_proven_subset_stays_inline():
    doc = order_schema()
    doc["properties"]["order_id"]["pattern"] = "^ord-(x|[0-9]{4})$"
    compiled = compile_schema(doc)
    assert len(compiled._batch.checks) == 2
    bad = order_event()
    bad["order_id"] = "ord-12"
    assert outcome(compiled.validate_many, [order_event(), bad]) == first_error(compiled, [bad])


def test_attack_float_integer_slips_past_fast_path():
    """1.0 is an integer in JSON Schema (the reference accepts it; only the exact path does not
    decide it); True, 1.5 and "1" are not, and 2.0**70 is over the maximum."""
    for value, valid in ((1.0, True), (True, False), (1.5, False), (2.0**70, False), ("1", False), (2**70, False)):
        bad = order_event()
        bad["items"][0]["qty"] = value
        events = [order_event(), order_event(), bad]
        assert not batch_accepts(ORDER, events)
        assert outcome(ORDER.validate_many, events) == first_error(ORDER, events)
        assert (first_error(ORDER, events) is None) is valid


@pytest.mark.parametrize("sep", ["\x00", "\n", "\x01"])
def test_attack_separator_inside_a_value_joins_two_valid_strings(sep):
    for name in ("date", "email", "uuid"):
        a, b = SAMPLES[name][:2]
        assert format_batch(name)([a, b])
        assert not format_batch(name)([a + sep + b])
    bad = order_event()
    bad["items"][0]["sku"] = "SKU-0001\x00SKU-0002"
    want = ("$.items[0].sku", "pattern", "$.items[0].sku: pattern")
    assert outcome(ORDER.validate_many, [order_event(), bad]) == want


@pytest.mark.parametrize("value", ["SKU-\u0661\u0662\u0663\u0664", "SKU-1234\n", "\nSKU-1234", "SKU-1234\x00"])
def test_attack_pattern_judged_by_another_engine(value):
    """Unicode digits (``\\d`` outside ASCII) and Python's ``$`` before a final newline."""
    check = pattern_batch("^SKU-\\d{4}$", compile_pattern("^SKU-\\d{4}$", "$"))
    assert check is not None
    assert not check([value]) and not check(["SKU-0001", value])
    bad = order_event()
    bad["items"][1]["sku"] = value
    assert outcome(ORDER.validate_many, [order_event(), bad]) == first_error(ORDER, [bad]) is not None


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("2023-02-29T00:00:00Z", False), ("2024-02-29T00:00:00Z", True), ("2023-04-31T00:00:00Z", False),
        ("2023-03-31T00:00:00Z", True), ("0000-01-01T00:00:00Z", False), ("2023-01-28T23:59:60Z", True),
        ("2023-01-28T12:00:60Z", False), ("2023-01-28T15:59:60-08:00", True), ("2023-13-01T00:00:00Z", False),
        ("2023-01-01T00:00:00.1234567890Z", False),
    ],
)
def test_attack_calendar_corners_in_a_batch(value, valid):
    check = format_batch("date-time")
    assert check(["2026-01-01T00:00:00Z", value, "2026-01-02T00:00:00Z"]) is valid
    schema = compile_schema({"type": "object", "properties": {"at": {"type": "string", "format": "date-time"}}})
    events = [{"at": "2026-01-01T00:00:00Z"}, {"at": value}]
    assert (outcome(schema.validate_many, events) is None) is valid


@pytest.mark.parametrize(
    "value",
    ["a@b.test", "a@b.TEST", "x@localhost", "x@a.b.onion", "x@sub.example.Arpa", "a@ex--ample.com",
     "a@b.invalid", "a@b.local", "a@" + "b" * 70 + ".com", "a" * 65 + "@b.com", "a..b@c.com", "a@b",
     "a@" + ".".join(["b" * 60] * 5) + ".com"],  # a domain over 253 characters of valid labels
)
def test_attack_email_corners_in_a_batch(value):
    check = format_batch("email")
    assert check(["ada@example.com", value]) == bool(FORMATS["email"](value))
    bad = order_event()
    bad["customer"]["email"] = value
    assert outcome(ORDER.validate_many, [order_event(), bad]) == first_error(ORDER, [bad])


def test_attack_format_skipped_in_nested_array():
    schema = compile_schema({
        "type": "object",
        "properties": {"days": {"type": "array", "items": {"type": "array", "items": {
            "type": "object", "properties": {"on": {"type": "string", "format": "date"}}, "required": ["on"]}}}},
    })
    assert schema._batch is not None
    good = {"days": [[{"on": "2026-01-01"}], [{"on": "2026-01-02"}, {"on": "2024-02-29"}]]}
    bad = copy.deepcopy(good)
    bad["days"][1][1]["on"] = "2023-02-29"
    schema.validate_many([good, good])
    assert not batch_accepts(schema, [good, bad, good])
    assert outcome(schema.validate_many, [good, bad, good]) == ("$.days[1][1].on", "format", "$.days[1][1].on: format")


def test_attack_a_deferred_string_error_comes_before_a_later_structural_error():
    bad_string, bad_type = order_event(), order_event()
    bad_string["order_id"] = "ord-12345"  # found only when the batch is settled
    bad_type["items"][0]["qty"] = "1"  # found by the structural pass, later in the batch
    events = [order_event(), bad_string, order_event(), bad_type]
    assert outcome(ORDER.validate_many, events) == ("$.order_id", "pattern", "$.order_id: pattern")
    assert outcome(ORDER.validate_many, events[2:]) == ("$.items[0].qty", "type", "$.items[0].qty: type")


def test_attack_bad_string_after_a_settle_boundary(monkeypatch):
    monkeypatch.setattr(compiled_mod, "_SETTLE_BYTES", 300)
    events = [order_event() for _ in range(6)]
    events[4]["customer"]["email"] = "jane@example.test"
    assert outcome(ORDER.validate_many, events) == first_error(ORDER, events) is not None
    assert outcome(ORDER.validate_many, iter(events[:4])) is None
    assert outcome(ORDER.validate_many, iter(events)) == first_error(ORDER, events)


def test_attack_a_str_subclass_is_left_to_the_reference():
    class S(str):
        pass

    event = order_event()
    event["order_id"] = S(event["order_id"])
    assert not batch_accepts(ORDER, [event])
    assert outcome(ORDER.validate_many, [event]) == first_error(ORDER, [event])


JSON_SCHEMA_SUITE = Path("/usr/share/perl5/auto/share/dist/Test-JSON-Schema-Acceptance/tests/draft2020-12")


def _suite(name: str) -> list[dict]:
    path = JSON_SCHEMA_SUITE / name
    if not path.exists():  # as tests/conformance: a missing package fails, never skips
        pytest.fail(f"{path} is missing: apt-get install libtest-json-schema-acceptance-perl", pytrace=False)
    return json.loads(path.read_text())


@pytest.mark.parametrize("name", BATCHED_FORMATS)
def test_the_suites_format_strings_get_the_reference_verdict_in_a_batch(name):
    check, one = format_batch(name), FORMATS[name]
    values = [c["data"] for g in _suite(f"optional/format/{name}.json") for c in g["tests"] if type(c["data"]) is str]
    assert len(values) >= 5
    for v in values:
        assert check([SAMPLES[name][0], v]) == bool(one(v)), v
        if check._joined([v]):
            assert one(v), v
    valid = [v for v in values if one(v)]
    assert valid and check(valid)


def test_the_suites_pattern_strings_get_the_reference_verdict_in_a_batch():
    batched = 0
    for group in _suite("pattern.json") + _suite("optional/ecmascript-regex.json"):
        pattern = group["schema"].get("pattern") if isinstance(group["schema"], dict) else None
        try:
            matcher = compile_pattern(pattern, "$")
        except (SchemaError, SchemaSecurityError):
            continue  # refused at registration: never validated
        check = pattern_batch(pattern, matcher)
        if check is None:
            continue
        batched += 1
        for case in group["tests"]:
            v = case["data"]
            if type(v) is str:
                assert check([v]) == bool(matcher.search(v)), (pattern, v)
                assert not check._joined([v]) or matcher.search(v), (pattern, v)
    assert batched >= 3


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_attack_nan_and_infinity_where_the_null_search_is_skipped(value):
    """A closed tree skips the search for NaN (orjson writes it as null): its "number" values
    are checked by the collector, under bounds that NaN passes, in objects and arrays."""
    schema = compile_schema({"type": "object", "properties": {
        "x": {"type": "number", "minimum": 0, "maximum": 10},
        "xs": {"type": "array", "items": {"type": ["number", "null"]}},
        "d": {"type": "string", "format": "date"},
    }, "required": ["x", "xs", "d"]})
    assert schema._batch.finite
    good = {"x": 1.5, "xs": [1, None, 2.5], "d": "2026-01-01"}
    schema.validate_many([good, good])
    for bad in ({**good, "x": value}, {**good, "xs": [1, value]}):
        events = [good, bad]
        assert not batch_accepts(schema, events)
        assert outcome(schema.validate_many, events) == first_error(schema, events)
        assert first_error(schema, events)[1] == "finite"


def test_attack_nan_under_an_open_object_or_untyped_items_keeps_the_null_search():
    open_ = compile_schema({"type": "object", "additionalProperties": True,
                            "properties": {"d": {"type": "string", "format": "date"}}})
    loose = compiled_mod.compile_without_strict_defaults(
        {"type": "object", "additionalProperties": False,
         "properties": {"a": {"type": "array"}, "d": {"type": "string", "format": "date"}}})
    for schema, bad in ((open_, {"d": "2026-01-01", "zz": [math.nan]}), (loose, {"d": "2026-01-01", "a": [math.inf]})):
        assert schema._batch is not None and not schema._batch.finite
        events = [{"d": "2026-01-02"}, bad]
        assert not batch_accepts(schema, events)
        assert outcome(schema.validate_many, events) == first_error(schema, events)
        assert first_error(schema, events)[1] == "finite"
