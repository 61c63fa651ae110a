"""Replay guard: bounded dedup window, crash journal, one process per group, time windows."""

from __future__ import annotations

import pytest

from eventward._internal.client.replay import LIVE, NEW, OK, REDELIVERY, ReplayGuard
from eventward._internal.home import Home
from eventward.errors import ConfigError, ConflictError, ReplayError

from .client_world import TYPE, customer

NOW = 1_800_000_000.0


P = "signup-svc"


def admit(g: ReplayGuard, eid: str, offset: int, seq: int, at: float = NOW, stream: str = "s", producer: str = P):
    return g.admit(
        producer=producer, stream=stream, offset=offset, event_id=eid, instance="i", seq=seq, sealed_at=at, mode=LIVE
    )


def settle(g: ReplayGuard, eid: str, offset: int, seq: int, stream: str = "s", producer: str = P) -> None:
    g.settle(producer=producer, stream=stream, offset=offset, event_id=eid, instance="i", seq=seq, status=OK)


def test_dedup_order_gaps_and_time_windows(tmp_path):
    g = ReplayGuard.open(Home(tmp_path), "g", clock=lambda: NOW)
    assert admit(g, "a", 0, 0).verdict == NEW
    settle(g, "a", 0, 0)
    assert admit(g, "a", 0, 0).verdict == REDELIVERY  # the same record read again after a crash
    with pytest.raises(ReplayError) as e:
        admit(g, "a", 7, 1)  # the same id somewhere else
    assert e.value.reason == "duplicate"
    with pytest.raises(ReplayError) as e:
        admit(g, "b", 1, 0)
    assert e.value.reason == "out_of_order"
    assert admit(g, "c", 1, 5).gap == (1, 5)
    with pytest.raises(ReplayError) as e:
        admit(g, "d", 2, 6, at=NOW - 25 * 3600)
    assert e.value.reason == "stale"
    with pytest.raises(ReplayError) as e:
        admit(g, "d", 2, 6, at=NOW + 3600)
    assert e.value.reason == "future"
    g.close()


def test_window_is_bounded(tmp_path):
    """Two generations of ``window_ids``: a full young one replaces the old one whole."""
    g = ReplayGuard.open(Home(tmp_path), "g", window_ids=3)
    for i in range(7):
        settle(g, f"id{i}", i, i)
    assert [g.status(f"id{i}", P) for i in range(7)] == [None, None, None, OK, OK, OK, OK]
    g.close()
    g = ReplayGuard.open(Home(tmp_path), "g", window_ids=3)
    assert [g.status(f"id{i}", P) for i in range(7)] == [None, None, None, OK, OK, OK, OK]
    with pytest.raises(ReplayError):  # an evicted id is still caught by its sequence number
        admit(g, "id0", 99, 0)
    g.close()


@pytest.mark.parametrize("window", [1, 2, 5, 64])
def test_window_holds_the_newest_ids_and_at_most_twice_as_many(window):
    """Whatever is settled (new ids, ids settled again with another status), the newest
    ``window`` distinct ids are always held, with their latest status, and never more than
    2 * window; the held state is invisible to the garbage collector."""
    import gc
    import random

    rnd = random.Random(window)
    g = ReplayGuard.ephemeral(clock=lambda: NOW, window_ids=window)
    order: list[str] = []  # distinct ids, oldest settle first
    latest: dict[str, tuple[int, str]] = {}
    for n in range(40 * window):
        eid = rnd.choice(order[-window:]) if order and rnd.random() < 0.1 else f"e{n}"
        status = rnd.choice([OK, "dlq", "skip"])
        g.settle(producer=P, stream=f"s{n % 3}", offset=n, event_id=eid, instance="i", seq=n, status=status)
        if eid in latest:
            order.remove(eid)
        order.append(eid)
        latest[eid] = (n, status)
        for e in order[-window:]:
            assert g.status(e, P) == latest[e][1]
            with pytest.raises(ReplayError):  # held where it was settled: elsewhere it is a duplicate
                admit(g, e, latest[e][0] + 1, 10**9)
        assert sum(1 for e in order if g.status(e, P) is not None) <= 2 * window
    assert not gc.is_tracked(g._young) and not gc.is_tracked(g._old)
    assert len(list(g.seen_entries())) <= 2 * window


