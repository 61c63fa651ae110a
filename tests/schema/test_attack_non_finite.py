"""NaN and ±Infinity are not JSON numbers: orjson writes them as ``null``, so a producer that
let one through a ``number`` field stored ``null`` where the schema promised a number (and a
consumer's schema-shaped code then broke on it). The producer refuses them with a typed
ValidationError naming the path and the rule, and stores nothing."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward._internal.schema.compiled import compile_schema, non_finite
from eventward.errors import ValidationError

NON_FINITE = (math.nan, math.inf, -math.inf)


POLICY = """\
principals:
  admin: {type: user, roles: [admin]}
  alice: {type: user, roles: [author]}
  bob: {type: user, roles: [approver]}
  meter-svc: {type: service, roles: [writer]}
roles:
  admin:
    - {allow: manage_policy}
    - {allow: rotate_keys, producer: "*"}
  author:
    - {allow: [propose_schema, read_schema], schema: "*"}
  approver:
    - {allow: [approve_schema, read_schema], schema: "*"}
  writer:
    - {allow: publish, topic: readings}
"""
READING = {
    "type": "object",
    "properties": {"meter": {"type": "string"}, "kwh": {"type": "number"}},
    "required": ["meter", "kwh"],
}


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A home with a Reading schema (a plain number field, nothing encrypted) and a producer."""
    d = Deployment.init(Home(Path(tmp_path_factory.mktemp("nan")) / "home"), admin="admin", policy_yaml=POLICY)
    d.trust.ensure("meter-svc", by="admin")
    prop = d.registry.propose("alice", "Reading", READING)
    d.registry.approve("bob", "Reading", prop.version)
    yield d
    d.close()


@pytest.mark.parametrize("bad", NON_FINITE, ids=["nan", "inf", "-inf"])
def test_attack_nan_in_number_field(dep: Deployment, bad: float) -> None:
    before = dep.transport.end_offset("readings")
    with dep.producer("meter-svc", "readings") as producer:
        with pytest.raises(ValidationError) as ei:
            producer.send("Reading", {"meter": "m-1", "kwh": bad})
        assert ei.value.path == "$.kwh" and ei.value.rule == "finite"
        assert producer.pending() == 0
        producer.send("Reading", {"meter": "m-1", "kwh": 2.5})  # the producer is still usable
    assert dep.transport.end_offset("readings") == before + 1
    stored = orjson.loads(dep.transport.read("readings", before, 1)[0].data)
    assert stored["data"] == {"meter": "m-1", "kwh": 2.5}


def test_attack_nan_nested_and_in_arrays_names_the_path() -> None:
    schema = compile_schema(
        {
            "type": "object",
            "properties": {
                "points": {"type": "array", "items": {"type": "object", "properties": {"x": {"type": "number"}}}},
                "extra": {"type": "object", "additionalProperties": {"type": ["number", "null"]}},
            },
        }
    )
    schema.validate({"points": [{"x": 1.5}], "extra": {"k": None}})  # null itself is fine
    with pytest.raises(ValidationError) as ei:
        schema.validate({"points": [{"x": 1.5}, {"x": math.inf}]})
    assert (ei.value.path, ei.value.rule) == ("$.points[1].x", "finite")
    # a nullable field must not turn NaN into a silent null either; a data key is not echoed
    with pytest.raises(ValidationError) as ei:
        schema.validate({"extra": {"jane@example.org": math.nan}})
    assert ei.value.path == "$.extra.*" and "jane" not in str(ei.value)


def test_attack_nan_in_avro_double() -> None:
    schema = compile_schema(
        {"type": "record", "name": "Reading", "fields": [{"name": "value", "type": "double"}]}, fmt="avro"
    )
    schema.validate({"value": 2.5})
    for bad in NON_FINITE:
        with pytest.raises(ValidationError) as ei:
            schema.validate({"value": bad})
        assert (ei.value.path, ei.value.rule) == ("$.value", "finite")


def test_non_finite_finds_only_non_finite_floats() -> None:
    doc: Any = {"a": [1, 2.5, None, "NaN", {"b": True}], "c": -0.0, "d": 1e308}
    assert non_finite(doc) is None
    doc["a"][4]["b"] = -math.inf
    err = non_finite(doc, frozenset({"a", "b"}))
    assert err is not None and err.path == "$.a[4].b"
