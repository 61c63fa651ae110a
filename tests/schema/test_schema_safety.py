"""Resource safety of schemas: nothing a proposer sends can hang, crash or exhaust the registry."""

from __future__ import annotations

import dataclasses
import time
import urllib.request

import orjson
import pytest

from eventward._internal.schema import compile_schema
from eventward._internal.schema.document import MAX_DOCUMENT_BYTES
from eventward._internal.schema.json_schema import normalize
from eventward._internal.schema.json_validate import compile_json
from eventward._internal.schema.regex import nested_quantifier
from eventward.errors import ConfigError, SchemaError, SchemaSecurityError, ValidationError

from .conftest import TYPE, order_schema


def obj(props: dict, **extra) -> dict:
    return {"type": "object", "properties": props, **extra}


def with_pattern(p: str) -> dict:
    return obj({"a": {"type": "string", "pattern": p}})


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    "pattern",
    [
        "(a+)+$",  # classic exponential backtracking
        "^(a|b+)*c$",  # repeated group containing an unbounded repeat
        "(x+x+)+y",
        "((ab)*)+",
        "(a*){2,10}",
    ],
)
def test_redos_shaped_patterns_refused(pattern):
    with pytest.raises(SchemaSecurityError, match="repeats a repeated group"):
        compile_schema(with_pattern(pattern))


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    "pattern",
    [
        r"(a)\1",  # backreference
        r"(?=a)a",  # lookahead
        r"(?!a)b",  # negative lookahead
        r"(?<=a)b",  # lookbehind
        r"a{1001}",  # beyond RE2's repeat limit
    ],
)
def test_patterns_needing_backtracking_refused(pattern):
    with pytest.raises(SchemaSecurityError, match=r"backtracking|RE2"):
        compile_schema(with_pattern(pattern))


@pytest.mark.timeout(5)
def test_pattern_properties_keys_checked_too():
    doc = {"type": "object", "patternProperties": {"(a+)+$": {"type": "string"}}}
    with pytest.raises(SchemaSecurityError, match="patternProperties"):
        compile_schema(doc)
    doc = {"type": "object", "patternProperties": {r"(\w)\1": {"type": "string"}}}
    with pytest.raises(SchemaSecurityError):
        compile_schema(doc)


@pytest.mark.parametrize(
    ("pattern", "refused"),
    [
        ("^[a-z]+$", False),
        ("(?:-[a-z]{2,8})*", False),
        ("[(]a+[)]+", False),
        (r"\(a+\)+", False),
        ("(a){3}", False),
        ("(ab+)*", True),
        ("^(([a-z])+.)+[A-Z]$", True),
    ],
)
def test_nested_quantifier_detector(pattern, refused):
    assert (nested_quantifier(pattern) is not None) is refused


@pytest.mark.timeout(5)
def test_validation_matches_in_linear_time():
    """``^(a|aa)*$`` is exponential under Python's backtracking ``re`` (about fib(n) steps);
    RE2 answers at once, which proves validation does not run patterns on ``re``."""
    c = compile_schema(obj({"a": {"type": "string", "maxLength": 10_000, "pattern": "^(a|aa)*$"}}))
    evil = "a" * 5000 + "!"
    t0 = time.perf_counter()
    with pytest.raises(ValidationError) as ei:
        c.validate({"a": evil})
    assert time.perf_counter() - t0 < 1.0
    assert ei.value.rule == "pattern" and ei.value.path == "$.a"
    c.validate({"a": "a" * 5000})


@pytest.mark.timeout(5)
def test_pattern_properties_match_in_linear_time():
    c = compile_schema({"type": "object", "patternProperties": {"^(a|aa)*$": {"type": "integer"}}})
    t0 = time.perf_counter()
    with pytest.raises(ValidationError) as ei:
        c.validate({"a" * 3000 + "!": 1})
    assert time.perf_counter() - t0 < 1.0
    assert ei.value.rule == "additionalProperties"
    c.validate({"aaaa": 1})


@pytest.mark.timeout(5)
def test_ref_cycle_refused():
    direct = {
        "$defs": {"Node": obj({"next": {"$ref": "#/$defs/Node"}})},
        **obj({"n": {"$ref": "#/$defs/Node"}}),
    }
    with pytest.raises(SchemaSecurityError, match="cycle"):
        compile_schema(direct)
    indirect = {
        "$defs": {"A": obj({"b": {"$ref": "#/$defs/B"}}), "B": obj({"a": {"$ref": "#/$defs/A"}})},
        **obj({"x": {"$ref": "#/$defs/A"}}),
    }
    with pytest.raises(SchemaSecurityError, match="cycle"):
        compile_schema(indirect)
    with pytest.raises(SchemaSecurityError, match="cycle"):
        compile_schema(obj({"self": {"$ref": "#"}}))


