"""The consumer decrypts each read batch ahead (FieldEncryptor.decrypt_many, from the batch's key
memo) and every event still gets exactly what decrypting it on its own gives: the same clear
data, the same refusal, ERASED after a forget made by a handler mid-batch; and only events whose
seal verified ever reach a cipher."""

from __future__ import annotations

from typing import Any

from eventward._internal.crypto.fields import ERASED
from eventward._internal.keys.memory import MemoryKeys
from eventward.errors import AccessDenied, EventwardError, KeyDestroyed

from .client_world import READER, TOPIC, TYPE, World, customer, grants


class BatchKeys:
    """MemoryKeys with the key service's batch read (``decryption_keys``) and revocation count,
    so the consumer resolves each batch's keys up front and decrypts the batch ahead."""

    takes_context = True

    def __init__(self) -> None:
        self.inner = MemoryKeys(grants())
        self.revocations = 0
        self.single_reads = 0

    def subject_hash(self, subject: str) -> str:
        return self.inner.subject_hash(subject)

    def encryption_key(self, subject: str | None, cls: str, *, principal: str, **_: Any) -> tuple[str, bytes]:
        return self.inner.encryption_key(subject, cls, principal=principal)

    def decryption_key(self, kid: str, cls: str, *, principal: str, **_: Any) -> bytes:
        self.single_reads += 1
        return self.inner.decryption_key(kid, cls, principal=principal)

    def decryption_keys(self, wanted: Any, *, principal: str, **_: Any) -> dict[tuple[str, str], Any]:
        out: dict[tuple[str, str], Any] = {}
        for kid, cls, _shash in wanted:
            try:
                out[kid, cls] = self.inner.decryption_key(kid, cls, principal=principal)
            except (AccessDenied, KeyDestroyed) as e:
                out[kid, cls] = e
            except EventwardError:
                pass
        return out

    def forget(self, subject: str) -> int:
        self.revocations += 1
        return self.inner.forget(subject)


def _world(tmp_path) -> tuple[World, BatchKeys]:
    keys = BatchKeys()
    return World(tmp_path / "home", keys=keys), keys


def _spy(world: World) -> tuple[list[str], list[int]]:
    """Event ids handed to decrypt_many, and a count of per-event decrypts."""
    ahead: list[str] = []
    single = [0]
    many, one = world.enc.decrypt_many, world.enc.decrypt

    def decrypt_many(items: Any, *a: Any, **kw: Any) -> Any:
        ahead.extend(i[0] for i in items)
        return many(items, *a, **kw)

    def decrypt(*a: Any, **kw: Any) -> Any:
        single[0] += 1
        return one(*a, **kw)

    world.enc.decrypt_many = decrypt_many  # type: ignore[method-assign]
    world.enc.decrypt = decrypt  # type: ignore[method-assign]
    return ahead, single


def test_a_batch_decrypted_ahead_delivers_every_event_as_decrypt_would(tmp_path) -> None:
    world, keys = _world(tmp_path)
    try:
        with world.producer() as p:
            ids = [p.send(TYPE, customer(i)) for i in range(12)]
        ahead, single = _spy(world)
        got, stats = world.consume(world.consumer(READER))
        assert [e.id for e in got] == ids and [e.data for e in got] == [customer(i) for i in range(12)]
        assert ahead == ids and single[0] == 0  # all decided ahead: no event decrypted on its own
        assert keys.single_reads == 0 and stats.delivered == 12
    finally:
        world.close()


def test_forget_by_a_handler_mid_batch_erases_the_rest_of_the_batch(tmp_path) -> None:
    """Outcomes worked out before the forget are stale: the events after it read ERASED, as
    decrypting them one by one would give."""
    world, keys = _world(tmp_path)
    try:
        with world.producer() as p:
            ids = [p.send(TYPE, customer(i % 2)) for i in range(6)]  # c-0, c-1, c-0, ...
        seen: list[Any] = []

        def handler(event: Any) -> None:
            seen.append(event)
            if len(seen) == 1:
                keys.forget("c-1")

        world.consumer(READER).run(handler, idle_timeout=0)
        assert [e.id for e in seen] == ids
        assert seen[1].data["email"] == seen[3].data["email"] == ERASED  # c-1, after the forget
        assert seen[2].data == customer(0) and seen[0].data == customer(0)
    finally:
        world.close()


def test_a_moved_token_in_a_sealed_batch_is_refused_alone_with_the_usual_reason(tmp_path) -> None:
    """A producer that seals a token moved from another event: that event is dead-lettered as
    a per-event decrypt refuses it; the batch's other events are delivered."""
    world, _ = _world(tmp_path)
    try:
        enc = world.enc
        real = enc.encrypt_many
        first: dict[str, Any] = {}

        def moving(ids: Any, events: Any, *a: Any, **kw: Any) -> Any:
            out = real(ids, events, *a, **kw)
            first.setdefault("email", out[0][0]["email"])
            if len(first) == 1 and len(out) > 2:  # event 2 gets event 0's email token
                out[2][0]["email"] = first["email"]
            return out

        enc.encrypt_many = moving  # type: ignore[method-assign]
        with world.producer() as p:
            ids = p.send_many(TYPE, [customer(0) for _ in range(4)])
        enc.encrypt_many = real  # type: ignore[method-assign]
        ahead, _ = _spy(world)
        got, stats = world.consume(world.consumer(READER))
        assert [e.id for e in got] == [ids[0], ids[1], ids[3]]
        assert sum(stats.refused.values()) == 1 and ahead == ids
        dead = world.dlq(READER).list(principal=READER)
        assert [(d.event_id, d.reason) for d in dead] == [(ids[2], "bad_token")]
    finally:
        world.close()


def test_events_whose_seal_fails_never_reach_decrypt_many(tmp_path) -> None:
    world, _ = _world(tmp_path)
    try:
        with world.producer() as p:
            first = [p.send(TYPE, customer(i)) for i in range(3)]
            p.flush()
            second = [p.send(TYPE, customer(i)) for i in range(3, 6)]
        db = world.db()
        (data,) = db.execute("SELECT data FROM events WHERE stream = ? AND offset = 4", (TOPIC,)).fetchone()
        db.execute("UPDATE events SET data = ? WHERE stream = ? AND offset = 4",
                   (data.replace(b'"plan":"pro"', b'"plan":"prp"'), TOPIC))
        ahead, _ = _spy(world)
        got, stats = world.consume(world.consumer(READER))
        assert second[1] not in ahead and set(first) <= set(ahead)
        assert [e.id for e in got] == [*first, second[0], second[2]] and stats.refused == {"digest_mismatch": 1}
    finally:
        world.close()
