"""Property test for what a consumer reads from the log: sealed batches whose event bytes, seal
blob or batch id were altered (by anyone with write access to the log or the broker) are each
refused with a reason code and dead-lettered, never an exception out of the consumer, and
nothing altered is delivered. The untouched originals still deliver, so the refusals are about
the alterations.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventward._internal.client.types import RunStats
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward.errors import EventwardError, TransportError

EXAMPLES = int(os.environ.get("EW_PROPERTY_EXAMPLES", "40"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

POLICY = """\
principals:
  admin: {type: user, roles: [admin]}
  alice: {type: user, roles: [author]}
  bob: {type: user, roles: [approver]}
  meter-svc: {type: service, roles: [writer]}
  billing-svc: {type: service, roles: [reader]}
roles:
  admin:
    - {allow: manage_policy}
    - {allow: rotate_keys, producer: "*"}
  author:
    - {allow: [propose_schema, read_schema], schema: "*"}
  approver:
    - {allow: [approve_schema, read_schema], schema: "*"}
  writer:
    - {allow: publish, topic: readings, match: prefixed}
  reader:
    - {allow: subscribe, topic: readings, match: prefixed}
"""
READING = {
    "type": "object",
    "properties": {"meter": {"type": "string"}, "kwh": {"type": "number"}},
    "required": ["meter", "kwh"],
}


class World:
    def __init__(self, root: Path) -> None:
        self.dep = Deployment.init(Home(root / "home"), admin="admin", policy_yaml=POLICY)
        self.dep.trust.ensure("meter-svc", by="admin")
        prop = self.dep.registry.propose("alice", "Reading", READING)
        self.dep.registry.approve("bob", "Reading", prop.version)

    def sealed_batch(self, topic: str) -> tuple[list[bytes], bytes]:
        """A real three-event batch from the producer, as stored: (event bytes, seal blob)."""
        with self.dep.producer("meter-svc", topic) as p:
            for i in range(3):
                p.send("Reading", {"meter": f"m-{i}", "kwh": 1.5 + i})
        recs = self.dep.transport.read(topic, 0, 10)
        assert len(recs) == 3
        return [r.data for r in recs], recs[0].seal


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("consumer-prop"))
    yield w
    w.dep.close()


def _flip(data: bytes, at: int, mask: int) -> bytes:
    if not data:
        return b"\x00"
    at %= len(data)
    return data[:at] + bytes([data[at] ^ (mask or 1)]) + data[at + 1 :]


@st.composite
def alterations(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "what": draw(st.sampled_from(["event", "seal", "both", "json", "batch_id"])),
        "index": draw(st.integers(0, 2)),
        "at": draw(st.integers(0, 4000)),
        "mask": draw(st.integers(0, 255)),
        "splice": draw(st.binary(max_size=16)),
        "field": draw(st.sampled_from(["id", "type", "source", "ewseq", "ewproducer", "data", "time", "specversion"])),
        "value": draw(st.none() | st.integers(-5, 2**63) | st.text(max_size=8) | st.just({"kwh": 1.0})),
    }


def _alter(events: list[bytes], seal: bytes, a: dict[str, Any]) -> tuple[list[bytes], bytes]:
    events = list(events)
    i = a["index"]
    if a["what"] in ("event", "both"):
        events[i] = _flip(events[i], a["at"], a["mask"]) if not a["splice"] else events[i] + a["splice"]
    if a["what"] in ("seal", "both"):
        seal = _flip(seal, a["at"], a["mask"]) if not a["splice"] else seal[: a["at"] % len(seal)] + a["splice"]
    if a["what"] == "json":  # valid JSON, canonical-looking, one attribute changed
        doc = orjson.loads(events[i])
        doc[a["field"]] = a["value"]
        events[i] = orjson.dumps(doc)
    return events, seal


@SETTINGS
@given(alterations())
def test_property_consumer_altered_records_are_refused_not_raised(world: World, a: dict[str, Any]) -> None:
    topic = f"readings.p{uuid.uuid4().hex[:10]}"
    events, seal = world.sealed_batch(topic)
    bad_events, bad_seal = _alter(events, seal, a)
    batch = f"forged-{uuid.uuid4().hex[:8]}"  # a new batch id: a plain re-append is refused too
    try:
        world.dep.transport.append(topic, batch, bad_events, bad_seal)
    except EventwardError:
        return  # the transport refused it (typed): nothing stored to consume
    consumer = world.dep.consumer("billing-svc", topic, group=f"g{uuid.uuid4().hex[:8]}", from_beginning=True)
    delivered: list[Any] = []
    stats = RunStats()
    try:
        for rec in world.dep.transport.read(topic, 0, 10):
            consumer.process(rec, delivered.append, stats)  # never raises for bad data
    finally:
        consumer.close()
    assert len(delivered) == 3  # the genuine batch, once
    assert [d.data for d in delivered] == [{"meter": f"m-{i}", "kwh": 1.5 + i} for i in range(3)]
    assert stats.delivered == 3
    assert sum(stats.refused.values()) >= 1  # every altered copy refused (the seal binds the batch id too)


def _tamper_row(world: World, topic: str, column: str, value: object, offset: int = 1) -> None:
    db = sqlite3.connect(world.dep.home.log_db)
    try:
        db.execute(f"UPDATE events SET {column} = ? WHERE stream = ? AND offset = ?", (value, topic, offset))
        db.commit()
    finally:
        db.close()


@pytest.mark.parametrize(
    ("column", "value"),
    [("idx", "x"), ("idx", 99), ("batch", "x"), ("batch", 10**9), ("data", 12345), ("data", "{}")],
)
def test_attack_tampered_log_rows_are_refused_not_raised(world: World, column: str, value: object) -> None:
    """A log.db writer stores another SQLite type (or a wrong number) in an event row: that
    event is refused by verification (dead-lettered); its neighbours still deliver."""
    topic = f"readings.t{uuid.uuid4().hex[:10]}"
    world.sealed_batch(topic)
    _tamper_row(world, topic, column, value)
    consumer = world.dep.consumer("billing-svc", topic, group=f"g{uuid.uuid4().hex[:8]}", from_beginning=True)
    delivered: list[Any] = []
    stats = RunStats()
    try:
        for rec in world.dep.transport.read(topic, 0, 10):
            consumer.process(rec, delivered.append, stats)
    finally:
        consumer.close()
    assert [d.data["meter"] for d in delivered] == ["m-0", "m-2"]
    assert sum(stats.refused.values()) == 1


def test_attack_tampered_log_offset_is_a_typed_error(world: World) -> None:
    """An event row whose offset is not an integer cannot be positioned: the read fails closed
    with a TransportError (not a ValueError from deep inside)."""
    topic = f"readings.t{uuid.uuid4().hex[:10]}"
    world.sealed_batch(topic)
    _tamper_row(world, topic, "offset", "abc")
    with pytest.raises(TransportError, match="corrupted log"):
        world.dep.transport.read(topic, 0, 10)


# --- the SDK's producer surface ------------------------------------------------------------------

odd_text = st.text(st.characters(exclude_categories=()), max_size=12) | st.sampled_from(
    ["Reading", "", "\x00", "caf\udce9", "x" * 5000, "/shop", "urn:x"]
)
odd = st.none() | st.integers(-(2**70), 2**70) | st.floats() | st.binary(max_size=4) | odd_text
odd_data = st.recursive(
    odd, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(odd_text, inner, max_size=3), max_leaves=6
) | st.builds(lambda m, k: {"meter": m, "kwh": k}, odd, odd)


@SETTINGS
@given(odd_text | odd, odd_data, odd, odd, odd)
def test_property_producer_send_arguments(world: World, type_: Any, data: Any, id_: Any, source: Any,
                                          subject: Any) -> None:
    """``Producer.send`` with arbitrary arguments buffers a valid event or raises a typed error,
    and the deployment stays healthy: the audit log still flushes (a bad value must never be
    left in its buffer)."""
    with world.dep.producer("meter-svc", "readings.sdk") as p:
        try:
            p.send(type_, data, id=id_, source=source, subject=subject)
        except EventwardError:
            assert p.pending() == 0
        p.discard()
    world.dep.audit.flush()
