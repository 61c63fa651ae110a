"""Real backends for the transport tests: the embedded SQLite log, a nats-server on 127.0.0.1
(started here, stopped by PID in the finalizer) and librdkafka's in-process mock cluster."""

from __future__ import annotations

import random
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from eventward._internal.log import natsserver
from eventward._internal.log.embedded import EmbeddedLog
from eventward._internal.log.kafka import KafkaTransport
from eventward._internal.log.nats import NatsTransport
from eventward._internal.log.retry import Backoff

FAST = Backoff(base_s=0.02, cap_s=0.3, budget_s=8.0)


def port_block(n: int) -> int:
    """A port p with p..p+n-1 and p+2000..p+2000+n-1 free on 127.0.0.1 (client and route ports)."""
    for _ in range(200):
        base = random.randrange(20000, 40000)
        wanted = [*range(base, base + n), *range(base + 2000, base + 2000 + n)]
        socks: list[socket.socket] = []
        try:
            for p in wanted:
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise RuntimeError("no free port block")


@pytest.fixture(scope="session")
def nats_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[natsserver.Node]:
    """One plain (no TLS, no auth) JetStream server shared by the conformance tests."""
    root = tmp_path_factory.mktemp("nats-single")
    nodes = natsserver.start_all(root, size=1, port=port_block(1))
    try:
        yield nodes[0]
    finally:
        natsserver.stop(nodes[0])


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """librdkafka's mock cluster lives inside this producer; others reach it by bootstrap address."""
    mock = Producer({"test.mock.num.brokers": 1, "log_level": 0})
    brokers = mock.list_topics(timeout=10).brokers.values()
    yield ",".join(f"{b.host}:{b.port}" for b in brokers)
    mock.flush(5)


def kafka(bootstrap: str, **kw: Any) -> KafkaTransport:
    kw.setdefault("backoff", FAST)
    kw.setdefault("timeout_s", 5.0)
    return KafkaTransport(bootstrap, create_topics=False, extra={"log_level": 0}, **kw)


def nats_client(node: natsserver.Node, **kw: Any) -> NatsTransport:
    kw.setdefault("backoff", FAST)
    kw.setdefault("timeout_s", 2.0)
    return NatsTransport(node.url(tls=False), **kw)


@dataclass
class Backend:
    """One transport kind: ``open()`` returns a new instance on the same storage (another
    "process"), ``stream()`` a fresh stream name so tests never share state."""

    name: str
    factory: Callable[[], Any]
    batch_limit: int  # bytes one sealed batch may occupy on the wire
    opened: list[Any] = field(default_factory=list)

    def open(self) -> Any:
        t = self.factory()
        self.opened.append(t)
        return t

    def stream(self, prefix: str = "s") -> str:
        return f"{prefix}.{uuid.uuid4().hex[:12]}"

    def close(self) -> None:
        for t in reversed(self.opened):
            t.close()


@pytest.fixture(params=["embedded", "nats", "kafka"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "embedded":
        db = tmp_path / "log.db"
        b = Backend("embedded", lambda: EmbeddedLog(db), batch_limit=4 * 1024 * 1024)
    elif request.param == "nats":
        node = request.getfixturevalue("nats_node")
        b = Backend("nats", lambda: nats_client(node), batch_limit=natsserver.MAX_PAYLOAD - 2048)
    else:
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        b = Backend("kafka", lambda: kafka(bootstrap), batch_limit=1_000_000)
    try:
        yield b
    finally:
        b.close()