@pytest.mark.timeout(5)
def test_unused_definition_with_cycle_still_refused():
    doc = {"$defs": {"Loop": obj({"x": {"$ref": "#/$defs/Loop"}})}, **obj({"a": {"type": "string"}})}
    with pytest.raises(SchemaSecurityError, match="cycle"):
        compile_schema(doc)


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    "ref",
    [
        "https://evil.example/schema.json",
        "http://169.254.169.254/latest/meta-data",
        "file:///etc/passwd",
        "other.json#/$defs/A",
    ],
)
def test_remote_ref_refused_without_fetching(ref, monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("the registry tried to fetch a remote $ref")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(SchemaSecurityError, match="remote"):
        compile_schema(obj({"a": {"$ref": ref}}))


def test_ref_must_point_into_defs():
    doc = obj({"a": {"type": "string"}, "b": {"$ref": "#/properties/a"}})
    with pytest.raises(SchemaError, match=r"\$defs"):
        compile_schema(doc)
    with pytest.raises(SchemaError, match="does not resolve"):
        compile_schema(obj({"b": {"$ref": "#/$defs/Missing"}}))


def test_validation_keywords_beside_ref_refused():
    doc = {"$defs": {"S": {"type": "string"}}, **obj({"a": {"$ref": "#/$defs/S", "maxLength": 3}})}
    with pytest.raises(SchemaError, match=r"next to \$ref"):
        compile_schema(doc)


@pytest.mark.timeout(5)
def test_oversized_document_refused_before_parsing():
    filler = "x" * (MAX_DOCUMENT_BYTES + 1)
    with pytest.raises(SchemaSecurityError, match="bytes, limit"):
        compile_schema(orjson.dumps(obj({"a": {"type": "string", "description": filler}})))


@pytest.mark.timeout(5)
def test_ten_thousand_nested_arrays_refused_without_recursion_error():
    raw = b'{"type": "object", "examples": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    with pytest.raises(SchemaSecurityError, match="deeper"):
        compile_schema(raw)


@pytest.mark.timeout(5)
def test_moderately_deep_document_refused_by_the_scanner():
    raw = b'{"type": "object", "examples": ' + b"[" * 100 + b"]" * 100 + b"}"  # under orjson's own limit
    with pytest.raises(SchemaSecurityError, match="deeper than 64"):
        compile_schema(raw)


@pytest.mark.timeout(5)
def test_deep_ref_chain_refused():
    defs = {f"D{i}": obj({"x": {"$ref": f"#/$defs/D{i + 1}"}}) for i in range(40)}
    defs["D40"] = {"type": "string"}
    with pytest.raises(SchemaSecurityError, match="deeper than 32"):
        compile_schema({"$defs": defs, **obj({"root": {"$ref": "#/$defs/D0"}})})


@pytest.mark.timeout(5)
def test_long_ref_chain_refused_without_recursion_error():
    defs = {f"D{i}": {"$ref": f"#/$defs/D{i + 1}"} for i in range(3000)}
    defs["D3000"] = {"type": "string"}
    with pytest.raises(SchemaSecurityError, match="chain longer than 32"):
        compile_schema({"$defs": defs, **obj({"root": {"$ref": "#/$defs/D0"}})})


@pytest.mark.timeout(10)
def test_too_many_nodes_refused_before_compiling():
    doc = obj({f"p{i}": {"type": "string", "maxLength": 9} for i in range(2500)})
    t0 = time.perf_counter()
    with pytest.raises(SchemaSecurityError, match="more than 2000"):
        compile_schema(doc)
    assert time.perf_counter() - t0 < 2


@pytest.mark.timeout(5)
def test_ref_expansion_bomb_refused():
    """Each level references the next twice: 2**20 nodes from a 2 KB document."""
    defs = {
        f"L{i}": obj({"a": {"$ref": f"#/$defs/L{i + 1}"}, "b": {"$ref": f"#/$defs/L{i + 1}"}})
        for i in range(20)
    }
    defs["L20"] = {"type": "string"}
    with pytest.raises(SchemaSecurityError, match="expands to more than"):
        compile_schema({"$defs": defs, **obj({"root": {"$ref": "#/$defs/L0"}})})


def test_duplicate_keys_refused():
    raw = b'{"type": "object", "properties": {"a": {"type": "string", "maxLength": 5, "maxLength": 99999}}}'
    with pytest.raises(SchemaError, match="repeats the key 'maxLength'"):
        compile_schema(raw)
    escaped = b'{"type": "object", "type": "object"}'
    with pytest.raises(SchemaError, match="repeats"):
        compile_schema(escaped)
    unicode_escape = b'{"type": "object", "\\u0074ype": "string"}'
    with pytest.raises(SchemaError, match="repeats"):
        compile_schema(unicode_escape)


@pytest.mark.parametrize(
    ("node", "needle"),
    [
        ({"oneOf": [{"type": "string"}]}, "oneOf"),
        ({"type": "string", "maxlength": 5}, "maxlength"),  # a typo must not switch the bound off
        ({"type": "array", "items": [{"type": "string"}]}, "tuple"),
        ({"type": "array"}, "must declare items"),
        ({"description": "no type"}, "needs a type"),
        ({"type": "string", "format": "credit-card"}, "format"),
        ({"type": "string", "maxLength": -1}, "maxLength"),
        ({"type": "string", "maxLength": True}, "maxLength"),
        ({"type": "string", "minLength": 5, "maxLength": 2}, "greater than"),
        ({"type": "integer", "maximum": "10"}, "maximum"),
        ({"type": "number", "multipleOf": 0}, "multipleOf"),
        ({"type": "strng"}, "type"),
        ({"type": "string", "enum": ["a", "a"]}, "unique"),
        ({"type": "object", "$id": "x"}, "root"),
    ],
)
def test_malformed_or_unsupported_keywords_refused_naming_the_path(node, needle):
    with pytest.raises(SchemaError) as ei:
        compile_schema(obj({"customer": obj({"field": node})}))
    assert "$.customer.field" in ei.value.message
    assert needle in ei.value.message


@pytest.mark.parametrize(
    ("doc", "error", "needle"),
    [
        (b"not json", SchemaError, "not valid JSON"),
        (b"[1, 2]", SchemaError, "JSON object"),
        ({"type": "string"}, SchemaError, "root schema"),
        ({"$schema": "http://json-schema.org/draft-04/schema#", "type": "object"}, SchemaError, "draft"),
        ({"type": "object", "x-eventward-max-bytes": 2 * 1024 * 1024}, SchemaSecurityError, "hard cap"),
        ({"type": "object", "x-eventward-max-bytes": "big"}, SchemaError, "positive integer"),
        ({"type": "object", "required": ["ghost"]}, SchemaError, "ghost"),
    ],
)
def test_bad_documents_refused(doc, error, needle):
    with pytest.raises(error, match=needle):
        compile_schema(doc)


def test_both_drafts_accepted_and_2020_is_default():
    for draft in ("http://json-schema.org/draft-07/schema#", "https://json-schema.org/draft/2020-12/schema"):
        c = compile_schema({"$schema": draft, **obj({"a": {"type": "string"}}), "definitions": {}})
        c.validate({"a": "x"})
    assert compile_schema(obj({"a": {"type": "string"}})).max_event_bytes == 64 * 1024


@pytest.mark.timeout(5)
def test_avro_recursive_type_refused():
    doc = {"type": "record", "name": "Node", "fields": [{"name": "next", "type": ["null", "Node"]}]}
    with pytest.raises(SchemaSecurityError, match="recursive"):
        compile_schema(doc, "avro")


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"type": "string"}, "record"),
        ({"type": "record", "name": "R", "fields": [{"name": "a", "type": "nope"}]}, "invalid Avro"),
        (
            {"type": "record", "name": "R", "fields": [{"name": "a", "type": "int", "default": "x"}]},
            "invalid Avro",
        ),
        (
            {
                "type": "record",
                "name": "R",
                "fields": [{"name": "a", "type": "int"}, {"name": "a", "type": "int"}],
            },
            "twice",
        ),
        ({"type": "record", "name": "1R", "fields": []}, "not valid"),
    ],
)
def test_bad_avro_refused(doc, needle):
    with pytest.raises(SchemaError, match=needle):
        compile_schema(doc, "avro")


def test_unknown_format_name_refused():
    with pytest.raises(SchemaError, match="unknown schema format"):
        compile_schema(order_schema(), "protobuf")


def test_unsafe_proposal_stores_nothing_and_is_audited(registry, audit):
    with pytest.raises(SchemaSecurityError):
        registry.propose("alice", TYPE, with_pattern("(a+)+$"))
    assert registry.list() == []
    rec = audit.events[-1]
    assert (rec.action, rec.outcome, rec.reason) == ("schema.propose", "error", "unsafe_schema")


def test_validator_fails_closed_if_a_regex_has_no_linear_twin():
    norm = normalize(obj({"a": {"type": "string", "pattern": "^(a|b)c$"}}))
    with pytest.raises(ConfigError, match="no linear-time twin"):
        compile_json(dataclasses.replace(norm, patterns={}))
