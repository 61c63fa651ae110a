"""The guard's fast path finds exactly what the precise path finds.

Fast path: Set pre-checks split by ``Detector.prefilter`` and skipped by ``Detector.needs``,
joined pre-checks over several values (``kinds_many``), the clean-value memo, and the
producer's scan compiled from the schema (``scan.compile_plan``). Precise path: every value of
the event, every detector's own pattern and validator, nothing remembered. Differential
property tests on random text, non-PII values and planted PII (alone, in sentences, and in
values past ``SHORT_BYTES``).
"""

from __future__ import annotations

import random
import string
import time
from pathlib import Path
from typing import Any

import pytest
from bench.pii_corpus import PLANTERS, non_pii, planted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventward._internal.deployment import Deployment
from eventward._internal.guard import scan
from eventward._internal.guard.detectors import (
    MAX_SCAN_CHARS,
    SHORT_BYTES,
    Detectors,
    compile_detector_pattern,
    default_detectors,
)
from eventward._internal.guard.producer_guard import WARN_ACTION
from eventward._internal.schema.compiled import compile_schema
from eventward.errors import SensitiveDataRefused

from .conftest import order, order_schema, publish_schema

DEFAULT = default_detectors()
PATTERNS = [compile_detector_pattern(d.pattern) for d in DEFAULT]
OWN_MEMO = Detectors(DEFAULT.detectors)  # a memo only the differential tests fill
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_ALPHABET = string.ascii_letters + string.digits + " @.:-_/+=()'\"#,\n" + "éß€ü"
_rng = st.randoms(use_true_random=False)
_planted = st.builds(planted, _rng, st.sampled_from(sorted(PLANTERS)))
_clean = st.builds(lambda r: str(non_pii(r)), _rng)
_random = st.text(alphabet=_ALPHABET, max_size=80)
_piece = st.one_of(_planted, _clean, _random)
#: short values, and sentences of many pieces (past SHORT_BYTES: one Set per pattern)
TEXTS = st.one_of(_piece, st.lists(_piece, min_size=2, max_size=5).map(" ".join),
                  st.lists(_piece, min_size=12, max_size=40).map(" ".join))


def precise(text: str) -> set[str]:
    """The precise path: every detector's own pattern and validator, no pre-check, no memo."""
    text = text[:MAX_SCAN_CHARS]
    if len(text) < 7:
        return set()
    return {d.kind for d in DEFAULT if d.find(text)}


@SETTINGS
@given(TEXTS)
def test_candidates_are_exactly_the_patterns_that_occur(text: str) -> None:
    assert sorted(DEFAULT.candidates(text)) == [i for i, rx in enumerate(PATTERNS) if rx.search(text)]


@SETTINGS
@given(st.lists(TEXTS, min_size=1, max_size=12))
def test_kinds_and_kinds_many_equal_the_precise_path(texts: list[str]) -> None:
    expected = [precise(t) for t in texts]
    assert OWN_MEMO.kinds_many(texts) == expected
    assert [OWN_MEMO.kinds(t) for t in texts] == expected  # again: clean values now seen twice, memoized
    assert [OWN_MEMO.kinds(t) for t in texts] == expected
    assert [DEFAULT.kinds(t) for t in texts] == expected


@SETTINGS
@given(st.one_of(_planted, TEXTS))
def test_needs_are_needed(text: str) -> None:
    """A pattern that names characters its matches need never matches a text without them (the
    ground for skipping its Set), and each of its matches contains one."""
    for d, rx in zip(DEFAULT, PATTERNS, strict=True):
        if not d.needs:
            continue
        stripped = text.translate({ord(c): None for c in d.needs})
        assert rx.search(stripped) is None, d.kind
        for m in rx.finditer(text):
            assert any(c in m.group(0) for c in d.needs), d.kind


def test_the_default_detectors_are_split_and_gated() -> None:
    """What the speed depends on (the differential tests above hold whatever the split)."""
    by_kind = {d.kind: d for d in DEFAULT}
    assert by_kind["email"].needs == "@" and by_kind["email"].prefilter == "email"
    assert len({d.prefilter for d in DEFAULT}) == 4
    assert SHORT_BYTES <= 1024


def test_attack_random_text_cannot_stall_the_detectors() -> None:
    """Values of random base64 or alphanumerics (hashes, tokens, blobs; or built to hurt), none a
    candidate: with all patterns in one RE2 Set, each new value cost its DFA fresh states (about
    1.2 ms per 250 characters, 140 values 150-190 ms of CPU); split, the same values cost 5 ms."""
    rng = random.Random(41)
    alphabets = (string.ascii_letters + string.digits + "+/", string.ascii_lowercase + string.digits)
    texts = ["".join(rng.choice(alphabets[i % 2]) for _ in range(250)) for i in range(141)]
    assert DEFAULT.kinds(texts[0]) == set()  # and warm: the Sets' start states
    t0 = time.process_time()
    found = [DEFAULT.kinds(t) for t in texts[1:]]
    elapsed = time.process_time() - t0
    assert found == [precise(t) for t in texts[1:]]
    assert elapsed < 0.05


