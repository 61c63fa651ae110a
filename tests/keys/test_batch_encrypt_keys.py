"""Encrypt keys resolved per batch (a control-API request, a producer's batch): one pseudonym
query, one current-key query, one creating transaction and one key.create record per class,
with the races, budgets, erasure and deny-by-default of the one-key path."""

from __future__ import annotations

import threading

import pytest

from eventward._internal.audit.base import MemoryAudit
from eventward._internal.keys.service import KeyService, KeyServiceConfig
from eventward.errors import AccessDenied, KeyDestroyed

from .conftest import make_authz


class _Count:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *a, **kw):
        self.calls += 1
        return self.fn(*a, **kw)


def _race(*calls):
    barrier = threading.Barrier(len(calls))
    out: list = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        out[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def test_a_batch_of_new_subjects_is_one_query_each_one_transaction_and_one_record_per_class(svc, audit, monkeypatch):
    store = svc.store
    counted = {n: _Count(getattr(store, n)) for n in
               ("pseudonyms", "add_pseudonyms", "current_deks", "insert_deks", "insert_dek", "current_dek",
                "pseudonym", "add_pseudonym")}
    for n, c in counted.items():
        monkeypatch.setattr(store, n, c)
    wanted = [(f"cust-{i}", "pii", 2) for i in range(300)] + [(f"cust-{i}", "payment", 1) for i in range(0, 300, 3)]
    start = len(audit.events)
    got = svc.encryption_keys(wanted, principal="writer", topic="orders", event_type="Placed")
    assert len(got) == len(wanted)
    assert {n: c.calls for n, c in counted.items()} == {
        "pseudonyms": 2, "add_pseudonyms": 1, "current_deks": 1, "insert_deks": 1,  # 2: add_pseudonyms reads back
        "insert_dek": 0, "current_dek": 0, "pseudonym": 0, "add_pseudonym": 0}
    created = [r for r in audit.events[start:] if r.action == "key.create"]
    assert sorted((r.resource, r.meta["count"]) for r in created) == [("class:payment", 100), ("class:pii", 300)]
    assert len({kid for kid, _, _ in got}) == 400
    # The one-key path sees the same keys and pseudonyms (store and memo agree).
    for (subject, cls, _), (kid, dek, h) in zip(wanted, got, strict=True):
        assert svc.subject_hash(subject) == h
        assert svc.encryption_key(subject, cls, principal="writer") == (kid, dek)
        assert svc.store.current_dek(h, cls).kid == kid


def test_a_batch_of_known_subjects_reads_their_keys_in_one_query_and_unwraps_once(open_svc):
    first = open_svc()
    made = first.encryption_keys([(f"s{i}", "pii", 1) for i in range(50)], principal="writer")
    other = open_svc()  # a cold process: nothing memoised
    other.store.current_deks = _Count(other.store.current_deks)
    other.kms.unwrap_many = _Count(other.kms.unwrap_many)
    again = other.encryption_keys([(f"s{i}", "pii", 1) for i in range(50)], principal="writer")
    assert again == made
    assert other.store.current_deks.calls == 1 and other.kms.unwrap_many.calls == 1


def test_race_two_processes_batch_the_same_new_subjects_one_key_each(open_svc):
    a, b = open_svc(), open_svc()
    for round_ in range(3):
        wanted = [(f"r{round_}-{i}", c, 1) for i in range(60) for c in ("pii", "payment")]
        # One side by batch, the other partly one by one: every creator converges on one winner.
        got = _race(lambda w=wanted: a.encryption_keys(w, principal="writer"),
                    lambda w=wanted: b.encryption_keys(w[::-1], principal="writer")[::-1])
        assert got[0] is not None and got[0] == got[1]
        assert len({kid for kid, _, _ in got[0]}) == len(wanted)
        x = f"r{round_}-x"
        one = _race(lambda x=x: a.encryption_key(x, "pii", principal="writer"),
                    lambda x=x: b.encryption_keys([(x, "pii", 1)], principal="writer")[0][:2])
        assert one[0] == one[1]


def test_attack_a_batch_with_one_forbidden_class_makes_no_key_at_all(open_svc, authz):
    from eventward._internal.policy.base import ENCRYPT

    authz.grant("narrow", ENCRYPT, ("Class", "pii"))
    svc = open_svc()
    with pytest.raises(AccessDenied):
        svc.encryption_keys([("ann", "pii", 1), ("bob", "pii", 1), ("ann", "health", 1)], principal="narrow")
    assert svc.known_subject("ann") is None and svc.known_subject("bob") is None
    assert svc.store.counts() == []


def test_attack_forgotten_subject_gets_no_key_of_its_old_pseudonym_from_a_batch(open_svc):
    a, b = open_svc(), open_svc()
    (kid, _, h), = a.encryption_keys([("jane", "pii", 1)], principal="writer")
    b.forget("jane", principal="admin", reason="gdpr-art17")
    a._drop_caches()  # as the revocation poll does
    (kid2, _, h2), = a.encryption_keys([("jane", "pii", 1)], principal="writer")
    assert h2 != h and kid2 != kid
    with pytest.raises(KeyDestroyed):
        a.decryption_key(kid, "pii", principal="admin")


def test_attack_batch_creation_under_a_pseudonym_forgotten_meanwhile_is_refused(open_svc):
    a, b = open_svc(), open_svc()
    h = a.subject_hash("jane")  # memoised here; the keys are not made yet
    b.forget("jane", principal="admin", reason="gdpr-art17")
    with pytest.raises(KeyDestroyed, match="forgotten meanwhile"):
        a.encryption_keys([("jane", "pii", 1)], principal="writer")
    assert a.store.current_dek(h, "pii") is None


def test_batch_respects_the_nonce_budget_and_counts_every_use(home, authz):
    cfg = KeyServiceConfig(dek_max_nonces=10, uses_flush=1)
    svc = KeyService.init(home, authorizer=authz, audit=MemoryAudit(), config=cfg)
    try:
        got = svc.encryption_keys([("ann", "pii", 4)] * 5, principal="writer")
        kids = [kid for kid, _, _ in got]
        assert len(set(kids)) == 3  # 4+4, 4+4, 4: a new version whenever 10 would be exceeded
        for kid in set(kids):
            assert svc.store.get_dek(kid).uses == 4 * kids.count(kid)
    finally:
        svc.close()


def test_fast_path_counts_releases_and_nonces_exactly(home, audit):
    cfg = KeyServiceConfig(uses_flush=1_000_000)
    svc = KeyService.init(home, authorizer=make_authz(), audit=audit, config=cfg)
    kid, _ = svc.encryption_key("ann", "pii", principal="writer", topic="t", event_type="e", nonces=3)
    for _ in range(999):
        assert svc.encryption_key("ann", "pii", principal="writer", topic="t", event_type="e", nonces=3)[0] == kid
    svc.close()
    enc = [r for r in audit.events if r.action == "key.encrypt"]
    assert sum(r.meta["count"] for r in enc) == 1000
    reopened = KeyService.open(home, authorizer=make_authz(), audit=MemoryAudit())
    try:
        assert reopened.store.get_dek(kid).uses == 3000
    finally:
        reopened.close()
