"""The client-mode producer's cipher: after ``prepare_many`` an event is encrypted with no
further request and no second key preparation per event; an event whose keys were not prepared
(``send``) or were dropped by an erasure notice meanwhile fetches them and is encrypted all the
same; a refusal from the control plane still refuses the event."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from eventward._internal.control.client import RemoteKeys
from eventward._internal.control.connect import _PreparingCipher
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