# --- the compiled scan -----------------------------------------------------------------------

DOC: dict[str, Any] = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string"},
        "placed_at": {"type": "string", "format": "date-time"},
        "status": {"enum": ["placed", "shipped"]},
        "qty": {"type": "integer", "minimum": 0, "maximum": 1000},
        "ref": {"type": "integer"},
        "price": {"type": "number"},
        "either": {"type": ["string", "integer", "null"]},
        "customer": {"type": "object", "properties": {
            "id": {"type": "string", "x-eventward": {"subject": True, "public": True}},
            "email": {"type": "string", "x-eventward": {"class": "pii"}},
            "phone": {"type": "string"},
            "address": {"type": "object", "properties": {"line": {"type": "string"}, "zip": {"type": "string",
                                                                                           "maxLength": 5}}},
        }, "required": ["id"]},
        "lines": {"type": "array", "items": {"type": "object", "properties": {
            "note": {"type": "string"}, "qty": {"type": "integer"}, "kind": {"enum": ["a", "b"]},
            "tags": {"type": "array", "items": {"type": "string"}}}}},
        "attrs": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": ["order_id", "customer"],
}
COMPILED = compile_schema(DOC)


class _Version:
    spec = COMPILED.spec
    compiled = COMPILED


_value = st.one_of(_planted, _clean, st.text(alphabet=_ALPHABET, max_size=40))
_int = st.one_of(st.integers(-(10**12), 10**12), st.sampled_from([4111111111111111, 10**8, -(10**8), 10**8 - 1]))
EVENTS = st.fixed_dictionaries(
    {"order_id": _value,
     "customer": st.fixed_dictionaries({"id": st.just("c1")}, optional={
         "email": _value, "phone": _value,
         "address": st.fixed_dictionaries({}, optional={"line": _value, "zip": st.text("0123456789", max_size=5)}),
     })},
    optional={
        "placed_at": st.just("2026-12-06T04:33:50Z"), "status": st.sampled_from(["placed", "shipped"]),
        "qty": st.integers(0, 1000), "ref": _int, "price": st.floats(0, 1e12), "either": st.one_of(_value, _int),
        "lines": st.lists(st.fixed_dictionaries({}, optional={
            "note": _value, "qty": _int, "kind": st.sampled_from(["a", "b"]), "tags": st.lists(_value, max_size=3),
        }), max_size=3),
        "attrs": st.dictionaries(st.one_of(st.sampled_from(["k", "note"]), _value), _value, max_size=3),
    },
)


def reference(data: Any, spec: Any) -> set[tuple[str, str]]:
    """Every value of the event (``scan.leaves``, map keys too), untagged, the precise path."""
    protected = scan.protected_paths(spec)
    out: set[tuple[str, str]] = set()
    for path, v in scan.leaves(data):
        base = path[: -len("{key}")] if path.endswith("{key}") else path
        if scan._covered(base, protected):
            continue
        if type(v) is str or (type(v) is int and abs(v) >= 10**8):
            out |= {(path, kind) for kind in precise(str(v))}
    return out


@SETTINGS
@given(EVENTS)
def test_compiled_scan_finds_what_the_precise_full_walk_finds(data: dict[str, Any]) -> None:
    COMPILED.validate(data)
    fast = scan.findings_for(_Version, data)
    assert sorted(fast) == sorted(scan.findings(data, COMPILED.spec)) == sorted(interpreted(_Version, data))
    assert set(fast) == reference(data, COMPILED.spec)


@SETTINGS
@given(st.lists(EVENTS, min_size=1, max_size=8))
def test_findings_many_is_findings_for_each_event(events: list[dict[str, Any]]) -> None:
    for e in events:
        COMPILED.validate(e)
    assert scan.findings_many(_Version, events) == [scan.findings_for(_Version, e) for e in events]


def interpreted(schema: Any, data: Any) -> list[tuple[str, str]]:
    """The plan run by ``scan._run`` (what ``compile_plan`` specialises), same detectors."""
    protected = scan.protected_paths(schema.spec)
    plan = scan._plan(schema.compiled.tree, "", protected)
    out: list[tuple[str, str]] = []
    todo: list[tuple[str, str]] = []
    if plan is not None:
        scan._run(data, plan, "", out, todo, DEFAULT, protected)
    return out + [(p, kind) for p, v in todo for kind in sorted(precise(v))]


def _nested(depth: int, leaf: dict[str, Any]) -> dict[str, Any]:
    node = leaf
    for _ in range(depth):
        node = {"type": "object", "properties": {"n": node, "memo": {"type": "string"}}}
    return node


