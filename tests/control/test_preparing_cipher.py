"""The client-mode producer's cipher: after ``prepare_many`` an event is encrypted with no
further request and no second key preparation per event; an event whose keys were not prepared
(``send``) or were dropped by an erasure notice meanwhile fetches them and is encrypted all the
same; a refusal from the control plane still refuses the event. A send_many call is encrypted
with its prepared keys (encrypt_many), and the read batch's key memo never outlives an erasure notice."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from eventward._internal.control.client import RemoteKeys
from eventward._internal.control.connect import _PreparingCipher
from eventward._internal.crypto.fields import ERASED
from eventward._internal.fieldspec import FieldSpec
from eventward.errors import AccessDenied

SPEC = FieldSpec.from_dict({"subject": "customer.id", "fields": {"customer.email": "pii", "customer.name": "pii"}})
WHERE = {"principal": "orders-svc", "topic": "orders", "event_type": "OrderPlaced"}


class _API:
    principal = "orders-svc"

    def __init__(self) -> None:
        self.requests: list[list[Any]] = []
        self.refuse = False

    def encryption_keys(self, topic: str, event_type: str, wanted: Any) -> list[tuple[str, bytes, str | None]]:
        self.requests.append(list(wanted))
        if self.refuse:
            raise AccessDenied("orders-svc may not Encrypt pii on orders")
        return [("k" + hashlib.sha256(repr((s, c)).encode()).hexdigest()[:25],
                 hashlib.sha256(repr(s).encode()).digest(),
                 hashlib.sha256(b"h" + repr(s).encode()).hexdigest()[:32]) for s, c, _ in wanted]


def event(c: int) -> dict[str, Any]:
    return {"customer": {"id": f"cust-{c}", "email": f"c{c}@example.org", "name": f"N {c}"}}


def test_prepared_events_make_no_further_request():
    api = _API()
    cipher = _PreparingCipher(RemoteKeys(api))  # type: ignore[arg-type]
    events = [event(c % 3) for c in range(9)]
    cipher.prepare_many("orders", "OrderPlaced", SPEC, events)
    assert len(api.requests) == 1 and len(api.requests[0]) == 3  # one request, one item per subject
    outs = [cipher.encrypt(f"e{i}", e, SPEC, **WHERE) for i, e in enumerate(events)]
    assert len(api.requests) == 1
    assert all(o["customer"]["email"].startswith("ew1.") and sh for o, sh in outs)
    assert outs[0][1] == outs[3][1] != outs[1][1]  # one pseudonym per subject


def test_unprepared_and_dropped_keys_are_fetched_again():
    api = _API()
    keys = RemoteKeys(api)  # type: ignore[arg-type]
    cipher = _PreparingCipher(keys)
    out, shash = cipher.encrypt("e1", event(1), SPEC, **WHERE)  # send(): nothing prepared
    assert shash and out["customer"]["name"].startswith("ew1.") and len(api.requests) == 1
    cipher.prepare_many("orders", "OrderPlaced", SPEC, [event(2)])
    keys.forget_subjects(["some-erased-pseudonym"])  # a notice drops every cached key meanwhile
    out, shash = cipher.encrypt("e2", event(2), SPEC, **WHERE)
    assert shash and out["customer"]["email"].startswith("ew1.")
    assert len(api.requests) == 3  # asked again rather than failing


def test_a_refusal_still_refuses_the_event():
    api = _API()
    api.refuse = True
    cipher = _PreparingCipher(RemoteKeys(api))  # type: ignore[arg-type]
    with pytest.raises(AccessDenied):
        cipher.encrypt("e1", event(1), SPEC, **WHERE)


class _KeyAPI(_API):
    """Answers decryption keys too: the DEK an encryption key was, or ``erased`` once told."""

    def __init__(self) -> None:
        super().__init__()
        self.dec: list[list[Any]] = []
        self.erased: set[str] = set()
        self.deks: dict[str, bytes] = {}

    def encryption_keys(self, topic: str, event_type: str, wanted: Any) -> list[tuple[str, bytes, str | None]]:
        got = super().encryption_keys(topic, event_type, wanted)
        self.deks.update((kid, dek) for kid, dek, _ in got)
        return got

    def decryption_keys(self, topic: str, event_type: str, wanted: Any) -> dict[str, bytes | str]:
        self.dec.append(list(wanted))
        return {kid: "erased" if kid in self.erased else self.deks[kid] for kid, _, _ in wanted}


def _clear(cipher: _PreparingCipher, sealed: dict[str, Any], shash: str | None, event_id: str) -> dict[str, Any]:
    return cipher.decrypt(event_id, sealed, SPEC, shash, principal="orders-svc", topic="orders",
                          event_type="OrderPlaced")[0]


def test_a_send_many_call_is_encrypted_with_its_prepared_keys_in_one_request():
    api = _KeyAPI()
    cipher = _PreparingCipher(RemoteKeys(api))  # type: ignore[arg-type]
    events = [event(c % 3) for c in range(9)]
    ids = [f"e{i}" for i in range(9)]
    cipher.prepare_many("orders", "OrderPlaced", SPEC, events)
    outs = cipher.encrypt_many(ids, events, SPEC, **WHERE)
    assert len(api.requests) == 1  # the prepared call's keys: nothing asked per event
    assert [_clear(cipher, o, sh, i) for i, (o, sh) in zip(ids, outs, strict=True)] == events
    assert outs[0][1] == outs[3][1] != outs[1][1]  # one pseudonym per subject
    assert all(o["customer"]["email"].startswith("ew1.") for o, _ in outs)


def test_a_send_many_call_whose_keys_a_notice_dropped_fetches_them_again():
    api = _KeyAPI()
    keys = RemoteKeys(api)  # type: ignore[arg-type]
    cipher = _PreparingCipher(keys)
    events = [event(1), event(2)]
    cipher.prepare_many("orders", "OrderPlaced", SPEC, events)
    keys.forget_subjects(["some-erased-pseudonym"])  # every cached key dropped between prepare and encrypt
    outs = cipher.encrypt_many(["e1", "e2"], events, SPEC, **WHERE)
    assert len(api.requests) == 2  # the call's keys asked again, in one request
    assert [_clear(cipher, o, sh, i) for i, (o, sh) in zip(["e1", "e2"], outs, strict=True)] == events


def test_a_refusal_still_refuses_a_send_many_call():
    api = _KeyAPI()
    api.refuse = True
    cipher = _PreparingCipher(RemoteKeys(api))  # type: ignore[arg-type]
    with pytest.raises(AccessDenied):
        cipher.encrypt_many(["e1"], [event(1)], SPEC, **WHERE)


def test_attack_an_erasure_notice_mid_read_batch_drops_the_batch_memo():
    """A consumer halfway through a read batch when the erasure notice arrives (on the notice
    thread): the batch's key memo must not serve the erased subject's key to the rest of the
    batch; the next event asks the control plane, which answers ``erased``."""
    api = _KeyAPI()
    keys = RemoteKeys(api)  # type: ignore[arg-type]
    cipher = _PreparingCipher(keys)
    producer = _PreparingCipher(RemoteKeys(api))  # type: ignore[arg-type]
    events = [event(1), event(1)]
    producer.prepare_many("orders", "OrderPlaced", SPEC, events)
    (first, shash), (second, _) = producer.encrypt_many(["e1", "e2"], events, SPEC, **WHERE)
    wanted: dict[Any, Any] = {}
    for sealed in (first, second):
        cipher.want_keys(wanted, "OrderPlaced", SPEC, shash, sealed)
    with cipher.reading_batch():
        cipher.prefetch_wanted("orders", wanted)
        assert cipher.resolve_wanted(wanted, principal="orders-svc", topic="orders") == 1  # from the prefetch
        assert len(api.dec) == 1
        assert _clear(cipher, first, shash, "e1") == events[0]
        api.erased.update(api.deks)  # forget(alice): the control plane destroys her keys ...
        keys.forget_subjects([shash])  # ... and the notice reaches the follower thread
        clear = _clear(cipher, second, shash, "e2")
    assert clear["customer"]["email"] == ERASED and clear["customer"]["id"] == "cust-1"
    assert len(api.dec) == 2  # asked, not served from the memo


def test_attack_an_erasure_notice_makes_the_batch_decrypted_ahead_stale():
    """The consumer decrypts a read batch ahead (decrypt_many, from the memo the prefetched keys
    filled); an erasure notice arriving on the follower thread before an event takes its outcome
    makes every outcome stale, so the event is decrypted on its own and the control plane's
    ``erased`` answer is what it gets."""
    api = _KeyAPI()
    keys = RemoteKeys(api)  # type: ignore[arg-type]
    cipher = _PreparingCipher(keys)
    producer = _PreparingCipher(RemoteKeys(api))  # type: ignore[arg-type]
    events = [event(1), event(2)]
    producer.prepare_many("orders", "OrderPlaced", SPEC, events)
    sealed = producer.encrypt_many(["e1", "e2"], events, SPEC, **WHERE)
    wanted: dict[Any, Any] = {}
    for out, shash in sealed:
        cipher.want_keys(wanted, "OrderPlaced", SPEC, shash, out)
    with cipher.reading_batch():
        cipher.prefetch_wanted("orders", wanted)
        cipher.resolve_wanted(wanted, principal="orders-svc", topic="orders")
        outcomes, stamp = cipher.decrypt_many([(i, out, shash) for i, (out, shash) in zip(["e1", "e2"], sealed,
                                                                                            strict=True)],
                                              SPEC, principal="orders-svc", topic="orders", event_type="OrderPlaced")
        assert [o[0] for o in outcomes] == events and cipher.batch_current(stamp)  # no key source asked
        assert len(api.dec) == 1
        api.erased.update(api.deks)
        keys.forget_subjects([sealed[1][1]])
        assert not cipher.batch_current(stamp)
        clear = _clear(cipher, sealed[1][0], sealed[1][1], "e2")
    assert clear["customer"]["email"] == ERASED and len(api.dec) == 2
