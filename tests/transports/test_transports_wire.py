"""The one-message-per-batch wire format and the bounded retry policy both transports use."""

from __future__ import annotations

import asyncio
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventward._internal.log import framing, retry
from eventward._internal.log.base import Record
from eventward._internal.log.retry import Backoff, Retry, retry_async, retry_sync
from eventward.errors import InputError, TransportError, TransportUnavailable

batch_ids = st.text(min_size=1, max_size=framing.MAX_BATCH_ID)
event_lists = st.lists(st.binary(max_size=300), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(batch_ids, event_lists, st.binary(min_size=1, max_size=200))
def test_round_trip_is_exact(batch_id: str, events: list[bytes], seal: bytes) -> None:
    got = framing.decode(framing.encode(batch_id, events, seal), "test")
    assert (got.batch_id, got.events, got.seal) == (batch_id, events, seal)


@settings(max_examples=80, deadline=None)
@given(batch_ids, event_lists, st.binary(min_size=1, max_size=50), st.data())
def test_truncated_or_extended_messages_are_refused(batch_id, events, seal, data) -> None:
    wire = framing.encode(batch_id, events, seal)
    cut = data.draw(st.integers(0, len(wire) - 1))
    with pytest.raises(TransportError):
        framing.decode(wire[:cut], "test")
    with pytest.raises(TransportError):
        framing.decode(wire + data.draw(st.binary(min_size=1, max_size=10)), "test")


def test_header_fields_are_checked() -> None:
    wire = bytearray(framing.encode("b", [b"abc", b"de"], b"seal"))
    for mutate in (
        lambda w: w.__setitem__(slice(0, 4), b"EWB2"),  # magic
        lambda w: w.__setitem__(slice(6, 10), struct.pack(">I", 0)),  # zero events
        lambda w: w.__setitem__(slice(10, 14), struct.pack(">I", 0)),  # no seal
        lambda w: w.__setitem__(slice(15, 19), struct.pack(">I", 4)),  # first event length lies
        lambda w: w.__setitem__(slice(4, 6), struct.pack(">H", 0)),  # empty batch id
    ):
        bad = bytearray(wire)
        mutate(bad)
        with pytest.raises(TransportError):
            framing.decode(bytes(bad), "stream s sequence 9")


def test_error_names_the_place_never_the_content() -> None:
    with pytest.raises(TransportError) as e:
        framing.decode(b"EWB1" + b"customer-4711-ssn-123", "stream orders sequence 3")
    assert "stream orders sequence 3" in e.value.message and "4711" not in e.value.message


@pytest.mark.parametrize(
    ("batch_id", "events", "seal"),
    [
        ("", [b"a"], b"s"),
        ("b", [], b"s"),
        ("b", [b"a"], b""),
        ("x" * 201, [b"a"], b"s"),
        ("b", ["str"], b"s"),
    ],
)
def test_malformed_batches_are_input_errors(batch_id, events, seal) -> None:
    with pytest.raises(InputError):
        framing.encode(batch_id, events, seal)


@pytest.mark.parametrize("bad", ["str", None, 7, [b"a"]])
def test_one_event_that_is_not_bytes_among_bytes_is_refused_by_its_index(bad: object) -> None:
    events: list[object] = [b"a", bytearray(b"b"), memoryview(b"c"), b"d"]
    framing.check("b", events, b"s")  # bytes-like of every kind pass
    events.insert(2, bad)
    with pytest.raises(InputError, match="event 2 of the batch is not bytes"):
        framing.encode("b", events, b"s")  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(event_lists, st.integers(0, 10**12), st.integers(0, 45), st.none() | st.integers(0, 45))
def test_records_are_the_events_from_start_with_offsets_and_indexes(
    events: list[bytes], first: int, start: int, limit: int | None
) -> None:
    batch = framing.Batch("b-1", events, b"seal")
    stop = len(events) if limit is None else min(len(events), start + limit)
    expected = [Record("s", first + i, events[i], "b-1", i, b"seal") for i in range(start, stop)]
    got = batch.records("s", first, start, limit)
    assert got == expected and all(type(r) is Record for r in got)


def test_backoff_is_jittered_exponential_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]  # an injected clock: sleeping advances it exactly, however loaded the machine is
    monkeypatch.setattr(retry.time, "monotonic", lambda: now[0])
    b = Backoff(base_s=0.01, cap_s=0.08, budget_s=0.5)
    delays = []
    for d in b.delays():
        delays.append(d)
        now[0] += d
    assert sum(delays) <= 0.5  # never sleeps past the budget
    assert now[0] - 1000.0 > 0.5 - 0.08  # and stops only when the next delay could overrun it
    assert len(delays) >= 5 and all(0 <= d <= 0.08 for d in delays)
    assert delays[0] <= 0.01 and delays[1] <= 0.02 and delays[2] <= 0.04  # doubling ceilings
    assert len(set(delays)) > 1  # jitter


def test_retry_rides_out_transient_failures_and_gives_up_after_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]  # injected clock: sleeping advances it, so the budget check cannot race the machine

    def sleep(d: float) -> None:
        now[0] += d

    async def asleep(d: float) -> None:
        now[0] += d

    monkeypatch.setattr(retry.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(retry.time, "sleep", sleep)
    monkeypatch.setattr(retry.asyncio, "sleep", asleep)
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise Retry("leader election")
        return "ok"

    assert retry_sync("op", flaky, Backoff(0.001, 0.01, 5)) == "ok" and len(calls) == 4

    def down() -> None:
        raise Retry("no responders")

    t0 = now[0]
    with pytest.raises(TransportUnavailable) as e:
        retry_sync("append to orders", down, Backoff(0.01, 0.05, 0.3))
    assert 0.3 - 0.05 < now[0] - t0 <= 0.3  # slept through the budget, never past it
    assert "append to orders" in e.value.message and "no responders" in e.value.message
    assert e.value.details["attempts"] > 1

    async def adown() -> None:
        raise Retry("timeout")

    t0 = now[0]
    with pytest.raises(TransportUnavailable):
        asyncio.run(retry_async("read", adown, Backoff(0.01, 0.05, 0.2)))
    assert 0.2 - 0.05 < now[0] - t0 <= 0.2


def test_non_transient_errors_are_not_retried() -> None:
    calls = []

    def refuse() -> None:
        calls.append(1)
        raise InputError("bad")

    with pytest.raises(InputError):
        retry_sync("op", refuse, Backoff(0.001, 0.01, 5))
    assert calls == [1]
