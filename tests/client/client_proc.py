"""Subprocess side of the crash tests: ``python client_proc.py MODE HOME``.

produce: send forever, printing every id the log acknowledged (after each flush).
consume-crash: consume with a handler that records ids, and die by SIGKILL inside the
Nth offset commit (after handlers ran, before the offset moved).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from client.client_world import TYPE, World, customer


def keyservice(root: Path):
    from client.client_world import grants
    from eventward._internal.home import Home
    from eventward._internal.keys.service import KeyService

    return KeyService.open(Home(root), authorizer=grants())


def produce(root: Path) -> None:
    w = World(root, register=False)
    p = w.producer(max_batch=50)
    i = 0
    while True:
        for _ in range(7):
            p.send(TYPE, customer(i))
            i += 1
        acked = p.flush()
        sys.stdout.write("".join(f"{a}\n" for a in acked))
        sys.stdout.flush()


class CrashingCommits:
    def __init__(self, log, crash_at: int) -> None:
        self.log, self.commits, self.crash_at = log, 0, crash_at

    def commit(self, group, stream, offset):
        self.commits += 1
        if self.commits == self.crash_at:
            os.kill(os.getpid(), signal.SIGKILL)
        self.log.commit(group, stream, offset)

    def __getattr__(self, name):
        return getattr(self.log, name)


def consume_crash(root: Path, out: Path, crash_at: int) -> None:
    w = World(root, register=False, keys=keyservice(root))
    c = w.consumer(transport=CrashingCommits(w.log, crash_at), read_batch=5)
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def handler(event) -> None:
        os.write(fd, f"{event.id}\n".encode())
        os.fsync(fd)

    c.run(handler, idle_timeout=0)


if __name__ == "__main__":
    mode, home = sys.argv[1], Path(sys.argv[2])
    if mode == "produce":
        produce(home)
    else:
        consume_crash(home, Path(sys.argv[3]), int(sys.argv[4]))