def test_ids_of_producers_with_colliding_names_are_kept_apart():
    """A held id is keyed by its producer's length-prefixed name: ("ab", "c:x") and ("a", "bc:x")
    or ids with the separator in them never share an entry."""
    g = ReplayGuard.ephemeral(clock=lambda: NOW)
    g.settle(producer="ab", stream="s", offset=0, event_id="c:x", instance="i", seq=0, status=OK)
    assert g.status("c:x", "ab") == OK
    for producer, eid in [("a", "bc:x"), ("a", "b:c:x"), ("2:ab", "c:x"), ("", "2:abc:x"), ("abc", ":x")]:
        assert g.status(eid, producer) is None
        assert g.is_next(producer, "i", "s", eid, 0, NOW)
    assert [e[:2] for e in g.seen_entries()] == [("ab", "c:x")]


def test_attack_a_replay_beyond_the_dedup_window_is_still_refused(tmp_path):
    """An attacker copies a batch of sealed records back into the log once their ids have left
    the dedup window (a tiny one here): each copy is refused by its producer instance's sequence
    number (out_of_order), as before the window became generations, also after a restart."""
    g = ReplayGuard.open(Home(tmp_path), "g", clock=lambda: NOW, window_ids=4)
    for i in range(20):
        assert g.is_next(P, "i", "s", f"id{i}", i, NOW)
        g.settle_next(P, "s", i, f"id{i}", "i", i)
        if i % 5 == 4:
            g.checkpoint()
    assert g.status("id0", P) is None  # evicted
    for restart in (False, True):
        if restart:
            g.close()
            g = ReplayGuard.open(Home(tmp_path), "g", clock=lambda: NOW, window_ids=4)
        for i in range(12):  # the copies, at new offsets, with their original (sealed) sequence numbers
            assert not g.is_next(P, "i", "s", f"id{i}", i, NOW)
            with pytest.raises(ReplayError) as e:
                admit(g, f"id{i}", 100 + i, i)
            assert e.value.reason in ("out_of_order", "duplicate")
            assert e.value.reason == "out_of_order" or g.status(f"id{i}", P) == OK
    g.close()


def test_damaged_rows_hold_their_ids_at_no_position(tmp_path):
    """A seen row whose columns were damaged on disk: an id of another type is dropped (no event
    carries one), a position that is not one holds the id so that any copy is a duplicate."""
    import sqlite3

    g = ReplayGuard.open(Home(tmp_path), "g", clock=lambda: NOW)
    path = g._db.execute("PRAGMA database_list").fetchone()[2]
    g.close()
    db = sqlite3.connect(path)
    db.executemany("INSERT INTO seen(producer, id, stream, offset, status, at) VALUES (?, ?, ?, ?, ?, ?)",
                   [(P, "bad-offset", "s", "x", OK, NOW), (P, b"7", "s", 1, OK, NOW), (P, "ok", "s", 2, OK, NOW)])
    db.commit()
    db.close()
    g = ReplayGuard.open(Home(tmp_path), "g", clock=lambda: NOW)
    assert g.status("ok", P) == OK and g.status("7", P) is None
    with pytest.raises(ReplayError) as e:
        admit(g, "bad-offset", 0, 50, stream="s")
    assert e.value.reason == "duplicate"
    g.close()


def test_journal_survives_a_crash_and_a_torn_line(tmp_path):
    g = ReplayGuard.open(Home(tmp_path), "g")
    settle(g, "x", 0, 0)
    settle(g, "y", 1, 1)
    journal = next((tmp_path / "consumers").glob("*.journal"))
    import os

    os.write(g._fd, b'["torn", "s", 2')  # the process died mid-write
    os.close(g._fd)  # no checkpoint, no close: the flock goes with the process
    g._fd = None
    g._db.close()
    g._db = None
    g2 = ReplayGuard.open(Home(tmp_path), "g")
    assert g2.status("x", P) == g2.status("y", P) == OK and g2.status("torn", P) is None
    assert journal.read_bytes() == b""  # folded into SQLite
    with pytest.raises(ReplayError):
        admit(g2, "z", 2, 1)  # sequence state came back too
    g2.close()


