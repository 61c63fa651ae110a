"""The consumer takes a read batch through parse, keys, decrypt and delivery a chunk at a time
(consumer.CHUNK_EVENTS) while the read, the seal checks and the commit stay per read batch: every
event is still delivered once, in order, decided ahead, with one commit per read batch; a forget
between chunks reaches the later chunks; a record whose seal does not verify asks for no key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from eventward._internal.client import consumer as consumer_mod
from eventward._internal.crypto.fields import ERASED

from .client_world import READER, TOPIC, TYPE, World, customer
from .test_client_decrypt_ahead import BatchKeys, _spy


@pytest.fixture
def wk(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[World, BatchKeys]]:
    """A world whose key source has the batch read, with consumer chunks of 4 events."""
    monkeypatch.setattr(consumer_mod, "CHUNK_EVENTS", 4)
    keys = BatchKeys()
    world = World(tmp_path / "home", keys=keys)
    yield world, keys
    world.close()


def _commits(consumer: Any) -> list[int]:
    """The positions the consumer commits, in order."""
    seen: list[int] = []
    real = consumer._commit

    def commit(stream: str, pos: int) -> None:
        seen.append(pos)
        real(stream, pos)

    consumer._commit = commit
    return seen


@pytest.mark.parametrize("n", [3, 4, 5, 9, 13])
def test_chunk_boundaries_deliver_every_event_once_in_order(wk: tuple[World, BatchKeys], n: int) -> None:
    world, keys = wk
    with world.producer() as p:
        ids = p.send_many(TYPE, [customer(i % 7) for i in range(n)])  # one sealed batch
    ahead, single = _spy(world)
    c = world.consumer(READER)
    commits = _commits(c)
    got, stats = world.consume(c)
    assert [e.id for e in got] == ids and [e.data for e in got] == [customer(i % 7) for i in range(n)]
    assert ahead == ids and single[0] == 0 and keys.single_reads == 0  # every chunk decided ahead
    assert commits == [n] and stats.delivered == n  # one commit for the read batch
    c.close()
    again, _ = world.consume(world.consumer(READER))
    assert again == []  # committed: nothing comes back


def test_max_events_inside_a_chunk_commits_there_and_the_rest_follows(wk: tuple[World, BatchKeys]) -> None:
    world, _ = wk
    with world.producer() as p:
        ids = p.send_many(TYPE, [customer(i) for i in range(10)])
    c = world.consumer(READER)
    first, stats = world.consume(c, max_events=6)
    assert [e.id for e in first] == ids[:6] and stats.delivered == 6
    c.close()
    rest, stats = world.consume(world.consumer(READER))
    assert [e.id for e in rest] == ids[6:] and stats.delivered == 4 and not stats.refused


def test_a_forget_in_one_chunk_erases_the_subject_in_later_chunks(wk: tuple[World, BatchKeys]) -> None:
    """Chunk 2's keys are resolved after chunk 1's handler forgot c-1: its events read ERASED."""
    world, keys = wk
    with world.producer() as p:
        ids = p.send_many(TYPE, [customer(i % 2) for i in range(10)])  # c-0, c-1, c-0, ...
    seen: list[Any] = []

    def handler(event: Any) -> None:
        seen.append(event)
        if len(seen) == 2:
            keys.forget("c-1")

    world.consumer(READER).run(handler, idle_timeout=0)
    assert [e.id for e in seen] == ids
    assert seen[1].data == customer(1)  # delivered before the forget
    assert all(e.data["email"] == ERASED for e in seen[3::2])  # every later c-1 event
    assert all(e.data == customer(0) for e in seen[0::2])


def _kids(raw: bytes) -> set[str]:
    data = orjson.loads(raw)["data"]
    return {v.split(".")[2] for v in data.values() if isinstance(v, str) and v.startswith("ew1.")}


def test_attack_unsealed_records_naming_keys_ask_for_no_key(wk: tuple[World, BatchKeys]) -> None:
    """An attacker with write access to the log edits a sealed record (its digest no longer
    matches): the consumer refuses it, and the key ids it names are never asked of the key
    source (no unwrap, no key.unwrap audit record on its behalf)."""
    world, keys = wk
    with world.producer() as p:
        ids = p.send_many(TYPE, [customer(i) for i in range(6)])  # six subjects, six keys
    db = world.db()
    (data,) = db.execute("SELECT data FROM events WHERE stream = ? AND offset = 4", (TOPIC,)).fetchone()
    target = _kids(data)
    assert target
    db.execute("UPDATE events SET data = ? WHERE stream = ? AND offset = 4",
               (data.replace(b'"plan":"pro"', b'"plan":"prp"'), TOPIC))
    asked: list[str] = []
    real = keys.decryption_keys

    def spy(wanted: Any, **kw: Any) -> Any:
        wanted = list(wanted)
        asked.extend(kid for kid, _cls, _shash in wanted)
        return real(wanted, **kw)

    keys.decryption_keys = spy  # type: ignore[method-assign]
    got, stats = world.consume(world.consumer(READER))
    assert [e.id for e in got] == [*ids[:4], ids[5]] and stats.refused == {"digest_mismatch": 1}
    assert asked and not target & set(asked)


def test_a_remote_key_source_gets_one_prefetch_per_read_batch(wk: tuple[World, BatchKeys]) -> None:
    """Client mode fetches keys over HTTPS: its chunk is the whole read batch, one request."""
    world, _ = wk
    with world.producer() as p:
        ids = p.send_many(TYPE, [customer(i) for i in range(10)])
    calls: list[int] = []

    def prefetch_wanted(topic: str, wanted: Any) -> None:
        calls.append(sum(len(items) for items in wanted.values()))

    world.enc.prefetch_wanted = prefetch_wanted  # type: ignore[attr-defined]
    got, _ = world.consume(world.consumer(READER))
    assert [e.id for e in got] == ids and calls == [10]  # ten subjects' keys, one request
