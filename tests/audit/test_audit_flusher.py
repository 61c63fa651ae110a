"""The audit log's flusher: one long-lived thread per open log appends buffered records once
their window passes. It replaced a Timer per window, whose start (Thread.start waits until the
new thread runs) blocked the recording thread 0.02-0.16 s per benchmark run under load."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from eventward._internal.audit import log as audit_log
from eventward._internal.audit.log import AuditLog
from support_wait import wait_until


def _stored(log: AuditLog) -> int:
    with sqlite3.connect(log.path) as peek:
        return int(peek.execute("SELECT count(*) FROM records").fetchone()[0])


def _flushers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "audit-flush"]


def test_one_flusher_thread_serves_every_window(home) -> None:
    before = set(_flushers())
    with AuditLog.open(home, flush_every=10_000, flush_ms=10) as log:
        seen = set()
        for i in range(5):
            log.record("Publish", principal="svc", resource="Topic::orders")
            assert wait_until(lambda i=i: _stored(log) == i + 1, what=f"window {i} flushed")
            seen |= set(_flushers()) - before
        assert len(seen) == 1  # the same thread flushed all five windows
        (flusher,) = seen
    assert wait_until(lambda: not flusher.is_alive(), what="the flusher ends when the log closes")


def test_records_of_a_window_are_appended_together_once_it_passes(home) -> None:
    with AuditLog.open(home, flush_every=10_000, flush_ms=300) as log:
        for _ in range(3):
            log.record("Publish", principal="svc", resource="Topic::orders")
        assert _stored(log) == 0  # still inside the window: buffered
        assert wait_until(lambda: _stored(log) == 3, what="the window flushed")


def test_an_idle_flusher_ends_and_the_next_record_starts_another(home, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_log, "_FLUSHER_IDLE_S", 0.05)
    with AuditLog.open(home, flush_every=10_000, flush_ms=5) as log:
        log.record("Publish", principal="svc", resource="Topic::orders")
        assert wait_until(lambda: _stored(log) == 1 and log._flusher is None, what="flushed, then idle")
        log.record("Publish", principal="svc", resource="Topic::orders")  # a new window: a new flusher
        assert wait_until(lambda: _stored(log) == 2, what="the second window flushed")


def test_close_appends_what_is_buffered_and_stops_the_flusher(home) -> None:
    log = AuditLog.open(home, flush_every=10_000, flush_ms=60_000)
    log.record("Publish", principal="svc", resource="Topic::orders")
    flusher = log._flusher
    assert flusher is not None and flusher.is_alive()
    log.close()
    assert wait_until(lambda: not flusher.is_alive(), what="the flusher ends")
    reopened = AuditLog.open(home)
    try:
        assert reopened.size() == 1
    finally:
        reopened.close()
