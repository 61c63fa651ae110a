"""Subprocess side of the audit kill -9 test: ``python audit_proc.py HOME``.

Opens the deployment home as any service would and publishes Tick events forever,
printing every id the log acknowledged, until the test kills it with SIGKILL.
"""

from __future__ import annotations

import sys
from pathlib import Path

from eventward import demo
from eventward.deployment import Deployment
from eventward.home import Home


def produce(root: Path) -> None:
    dep = Deployment.open(Home(root))
    p = dep.producer(demo.PRODUCER, demo.TOPIC, max_batch=50, max_delay_ms=60_000)
    i = 0
    while True:
        for _ in range(7):
            p.send("Tick", {"n": i, "note": "payload-mark-Zq7Xw"})
            i += 1
        acked = p.flush()
        sys.stdout.write("".join(f"{a}\n" for a in acked))
        sys.stdout.flush()


if __name__ == "__main__":
    produce(Path(sys.argv[1]))
