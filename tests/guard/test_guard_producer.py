"""The producer guard: ``block`` refuses an event with untagged PII or secrets and stores
nothing of it; ``warn`` stores it, writes an audit record and counts; errors and records name
the field path and kind, never the value; lowering the guard is a security regression."""

from __future__ import annotations

import orjson
import pytest

from eventward._internal.deployment import Deployment
from eventward._internal.guard.producer_guard import BLOCK_ACTION, WARN_ACTION
from eventward.errors import SchemaError, SensitiveDataRefused

from .conftest import order, order_schema, publish_schema

AWS = "AKIAIOSFODNN7EXAMPL3"
CARD = "4111 1111 1111 1111"


def _home_bytes(dep: Deployment) -> bytes:
    return b"".join(p.read_bytes() for p in dep.home.root.rglob("*") if p.is_file())


def test_attack_secret_in_untagged_field_blocked(dep: Deployment) -> None:
    publish_schema(dep, "OrderPlaced", order_schema("block"))
    with dep.producer("orders-svc", "orders") as producer:
        producer.send("OrderPlaced", order(0))
        with pytest.raises(SensitiveDataRefused) as ei:
            producer.send("OrderPlaced", order(1, notes=f"debug: key={AWS}"))
        assert producer.pending() == 1  # only the clean event
    e = ei.value
    assert e.findings == (("notes", "aws_access_key"),)
    assert "notes" in e.message and "aws_access_key" in e.message and AWS not in e.message
    assert AWS not in repr(e.details)
    assert dep.transport.end_offset("orders") == 1  # nothing of the refused event is stored
    dep.audit.flush()
    rec = [r for r in dep.audit.tail(50) if r.action == BLOCK_ACTION]
    assert len(rec) == 1 and rec[0].outcome == "denied" and rec[0].meta["paths"] == "notes"
    assert dep.guard.blocked[("orders", "OrderPlaced")] == 1
    assert AWS.encode() not in _home_bytes(dep)


def test_attack_card_number_in_untagged_nested_field_blocked(dep: Deployment) -> None:
    publish_schema(dep, "OrderPlaced", order_schema({"*": "off", "orders": "block"}))
    with dep.producer("orders-svc", "orders") as producer, pytest.raises(SensitiveDataRefused) as ei:
        producer.send("OrderPlaced", order(1, customer={"id": "c1", "card": CARD}))
    assert ei.value.findings == (("customer.card", "card_number"),)
    assert dep.transport.end_offset("orders") == 0
    with dep.producer("orders-svc", "orders2") as other:  # "*" is off: another topic is not guarded
        other.send("OrderPlaced", order(2, customer={"id": "c2", "card": CARD}))
    assert dep.transport.end_offset("orders2") == 1


def test_attack_shortest_email_in_untagged_field_blocked(dep: Deployment) -> None:
    """Six characters is a whole e-mail address: the length floor must not let it through."""
    publish_schema(dep, "OrderPlaced", order_schema("block"))
    with dep.producer("orders-svc", "orders") as producer, pytest.raises(SensitiveDataRefused) as ei:
        producer.send("OrderPlaced", order(1, notes="a@b.co"))
    assert ei.value.findings == (("notes", "email"),) and "a@b.co" not in ei.value.message
    assert dep.transport.end_offset("orders") == 0


def test_attack_pii_as_a_map_key_is_found_and_not_echoed(dep: Deployment) -> None:
    publish_schema(dep, "OrderPlaced", order_schema("block"))
    with dep.producer("orders-svc", "orders") as producer, pytest.raises(SensitiveDataRefused) as ei:
        producer.send("OrderPlaced", order(1, attrs={"jane.doe@example.com": "vip"}))
    assert ei.value.findings == (("attrs.*{key}", "email"),)
    assert "jane.doe" not in ei.value.message


def test_guard_warn_stores_audits_and_counts(dep: Deployment) -> None:
    publish_schema(dep, "OrderPlaced", order_schema("warn"))
    with dep.producer("orders-svc", "orders") as producer:
        for i in range(3):
            producer.send("OrderPlaced", order(i, notes=f"call me at (415) 555-01{i:02d}"))
        producer.send("OrderPlaced", order(9))  # clean: no record
    assert dep.transport.end_offset("orders") == 4
    stored = orjson.loads(dep.transport.read("orders", 0, 1)[0].data)
    assert stored["data"]["notes"].startswith("call me")  # warn sends, as configured
    assert dep.guard.warned[("orders", "OrderPlaced", "notes", "phone")] == 3
    dep.audit.flush()
    warns = [r for r in dep.audit.tail(100) if r.action == WARN_ACTION]
    assert len(warns) == 3
    assert {(r.meta["paths"], r.meta["kinds"], r.meta["schema_version"]) for r in warns} == {("notes", "phone", 1)}
    assert not any(b"555-01" in r.body for r in warns)


