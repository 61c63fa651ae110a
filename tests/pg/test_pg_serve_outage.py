"""PostgreSQL stopped under a running ``eventward serve`` (issue 22's "Done when"): every write
fails closed with a typed RFC 9457 problem (503, nothing released, nothing half-written), the
events acked before the outage are all still readable, and the replica recovers by itself when
the database comes back, with no restart of serve or of the client.

The database is a server of this test's own (the session's is shared by other tests), stopped
and started again by PID on the same data directory and port."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
import requests

from eventward._internal import demo
from eventward._internal.control.http import HttpControlAPI
from eventward.errors import ControlPlaneUnavailable
from pg.conftest import PgServer, bin_dir, start_server
from pg.test_pg_replicas import Cluster, Load, _start, cluster  # noqa: F401
from support_wait import wait_until


def _stop(server: PgServer) -> None:
    """Fast shutdown by PID (open connections are closed, the data directory stays)."""
    os.kill(server.pid, signal.SIGINT)
    server.proc.wait(20)


def _start_again(server: PgServer) -> None:
    """The same postgres command on the same data directory and port (as start_server runs it)."""
    as_user: dict = {}
    if os.geteuid() == 0:
        as_user = {"user": 65534, "group": 65534, "extra_groups": []}
    with (server.root / "server.log").open("ab") as log:
        server.proc = subprocess.Popen(
            [str(bin_dir() / "postgres"), "-D", str(server.data_dir), "-h", "127.0.0.1", "-p", str(server.port),
             "-k", str(server.root), "-c", "fsync=off", "-c", "synchronous_commit=off", "-c",
             "full_page_writes=off", "-c", "max_connections=200", "-c", "shared_buffers=32MB"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **as_user,
        )


@pytest.fixture
def own_pg() -> Iterator[PgServer]:
    server = start_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_dsn(own_pg) -> str:  # the cluster fixture's database, on this test's own server
    return own_pg.create_database()


def _post_encrypt(api: HttpControlAPI, url: str, subject: str) -> requests.Response:
    body = {"topic": demo.TOPIC, "type": demo.EVENT_TYPE, "keys": [{"subject": subject, "class": "pii", "nonces": 1}]}
    return api._session().post(url + "/v1/control/keys/encrypt", json=body, timeout=10)


@pytest.mark.parametrize("cluster", [(1, 1)], indirect=True)  # one replica, 1 s connect timeout
@pytest.mark.timeout(120)
def test_database_stopped_under_serve_fails_closed_and_recovers_by_itself(cluster, own_pg):  # noqa: F811
    url = cluster.replicas[0].url
    load = Load(cluster).start()
    load.wait_for(20)
    load.finish()
    acked = list(load.acked)
    api = HttpControlAPI.for_identity(cluster.identities[demo.PRODUCER])
    cluster.dep.close()  # the operator's process is done; only serve talks to the database now
    assert _post_encrypt(api, url, "before-outage").status_code == 200

    _stop(own_pg)
    t_down = time.monotonic()
    try:
        for subject in ("new-subject", "before-outage"):  # a new key and an existing one: both refused
            r = _post_encrypt(api, url, subject)
            assert r.status_code == 503, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
            problem = r.json()
            assert problem["status"] == 503 and problem["code"] in ("keystore_unavailable", "store_unavailable",
                                                                   "audit_unavailable"), problem
            assert "dek" not in r.text and "password" not in r.text.lower()
        with pytest.raises(ControlPlaneUnavailable):  # the SDK: typed, no key, nothing assumed
            api.encryption_keys(demo.TOPIC, demo.EVENT_TYPE, [("new-subject", "pii", 1)])
        assert cluster.replicas[0].proc.poll() is None  # serve keeps running, fails closed
    finally:
        _start_again(own_pg)

    # Back by itself: no restart of serve or of the client.
    t_up = time.monotonic()
    assert wait_until(lambda: _post_encrypt(api, url, "after-outage").status_code == 200, timeout=30,
                      what="serve answers again after the database returned")
    recovered = time.monotonic() - t_up
    assert recovered < 15, recovered
    print(f"outage: refusals took {t_up - t_down:.1f}s, recovered {recovered:.1f}s after the database returned")
    assert api.encryption_keys(demo.TOPIC, demo.EVENT_TYPE, [("new-subject", "pii", 1)])[0][1]
    # Every store's pool recovers, not only the one that was polled: the registry's idle pool
    # held connections the restart killed (its first read used to fail with 57P01).
    assert api.schema(demo.TOPIC, demo.EVENT_TYPE, None)["type"] == demo.EVENT_TYPE
    seen: list[str] = []
    c = cluster.client(demo.SHIPPING).consumer(demo.TOPIC, group="after-outage", from_beginning=True)
    try:
        c.run(lambda e: seen.append(e.id), idle_timeout=0.5)
    finally:
        c.close()
    assert seen == acked  # every event acked before the outage, once, in order
