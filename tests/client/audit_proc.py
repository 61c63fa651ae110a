"""Subprocess side of the audit kill -9 tests; publishes forever, printing every id the log
acknowledged, until the test kills it with SIGKILL.

    python audit_proc.py HOME                 as a service on an embedded home (Deployment.open)
    python audit_proc.py nats HOME URL TOPIC  the client stack over NATS, auditing to HOME's audit log
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eventward._internal import demo
from eventward._internal.client.producer import Producer
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home


def _loop(p: Producer, type_: str, data: Callable[[int], Any]) -> None:
    i = 0
    while True:
        for _ in range(7):
            p.send(type_, data(i))
            i += 1
        acked = p.flush()
        sys.stdout.write("".join(f"{a}\n" for a in acked))
        sys.stdout.flush()


def produce(root: Path) -> None:
    dep = Deployment.open(Home(root))
    p = dep.producer(demo.PRODUCER, demo.TOPIC, max_batch=50, max_delay_ms=60_000)
    _loop(p, "Tick", lambda i: {"n": i, "note": "payload-mark-Zq7Xw"})


def produce_nats(root: Path, url: str, topic: str) -> None:
    from client.client_world import PRODUCER, TYPE, World, customer
    from eventward._internal.audit.log import AuditLog
    from eventward._internal.log.nats import NatsTransport
    from eventward._internal.policy.base import PUBLISH

    w = World(root, register=False)
    w.auth.grant(PRODUCER, PUBLISH, ("Topic", topic))
    w.audit = AuditLog.open(w.home)  # the real, buffered audit log of the home
    p = w.producer(topic=topic, transport=NatsTransport(url), max_batch=50)
    _loop(p, TYPE, customer)


if __name__ == "__main__":
    if sys.argv[1] == "nats":
        produce_nats(Path(sys.argv[2]), sys.argv[3], sys.argv[4])
    else:
        produce(Path(sys.argv[1]))