def test_tagged_fields_and_the_subject_are_not_reported(dep: Deployment) -> None:
    publish_schema(dep, "OrderPlaced", order_schema("block"))
    with dep.producer("orders-svc", "orders") as producer:  # customer.email is tagged pii: encrypted
        producer.send("OrderPlaced", order(1, customer={"id": "a@example.com", "email": "b@example.com"}))
    assert dep.transport.end_offset("orders") == 1


def test_guard_is_off_unless_the_schema_sets_it(dep: Deployment) -> None:
    publish_schema(dep, "OrderPlaced", order_schema())
    with dep.producer("orders-svc", "orders") as producer:
        producer.send("OrderPlaced", order(1, notes=AWS))
    assert dep.transport.end_offset("orders") == 1 and not dep.guard.warned


def test_attack_lowering_the_guard_needs_security_approval(dep: Deployment) -> None:
    publish_schema(dep, "OrderPlaced", order_schema("block"))
    prop = dep.registry.propose("alice", "OrderPlaced", order_schema("warn"))
    assert prop.needs_security_approval
    assert [f.kind for f in prop.report.security] == ["guard_weakened"]
    dep.registry.approve("bob", "OrderPlaced", prop.version)
    assert dep.registry.active("OrderPlaced").version == 1  # still held for carol
    dep.registry.reject("bob", "OrderPlaced", prop.version)
    raised = dep.registry.propose("alice", "OrderPlaced", order_schema({"*": "block", "orders": "block"}))
    assert not raised.needs_security_approval


@pytest.mark.parametrize("bad", ["strict", 1, {"orders": "maybe"}, {}, [], {"": "warn"}])
def test_malformed_guard_setting_is_refused_at_proposal(dep: Deployment, bad: object) -> None:
    with pytest.raises(SchemaError) as ei:
        dep.registry.propose("alice", "OrderPlaced", order_schema(bad))
    assert "x-eventward-guard" in ei.value.message


def _metric(text: str, mode: str, topic: str) -> float:
    import re

    series = f'eventward_guard_events_total{{event_type="OrderPlaced",mode="{mode}",topic="{topic}"}}'
    m = re.search(re.escape(series) + r" (\S+)", text)
    return float(m.group(1)) if m else 0.0


def test_guard_warn_and_block_are_counted_in_the_metrics(dep: Deployment) -> None:
    """The counters are process-wide (other tests may have counted before): deltas are checked."""
    from eventward._internal import monitor

    monitor.instrument(dep)
    try:
        publish_schema(dep, "OrderPlaced", order_schema({"*": "warn", "orders2": "block"}))
        before = monitor.render().decode()
        with dep.producer("orders-svc", "orders") as producer:
            producer.send("OrderPlaced", order(1, notes=f"key {AWS}"))
        with dep.producer("orders-svc", "orders2") as producer, pytest.raises(SensitiveDataRefused):
            producer.send("OrderPlaced", order(2, notes=f"key {AWS}"))
        dep.audit.flush()
        text = monitor.render().decode()
        assert _metric(text, "warn", "orders") - _metric(before, "warn", "orders") == 1
        assert _metric(text, "block", "orders2") - _metric(before, "block", "orders2") == 1
        assert AWS not in text
    finally:
        monitor.uninstrument(dep)


def test_schema_guided_scan_finds_what_the_full_walk_finds() -> None:
    """The producer guard visits only the paths a strict schema lets carry anything; on valid
    data it must report exactly what walking every value reports."""
    import random

    from bench.pii_corpus import planted

    from eventward._internal.guard.detectors import CLASS_OF
    from eventward._internal.guard.scan import findings, findings_for
    from eventward._internal.schema.compiled import compile_schema

    doc = order_schema("warn")
    doc["properties"]["lines"] = {"type": "array", "items": {"type": "object", "properties": {
        "note": {"type": "string"}, "qty": {"type": "integer"}, "kind": {"enum": ["a", "b"]},
        "at": {"type": "string", "format": "date-time"}}}}
    compiled = compile_schema(doc)

    class Version:
        spec = compiled.spec

    Version.compiled = compiled  # type: ignore[attr-defined]
    rng = random.Random(5)
    kinds = sorted(CLASS_OF)
    for i in range(200):
        data = order(i, notes=planted(rng, rng.choice(kinds)),
                     customer={"id": f"c{i}", "phone": planted(rng, "phone"), "card": planted(rng, "card_number")},
                     attrs={"x": planted(rng, rng.choice(kinds)), planted(rng, "email"): "k"},
                     lines=[{"note": planted(rng, rng.choice(kinds)), "qty": 4111111111111111, "kind": "a",
                             "at": "2026-01-01T00:00:00Z"}])
        compiled.validate(data)
        assert sorted(findings_for(Version, data)) == sorted(findings(data, compiled.spec)), i


def test_attack_send_many_cannot_bypass_the_guard(dep: Deployment) -> None:
    publish_schema(dep, "OrderPlaced", order_schema("block"))
    with dep.producer("orders-svc", "orders") as producer, pytest.raises(SensitiveDataRefused):
        producer.send_many("OrderPlaced", [order(0), order(1, notes=f"debug: key={AWS}")])
    assert dep.transport.end_offset("orders") == 0  # all or nothing: the clean event is not stored either
