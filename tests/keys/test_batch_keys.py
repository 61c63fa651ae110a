"""Keys resolved per read batch: one store query, one unwrap per key, one audit record per class,
and erasure and outages exactly as with per-event lookups."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventward._internal import demo
from eventward._internal.crypto.fields import ERASED
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward.errors import AccessDenied, KeyDestroyed, KeyNotFound, KMSUnavailable

N = 12  # events, each of a subject of its own


def _order(i: int) -> dict:
    data = demo.order(i)
    data["customer"] = {**data["customer"], "id": f"cust-{2000 + i}"}
    return data


@pytest.fixture
def dep(tmp_path: Path):
    """The example deployment with N orders of N distinct subjects on ``orders``."""
    d = Deployment.init(Home(tmp_path / "home"), admin=demo.ADMIN)
    result = demo.DemoResult()
    demo.setup(d, lambda *_: None)
    demo.schemas(d, result, lambda *_: None)
    with d.producer(demo.PRODUCER, demo.TOPIC) as p:
        p.send_many(demo.EVENT_TYPE, [_order(i) for i in range(N)], source="/shop")
    d.keys._drop_caches()  # every key a cache miss, as for a consumer of a million subjects
    yield d
    d.close()


class _Count:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *a, **kw):
        self.calls += 1
        self.args = a
        return self.fn(*a, **kw)


def test_read_batch_resolves_its_keys_with_one_query_one_unwrap_each_and_one_audit_record(dep, monkeypatch):
    store, kms = dep.keys.store, dep.keys.kms
    get_deks, get_dek, unwrap = _Count(store.wrapped_deks), _Count(store.get_dek), _Count(kms.unwrap)
    unwrap_many = _Count(kms.unwrap_many)
    monkeypatch.setattr(store, "wrapped_deks", get_deks)  # the read batch's one query
    monkeypatch.setattr(store, "get_dek", get_dek)
    monkeypatch.setattr(kms, "unwrap", unwrap)
    monkeypatch.setattr(kms, "unwrap_many", unwrap_many)
    start = dep.audit.size()
    consumer = dep.consumer(demo.SHIPPING, demo.TOPIC, group="g", from_beginning=True)
    seen: list = []
    try:
        assert consumer.run(seen.append, idle_timeout=0.2).delivered == N
    finally:
        consumer.close()
    assert [e.data["customer"]["name"] for e in seen] == [_order(i)["customer"]["name"] for i in range(N)]
    assert get_deks.calls == 1 and get_dek.calls == 0
    assert unwrap_many.calls == 1 and unwrap.calls == 0  # one KMS call for the batch: one unwrap per key in it
    assert len(unwrap_many.args[0]) == N
    dep.audit.flush()
    unwraps = [r for r in dep.audit.since(start) if r.action == "key.unwrap"]
    assert len(unwraps) == 1  # one record for the batch's releases, not one per key
    (rec,) = unwraps
    assert rec.principal == demo.SHIPPING and rec.resource == "class:pii" and rec.outcome == "ok"
    assert rec.meta["count"] == N and rec.meta["unwrapped"] == N and rec.meta["topic"] == demo.TOPIC
    assert rec.meta["kid_first"] <= rec.meta["kid_last"]
    assert not any(v in rec.body.decode() for v in ("cust-2000", "Ada Lovelace"))  # metadata only


def test_batch_outcomes_match_the_per_key_refusals(dep):
    kids = {}
    for i in range(3):
        kid, _ = dep.keys.encryption_key(f"cust-{2000 + i}", "pii", principal=demo.PRODUCER, topic=demo.TOPIC,
                                         event_type=demo.EVENT_TYPE)
        kids[i] = kid
    dep.keys.forget("cust-2001", principal=demo.ADMIN)
    wanted = [(kids[0], "pii", None), (kids[1], "pii", None), ("A" * 22, "pii", None)]
    got = dep.keys.decryption_keys(wanted, principal=demo.SHIPPING, topic=demo.TOPIC, event_type=demo.EVENT_TYPE)
    assert type(got[kids[0], "pii"]) is bytes and len(got[kids[0], "pii"]) == 32
    assert isinstance(got[kids[1], "pii"], KeyDestroyed) and isinstance(got["A" * 22, "pii"], KeyNotFound)
    denied = dep.keys.decryption_keys(wanted, principal=demo.ANALYTICS, topic=demo.TOPIC,
                                      event_type=demo.EVENT_TYPE)
    assert all(isinstance(v, AccessDenied) for v in denied.values())  # not cleared for pii: no key at all


def test_attack_forget_mid_batch_serves_no_memoised_key(dep):
    """A subject forgotten while its events are being read: the rest of the same read batch sees
    the field erased (the batch memo is dropped), never the key resolved before the forget."""
    with dep.producer(demo.PRODUCER, demo.TOPIC) as p:  # a second event of subject 0, same batch
        p.send_many(demo.EVENT_TYPE, [_order(0)], source="/shop")
    consumer = dep.consumer(demo.SHIPPING, demo.TOPIC, group="g", from_beginning=True)
    seen: list = []

    def handler(event) -> None:
        seen.append(event)
        if len(seen) == 1:
            dep.forget("cust-2000", principal=demo.ADMIN)

    try:
        assert consumer.run(handler, idle_timeout=0.2).delivered == N + 1
    finally:
        consumer.close()
    assert seen[0].data["customer"]["name"] == "Ada Lovelace"
    assert seen[-1].data["customer"]["name"] == ERASED and seen[-1].data["customer"]["email"] == ERASED
    assert seen[1].data["customer"]["name"] == _order(1)["customer"]["name"]  # others untouched


def test_kms_outage_during_batch_resolution_stops_at_the_first_event_without_a_key(dep, monkeypatch):
    """Keys already cached still decrypt; the consumer stops before the first event whose key the
    KMS cannot unwrap, commits nothing, and resumes there once the KMS is back."""
    kid2 = None
    for i in (0, 1):  # the first two subjects' keys are in the service cache before the outage
        kid2, _ = dep.keys.encryption_key(f"cust-{2000 + i}", "pii", principal=demo.PRODUCER, topic=demo.TOPIC,
                                          event_type=demo.EVENT_TYPE)
        dep.keys.decryption_key(kid2, "pii", principal=demo.SHIPPING, topic=demo.TOPIC)

    def outage(*a: object, **kw: object) -> bytes:
        raise KMSUnavailable("KMS unreachable (test outage)")

    consumer = dep.consumer(demo.SHIPPING, demo.TOPIC, group="g", from_beginning=True)
    seen: list = []
    try:
        monkeypatch.setattr(dep.keys.kms, "unwrap", outage)
        monkeypatch.setattr(dep.keys.kms, "unwrap_many", outage)  # the batch's one KMS call
        with pytest.raises(KMSUnavailable):
            consumer.run(seen.append, idle_timeout=0.2)
        assert [e.offset for e in seen] == [0, 1]  # delivered up to the first event without its key
        assert dep.transport.committed("g", demo.TOPIC) is None  # nothing committed past it
        monkeypatch.undo()
        stats = consumer.run(seen.append, idle_timeout=0.2)
    finally:
        consumer.close()
    assert stats.delivered == N - 2 and stats.dead_lettered == 0
    assert [e.offset for e in seen] == list(range(N))