def test_one_process_per_group_and_sane_windows(tmp_path):
    g = ReplayGuard.open(Home(tmp_path), "g")
    with pytest.raises(ConflictError):
        ReplayGuard.open(Home(tmp_path), "g")
    ReplayGuard.open(Home(tmp_path), "other").close()
    g.close()
    ReplayGuard.open(Home(tmp_path), "g").close()
    with pytest.raises(ConfigError):
        ReplayGuard.open(Home(tmp_path), "h", freshness=3600, window_seconds=600)


def test_duplicates_across_consumer_restarts_and_poll(world):
    with world.producer() as p:
        first = p.send(TYPE, customer(1), id="same")
    c = world.consumer()
    assert [e.id for e in c.poll()] == [first]
    c.close()
    with world.producer() as p:
        p.send(TYPE, customer(2), id="same")
        other = p.send(TYPE, customer(3))
    c2 = world.consumer()
    assert [e.id for e in c2.poll()] == [other]
    assert [d.reason for d in world.dlq().list(principal="billing")] == ["duplicate"]


def test_undeclared_types_are_left_alone_without_false_gaps(world):
    with world.producer() as p:
        ids = [p.send(TYPE, customer(i)) for i in range(3)]
    c = world.consumer(types={"SomethingElse"})
    got, stats = world.consume(c)
    assert got == [] and stats.skipped == 3 and stats.gaps == 0 and stats.dead_lettered == 0
    with world.producer() as p:
        more = p.send(TYPE, customer(3))
    c.types = frozenset({TYPE})
    got, stats = world.consume(c)
    assert [e.id for e in got] == [more] and stats.gaps == 0  # skipped seqs counted
    assert ids


def test_state_is_per_producer(tmp_path):
    """Instances, sequences and ids are the sender's choice: one producer's never bind another's."""
    g = ReplayGuard.open(Home(tmp_path), "g", clock=lambda: NOW)
    settle(g, "x", 0, 10**15, producer="intruder")  # claims instance "i" far ahead, and the id "x"
    assert admit(g, "x", 1, 0).verdict == NEW  # P's own "x" at seq 0 of instance "i"
    settle(g, "x", 1, 0)
    with pytest.raises(ReplayError) as e:
        admit(g, "x", 2, 1)
    assert e.value.reason == "duplicate"  # ...but P repeating its own id is still a replay
    with pytest.raises(ReplayError) as e:
        admit(g, "y", 2, 0)
    assert e.value.reason == "out_of_order"
    g.close()
    g = ReplayGuard.open(Home(tmp_path), "g", clock=lambda: NOW)  # the keying survives a restart
    assert g.status("x", P) == g.status("x", "intruder") == OK and g.status("x", "third") is None
    assert admit(g, "z", 3, 1).gap is None
    g.close()


