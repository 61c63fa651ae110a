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
    g = ReplayGuard.open(Home(tmp_path), "g", window_ids=3)
    for i in range(5):
        settle(g, f"id{i}", i, i)
    assert [g.status(f"id{i}", P) for i in range(5)] == [None, None, OK, OK, OK]
    g.close()
    g = ReplayGuard.open(Home(tmp_path), "g", window_ids=3)
    assert [g.status(f"id{i}", P) for i in range(5)] == [None, None, OK, OK, OK]
    with pytest.raises(ReplayError):  # an evicted id is still caught by its sequence number
        admit(g, "id0", 99, 0)
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
