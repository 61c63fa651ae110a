"""The HTTP gateway's consumer groups and quotas across two ``serve`` replicas on one PostgreSQL.

Group state (offsets, replay state, the last fetch and its lease) and quota buckets live in the
database, so: a fetch on one replica is acked on the other; fetches of one group racing on both
replicas get the same batch; acks racing on both have one winner and the same answer for the
other; a fetch that starts after an ack returned never delivers an acked event again; nothing
published is lost; and two replicas admit one quota, not two.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import pytest

from eventward._internal import demo, pki
from eventward._internal.control.plane import ControlPlane
from eventward._internal.deployment import Deployment
from eventward._internal.gateway.config import SERVER_CERT
from eventward._internal.gateway.groups import group_id
from eventward._internal.gateway.tls import ensure_home_material
from eventward._internal.home import Home
from gateway.gw_support import Reply, call
from keys_net.conftest import free_port
from pg.conftest import PgServer, pg_server, race  # noqa: F401
from pg.test_pg_replicas import Replica, _listening, _start


@dataclass
class Pair:
    home: Home
    dep: Deployment
    replicas: list[Replica]
    ca: Path
    sent: list[str] = field(default_factory=list)  # every event published on the topic, in offset order

    def ctx(self, principal: str) -> ssl.SSLContext:
        cert, key = pki.ensure_client_cert(self.home.certs, principal)
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.load_cert_chain(str(cert), str(key))
        return ctx

    def consume(self, i: int, ctx: ssl.SSLContext, group: str, n: int) -> Reply:
        q = urlencode({"group": group, "max": n})
        return call(self.replicas[i].port, ctx, "GET", f"/v1/topics/{demo.TOPIC}/events?{q}")

    def ack(self, i: int, ctx: ssl.SSLContext, group: str, offset: int) -> Reply:
        return call(self.replicas[i].port, ctx, "POST", f"/v1/topics/{demo.TOPIC}/ack",
                    {"group": group, "offset": offset})

    def publish(self, n: int) -> list[str]:
        with self.dep.producer(demo.PRODUCER, demo.TOPIC) as p:
            self.sent.extend(p.send(demo.EVENT_TYPE, demo.order(i)) for i in range(n))
        return self.sent


def _pair(tmp_path: Path, server: PgServer, limits: str) -> Iterator[Pair]:
    """Two replicas on one home and a fresh database (the replicas find its DSN in EW_TEST_DSN)."""
    dsn = server.create_database()
    old = os.environ.get("EW_TEST_DSN")
    os.environ["EW_TEST_DSN"] = dsn
    home = Home(tmp_path / "control-plane").ensure()
    home.config.write_text(f"store: {{backend: postgres, dsn_env: EW_TEST_DSN}}\ngateway: {{limits: {limits}}}\n")
    dep = Deployment.init(home, admin=demo.ADMIN)
    replicas: list[Replica] = []
    try:
        demo.setup(dep, lambda *a: None)
        demo.schemas(dep, demo.DemoResult(), lambda *a: None)
        ensure_home_material(home, "127.0.0.1", SERVER_CERT)
        ControlPlane.open(dep).close()  # the control anchor key, made once before the replicas
        env = {**os.environ, "EW_TEST_DSN": dsn}
        replicas = [_start(home, free_port(), env, tmp_path) for _ in range(2)]
        deadline = time.monotonic() + 60
        for r in replicas:
            while not _listening(r.port):
                assert r.proc.poll() is None, r.log.read_text(errors="replace")[-3000:]
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.05)
        yield Pair(home, dep, replicas, pki.ca_paths(home.certs)[0])
    finally:
        for r in replicas:
            r.stop()
        dep.close()
        if old is None:
            os.environ.pop("EW_TEST_DSN", None)
        else:
            os.environ["EW_TEST_DSN"] = old
        with contextlib.suppress(Exception):
            server.drop_database(dsn)
    for r in replicas:
        assert "Traceback" not in r.log.read_text(errors="replace"), r.log.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, pg_server: PgServer) -> Iterator[Pair]:  # noqa: F811
    """Shared by the group tests (each uses a group of its own)."""
    yield from _pair(tmp_path_factory.mktemp("pair"), pg_server,
                     "{rate_events_per_s: 100000.0, burst_events: 100000}")


@pytest.fixture
def slow_pair(tmp_path: Path, pg_server: PgServer) -> Iterator[Pair]:  # noqa: F811
    yield from _pair(tmp_path, pg_server, "{rate_events_per_s: 0.5, burst_events: 10, max_batch_events: 10}")


def _ids(r: Reply) -> list[str]:
    assert r.status == 200, r.json
    return [e["event"]["id"] for e in r.json["events"]]


def test_racing_fetches_and_acks_of_one_group_on_two_replicas(pair: Pair) -> None:
    sent = pair.publish(12)
    ctx = pair.ctx(demo.SHIPPING)
    fetched = race(*[(lambda i=i: pair.consume(i % 2, ctx, "race", 5)) for i in range(4)])
    assert all(isinstance(r, Reply) and r.status == 200 for r in fetched), fetched
    assert all(_ids(r) == sent[:5] for r in fetched)  # one batch, the same answer on both replicas
    # acked on the replica that did not serve the first fetch, racing the same ack on the other
    acks = race(*[(lambda i=i: pair.ack(i % 2, ctx, "race", 5)) for i in range(4)])
    assert [(r.status, r.json["committed"]) for r in acks] == [(200, 5)] * 4
    rest = _ids(pair.consume(0, ctx, "race", 1000))
    assert rest == sent[5:]  # acked ones never come back
    end = len(sent)
    ahead = pair.ack(1, ctx, "race", end + 1)
    assert ahead.status == 409 and ahead.json["code"] == "conflict"  # past what was delivered
    assert pair.ack(1, ctx, "race", end).json["committed"] == end
    assert pair.dep.transport.committed(group_id(demo.SHIPPING, "race"), demo.TOPIC) == end


def test_two_consumers_on_two_replicas_lose_nothing_and_never_see_an_acked_event(pair: Pair) -> None:
    sent = pair.publish(60)
    ctx = pair.ctx(demo.SHIPPING)
    acked = [0]  # the highest offset an ack has returned for
    lock = threading.Lock()
    delivered: list[str] = []
    stale: list[tuple[int, int]] = []
    errors: list[object] = []

    def consumer(i: int) -> None:
        idle = 0
        while idle < 3:
            with lock:
                floor = acked[0]  # committed before this fetch began
            r = pair.consume(i, ctx, "load", 7)
            if r.status != 200:
                errors.append(r.json)
                continue
            events = r.json["events"]
            if not events:
                idle += 1
                continue
            idle = 0
            stale.extend((floor, e["offset"]) for e in events if e["offset"] < floor)
            with lock:
                delivered.extend(e["event"]["id"] for e in events)
            a = pair.ack(1 - i, ctx, "load", events[-1]["offset"] + 1)  # acked on the other replica
            if a.status != 200:
                errors.append(a.json)
                continue
            with lock:
                acked[0] = max(acked[0], a.json["committed"])

    threads = [threading.Thread(target=consumer, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and not stale
    assert set(delivered) == set(sent)  # nothing lost (redelivery before an ack is allowed)
    assert pair.dep.transport.committed(group_id(demo.SHIPPING, "load"), demo.TOPIC) == len(sent)


def test_attack_two_replicas_do_not_double_a_principals_quota(slow_pair: Pair) -> None:
    """Burst 10 at 0.5 events/s: hitting both replicas in turn admits about 10 requests, not 20
    (each replica's own bucket would admit 10)."""
    ctx = slow_pair.ctx(demo.ANALYTICS)
    started = time.monotonic()
    statuses = [call(slow_pair.replicas[i % 2].port, ctx, "GET", "/v1/schemas").status for i in range(24)]
    elapsed = time.monotonic() - started
    admitted = sum(s != 429 for s in statuses)
    assert 429 in statuses[:-1] and admitted <= 10 + int(elapsed * 0.5) + 1, (statuses, elapsed)
    other = call(slow_pair.replicas[1].port, slow_pair.ctx(demo.SHIPPING), "GET", "/v1/schemas")
    assert other.status != 429  # buckets are per principal


def test_db_import_moves_the_gateway_groups(tmp_path: Path, pg_server: PgServer) -> None:  # noqa: F811
    """An embedded home's gateway groups move with ``db import``: offsets, replay state and the
    last fetch (so its ack still commits after the move); the lease it held does not."""
    from eventward._internal.gateway.groupstore import GROUP_LOCK, PG_TABLES, GroupStore
    from eventward._internal.keys.stores import home_deployment_id
    from eventward._internal.store.importer import import_home
    from eventward._internal.store.pg import Database
    from eventward._internal.store.sqlcompat import PgTables

    home = Home(tmp_path / "home")
    Deployment.init(home, admin=demo.ADMIN).close()
    gid, t = "shipping-svc/g", "orders"
    entries = [["orders-svc", t, o, f"e{o}", "i", o + 1, "ok", "live"] for o in range(4)]
    embedded = GroupStore.open_sqlite(home.root / "consumers" / "gateway.db")
    try:
        assert embedded.try_lease(gid, t, "h-1", 30)
        assert embedded.finish_fetch(gid, t, "h-1", expected={t: None}, commit={}, settled=[], pending=entries,
                                     upto={t: 4}, mirror=lambda s, o: None)
        assert embedded.ack(gid, t, t, 2, initial=None, mirror=lambda s, o: None, group="g") == 2
        assert embedded.try_lease(gid, t, "h-2", 30)  # held when the home stops
    finally:
        embedded.close()
    dsn = pg_server.create_database()
    dep_id = home_deployment_id(home)
    Database(dsn).migrate(dep_id)
    report = import_home(home, Database(dsn), dep_id)
    assert report.rows["gateway.gw_seen"] == 2 and str(home.root / "consumers" / "gateway.db") in report.stale_files
    moved = GroupStore.open_pg(PgTables(Database.open(dsn, deployment_id=dep_id), PG_TABLES, GROUP_LOCK))
    try:
        assert moved.committed(gid, [t]) == {t: 2}
        assert sorted(r[1] for r in moved.changes(gid, None).seen) == ["e0", "e1"]
        assert moved.try_lease(gid, t, "h-3", 30)  # the old lease did not move
        assert moved.ack(gid, t, t, 4, initial=None, mirror=lambda s, o: None, group="g") == 4
    finally:
        moved.close()


def test_attack_racing_replicas_cannot_overdraw_a_shared_bucket(pg_server: PgServer) -> None:  # noqa: F811
    """Twenty takes racing from two replicas' pools on a bucket of 10 (no refill to speak of):
    exactly ten succeed, and a refused take reports how long until tokens exist."""
    from eventward._internal.gateway.quota import SharedBuckets
    from eventward._internal.store.pg import Database

    dsn = pg_server.create_database(migrated=True)
    Database(dsn).migrate("dep-quota")
    dbs = [Database.open(dsn, deployment_id="dep-quota", pool_max=10) for _ in range(2)]
    try:
        buckets = [SharedBuckets(db) for db in dbs]
        waits = race(*[(lambda b=buckets[i % 2]: b.take("svc", 1, 0.001, 10)) for i in range(20)])
        assert sum(w == 0 for w in waits) == 10, waits
        assert all(w > 0 for w in waits if w != 0)
        assert buckets[1].take("other-svc", 10, 0.001, 10) == 0  # per principal
        buckets[0].debit("other-svc", 5, 0.001, 10)  # delivered past the balance: it goes negative
        assert buckets[1].take("other-svc", 1, 0.001, 10) > 1000
    finally:
        for db in dbs:
            db.close()
