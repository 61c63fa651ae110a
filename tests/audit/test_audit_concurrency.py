"""Several processes appending to one home build one consistent tree, with one audit key."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from itertools import pairwise

from eventward._internal.audit.log import AuditLog
from eventward._internal.audit.verify import verify_log
from eventward._internal.home import Home

WRITER = """
import sys, time
from eventward._internal.audit.log import AuditLog
from eventward._internal.home import Home

home, who, n = Home.resolve(sys.argv[1]), sys.argv[2], int(sys.argv[3])
with AuditLog.open(home, flush_every=7, flush_ms=1) as log:
    log.record("hello", principal=who, resource="r")
    deadline = time.monotonic() + 30
    while log.size() < 2:  # start together: nobody writes more until both hellos are in
        assert time.monotonic() < deadline
        time.sleep(0.002)
    for i in range(n):
        if i % 50 == 0:
            item = {"action": "batch.item", "principal": who, "resource": "r", "meta": {"i": i}}
            log.append_many([item] * 3)
        if i % 20 == 0:
            time.sleep(0.002)  # let the other writer in
        log.record("single.item", principal=who, resource="r", i=i)
    print(log.verifier.vkey())
"""


def _writers(home: Home, names: list[str], n: int) -> list[str]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(home.root), who, str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in names
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        outs.append(out.strip())
    return outs


def test_two_processes_appending_at_once_produce_one_consistent_tree(tmp_path):
    home = Home(tmp_path / "home")  # fresh: both processes also race to create the key and db
    n = 400
    vkeys = _writers(home, ["proc-a", "proc-b"], n)
    assert vkeys[0] == vkeys[1]  # the key-creation race has one winner
    with AuditLog.open(home) as log:
        assert log.verifier.vkey() == vkeys[0]
        per_proc = 1 + n + 3 * len(range(0, n, 50))
        assert log.size() == 2 * per_proc
        records = [log.get(i) for i in range(log.size())]
        assert [r.index for r in records] == list(range(2 * per_proc))
        assert Counter(r.principal for r in records) == {"proc-a": per_proc, "proc-b": per_proc}
        switches = sum(a.principal != b.principal for a, b in pairwise(records))
        assert switches >= 3, "the writers never interleaved: the test proved nothing"
        for who in ("proc-a", "proc-b"):  # each writer's own records stay in its order
            singles = [r.meta["i"] for r in records if r.principal == who and r.action == "single.item"]
            assert singles == list(range(n))
        cp = log.checkpoint()
        assert verify_log(log, checkpoint=cp.text).ok
