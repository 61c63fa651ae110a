"""The replay journal as a shared memory mapping: kill -9, torn tails, NULs, growth, upgrade, fallback.

A crash is simulated in-process by dropping the guard without a checkpoint or close (its flock'ed
descriptor closed, as the kernel does for a killed process; its mapping left as it was), and for
real with a child process that SIGKILLs itself."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from eventward._internal.client import replay
from eventward._internal.client.replay import LIVE, OK, REDELIVERY, ReplayGuard, group_dir
from eventward._internal.home import Home
from eventward.errors import ReplayError

NOW = 1_800_000_000.0
P = "signup-svc"

CHILD = r"""
import os, signal, sys
from pathlib import Path
from eventward._internal.client.replay import OK, ReplayGuard
from eventward._internal.home import Home

home, n, long_id = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
g = ReplayGuard.open(Home(home), "g", clock=lambda: 1_800_000_000.0)
for i in range(n):
    if i % 2:
        g.settle_next("signup-svc", "s", i, f"e{i}", "i", i)
    else:
        g.settle(producer="signup-svc", stream="s", offset=i, event_id=f"e{i}", instance="i", seq=i, status=OK)
if long_id:
    g.settle_next("signup-svc", "s", n, "L" * long_id, "i", n)
assert g.fallback is None, g.fallback
sys.stdout.write(f"{g._size}\n")
sys.stdout.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


def guard(tmp_path: Path) -> ReplayGuard:
    return ReplayGuard.open(Home(tmp_path), "g", clock=lambda: NOW)


def journal_of(tmp_path: Path) -> Path:
    return (group_dir(Home(tmp_path)) / hashlib.sha256(b"g").hexdigest()[:32]).with_suffix(".journal")


def settle(g: ReplayGuard, eid: str, offset: int, seq: int, producer: str = P, stream: str = "s") -> None:
    g.settle_next(producer, stream, offset, eid, "i", seq)


def crash(g: ReplayGuard) -> None:
    """The process dies: no checkpoint, no close; its flock goes, its mapped lines stay in the file."""
    assert g._fd is not None and g._db is not None
    os.close(g._fd)
    g._fd = None
    g._db.close()
    g._db = None


def logged(tmp_path: Path) -> list[list]:
    """Every entry checkpointed into ``seen_log``, in order."""
    db = sqlite3.connect(journal_of(tmp_path).with_suffix(".db"))
    try:
        return [e for (blob,) in db.execute("SELECT entries FROM seen_log ORDER BY n") for e in orjson.loads(blob)]
    finally:
        db.close()


def line(eid: str, offset: int, seq: int, producer: str = P, status: str = OK) -> bytes:
    return orjson.dumps([eid, "s", offset, status, NOW, "i", seq, producer], option=orjson.OPT_APPEND_NEWLINE)


def run_child(tmp_path: Path, n: int, long_id: int = 0) -> int:
    env = {**os.environ, "PYTHONPATH": str(Path(replay.__file__).parents[3])}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), str(n), str(long_id)],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return int(proc.stdout)


def test_kill_9_right_after_settling_recovers_exactly_what_was_settled(tmp_path):
    size = run_child(tmp_path, 1000)
    assert size == replay._STEP  # it wrote through the mapping, never fell back
    raw = journal_of(tmp_path).read_bytes()
    assert len(raw) == replay._STEP and raw.count(b"\n") == 1000  # the lines, then zeros
    g = guard(tmp_path)
    assert all(g.status(f"e{i}", P) == OK for i in range(1000)) and g.status("e1000", P) is None
    assert [e[0] for e in logged(tmp_path)] == [f"e{i}" for i in range(1000)]  # exactly those, once each
    assert journal_of(tmp_path).read_bytes() == b""  # folded into SQLite
    assert g.admit(producer=P, stream="s", offset=3, event_id="e3", instance="i", seq=3,
                   sealed_at=NOW, mode=LIVE).verdict == REDELIVERY
    with pytest.raises(ReplayError) as e:
        g.admit(producer=P, stream="s", offset=1000, event_id="new", instance="i", seq=999, sealed_at=NOW)
    assert e.value.reason == "out_of_order"  # the sequence floor came back too
    g.close()


def test_kill_9_after_growing_past_the_first_step_with_a_very_long_id(tmp_path):
    """A line longer than the whole first step is written whole, into a mapping grown for it."""
    long_id = 3 * replay._STEP
    size = run_child(tmp_path, 50, long_id)
    assert size == 4 * replay._STEP  # doubled until the line fit
    g = guard(tmp_path)
    assert all(g.status(f"e{i}", P) == OK for i in range(50)) and g.status("L" * long_id, P) == OK
    assert len(logged(tmp_path)) == 51
    g.close()


