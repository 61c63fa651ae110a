"""Home mode's ``send_many`` resolves the call's data-subject keys in one KeyService call
(``encryption_keys``): one key-creation transaction for a call's new subjects, nonces counted
once per event, and a forget between that call and the encryption never leaves an event under
the forgotten key (each event still asks the key service, whose memo the forget dropped)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from eventward._internal import envelope
from eventward._internal.home import Home
from eventward._internal.keys.service import KeyService
from eventward._internal.policy.base import FORGET

from .client_world import ADMIN, TOPIC, TYPE, World, customer, grants


class _Count:
    def __init__(self, fn: Any) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, *a: Any, **kw: Any) -> Any:
        self.calls += 1
        return self.fn(*a, **kw)


@pytest.fixture
def home_world(tmp_path: Path) -> Iterator[tuple[World, KeyService]]:
    auth = grants()
    auth.grant(ADMIN, FORGET, ("Subject", "*"))
    svc = KeyService.init(Home(tmp_path / "keys"), authorizer=auth)
    w = World(tmp_path / "home", keys=svc)
    w.auth = auth
    yield w, svc
    w.close()
    svc.close()


def _kids(w: World) -> list[tuple[str, str, str]]:
    """(subject id in clear, envelope subject hash, key id of the email token) per stored event."""
    out = []
    for rec in w.log.read(TOPIC, 0, 10_000):
        env = orjson.loads(rec.data)
        out.append((env["data"]["customer_id"], env[envelope.EXT_SUBJECT], env["data"]["email"].split(".")[2]))
    return out


def test_send_many_of_new_subjects_makes_their_keys_in_one_transaction(home_world) -> None:
    w, svc = home_world
    store = svc.store
    counted = {n: _Count(getattr(store, n)) for n in ("insert_deks", "insert_dek", "add_pseudonyms", "add_pseudonym")}
    for n, c in counted.items():
        setattr(store, n, c)
    events = [customer(i % 20) for i in range(60)]  # N=60 events over M=20 new subjects
    with w.producer() as producer:
        producer.send_many(TYPE, events)
    assert {n: c.calls for n, c in counted.items()} == {
        "insert_deks": 1, "insert_dek": 0, "add_pseudonyms": 1, "add_pseudonym": 0}
    stored = _kids(w)
    assert len(stored) == 60
    by_subject = {s: (h, kid) for s, h, kid in stored}
    assert len(by_subject) == 20 and len({kid for _, kid in by_subject.values()}) == 20
    for s, h, kid in stored:
        assert by_subject[s] == (h, kid)  # one key per subject, the one the key service holds
        assert store.current_dek(h, "pii").kid == kid
    # Nonces counted once per event (email and name: 2 values, 3 events each), none by the batch call.
    svc._flush_uses()
    assert {store.get_dek(kid).uses for _, kid in by_subject.values()} == {6}
    got, _ = w.consume(w.consumer())
    assert [d.data for d in got] == events


@pytest.mark.parametrize("memoised", [False, True], ids=["key-in-store", "key-memoised"])
def test_attack_forget_during_send_many_never_encrypts_under_the_forgotten_key(home_world, memoised) -> None:
    w, svc = home_world
    with w.producer() as producer:  # the subject's key exists before the call
        producer.send(TYPE, customer(0))
    (_, old_hash, old_kid), = _kids(w)
    if not memoised:
        svc._drop_caches()  # as in a fresh process: the key is in the store, resolved by the batch call
    batch = svc.encryption_keys
    forgotten: list[str] = []

    def then_forget(*a: Any, **kw: Any) -> Any:
        out = batch(*a, **kw)
        # Cold, the call resolved the key about to be forgotten; memoised, it was left to the hot path.
        assert any(kid == old_kid for kid, _, _ in out) is not memoised
        svc.forget("c-0", principal=ADMIN, reason="gdpr-art17")
        forgotten.append(old_kid)
        return out

    svc.encryption_keys = then_forget  # type: ignore[method-assign]
    with w.producer() as producer:
        producer.send_many(TYPE, [customer(0), customer(1), customer(0)])
    assert forgotten == [old_kid]  # the forget did land between the batch call and the encryption
    after = _kids(w)[1:]
    assert len(after) == 3
    for _, h, kid in after:
        assert kid != old_kid and h != old_hash
    assert svc.store.get_dek(old_kid) is None
    got, _ = w.consume(w.consumer())
    assert [d.data for d in got][1:] == [customer(0), customer(1), customer(0)]