def test_compiled_scan_of_a_deep_schema_equals_the_full_walk() -> None:
    """Past the inlined depth the generated code hands over to the interpreted plan."""
    doc = _nested(20, {"type": "object", "properties": {"note": {"type": "string"}}})
    compiled = compile_schema(doc)

    class V:
        spec = compiled.spec

    V.compiled = compiled  # type: ignore[attr-defined]
    data: dict[str, Any] = {"note": "card 4111 1111 1111 1111"}
    for i in range(20):
        data = {"n": data, "memo": f"write to user{i}@example.com"}
    compiled.validate(data)
    found = scan.findings_for(V, data)
    assert sorted(found) == sorted(scan.findings(data, compiled.spec)) == sorted(interpreted(V, data))
    assert ("n." * 20 + "note", "card_number") in found and ("memo", "email") in found
    assert len(found) == 21


def test_property_names_are_data_in_the_compiled_scan(tmp_path: Path) -> None:
    """Field names go into the generated scan as repr'd constants: names written as code run
    nothing and are reported verbatim."""
    marker = tmp_path / "pwned"
    names = [
        f"x'); open({str(marker)!r}, 'w') #", f"__import__('pathlib').Path({str(marker)!r}).touch()",
        'q"uote', "back\\slash", "new\nline", "ünï", "{key}", "a.b",
    ]
    compiled = compile_schema({"type": "object", "properties": {
        n: {"type": "object", "properties": {n: {"type": "string"}}} for n in names}})

    class V:
        spec = compiled.spec

    V.compiled = compiled  # type: ignore[attr-defined]
    data = {n: {n: f"mail bob{i}@example.com"} for i, n in enumerate(names)}
    compiled.validate(data)
    found = scan.findings_for(V, data)
    assert sorted(found) == sorted(interpreted(V, data))
    assert sorted(found) == sorted((f"{n}.{n}", "email") for n in names)
    assert not marker.exists()


# --- send_many: one call, the values of all its events pre-checked together -------------------


def test_send_many_warns_for_each_offending_event_and_blocks_on_any(dep: Deployment) -> None:
    publish_schema(dep, "OrderPlaced", order_schema({"orders": "warn", "orders2": "block"}))
    events = [order(i) for i in range(60)]
    events[7] = order(7, notes="call me at (415) 555-0107")
    events[45] = order(45, notes="card 4111 1111 1111 1111")
    with dep.producer("orders-svc", "orders") as producer:
        producer.send_many("OrderPlaced", events)
    assert dep.transport.end_offset("orders") == 60
    assert dep.guard.warned[("orders", "OrderPlaced", "notes", "phone")] == 1
    assert dep.guard.warned[("orders", "OrderPlaced", "notes", "card_number")] == 1
    dep.audit.flush()
    assert len([r for r in dep.audit.tail(200) if r.action == WARN_ACTION]) == 2
    with dep.producer("orders-svc", "orders2") as producer, pytest.raises(SensitiveDataRefused) as refused:
        producer.send_many("OrderPlaced", events[10:])
    assert refused.value.findings == (("notes", "card_number"),)
    assert dep.transport.end_offset("orders2") == 0


# --- warn mode: values collected at send, detectors run when the producer flushes ----------------


def test_warn_is_settled_before_the_batch_is_stored(dep: Deployment) -> None:
    publish_schema(dep, "OrderPlaced", order_schema("warn"))
    with dep.producer("orders-svc", "orders", max_batch=1000, max_delay_ms=60_000) as producer:
        for i in range(5):
            producer.send("OrderPlaced", order(i, notes=f"card 4111 1111 1111 1111 #{i}" if i % 2 else "clean"))
        assert dep.transport.end_offset("orders") == 0  # buffered, not sealed
        producer.flush()
        assert dep.transport.end_offset("orders") == 5
        assert dep.guard.warned[("orders", "OrderPlaced", "notes", "card_number")] == 2
    dep.audit.flush()
    assert len([r for r in dep.audit.tail(100) if r.action == WARN_ACTION]) == 2


def test_warn_sees_the_event_as_sent(dep: Deployment) -> None:
    """The values are taken at ``send``: changing the dict afterwards changes neither what is
    stored nor what the guard reports."""
    publish_schema(dep, "OrderPlaced", order_schema("warn"))
    with dep.producer("orders-svc", "orders", max_batch=1000, max_delay_ms=60_000) as producer:
        leaky, clean = order(1, notes="call me at (415) 555-0101"), order(2, notes="leave at the door")
        producer.send("OrderPlaced", leaky)
        producer.send("OrderPlaced", clean)
        leaky["notes"], clean["notes"] = "nothing here", "card 4111 1111 1111 1111"
    assert dep.guard.warned[("orders", "OrderPlaced", "notes", "phone")] == 1
    assert dep.guard.warned[("orders", "OrderPlaced", "notes", "card_number")] == 0


def test_warn_is_settled_by_the_background_flush(dep: Deployment) -> None:
    publish_schema(dep, "OrderPlaced", order_schema("warn"))
    with dep.producer("orders-svc", "orders", max_batch=1000, max_delay_ms=50, background=True) as producer:
        producer.send("OrderPlaced", order(1, notes="mail bob@example.org"))
        deadline = time.monotonic() + 10
        while dep.transport.end_offset("orders") < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert dep.transport.end_offset("orders") == 1
        assert dep.guard.warned[("orders", "OrderPlaced", "notes", "email")] == 1
