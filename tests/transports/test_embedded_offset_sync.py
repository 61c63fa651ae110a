"""The embedded log fsyncs a group's offset commit at least once per OFFSET_SYNC_S of commits;
the ones in between survive kill -9, and appends never lose their fsync."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from eventward._internal.log import embedded
from eventward._internal.log.embedded import EmbeddedLog
from eventward.errors import TransportUnavailable

FULL = 2


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _log(tmp_path: Path) -> tuple[EmbeddedLog, _Clock, list[str]]:
    log = EmbeddedLog(tmp_path / "log.db")
    clock = _Clock()
    log._clock = clock
    log.create_stream("orders")
    statements: list[str] = []
    log._db.set_trace_callback(statements.append)
    return log, clock, statements


def _relaxed(statements: list[str]) -> int:
    return sum(1 for s in statements if s == "PRAGMA synchronous=NORMAL")


def test_offset_commits_are_fsynced_once_per_interval(tmp_path: Path) -> None:
    log, clock, statements = _log(tmp_path)
    try:
        log.commit("g", "orders", 1)  # the first commit: fsynced
        assert _relaxed(statements) == 0
        for off in range(2, 12):  # a burst within the interval: written, not fsynced
            log.commit("g", "orders", off)
        assert _relaxed(statements) == 10
        clock.now += embedded.OFFSET_SYNC_S
        statements.clear()
        log.commit("g", "orders", 12)  # the interval has passed: fsynced again
        assert _relaxed(statements) == 0
        assert log.committed("g", "orders") == 12
        assert log._db.execute("PRAGMA synchronous").fetchone()[0] == FULL  # appends keep their fsync
    finally:
        log.close()


def test_a_failed_relaxed_commit_leaves_appends_fsynced(tmp_path: Path) -> None:
    log, _, _ = _log(tmp_path)
    try:
        log.commit("g", "orders", 1)
        log._db.execute("DROP TABLE offsets")  # the next (relaxed) commit fails inside its transaction
        with pytest.raises(TransportUnavailable, match="commit offset for orders"):
            log.commit("g", "orders", 2)
        assert log._db.execute("PRAGMA synchronous").fetchone()[0] == FULL
        assert not log._db.in_transaction
    finally:
        log.close()


_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from eventward._internal.log.embedded import EmbeddedLog
    log = EmbeddedLog(Path(sys.argv[1]))
    log.create_stream("orders")
    for off in range(1, 8):  # 1 fsynced, 2..7 relaxed (well within one interval)
        log.commit("g", "orders", off)
    print("committed", flush=True)
    time.sleep(60)
    """
)


def test_kill_9_after_relaxed_commits_loses_no_offset(tmp_path: Path) -> None:
    """A consumer killed right after relaxed commits resumes at its last commit: nothing it
    handled is delivered again as new, nothing after it is skipped."""
    db = tmp_path / "log.db"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(db)], stdout=subprocess.PIPE, text=True, env={**os.environ}
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "committed"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    log = EmbeddedLog(db)
    try:
        assert log.committed("g", "orders") == 7
    finally:
        log.close()
