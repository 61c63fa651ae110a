"""Redaction pipelines, raw -> clean, in home mode and over a real nats-server: the clean stream
holds no planted value, lineage (source id -> output id) is in the verified audit log, a
transform failure emits nothing, and a forgotten subject's tokens in the clean stream are gone."""

from __future__ import annotations

import copy
import random
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from eventward._internal.audit.records import decode
from eventward._internal.audit.verify import verify_log
from eventward._internal.crypto.fields import ERASED, REDACTED
from eventward._internal.deployment import Deployment
from eventward._internal.guard.pipeline import LINEAGE_ACTION, Pipeline, PipelineSpec, mask, output_id
from eventward._internal.home import Home
from eventward._internal.log import natsserver
from eventward.errors import ConfigError

from .conftest import ORDER, POLICY, publish_schema

PIPELINE = """\
name: orders-analytics
principal: redactor
source: {topic: orders, types: [OrderPlaced]}
sink: {topic: orders.analytics, type: OrderPlacedAnalytics}
fields:
  order_id: keep
  customer.id: keep
  customer.email: tokenize
  customer.phone: {mask: 4}
  customer.card: drop
  placed_at: {generalize: month}
  total: {generalize: {bands: [0, 50, 100, 500]}}
"""

ANALYTICS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string"},
        "placed_at": {"type": "string"},
        "customer": {
            "type": "object",
            "properties": {
                "id": {"type": "string", "x-eventward": {"subject": True, "public": True}},
                "email": {"type": "string", "x-eventward": {"class": "pii", "deterministic": True}},
                "phone": {"type": "string"},
            },
            "required": ["id"],
        },
        "total": {"type": "string"},
    },
    "required": ["order_id", "customer"],
}


def _raw(i: int, rng: random.Random) -> dict[str, Any]:
    return {
        "order_id": f"ord-{100000 + i}",
        "placed_at": f"2026-0{1 + i % 9}-1{i % 10}T10:00:00Z",
        "customer": {
            "id": f"c{i % 3}",
            "email": f"buyer{i % 3}@example.com",
            "phone": f"(415) 555-{1000 + i:04d}",
            "card": "4111 1111 1111 1111",
        },
        "total": round(rng.uniform(1, 700), 2),
        "notes": f"call (212) 555-{2000 + i:04d} key AKIAIOSFODNN7EXAMP{i:02d}",
    }


def _setup(dep: Deployment) -> None:
    publish_schema(dep, "OrderPlaced", copy.deepcopy(ORDER))
    publish_schema(dep, "OrderPlacedAnalytics", copy.deepcopy(ANALYTICS))


def _planted(events: list[dict[str, Any]]) -> set[bytes]:
    out = set()
    for e in events:
        c = e["customer"]
        out |= {c["email"].encode(), c["phone"].encode(), c["card"].encode(), c["phone"][-8:].encode(),
                e["notes"].encode(), e["notes"][-20:].encode(), e["placed_at"].encode()}
    return out


def _round_trip(dep: Deployment, n: int = 12) -> dict[str, str]:
    """Runs the whole pipeline story; returns what a pii-cleared reader sees per customer after c0 is forgotten."""
    _setup(dep)
    rng = random.Random(7)
    events = [_raw(i, rng) for i in range(n)]
    events.append({**_raw(99, rng), "placed_at": "not a date"})  # its transform fails
    with dep.producer("orders-svc", "orders") as producer:
        sources = [producer.send("OrderPlaced", e) for e in events]
    spec = PipelineSpec.from_yaml(PIPELINE)
    stats = Pipeline(dep, spec).run(idle_timeout=0.3)
    assert stats.emitted == n

    clean = dep.transport.read("orders.analytics", 0, 1000)
    assert len(clean) == n  # the failed one was not emitted
    blob = b"".join(r.data for r in clean)
    for value in _planted(events[:n]):
        assert value not in blob, value
    assert b'"phone":"(***) ***-1' in blob and b'"placed_at":"2026-0' in blob

    # deterministic tokens: the same email gives the same token, so analytics can join on it
    stored = [orjson.loads(r.data)["data"] for r in clean]
    by_customer: dict[str, set[str]] = {}
    for d in stored:
        by_customer.setdefault(d["customer"]["id"], set()).add(d["customer"]["email"])
    assert all(len(tokens) == 1 for tokens in by_customer.values()) and len(by_customer) == 3
    assert stored[0]["total"] in {"0-50", "50-100", "100-500", ">=500"}
    assert "notes" not in stored[0] and "card" not in stored[0]["customer"]

    # the analyst reads the clean stream verified; not cleared for pii, the tokens stay closed
    analyst = dep.consumer("analytics-svc", "orders.analytics", from_beginning=True)
    got: list[Any] = []
    analyst.run(got.append, idle_timeout=0.3)
    assert len(got) == n and all(d.producer == "redactor" for d in got)
    assert {d.data["customer"]["email"] for d in got} == {REDACTED}

    # lineage: each output id from a source id, in an audit log that verifies
    dep.audit.flush()
    lineage = {}
    for idx, _, body in dep.audit.scan():
        rec = decode(bytes(body), idx)
        if rec.action == LINEAGE_ACTION:
            lineage[rec.meta["output_id"]] = rec.meta["source_id"]
    assert set(lineage) == {d.id for d in got}
    assert all(lineage[out] in sources and out == output_id(spec.name, lineage[out]) for out in lineage)
    assert verify_log(dep.audit).ok
    assert dep.transport.end_offset("orders.dlq") == 1  # the event whose transform failed

    # forget c0: its tokens in the clean stream are unrecoverable, the others still open
    dep.forget("c0", principal="admin", reason="gdpr-art17")
    reader = dep.consumer("fraud-svc", "orders.analytics", from_beginning=True)  # cleared for pii
    seen: list[Any] = []
    reader.run(seen.append, idle_timeout=0.3)
    emails = {d.data["customer"]["id"]: d.data["customer"]["email"] for d in seen}
    assert emails["c0"] == ERASED
    assert emails["c1"] == "buyer1@example.com"
    return emails


