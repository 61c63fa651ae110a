"""Crashes: kill -9 a producer mid-stream and a consumer between handler and commit."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from eventward._internal import envelope
from eventward._internal.crypto import seal as sealing
from eventward._internal.home import Home
from eventward._internal.keys.service import KeyService

from .client_world import READER, TOPIC, TYPE, World, customer, grants

PROC = str(Path(__file__).with_name("client_proc.py"))


def test_kill_9_producer_loses_no_acknowledged_event_and_shows_no_partial_batch(world):
    proc = subprocess.Popen(
        [sys.executable, PROC, "produce", str(world.home.root)], stdout=subprocess.PIPE, text=True
    )
    acked = []
    try:
        while len(acked) < 700:
            line = proc.stdout.readline()
            assert line, "producer exited early"
            acked.append(line.strip())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    recs = world.log.read(TOPIC, 0, 100_000)
    ids = [envelope.decode(r.data)["id"] for r in recs]
    counts = defaultdict(int)
    for i in ids:
        counts[i] += 1
    assert all(counts[a] == 1 for a in acked)  # every acknowledged id exactly once
    assert len(ids) == len(set(ids))
    by_batch = defaultdict(list)
    for r in recs:
        by_batch[r.batch].append(r)
    verifier = world.verifier()
    for rs in by_batch.values():  # every stored batch is whole and verifies
        s = sealing.parse(rs[0].seal)
        assert [r.index for r in rs] == list(range(s.count))
        for r in rs:
            verifier.verify_record(r)
    assert [r.offset for r in recs] == list(range(len(recs)))


def test_consumer_crash_between_handler_and_commit_does_not_rerun_the_handler(tmp_path):
    root = tmp_path / "home"
    KeyService.init(Home(root).ensure(), authorizer=grants()).close()
    w = World(root, keys=KeyService.open(Home(root), authorizer=grants()))
    with w.producer() as p:
        ids = [p.send(TYPE, customer(i)) for i in range(20)]
    out = tmp_path / "handled.txt"
    rc = subprocess.run(
        [sys.executable, PROC, "consume-crash", str(root), str(out), "3"], timeout=60
    ).returncode
    assert rc == -signal.SIGKILL
    first = out.read_text().split()
    assert first == ids[:15]  # three read batches handled, the third never committed
    assert w.log.committed(READER, TOPIC) == 10
    again = []
    stats = w.consumer().run(lambda e: again.append(e.id), idle_timeout=0)
    assert again == ids[15:] and stats.redelivered == 5  # redelivered, recognised, not handled twice
    assert w.log.committed(READER, TOPIC) == 20
    w.close()
    w.keys.close()
