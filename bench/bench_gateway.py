"""Publishing through the HTTP gateway vs the Python SDK Producer, on one deployed home
(``eventward init`` + the example policy, bench/deployed.py; the writer is its orders-svc).

gateway_publish: ``eventward serve`` (the real CLI, DeploymentBackend, mTLS with certificates
from the home's CA) in its own process; a few client threads, each on one keep-alive HTTPS
connection, POST batches of 500 OrderPlaced CloudEvents (bench/workload.py). Everything is
on: OpenAPI and envelope checks, Publish authorization (Cedar), schema validation, field
encryption under per-subject DEKs, one seal per request, the SQLite append (WAL,
synchronous=FULL), the audit record. Request bodies are serialized before the clock starts.

Baseline in the same run: the same events through ``Deployment.producer`` in this process
(one producer, a flush every 500 events), into the same home. Target: gateway >= 0.5x SDK.

    python -m bench.bench_gateway [--quick]
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench import deployed
from bench.common import print_scenario, rate, scenario
from bench.workload import EVENT_TYPE, SOURCE, order_placed
from eventward._internal import pki
from eventward._internal.deployment import Deployment

WRITER = deployed.PRODUCER  # the example policy's order writer (a service with a client certificate)
BATCH = 500


class _Home:
    """A deployment home as ``eventward init`` + the example policy make it, plus the gateway serving it."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ew-bench-gw-"))
        # measured, not throttled: the per-principal quota is lifted for the benchmark
        limits = {"gateway": {"limits": {"rate_events_per_s": 1e9, "burst_events": 10**9}}}
        self.home = deployed.init_home(self.dir / "home", config=limits)
        self.dep = Deployment.open(self.home)
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    def serve(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "eventward._internal.cli", "--home", str(self.home.root), "serve", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        m = re.search(r"https://127\.0\.0\.1:(\d+)", line)
        if m is None:
            raise RuntimeError(f"the gateway did not start: {line!r}")
        self.port = int(m.group(1))

    def client_context(self) -> ssl.SSLContext:
        cert, key = pki.ensure_client_cert(self.home.certs, WRITER)
        ctx = ssl.create_default_context(cafile=str(pki.ca_paths(self.home.certs)[0]))
        ctx.load_cert_chain(str(cert), str(key))
        return ctx

    def close(self) -> None:
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
        self.dep.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _bodies(first: int, batches: int, size: int) -> list[bytes]:
    out = []
    for b in range(batches):
        events = [
            {
                "specversion": "1.0",
                "id": str(uuid.uuid4()),
                "source": SOURCE,
                "type": EVENT_TYPE,
                "datacontenttype": "application/json",
                "data": order_placed(first + b * size + i),
            }
            for i in range(size)
        ]
        out.append(orjson.dumps(events))
    return out


def gateway_publish(h: _Home, topic: str, rounds: list[list[bytes]], clients: int) -> Callable[[], int]:
    """Each call sends the next round of pre-serialized requests, split over ``clients`` threads."""
    ctx = h.client_context()
    conns = [
        http.client.HTTPSConnection("127.0.0.1", h.port, context=ctx, timeout=120) for _ in range(clients)
    ]
    headers = {"Content-Type": "application/cloudevents-batch+json"}
    pending = iter(rounds)

    def worker(conn: http.client.HTTPSConnection, bodies: list[bytes], done: list[int]) -> None:
        for body in bodies:
            conn.request("POST", f"/v1/topics/{topic}/events", body=body, headers=headers)
            resp = conn.getresponse()
            reply = orjson.loads(resp.read())
            if resp.status != 200:
                raise RuntimeError(f"gateway refused a batch: {resp.status} {reply.get('code')}")
            done.append(reply["accepted"])

    def run_once() -> int:
        bodies = next(pending)
        done: list[int] = []
        threads = [
            threading.Thread(target=worker, args=(conns[i], bodies[i::clients], done)) for i in range(clients)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if sum(done) != len(bodies) * len(orjson.loads(bodies[0])):
            raise RuntimeError("not every event was accepted")
        return sum(done)

    return run_once


def sdk_publish(h: _Home, topic: str, rounds: list[list[dict[str, Any]]]) -> Callable[[], int]:
    pending = iter(rounds)

    def run_once() -> int:
        events = next(pending)
        with h.dep.producer(WRITER, topic, max_batch=BATCH, max_delay_ms=60_000) as p:
            for data in events:
                p.send(EVENT_TYPE, data, source=SOURCE)
        return len(events)

    return run_once


def run(quick: bool = False) -> list[dict[str, Any]]:
    batches, size, repeats, clients = (2, 100, 1, 2) if quick else (24, BATCH, 3, 4)
    h = _Home()
    try:
        h.serve()
        per_round = batches * size
        gw_rounds = [_bodies(r * per_round, batches, size) for r in range(repeats + 1)]  # +1: warm-up
        sdk_rounds = [[order_placed(r * per_round + i) for i in range(per_round)] for r in range(repeats + 1)]
        gw = gateway_publish(h, "orders.gateway", gw_rounds, clients)
        sdk = sdk_publish(h, "orders.sdk", sdk_rounds)
        gw(), sdk()  # warm-up: connections, handshakes, caches, first DEKs
        gw_rate = rate(gw, repeats)
        sdk_rate = rate(sdk, repeats)
    finally:
        h.close()
    return [
        scenario(
            "gateway_publish",
            gw_rate,
            {"python_sdk_producer": sdk_rate},
            batch=size,
            clients=clients,
            events_per_repeat=batches * size,
            transport="embedded",
            tls="mTLS (ECDSA P-256, keep-alive)",
        )
    ]


if __name__ == "__main__":
    for res in run(quick="--quick" in sys.argv):
        print_scenario(res)