def test_v1_state_migrates_without_losing_anything(tmp_path):
    """A guard written before the producer keying (SQLite schema v1, 7-field journal lines)."""
    import hashlib
    import sqlite3

    import orjson

    from eventward._internal.client.replay import SCHEMA_VERSION, group_dir

    base = group_dir(Home(tmp_path).ensure()) / hashlib.sha256(b"g").hexdigest()[:32]
    base.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(base.with_suffix(".db"))
    db.executescript(
        "CREATE TABLE seen(id TEXT PRIMARY KEY, stream TEXT NOT NULL, offset INTEGER NOT NULL, "
        "status TEXT NOT NULL, at REAL NOT NULL);"
        "CREATE INDEX seen_at ON seen(at);"
        "CREATE TABLE seqs(instance TEXT NOT NULL, stream TEXT NOT NULL, seq INTEGER NOT NULL, "
        "PRIMARY KEY(instance, stream));"
    )
    db.execute("INSERT INTO seen VALUES ('old', 's', 5, 'ok', ?)", (NOW - 60,))
    db.execute("INSERT INTO seqs VALUES ('i', 's', 7)")
    db.commit()
    db.close()
    base.with_suffix(".journal").write_bytes(orjson.dumps(["crashed", "s", 6, "ok", NOW - 1, "i", 8]) + b"\n")

    for _ in range(2):  # the migration, then a plain reopen of the migrated state
        g = ReplayGuard.open(Home(tmp_path), "g", clock=lambda: NOW)
        assert admit(g, "old", 5, 7).verdict == REDELIVERY  # the same stored record: not handed over again
        assert admit(g, "crashed", 6, 8).verdict == REDELIVERY
        with pytest.raises(ReplayError) as e:
            admit(g, "old", 9, 9)
        assert e.value.reason == "duplicate"
        with pytest.raises(ReplayError) as e:
            admit(g, "new", 9, 8)
        assert e.value.reason == "out_of_order"  # the sequence floor survived (from the journal)
        assert admit(g, "new", 9, 10).gap == (9, 10)
        g.close()
    db = sqlite3.connect(base.with_suffix(".db"))
    assert {r[1] for r in db.execute("PRAGMA table_info(seen)")} >= {"producer", "id"}
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("SELECT count(*) FROM seen WHERE producer = ''").fetchone()[0] == 1  # v1's row moved over
    logged = [e for (blob,) in db.execute("SELECT entries FROM seen_log") for e in orjson.loads(blob)]
    assert [(e[0], e[7]) for e in logged] == [("crashed", "")]  # the journal's, checkpointed under LEGACY
    db.close()
    assert base.with_suffix(".journal").read_bytes() == b""


def test_attack_replay_after_restart_is_refused_from_checkpoints_of_one_row_per_batch(tmp_path):
    """A checkpoint is one SQLite row per read batch (not one per event); after a restart the
    ids it holds still refuse a replay elsewhere, a redrive status written later wins, and a
    prune keeps what the window needs."""
    import sqlite3

    g = ReplayGuard.open(Home(tmp_path), "g", clock=lambda: NOW, window_ids=500)
    for b in range(4):
        for i in range(b * 300, (b + 1) * 300):
            assert g.is_next(P, "i", "s", f"id{i}", i, NOW)
            g.settle_next(P, "s", i, f"id{i}", "i", i)
        g.checkpoint()
    g.settle(producer=P, stream="s", offset=1199, event_id="id1199", instance="i", seq=1199, status="dlq",
             mode="redrive")
    g.checkpoint()
    path = g._db.execute("PRAGMA database_list").fetchone()[2]
    g.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM seen_log").fetchone()[0] == 5  # pruned at the first only
    assert db.execute("SELECT count(*) FROM seen").fetchone()[0] == 0
    db.close()
    g = ReplayGuard.open(Home(tmp_path), "g", clock=lambda: NOW, window_ids=500)
    assert g.status("id1199", P) == "dlq" and g.status("id1000", P) == OK
    assert not g.is_next(P, "i", "s", "id1100", 1200, NOW)  # a replayed id, with a fresh sequence number
    with pytest.raises(ReplayError) as e:
        admit(g, "id1100", 5000, 1200)
    assert e.value.reason == "duplicate"
    assert admit(g, "id1100", 1100, 1100).verdict == REDELIVERY  # the same stored record
    with pytest.raises(ReplayError) as e:
        admit(g, "new", 5000, 900)
    assert e.value.reason == "out_of_order"  # the sequence floor survived too
    from eventward._internal.log.sqlite import write_txn

    with write_txn(g._db, "prune") as txn:
        g._prune(txn)
    counts = [r[0] for r in g._db.execute("SELECT count FROM seen_log ORDER BY n")]
    assert sum(counts) >= 500 and sum(counts) - counts[0] < 500  # the window kept, nothing older
    g.close()