def test_pipeline_raw_to_clean_in_home_mode(dep: Deployment) -> None:
    emails = _round_trip(dep)
    assert emails == {"c0": ERASED, "c1": "buyer1@example.com", "c2": "buyer2@example.com"}


def _free_port() -> int:
    for _ in range(100):
        port = random.randrange(20000, 40000)
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 2000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port")


@pytest.fixture
def nats_dep(tmp_path: Path) -> Iterator[Deployment]:
    node = natsserver.start_all(tmp_path / "nats", size=1, port=_free_port())[0]
    try:
        home = tmp_path / "home"
        home.mkdir()
        (home / "eventward.yaml").write_text(f"transport: nats\nnats:\n  servers: [{node.url(tls=False)}]\n")
        d = Deployment.init(Home(home), admin="admin", policy_yaml=POLICY)
        try:
            for p in ("orders-svc", "redactor"):
                d.trust.ensure(p, by="admin")
            yield d
        finally:
            d.close()
    finally:
        natsserver.stop(node)


def test_pipeline_raw_to_clean_over_nats(nats_dep: Deployment) -> None:
    assert nats_dep.config.transport == "nats"
    _round_trip(nats_dep, n=8)


def test_tokenize_needs_a_deterministic_tag_in_the_sink_schema(dep: Deployment) -> None:
    _setup(dep)
    spec = PipelineSpec.from_yaml(PIPELINE.replace("customer.phone: {mask: 4}", "customer.phone: tokenize"))
    with pytest.raises(ConfigError) as ei:
        Pipeline(dep, spec)
    assert "customer.phone" in ei.value.message


def test_attack_untagged_pii_kept_by_a_pipeline_is_not_emitted(dep: Deployment) -> None:
    """A pipeline that keeps a free-text field full of PII refuses to emit it (the output is
    scanned), instead of copying the leak into the clean stream."""
    _setup(dep)
    doc = copy.deepcopy(ANALYTICS)
    doc["properties"]["notes"] = {"type": "string"}
    prop = dep.registry.propose("alice", "OrderPlacedAnalytics", doc)
    dep.registry.approve("bob", "OrderPlacedAnalytics", prop.version)
    with dep.producer("orders-svc", "orders") as producer:
        producer.send("OrderPlaced", _raw(1, random.Random(1)))
    spec = PipelineSpec.from_yaml(PIPELINE + "  notes: keep\n")
    stats = Pipeline(dep, spec).run(idle_timeout=0.3)
    assert stats.emitted == 0 and stats.refused >= 1
    assert not dep.transport.has_stream("orders.analytics") or dep.transport.end_offset("orders.analytics") == 0


@pytest.mark.parametrize(
    "bad",
    ["name: x", "[]", "name: x\nprincipal: p\nsource: {topic: a}\nsink: {topic: a, type: T}\n",
     "name: x\nprincipal: p\nsource: {topic: a}\nsink: {topic: b, type: T}\nfields: {f: shred}\n",
     "name: x\nprincipal: p\nsource: {topic: a}\nsink: {topic: b, type: T}\n"
     "fields: {f: {generalize: {bands: [3, 1]}}}\n"],
)
def test_bad_pipeline_files_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError):
        PipelineSpec.from_yaml(bad)


def test_mask_keeps_the_last_four_and_the_separators() -> None:
    assert mask("4111 1111 1111 1234", 4) == "**** **** **** 1234"
    assert mask("abc", 4) == "***"
