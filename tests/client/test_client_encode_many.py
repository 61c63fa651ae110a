"""EnvelopeBuilder.encode_many (the producer's per-call envelope path) writes exactly the bytes
the per-event path writes (``envelope.encode(build(...))``), refuses what it refuses, and the
Producer's send_many stores those bytes."""

from __future__ import annotations

import time

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventward._internal import envelope
from eventward._internal.client.envelopes import EnvelopeBuilder
from eventward.errors import EnvelopeError, OversizeError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)
sources = st.sampled_from(["/shop/checkout", "urn:x", 'quo"te\\back', "ünï/cödé", "tab\there"]) | st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
hashes = st.none() | st.sampled_from(["ab12", "p" * 32]) | st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8)


def per_event(b: EnvelopeBuilder, type_, source, version, now, items, max_bytes) -> list[bytes]:
    return [
        envelope.encode(b.build(type_, source, data, id_=i, seq=seq, schema_version=version, subject_hash=sh,
                                subject=None, now=now), max_bytes=max_bytes)
        for i, seq, sh, data in items
    ]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sources, st.sampled_from(["OrderPlaced", "com.example.v1.Thing"]), st.integers(1, 99),
       st.lists(st.tuples(hashes, json_values), min_size=1, max_size=5), st.floats(0, 2e9))
def test_encode_many_writes_the_per_event_bytes(source, type_, version, events, now):
    b = EnvelopeBuilder("orders-svc")
    items = [(b.new_id(), 7 + k, sh, {"v": data}) for k, (sh, data) in enumerate(events)]
    try:
        want = per_event(b, type_, source, version, now, items, envelope.DEFAULT_MAX_BYTES)
    except EnvelopeError as e:  # e.g. a source the CloudEvents rules refuse: refused alike
        with pytest.raises(type(e)):
            EnvelopeBuilder("orders-svc").encode_many(type_, source, version, now, items, envelope.DEFAULT_MAX_BYTES)
        return
    got = EnvelopeBuilder("orders-svc").encode_many(type_, source, version, now, items, envelope.DEFAULT_MAX_BYTES)
    assert got == want
    for raw in got:
        assert orjson.loads(raw)["ewproducer"] == "orders-svc"


def test_encode_many_refuses_oversize_and_non_json_as_the_per_event_path():
    b = EnvelopeBuilder("p")
    items = [(b.new_id(), 0, None, {"x": "y" * 500})]
    with pytest.raises(OversizeError):
        b.encode_many("T", "/s", 1, time.time(), items, 300)
    with pytest.raises(orjson.JSONEncodeError):
        b.encode_many("T", "/s", 1, time.time(), [(b.new_id(), 0, None, {"x": object()})], 10_000)


def test_encode_many_takes_the_checked_path_for_unusual_ids_and_hashes():
    """What the per-event fast path would not take (an empty id or subject hash, a huge id) goes
    through build() itself, whose full rules decide: the same outcome either way."""
    now = time.time()
    for odd in [("", 1, None, {"a": 2}), ("id2", 1, "", {"a": 2}), ("x" * 5000, 1, None, {"a": 2})]:
        items = [("ok-id", 0, "h", {"a": 1}), odd]
        try:
            want = per_event(EnvelopeBuilder("p"), "T", "/s", 1, now, items, 20_000)
        except EnvelopeError as e:
            with pytest.raises(type(e)):
                EnvelopeBuilder("p").encode_many("T", "/s", 1, now, items, 20_000)
            continue
        got = EnvelopeBuilder("p").encode_many("T", "/s", 1, now, items, 20_000)
        assert got[0] == want[0]
        assert [{k: v for k, v in orjson.loads(r).items() if k != "id" or odd[0]} for r in got] == [
            {k: v for k, v in orjson.loads(r).items() if k != "id" or odd[0]} for r in want]