def test_growth_in_process_keeps_earlier_lines_and_checkpoint_reuses_offset_0(tmp_path):
    g = guard(tmp_path)
    settle(g, "a", 0, 0)
    first = g._pos
    settle(g, "x" * (replay._STEP + 10), 1, 1)
    assert g._size == 2 * replay._STEP and g.fallback is None
    g.checkpoint()
    assert g._pos == 0 and g._mm[: 2 * replay._STEP] == bytes(2 * replay._STEP)  # all zero again
    settle(g, "b", 2, 2)
    assert g._mm[: g._pos] == line("b", 2, 2) and g._pos < first + 8  # at offset 0
    crash(g)
    g = guard(tmp_path)
    assert g.status("a", P) == g.status("b", P) == g.status("x" * (replay._STEP + 10), P) == OK
    assert [e[0] for e in logged(tmp_path)][-1:] == ["b"] and len(logged(tmp_path)) == 3  # b recovered, once
    g.close()


@pytest.mark.parametrize(
    "tear",
    [
        lambda ln: ln[: len(ln) // 2],  # the copy stopped half way
        lambda ln: ln[:-2],  # all but the closing bracket and newline
        lambda ln: ln[:8] + bytes(len(ln) - 16) + ln[-8:],  # head and tail stored, the middle not yet
        lambda ln: bytes(8) + ln[8:],  # everything but the head
    ],
)
def test_torn_tail_is_dropped_and_the_lines_before_it_recover(tmp_path, tear):
    g = guard(tmp_path)
    settle(g, "x", 0, 0)
    settle(g, "y", 1, 1)
    torn = tear(line("torn", 2, 2))
    g._mm[g._pos : g._pos + len(torn)] = torn  # the kill came in the middle of the copy
    crash(g)
    g = guard(tmp_path)
    assert g.status("x", P) == g.status("y", P) == OK and g.status("torn", P) is None
    assert [e[0] for e in logged(tmp_path)] == ["x", "y"]
    assert g.admit(producer=P, stream="s", offset=2, event_id="torn", instance="i", seq=2,
                   sealed_at=NOW).verdict == "new"  # the torn event was never settled: delivered again
    g.close()


def test_a_whole_last_line_without_its_newline_counts_as_settled(tmp_path):
    """As with ``write``: the entry is complete, only its newline was not stored yet."""
    g = guard(tmp_path)
    settle(g, "x", 0, 0)
    whole = line("y", 1, 1)[:-1]
    g._mm[g._pos : g._pos + len(whole)] = whole
    crash(g)
    g = guard(tmp_path)
    assert g.status("x", P) == g.status("y", P) == OK
    g.close()


def test_a_nul_in_sender_chosen_strings_is_escaped_and_does_not_cut_recovery(tmp_path):
    eid, stream, producer = "a\x00b", "s\x00t", "p\x00q"
    assert b"\x00" not in orjson.dumps([eid, stream, producer])  # escaped as \u0000
    g = guard(tmp_path)
    settle(g, eid, 0, 0, producer=producer, stream=stream)
    settle(g, "after", 1, 1)
    assert b"\x00" not in g._mm[: g._pos] and b"\\u0000" in g._mm[: g._pos]
    crash(g)
    g = guard(tmp_path)
    assert g.status(eid, producer) == OK and g.status("after", P) == OK  # the line after it too
    assert g.status("a", producer) is None
    g.close()


def test_old_format_journal_written_with_write_recovers(tmp_path):
    """Upgrade: a journal of the os.write version ends at EOF, no padding, maybe a torn line."""
    journal_of(tmp_path).parent.mkdir(parents=True, exist_ok=True)
    journal_of(tmp_path).write_bytes(line("a", 0, 0) + line("b", 1, 1) + line("torn", 2, 2)[:20])
    g = guard(tmp_path)
    assert g.status("a", P) == g.status("b", P) == OK and g.status("torn", P) is None
    assert journal_of(tmp_path).read_bytes() == b""
    settle(g, "c", 2, 2)  # and the upgraded guard journals through the mapping
    assert g._mm is not None and g.fallback is None
    g.close()
    assert journal_of(tmp_path).read_bytes() == b""  # a clean close leaves no padding behind
    assert [e[0] for e in logged(tmp_path)] == ["a", "b", "c"]


@pytest.mark.parametrize("head", [b"", line("a", 0, 0)], ids=["zeros-first", "a-line-first"])
def test_attack_bytes_after_the_nul_padding_are_never_replayed_into_state(tmp_path, caplog, head):
    """Only the lines before the first NUL are the guard's. A line placed after the padding (to
    pre-claim an id as dead-lettered, or raise a sequence floor) is ignored, and the file is
    emptied, so it cannot join the journal later: here it sits exactly where the next run's
    first line ends, which would glue it onto that line's newline if it were left in place."""
    journal_of(tmp_path).parent.mkdir(parents=True, exist_ok=True)
    forged = line("forged", 9, 10**15, status="dlq")
    gap = len(line("e1", 1, 1)) - len(head)
    assert gap >= 1
    journal_of(tmp_path).write_bytes(head + bytes(gap) + forged + bytes(100))
    with caplog.at_level(logging.WARNING, logger="eventward.replay"):
        g = guard(tmp_path)
    assert "bytes after its end ignored" in caplog.text and "forged" not in caplog.text
    assert g.status("a", P) == (OK if head else None) and g.status("forged", P) is None
    assert g.admit(producer=P, stream="s", offset=1, event_id="e1", instance="i", seq=1, sealed_at=NOW).gap is None
    assert journal_of(tmp_path).read_bytes() == b""
    settle(g, "e1", 1, 1)
    crash(g)
    g = guard(tmp_path)
    assert g.status("e1", P) == OK and g.status("forged", P) is None
    with pytest.raises(ReplayError):
        g.admit(producer=P, stream="s", offset=2, event_id="e2", instance="i", seq=1, sealed_at=NOW)
    assert g.admit(producer=P, stream="s", offset=2, event_id="e2", instance="i", seq=2, sealed_at=NOW).gap is None
    for i in range(2, 200):  # lines now run far past the offset the forged one sat at
        settle(g, f"e{i}", i, i)
    crash(g)
    g = guard(tmp_path)
    assert g.status("forged", P) is None and g.status("e199", P) == OK
    assert "forged" not in {e[0] for e in logged(tmp_path)}
    g.close()


def test_attack_forged_line_behind_the_zeroed_region_after_a_checkpoint_is_not_replayed(tmp_path):
    """A checkpoint zeroes only what was written: bytes past it that are not zero (put there by
    someone else while the group ran) still sit after the first NUL and are never read."""
    g = guard(tmp_path)
    settle(g, "a", 0, 0)
    fd = os.open(journal_of(tmp_path), os.O_WRONLY)
    os.pwrite(fd, line("forged", 9, 10**15), 8192)
    os.close(fd)
    g.checkpoint()
    settle(g, "b", 1, 1)
    crash(g)
    g = guard(tmp_path)
    assert g.status("b", P) == OK and g.status("forged", P) is None
    g.close()


def test_fallback_when_the_file_cannot_be_mapped(tmp_path, monkeypatch, caplog):
    def refuse(*a, **k):
        raise OSError(errno.ENODEV, "No such device")

    monkeypatch.setattr(replay.mmap, "mmap", refuse)
    g = guard(tmp_path)
    with caplog.at_level(logging.WARNING, logger="eventward.replay"):
        settle(g, "a", 0, 0)
    assert g.fallback == "OSError: No such device" and "No such device" in caplog.text
    settle(g, "b", 1, 1)
    assert journal_of(tmp_path).read_bytes() == line("a", 0, 0) + line("b", 1, 1)  # plain appends
    g.checkpoint()
    assert journal_of(tmp_path).read_bytes() == b""
    settle(g, "c", 2, 2)
    crash(g)
    g = guard(tmp_path)
    assert g.status("a", P) == g.status("b", P) == g.status("c", P) == OK
    g.close()


def test_fallback_when_growth_fails_mid_run_keeps_every_line(tmp_path, monkeypatch):
    """A full disk when the mapping must grow: the padding is cut off and lines are appended
    after the mapped ones, so recovery (up to the first NUL or EOF) reads them all."""
    g = guard(tmp_path)
    settle(g, "a", 0, 0)
    assert g._mm is not None

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(replay.os, "posix_fallocate", full)
    settle(g, "x" * replay._STEP, 1, 1)  # needs more room than the mapping has
    assert g.fallback == "OSError: No space left on device" and g._mm is None
    settle(g, "b", 2, 2)
    assert b"\x00" not in journal_of(tmp_path).read_bytes()
    crash(g)
    monkeypatch.undo()
    g = guard(tmp_path)
    assert g.status("a", P) == g.status("x" * replay._STEP, P) == g.status("b", P) == OK
    g.close()


def test_flock_still_keeps_one_process_per_group_and_close_releases_it(tmp_path):
    from eventward.errors import ConflictError

    g = guard(tmp_path)
    settle(g, "a", 0, 0)  # mapped: the mapping's own descriptor must not hold or break the lock
    with pytest.raises(ConflictError):
        guard(tmp_path)
    g.close()
    guard(tmp_path).close()
