"""The embedded SQLite log: dense offsets, atomic idempotent batches, groups, many processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from eventward._internal.home import Home
from eventward._internal.log.embedded import EmbeddedLog
from eventward.errors import InputError, NotFoundError


@pytest.fixture
def log(tmp_path):
    lg = EmbeddedLog.open(Home(tmp_path))
    yield lg
    lg.close()


def test_offsets_are_dense_and_batches_keep_their_seal(log):
    log.create_stream("s")
    assert log.append("s", "b1", [b"a", b"b"], b"SEAL1") == 0
    assert log.append("s", "b2", [b"c"], b"SEAL2") == 2
    recs = log.read("s", 0, 10)
    assert [(r.offset, r.data, r.batch, r.index, r.seal) for r in recs] == [
        (0, b"a", "b1", 0, b"SEAL1"),
        (1, b"b", "b1", 1, b"SEAL1"),
        (2, b"c", "b2", 0, b"SEAL2"),
    ]
    assert log.end_offset("s") == 3
    assert [r.offset for r in log.read("s", 1, 1)] == [1]


def test_append_is_idempotent_on_batch_id(log):
    log.create_stream("s")
    first = log.append("s", "b1", [b"a", b"b"], b"SEAL")
    again = log.append("s", "b1", [b"a", b"b"], b"SEAL")
    assert first == again == 0
    assert log.end_offset("s") == 2 and len(log.read("s", 0, 10)) == 2


def test_missing_stream_and_bad_input_store_nothing(log):
    with pytest.raises(NotFoundError):
        log.append("nope", "b1", [b"a"], b"SEAL")
    log.create_stream("s")
    with pytest.raises(InputError):
        log.append("s", "", [b"a"], b"SEAL")
    with pytest.raises(InputError):
        log.append("s", "b", [], b"SEAL")
    with pytest.raises(InputError):
        log.create_stream("bad name!")
    assert log.end_offset("s") == 0 and log.read("s", 0, 10) == []


def test_failed_batch_is_rolled_back_whole(log, tmp_path):
    import sqlite3

    from eventward.errors import TransportError

    log.create_stream("s")
    with pytest.raises(InputError):
        log.append("s", "b1", [b"a", "text"], b"SEAL")  # second event is not bytes
    raw = sqlite3.connect(log.path, isolation_level=None)
    raw.execute("INSERT INTO events VALUES ('s', 1, 999, 0, x'00')")  # a row planted at offset 1
    with pytest.raises(TransportError):
        log.append("s", "b1", [b"a", b"b"], b"SEAL")  # the second insert collides mid-transaction
    assert [r.offset for r in log.read("s", 0, 10)] == [1] and log.end_offset("s") == 0
    raw.execute("DELETE FROM events")
    assert log.append("s", "b1", [b"a", b"b"], b"SEAL") == 0  # the batch id was not burnt


def test_group_offsets_and_stream_admin(log):
    log.create_stream("s")
    log.create_stream("s")  # idempotent
    log.create_stream("t")
    assert log.streams() == ["s", "t"]
    assert log.committed("g", "s") is None
    log.commit("g", "s", 5)
    log.commit("g", "s", 7)
    assert log.committed("g", "s") == 7 and log.committed("h", "s") is None
    assert log.groups() == [("g", "s", 7)]


def test_concurrent_processes_never_share_an_offset(tmp_path):
    EmbeddedLog.open(Home(tmp_path)).create_stream("s")
    script = textwrap.dedent(f"""
        import sys
        from eventward._internal.home import Home
        from eventward._internal.log.embedded import EmbeddedLog
        log = EmbeddedLog.open(Home.resolve({str(tmp_path)!r}))
        tag = sys.argv[1]
        for i in range(40):
            log.append("s", f"{{tag}}-{{i}}", [f"{{tag}}-{{i}}-{{j}}".encode() for j in range(3)], b"SEAL")
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, t]) for t in ("p", "q")]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    log = EmbeddedLog.open(Home(tmp_path))
    recs = log.read("s", 0, 1000)
    assert [r.offset for r in recs] == list(range(240))
    assert len({r.data for r in recs}) == 240
    for r in recs:  # every batch is contiguous and in order
        tag, i, j = r.data.decode().split("-")
        assert r.batch == f"{tag}-{i}" and r.index == int(j)
        assert recs[r.offset - r.index].data == f"{tag}-{i}-0".encode()
