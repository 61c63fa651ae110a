"""The gateway group store's contract, on both backends: the home's SQLite and PostgreSQL.

Two stores over one database stand for two ``serve`` replicas: what one fetched, the other
acks; racing acks of one batch have one winner and the other gets the same answer; a fetch
that read from a position an ack moved meanwhile records nothing; the fetch lease admits one
holder at a time until it is released or expires.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from eventward._internal.gateway.groups import ConsumerGroups, SharedGuard, group_id
from eventward._internal.gateway.groupstore import GROUP_LOCK, PG_TABLES, GroupStore
from eventward._internal.store.pg import Database
from eventward._internal.store.sqlcompat import PgTables
from eventward.errors import ConflictError
from pg.conftest import pg_migrated_dsn, pg_server, race  # noqa: F401

GID, TOPIC = "shipping-svc/g", "orders"


def entry(offset: int, *, stream: str = TOPIC, status: str = "ok") -> list[object]:
    return ["orders-svc", stream, offset, f"e{offset}@{stream}", "inst-1", offset + 1, status, "live"]


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], GroupStore]]:
    """Opens another store over the same database (another replica), closed after the test."""
    opened: list[GroupStore] = []
    if request.param == "sqlite":
        def make() -> GroupStore:
            opened.append(GroupStore.open_sqlite(tmp_path / "consumers" / "gateway.db"))
            return opened[-1]
    else:
        dsn = request.getfixturevalue("pg_migrated_dsn")  # the contract, not migrating
        Database(dsn).migrate("dep-test")

        def make() -> GroupStore:
            db = Database.open(dsn, deployment_id="dep-test")
            opened.append(GroupStore.open_pg(PgTables(db, PG_TABLES, GROUP_LOCK)))
            return opened[-1]
    yield make
    for s in opened:
        s.close()


def fetched(store: GroupStore, holder: str, upto: int, *, start: int | None = None, stream: str = TOPIC) -> bool:
    """Record a fetch of [start, upto) that delivered every record (nothing settled yet)."""
    assert store.try_lease(GID, TOPIC, holder, 30)
    return store.finish_fetch(
        GID, TOPIC, holder, expected={stream: start}, commit={}, settled=[],
        pending=[entry(o, stream=stream) for o in range(start or 0, upto)], upto={stream: upto},
        mirror=lambda s, o: None,
    )


def test_an_ack_on_another_replica_commits_what_this_one_fetched(open_store) -> None:
    a, b = open_store(), open_store()
    assert fetched(a, "a-1", 5)
    mirrored: list[tuple[str, int]] = []
    assert b.ack(GID, TOPIC, TOPIC, 3, initial=None, mirror=lambda s, o: mirrored.append((s, o)), group="g") == 3
    assert a.committed(GID, [TOPIC]) == {TOPIC: 3} and mirrored == [(TOPIC, 3)]
    ch = a.changes(GID, None)
    assert sorted(r[1] for r in ch.seen) == ["e0@orders", "e1@orders", "e2@orders"]  # settled, the rest pending
    assert ch.seqs == [("orders-svc", "inst-1", TOPIC, 3)]


def test_acks_never_skip_ahead_or_move_back(open_store) -> None:
    a = open_store()
    with pytest.raises(ConflictError, match="not delivered"):
        a.ack(GID, TOPIC, TOPIC, 1, initial=None, mirror=lambda s, o: None, group="g")  # nothing fetched
    assert fetched(a, "a-1", 4)
    with pytest.raises(ConflictError, match="delivered up to 4"):
        a.ack(GID, TOPIC, TOPIC, 5, initial=None, mirror=lambda s, o: None, group="g")
    assert a.ack(GID, TOPIC, TOPIC, 4, initial=None, mirror=lambda s, o: None, group="g") == 4
    assert a.ack(GID, TOPIC, TOPIC, 1, initial=None, mirror=lambda s, o: None, group="g") == 4  # idempotent
    assert a.committed(GID, [TOPIC]) == {TOPIC: 4}


def test_racing_acks_of_one_batch_have_one_winner_and_the_same_answer(open_store) -> None:
    a, b = open_store(), open_store()
    assert fetched(a, "a-1", 6)
    before = a.changes(GID, None).version
    answers = race(*[
        (lambda s=s: s.ack(GID, TOPIC, TOPIC, 6, initial=None, mirror=lambda st, o: None, group="g"))
        for s in (a, b, a, b)
    ])
    assert answers == [6, 6, 6, 6]
    after = a.changes(GID, before)
    assert after.version == before + 1  # one transaction committed; the others found it done
    assert len(after.seen) == 6


def test_a_fetch_from_a_position_an_ack_moved_records_nothing(open_store) -> None:
    a, b = open_store(), open_store()
    assert fetched(a, "a-1", 4)
    assert a.try_lease(GID, TOPIC, "a-2", 30)  # a second fetch starts reading from 0 ...
    assert b.ack(GID, TOPIC, TOPIC, 4, initial=None, mirror=lambda s, o: None, group="g") == 4  # ... acked meanwhile
    stale = a.finish_fetch(GID, TOPIC, "a-2", expected={TOPIC: None}, commit={}, settled=[],
                           pending=[entry(o) for o in range(0, 6)], upto={TOPIC: 6}, mirror=lambda s, o: None)
    assert stale is False  # it would have delivered acked events again
    with pytest.raises(ConflictError):  # and its batch is not what an ack commits
        b.ack(GID, TOPIC, TOPIC, 6, initial=None, mirror=lambda s, o: None, group="g")


def test_the_fetch_lease_has_one_holder_until_released_or_expired(open_store) -> None:
    a, b = open_store(), open_store()
    assert a.try_lease(GID, TOPIC, "a-1", 30)
    assert not b.try_lease(GID, TOPIC, "b-1", 30)
    assert a.try_lease(GID, TOPIC, "a-1", 30)  # its holder may renew it
    a.release(GID, TOPIC, "a-1")
    assert b.try_lease(GID, TOPIC, "b-1", 0.05)  # b dies holding it: it expires by itself
    deadline = time.monotonic() + 5
    while not a.try_lease(GID, TOPIC, "a-2", 30):
        assert time.monotonic() < deadline, "an expired lease was never given up"
    assert not b.try_lease(GID, TOPIC, "b-2", 30)
    assert a.try_lease(GID, "other-topic", "a-3", 30)  # leases are per (group, topic)
    wins = race(*[(lambda s=s, h=h: s.try_lease(GID, "t2", h, 30)) for s, h in ((a, "x"), (b, "y"), (a, "z"))])
    assert sorted(wins) == [False, False, True]


def test_leading_refused_records_commit_with_the_fetch(open_store) -> None:
    a = open_store()
    assert a.try_lease(GID, TOPIC, "a-1", 30)
    mirrored: list[tuple[str, int]] = []
    assert a.finish_fetch(GID, TOPIC, "a-1", expected={TOPIC: None}, commit={TOPIC: 2},
                          settled=[entry(0, status="dlq"), entry(1, status="dlq")], pending=[entry(2)],
                          upto={TOPIC: 3}, mirror=lambda s, o: mirrored.append((s, o)))
    assert a.committed(GID, [TOPIC]) == {TOPIC: 2} and mirrored == [(TOPIC, 2)]
    assert {r[4] for r in a.changes(GID, None).seen} == {"dlq"}
    assert a.try_lease(GID, TOPIC, "b-1", 30)  # finishing released the lease


def test_offsets_are_per_partition_stream(open_store) -> None:
    a = open_store()
    p1 = f"{TOPIC}.p1"
    assert a.try_lease(GID, TOPIC, "a-1", 30)
    assert a.finish_fetch(GID, TOPIC, "a-1", expected={TOPIC: None, p1: None}, commit={}, settled=[],
                          pending=[entry(0), entry(1), entry(0, stream=p1)], upto={TOPIC: 2, p1: 1},
                          mirror=lambda s, o: None)
    assert a.ack(GID, TOPIC, p1, 1, initial=None, mirror=lambda s, o: None, group="g") == 1
    assert a.committed(GID, [TOPIC, p1]) == {TOPIC: None, p1: 1}
    assert a.ack(GID, TOPIC, TOPIC, 2, initial=None, mirror=lambda s, o: None, group="g") == 2
    assert sorted(r[2] for r in a.changes(GID, None).seen) == [TOPIC, TOPIC, p1]


def test_state_from_before_the_store_is_imported_once(open_store) -> None:
    a = open_store()
    a.import_state(GID, [("orders-svc", "old-1", TOPIC, 0, "ok", 1.0e12)], [("orders-svc", "i", TOPIC, 9)])
    a.import_state(GID, [("orders-svc", "old-2", TOPIC, 1, "ok", 1.0e12)], [])  # the store has it now
    ch = a.changes(GID, None)
    assert [r[1] for r in ch.seen] == ["old-1"] and ch.seqs == [("orders-svc", "i", TOPIC, 9)]


def test_attack_a_copy_of_an_id_acked_on_one_replica_is_refused_on_the_other(open_store, dep_world: Any) -> None:
    """Replica b never fetched the group; the id a's client acked must still be a duplicate there."""
    from .gw_deployment import ORDERS, SHIPPING, cloudevent, order, topic

    dep, t, dup = dep_world.dep, topic(), str(uuid.uuid4())
    assert dep_world.publish(ORDERS, t, [cloudevent(order(1), id_=dup)]).status == 200

    def replica() -> ConsumerGroups:
        return ConsumerGroups(dep.transport, open_store(), SharedGuard,
                              lambda p, topic_, g, guard: dep.consumer(p, topic_, group=g, guard=guard))

    a, b = replica(), replica()
    try:
        first = a.fetch(SHIPPING, t, "dup-x", 10)
        assert [d.id for d in first.deliveries] == [dup]
        assert b.ack(SHIPPING, t, "dup-x", first.positions[t]) == 1  # acked through the other replica
        assert dep_world.publish(ORDERS, t, [cloudevent(order(2), id_=dup)]).status == 200  # the same id again
        assert b.fetch(SHIPPING, t, "dup-x", 10).deliveries == []
        gid = group_id(SHIPPING, "dup-x")
        reasons = {d.offset: d.reason for d in dep_world.dead_letters(SHIPPING, t) if d.group == gid}
        assert reasons == {1: "duplicate"}
        assert a.fetch(SHIPPING, t, "dup-x", 10).deliveries == []  # committed past it on both
    finally:
        a.close()
        b.close()
