"""KeyService.memoised_encryption_keys and FieldEncryptor.encrypt_many's batch path over it: the
same keys, Encrypt release counts and nonce counts as one ``encryption_key`` call per event and
class (a loop of ``encrypt``), all or nothing, and never a key past its nonce budget."""

from __future__ import annotations

import pytest

from eventward._internal.crypto.fields import FieldEncryptor
from eventward._internal.fieldspec import FieldSpec
from eventward._internal.keys.service import KeyServiceConfig
from eventward.errors import InputError

SPEC = FieldSpec.from_dict(
    {"subject": "customer.id", "fields": {"customer.name": "pii", "customer.email": "pii", "payment.card": "payment"}}
)
WHERE = {"principal": "writer", "topic": "orders", "event_type": "Placed"}


def _events(n: int, subjects: int = 5) -> list[dict]:
    out = []
    for i in range(n):
        c = f"cust-{i % subjects}"
        e = {"customer": {"id": c, "name": f"N {i}", "email": f"{c}@example.com"}, "payment": {"card": "4111"}}
        if i % 3 == 0:
            del e["payment"]  # one class fewer: one key call fewer for this event
        out.append(e)
    return out


def _state(svc) -> tuple[dict, dict, int]:
    """Counted releases per (principal, class, topic, type), pending nonces per kid, total."""
    releases = {k: v[1] for k, v in svc._releases.items()}
    pending = {kid: u.pending for kid, u in svc._uses.items()}
    return releases, pending, svc._enc_total


def _warm(enc: FieldEncryptor, events: list[dict]) -> None:
    enc.prepare_many("orders", "Placed", SPEC, events, principal="writer")
    enc.encrypt_many([f"w{i}" for i in range(len(events))], events, SPEC, **WHERE)


def test_batch_path_counts_what_a_loop_of_encrypt_counts(open_svc) -> None:
    a, b = open_svc(), open_svc()
    ea, eb = FieldEncryptor(a), FieldEncryptor(b)
    events = _events(40)
    ids = [f"ev-{i}" for i in range(40)]
    _warm(ea, events)
    _warm(eb, events)
    before_a, before_b = _state(a), _state(b)
    calls = []
    inner = a.memoised_encryption_keys
    a.memoised_encryption_keys = lambda *x, **kw: calls.append(1) or inner(*x, **kw)  # type: ignore[method-assign]
    got = ea.encrypt_many(ids, events, SPEC, **WHERE)
    assert calls == [1]  # the batch path answered
    want = [eb.encrypt(i, e, SPEC, **WHERE) for i, e in zip(ids, events, strict=True)]
    assert [s for _, s in got] == [s for _, s in want]

    def delta(before, after):
        return ({k: after[0][k] - before[0].get(k, 0) for k in after[0]},
                sorted(after[1][k] - before[1].get(k, 0) for k in after[1]), after[2] - before[2])

    da, db = delta(before_a, _state(a)), delta(before_b, _state(b))
    assert da[0] == db[0] and da[2] == db[2] == 40 + 26  # one release per event and class
    assert da[1] == db[1]  # the same nonce counts per key
    for (out, shash), i, e in zip(got, ids, events, strict=True):
        assert ea.decrypt(i, out, SPEC, shash, principal="admin")[0] == e


def test_not_all_memoised_counts_nothing_and_the_loop_decides(svc) -> None:
    enc = FieldEncryptor(svc)
    events = _events(10)
    _warm(enc, events)
    wanted = [("cust-1", "pii", 2), ("cust-new", "pii", 2)]  # the second has no memoised key
    before = _state(svc)
    assert svc.memoised_encryption_keys(wanted, **WHERE) is None
    assert _state(svc) == before
    got = enc.encrypt_many(["a", "b"], [_events(1)[0], {"customer": {"id": "cust-new", "name": "x", "email": "y"}}],
                           SPEC, **WHERE)
    assert got[1][1] == svc.subject_hash("cust-new")


def test_attack_a_batch_never_takes_a_key_past_its_nonce_budget(open_svc) -> None:
    """Each event's nonces fit the key's remaining budget alone, but the batch's total does not:
    the batch path must refuse (the loop then starts a new key version) rather than count past."""
    svc = open_svc(KeyServiceConfig(dek_max_nonces=50))
    enc = FieldEncryptor(svc)
    events = [{"customer": {"id": "cust-1", "name": f"n{i}", "email": "e"}} for i in range(40)]
    _warm(enc, events[:1])
    kid0 = svc.encryption_key("cust-1", "pii", nonces=0, **WHERE)[0]
    used = svc._uses[kid0].base + svc._uses[kid0].pending
    assert svc.memoised_encryption_keys([("cust-1", "pii", 2)] * 40, **WHERE) is None  # 80 > 50 - used
    out = enc.encrypt_many([f"e{i}" for i in range(40)], events, SPEC, **WHERE)
    per_kid: dict[str, int] = {}
    for data, _ in out:
        for v in (data["customer"]["name"], data["customer"]["email"]):
            kid = v.split(".")[2]
            per_kid[kid] = per_kid.get(kid, 0) + 1
    assert per_kid.get(kid0, 0) + used <= 50
    assert all(n <= 50 for n in per_kid.values()) and len(per_kid) >= 2


def test_a_bad_event_raises_as_the_loop_does_and_counts_as_it(open_svc) -> None:
    a, b = open_svc(), open_svc()
    ea, eb = FieldEncryptor(a), FieldEncryptor(b)
    events = _events(12)
    _warm(ea, events)
    _warm(eb, events)
    bad = [dict(e) for e in events]
    bad[7] = {**bad[7], "customer": {**bad[7]["customer"], "email": {1, 2}}}  # not JSON
    ids = [f"x{i}" for i in range(12)]
    before_a, before_b = _state(a), _state(b)
    with pytest.raises(InputError) as got:
        ea.encrypt_many(ids, bad, SPEC, **WHERE)
    with pytest.raises(InputError) as want:
        for i, e in zip(ids, bad, strict=True):
            eb.encrypt(i, e, SPEC, **WHERE)
    assert got.value.message == want.value.message and "customer.email" in got.value.message
    assert _state(a)[2] - before_a[2] == _state(b)[2] - before_b[2]  # releases: events 0..7 only
