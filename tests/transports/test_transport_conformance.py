"""One conformance suite for every Transport: embedded SQLite, NATS JetStream, Kafka (mock).

Whatever runs underneath, the layers above rely on exactly these properties: exact bytes,
atomic batches, idempotent appends, dense per-stream offsets, isolated streams, durable
consumer-group positions, and no loss or duplication with concurrent producers.
"""

from __future__ import annotations

import os
import threading

import pytest

from eventward.errors import InputError, NotFoundError, OversizeError

from .conftest import Backend


def events(n: int, size: int = 40, tag: bytes = b"") -> list[bytes]:
    return [tag + os.urandom(size) for _ in range(n)]


def read_all(t, stream: str, chunk: int = 1000) -> list:
    out, pos = [], 0
    while True:
        got = t.read(stream, pos, chunk)
        if not got:
            return out
        out += got
        pos = got[-1].offset + 1


def test_round_trip_exact_bytes(backend: Backend) -> None:
    t = backend.open()
    s = backend.stream()
    t.create_stream(s)
    batch = [bytes(range(256)), b"\x00", b"\xff" * 3, "ünïcode ✓".encode(), os.urandom(1000)]
    seal = os.urandom(300)
    assert t.append(s, "batch-1", batch, seal) == 0
    recs = t.read(s, 0, 100)
    assert [r.data for r in recs] == batch
    assert [r.offset for r in recs] == list(range(len(batch)))
    assert [r.index for r in recs] == list(range(len(batch)))
    assert {r.batch for r in recs} == {"batch-1"} and {r.seal for r in recs} == {seal}
    assert {r.stream for r in recs} == {s}
    assert t.end_offset(s) == len(batch)
    # another instance (another process) sees exactly the same
    assert backend.open().read(s, 0, 100) == recs


def test_batches_are_visible_whole_or_not_at_all(backend: Backend) -> None:
    writer, reader = backend.open(), backend.open()
    s = backend.stream()
    writer.create_stream(s)
    size, batches = 7, 40
    seen_partial: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            recs = read_all(reader, s)
            if len(recs) % size or any(r.index != r.offset % size for r in recs):
                seen_partial.append(len(recs))

    th = threading.Thread(target=watch)
    th.start()
    try:
        for i in range(batches):
            writer.append(s, f"b{i}", events(size, tag=b"%d:" % i), b"seal%d" % i)
    finally:
        done.set()
        th.join(30)
    assert not seen_partial
    assert len(read_all(reader, s)) == size * batches


def test_refused_batches_store_nothing(backend: Backend) -> None:
    t = backend.open()
    s = backend.stream()
    t.create_stream(s)
    t.append(s, "ok", [b"a"], b"seal")
    with pytest.raises(InputError):
        t.append(s, "no-events", [], b"seal")
    with pytest.raises(InputError):
        t.append(s, "no-seal", [b"a"], b"")
    with pytest.raises(InputError):
        t.append(s, "x" * 201, [b"a"], b"seal")
    with pytest.raises((InputError, NotFoundError)):  # a malformed name can name no stream
        t.append("../etc", "b", [b"a"], b"seal")
    with pytest.raises(NotFoundError):
        t.append(backend.stream("missing"), "b", [b"a"], b"seal")
    assert t.end_offset(s) == 1 and [r.batch for r in read_all(t, s)] == ["ok"]


def test_append_is_idempotent_on_batch_id(backend: Backend) -> None:
    t = backend.open()
    s = backend.stream()
    t.create_stream(s)
    b1, b2 = events(3), events(2)
    assert t.append(s, "b1", b1, b"s1") == 0
    assert t.append(s, "b2", b2, b"s2") == 3
    assert t.append(s, "b1", b1, b"s1") == 0  # a producer retry: original offset, nothing stored
    assert t.append(s, "b2", b2, b"s2") == 3
    other = backend.open()  # a retry from another instance that never saw b1 being stored
    assert other.append(s, "b1", b1, b"s1") == 0
    assert t.append(s, "b3", [b"z"], b"s3") == 5
    for view in (t, other, backend.open()):
        recs = read_all(view, s)
        assert [r.batch for r in recs] == ["b1"] * 3 + ["b2"] * 2 + ["b3"]
        assert [r.offset for r in recs] == list(range(6))
        assert view.end_offset(s) == 6


def test_offsets_are_dense_and_match_appends(backend: Backend) -> None:
    t = backend.open()
    s = backend.stream()
    t.create_stream(s)
    sizes = [1, 5, 2, 9, 1, 1, 13, 4]
    firsts = [t.append(s, f"b{i}", events(n), b"seal") for i, n in enumerate(sizes)]
    assert firsts == [sum(sizes[:i]) for i in range(len(sizes))]
    recs = read_all(t, s, chunk=3)
    assert [r.offset for r in recs] == list(range(sum(sizes)))
    assert t.end_offset(s) == sum(sizes)


def test_read_from_the_middle_of_a_batch(backend: Backend) -> None:
    t = backend.open()
    s = backend.stream()
    t.create_stream(s)
    a, b = events(10, tag=b"a"), events(10, tag=b"b")
    t.append(s, "A", a, b"sa")
    t.append(s, "B", b, b"sb")
    fresh = backend.open()  # no cached position: a seek
    for view in (t, fresh):
        mid = view.read(s, 13, 4)
        assert [r.data for r in mid] == b[3:7] and [r.index for r in mid] == [3, 4, 5, 6]
        assert {r.batch for r in mid} == {"B"} and {r.seal for r in mid} == {b"sb"}
        across = view.read(s, 8, 4)
        assert [r.data for r in across] == a[8:] + b[:2]
        assert [(r.batch, r.index) for r in across] == [("A", 8), ("A", 9), ("B", 0), ("B", 1)]
    assert t.read(s, -5, 2)[0].offset == 0
    assert t.read(s, 20, 10) == [] and t.read(s, 999, 10) == []
    assert t.read(s, 0, 0) == []


