"""Replicated ``eventward serve`` on one PostgreSQL database (issue 22's "Done when").

Several ``serve`` processes run on one deployment home (the read-only material every replica
needs: eventward.yaml, the keyring or KMS credentials, the audit key, the CA, the gateway's server
certificate and the control anchor key) with all mutable control-plane state in PostgreSQL. Client
-mode services hold the list of replica URLs in their grant and fail over (HttpControlAPI). Under
a steady produce + consume + forget + schema-read load, replicas are killed with SIGKILL: no acked
event is lost, none is delivered twice, the clients go on without a restart, ``audit verify``
passes, and a consistency proof links an audit checkpoint from before the kills to one after.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eventward._internal import demo
from eventward._internal.audit.verify import verify_consistency_proof
from eventward._internal.cli import app
from eventward._internal.control.connect import Client, connect
from eventward._internal.control.http import HttpControlAPI
from eventward._internal.control.identity import ServiceIdentity
from eventward._internal.control.plane import ControlPlane
from eventward._internal.deployment import Deployment
from eventward._internal.gateway.config import SERVER_CERT
from eventward._internal.gateway.tls import ensure_home_material
from eventward._internal.home import Home
from eventward._internal.log.embedded import EmbeddedLog
from keys_net.conftest import free_port

MAY_SEAL = {demo.PRODUCER: {demo.TOPIC: [demo.EVENT_TYPE]}, demo.SHIPPING: {}}


@dataclass
class Replica:
    port: int
    proc: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def kill9(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Cluster:
    home: Home
    dep: Deployment  # the operator's own process on the same home and database (forget, checkpoints)
    replicas: list[Replica]
    identities: dict[str, ServiceIdentity]
    clients: list[Client] = field(default_factory=list)

    def client(self, principal: str) -> Client:
        c = connect(self.identities[principal].root, transport=EmbeddedLog.open(self.home), notice_wait=0.5)
        self.clients.append(c)
        return c


def _start(home: Home, port: int, env: dict[str, str], root: Path) -> Replica:
    log = root / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "eventward._internal.cli", "--home", str(home.root), "serve", "--port", str(port),
             "--no-monitor"],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    return Replica(port, proc, log)


@pytest.fixture
def cluster(request, tmp_path, pg_dsn, monkeypatch) -> Iterator[Cluster]:
    n, timeout = request.param if isinstance(request.param, tuple) else (request.param, 5)
    monkeypatch.setenv("EW_TEST_DSN", pg_dsn)
    home = Home(tmp_path / "control-plane").ensure()
    home.config.write_text(
        f"store: {{backend: postgres, dsn_env: EW_TEST_DSN, connect_timeout_s: {timeout}}}\n"
        "gateway: {limits: {rate_events_per_s: 100000.0, burst_events: 100000}}\n"
    )
    dep = Deployment.init(home, admin=demo.ADMIN)
    replicas: list[Replica] = []
    cl = None
    try:
        demo.setup(dep, lambda *a: None)
        demo.schemas(dep, demo.DemoResult(), lambda *a: None)
        # Shared home material, made once before any replica starts (never raced by replicas).
        ensure_home_material(home, "127.0.0.1", SERVER_CERT)
        ports = [free_port() for _ in range(n)]
        urls = [f"https://127.0.0.1:{p}" for p in ports]
        plane = ControlPlane.open(dep)  # also makes the control anchor key every replica loads
        identities = {}
        try:
            for principal, may_seal in MAY_SEAL.items():
                ident = ServiceIdentity.create(tmp_path / "svc" / principal, principal)
                ident.install(plane.approve(demo.ADMIN, ident.request_path.read_bytes(), may_seal,
                                            control_urls=urls))
                identities[principal] = ident
        finally:
            plane.close()
        env = {**os.environ, "EW_TEST_DSN": pg_dsn}
        replicas = [_start(home, p, env, tmp_path) for p in ports]
        deadline = time.monotonic() + 60
        for r in replicas:
            while not _listening(r.port):
                assert r.proc.poll() is None, r.log.read_text(errors="replace")[-3000:]
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.05)
        cl = Cluster(home, dep, replicas, identities)
        yield cl
    finally:
        if cl is not None:
            for c in cl.clients:
                c.close()
                c.transport.close()
        for r in replicas:
            r.stop()
        dep.close()
    for r in replicas:
        assert "Traceback" not in r.log.read_text(errors="replace"), r.log.read_text(errors="replace")[-3000:]


@dataclass
class Load:
    """A producer and a consumer (each its own client-mode service) running until stopped."""

    cluster: Cluster
    acked: list[str] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    schema_reads: int = 0
    errors: list[BaseException] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Load:
        self.producer = self.cluster.client(demo.PRODUCER)
        self.shipping = self.cluster.client(demo.SHIPPING)
        self.api = HttpControlAPI.for_identity(self.cluster.identities[demo.SHIPPING])
        self._threads = [threading.Thread(target=self._guard(f), daemon=True) for f in (self._produce, self._consume)]
        for t in self._threads:
            t.start()
        return self

    def _guard(self, fn):
        def run() -> None:
            try:
                fn()
            except BaseException as e:  # reported by the test
                self.errors.append(e)
        return run

    def _produce(self) -> None:
        i = 0
        with self.producer.producer(demo.TOPIC) as p:
            while not self.stop.is_set():
                batch = [p.send(demo.EVENT_TYPE, demo.order(i + k)) for k in range(5)]
                p.flush()  # acked: on the log, sealed
                self.acked.extend(batch)
                i += 5
                self.api.schema(demo.TOPIC, demo.EVENT_TYPE, None)  # a schema read through the replicas
                self.schema_reads += 1
                time.sleep(0.02)

    def _consume(self) -> None:
        c = self.shipping.consumer(demo.TOPIC, group="fault", from_beginning=True)
        try:
            while not self.stop.is_set():
                c.run(lambda e: self.seen.append(e.id), idle_timeout=0.2)
            c.run(lambda e: self.seen.append(e.id), idle_timeout=1.0)  # drain after the producer stopped
        finally:
            c.close()

    def wait_for(self, acked: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < acked or len(self.seen) < acked:
            assert not self.errors, self.errors
            assert time.monotonic() < deadline, (len(self.acked), len(self.seen))
            time.sleep(0.02)

    def finish(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(60)
        assert not self.errors, self.errors


def _fault_run(cl: Cluster, kills: int, per_phase: int = 20) -> dict[str, float]:
    """Load, then per kill: SIGKILL the replica the clients use, forget a subject, and wait until
    ``per_phase`` more events were acked and consumed through the surviving replicas."""
    t0 = time.monotonic()
    load = Load(cl).start()
    load.wait_for(per_phase)
    cp_before = cl.dep.audit.checkpoint()
    gaps = []
    for k in range(kills):
        cl.replicas[k].kill9()  # the replica the clients use first: they must fail over
        killed, base = time.monotonic(), len(load.acked)
        assert cl.replicas[k].proc.returncode == -signal.SIGKILL
        load.wait_for(base + 1)
        gaps.append(time.monotonic() - killed)  # kill -9 to the next event acked and consumed
        cl.dep.forget(demo.FORGOTTEN if k == 0 else f"subject-{k}", principal=demo.ADMIN, reason="gdpr-art17")
        load.wait_for(base + per_phase, timeout=20 + per_phase / 10)
    load.finish()
    assert len(load.seen) == len(set(load.seen)), "an event was delivered twice"
    assert set(load.acked) <= set(load.seen), f"{len(set(load.acked) - set(load.seen))} acked events lost"
    assert load.schema_reads > 0
    cp_after = cl.dep.audit.checkpoint()
    assert cp_after.size > cp_before.size
    verify_consistency_proof(cl.dep.audit.consistency(cp_before.size, cp_after.size), cp_before, cp_after)
    r = CliRunner().invoke(app, ["--home", str(cl.home.root), "audit", "verify", "--no-state", "--json",
                                 "--as", demo.ADMIN])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["ok"] is True
    assert max(gaps) < 10, gaps  # failing over costs a refused connection, not a timeout
    return {"acked": len(load.acked), "seconds": time.monotonic() - t0, "max_gap_s": max(gaps)}


@pytest.mark.parametrize("cluster", [2], indirect=True)
@pytest.mark.timeout(120)
def test_two_replicas_one_killed_clients_fail_over_nothing_lost(cluster):
    got = _fault_run(cluster, kills=1)
    assert got["acked"] >= 40
    print(f"2 replicas, 1 killed: {got['acked']} events in {got['seconds']:.1f}s, gap {got['max_gap_s']:.2f}s")


@pytest.mark.slow
@pytest.mark.parametrize("cluster", [3], indirect=True)
@pytest.mark.timeout(300)
def test_three_replicas_two_killed_under_load(cluster):
    got = _fault_run(cluster, kills=2, per_phase=300)
    assert got["acked"] >= 900
    print(f"3 replicas, 2 killed: {got['acked']} events acked and consumed once in {got['seconds']:.1f}s; "
          f"longest kill-to-next-event {got['max_gap_s']:.2f}s")