def test_streams_are_isolated(backend: Backend) -> None:
    t = backend.open()
    s1, s2 = backend.stream("iso"), backend.stream("iso")
    t.create_stream(s1)
    t.create_stream(s1)  # idempotent
    t.create_stream(s2)
    for i in range(5):
        assert t.append(s1, f"x{i}", [b"one-%d" % i], b"s") == i
        assert t.append(s2, f"x{i}", [b"two-%d" % i, b"two-%db" % i], b"s") == 2 * i  # same batch ids
    assert [r.data for r in read_all(t, s1)] == [b"one-%d" % i for i in range(5)]
    assert all(r.data.startswith(b"two-") and r.stream == s2 for r in read_all(t, s2))
    assert (t.end_offset(s1), t.end_offset(s2)) == (5, 10)
    assert {s1, s2} <= set(t.streams())
    assert t.has_stream(s1) and t.has_stream(s2) and not t.has_stream(s1 + "-absent")
    t.commit("g", s1, 3)
    assert t.committed("g", s2) is None


def test_consumer_groups_commit_and_resume(backend: Backend) -> None:
    t = backend.open()
    s = backend.stream()
    t.create_stream(s)
    t.append(s, "b", events(10), b"seal")
    assert t.committed("billing", s) is None
    t.commit("billing", s, 4)  # inside the batch: the exact event offset is kept
    t.commit("audit", s, 10)
    assert t.committed("billing", s) == 4 and t.committed("audit", s) == 10
    t.commit("billing", s, 7)
    other = backend.open()  # a restarted consumer
    assert other.committed("billing", s) == 7
    assert [r.offset for r in other.read(s, other.committed("billing", s), 100)] == [7, 8, 9]
    assert other.committed("nobody", s) is None


def test_end_offset(backend: Backend) -> None:
    t = backend.open()
    s = backend.stream()
    assert t.end_offset(backend.stream("never")) == 0
    t.create_stream(s)
    assert t.end_offset(s) == 0
    t.append(s, "a", events(3), b"s")
    assert t.end_offset(s) == 3
    backend.open().append(s, "b", events(4), b"s")
    assert t.end_offset(s) == 7


def test_many_small_batches(backend: Backend) -> None:
    t = backend.open()
    s = backend.stream()
    t.create_stream(s)
    n = 300
    for i in range(n):
        assert t.append(s, f"one-{i}", [b"e%d" % i], b"s%d" % i) == i
    recs = read_all(backend.open(), s, chunk=7)
    assert [r.data for r in recs] == [b"e%d" % i for i in range(n)]
    assert [r.seal for r in recs] == [b"s%d" % i for i in range(n)]


def test_large_batch_near_the_limit(backend: Backend) -> None:
    t = backend.open()
    s = backend.stream()
    t.create_stream(s)
    event_size = 50_000
    n = int(backend.batch_limit * 0.9) // event_size
    batch = events(n, size=event_size)
    seal = os.urandom(16 * 1024)
    assert t.append(s, "big", batch, seal) == 0
    recs = backend.open().read(s, 0, n + 1)
    assert len(recs) == n and [r.data for r in recs] == batch and recs[-1].seal == seal


@pytest.mark.parametrize("backend", ["nats", "kafka"], indirect=True)
def test_oversize_batch_is_refused_and_stores_nothing(backend: Backend) -> None:
    t = backend.open()
    s = backend.stream()
    t.create_stream(s)
    with pytest.raises(OversizeError) as e:
        t.append(s, "huge", [os.urandom(100_000)] * (backend.batch_limit // 100_000 + 2), b"seal")
    assert "huge" not in e.value.message  # names sizes, never content or ids
    assert t.end_offset(s) == 0 and t.read(s, 0, 10) == []
    assert t.append(s, "next", [b"fits"], b"seal") == 0


def test_concurrent_producers_lose_and_duplicate_nothing(backend: Backend) -> None:
    s = backend.stream()
    backend.open().create_stream(s)
    producers, per = 4, 20
    acked: dict[str, tuple[int, int]] = {}  # batch id -> (first offset, count)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def produce(p: int) -> None:
        t = backend.open()
        try:
            for i in range(per):
                bid, n = f"p{p}-{i}", 1 + (p + i) % 5
                batch = [b"%s:%d" % (bid.encode(), k) for k in range(n)]
                first = t.append(s, bid, batch, bid.encode())
                if i % 4 == 0:  # a producer retry racing the others: must change nothing
                    assert t.append(s, bid, batch, bid.encode()) == first
                with lock:
                    acked[bid] = (first, n)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors
    recs = read_all(backend.open(), s)
    total = sum(n for _, n in acked.values())
    assert len(acked) == producers * per and len(recs) == total
    assert [r.offset for r in recs] == list(range(total))
    for bid, (first, n) in acked.items():
        mine = recs[first : first + n]
        assert [r.batch for r in mine] == [bid] * n and [r.index for r in mine] == list(range(n))
        assert [r.data for r in mine] == [b"%s:%d" % (bid.encode(), k) for k in range(n)]
