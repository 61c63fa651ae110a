"""The direct-path reconciler on a NATS deployment whose control-plane state is in PostgreSQL: the
seal grants it checks batches against are read where ControlPlane records them (the database),
so a granted producer's batches are Publish records and a key sealing a topic it was not granted
is still refused. The reconciler tests run again on this world. With several serve replicas on
the database only the one holding the leader lock runs passes; another takes over when its
session ends (a replica killed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from control.test_direct_audit import (  # noqa: F401
    NatsWorld,
    direct_publishes,
    produce,
    stored_batches,
    test_a_failed_pass_loses_no_delivered_batch,
    test_attack_enrolled_key_seals_a_topic_it_was_not_granted,
    test_attack_forged_batch_on_stream,
    test_consumer_group_progress_is_recorded_when_it_moves,
    test_delivered_but_unrecorded_batches_are_replayed_after_a_crash,
    test_direct_publishes_are_audited_once_across_restarts,
    until,
)
from eventward._internal import demo
from eventward._internal.control.plane import ControlPlane
from eventward._internal.control.reconciler import DirectAuditor
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward._internal.log import natsserver
from support_wait import wait_until
from transports.conftest import port_block


@pytest.fixture
def world(tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[NatsWorld]:
    monkeypatch.setenv("EW_TEST_DSN", pg_dsn)
    node = natsserver.start_all(tmp_path / "nats", size=1, port=port_block(1))[0]
    opened: list[Any] = []
    try:
        home = Home(tmp_path / "control-plane")
        home.root.mkdir(mode=0o700)
        home.config.write_text(yaml.safe_dump(
            {"transport": "nats", "nats": {"servers": [node.url(tls=False)], "timeout_s": 2.0},
             "store": {"backend": "postgres", "dsn_env": "EW_TEST_DSN"}}))
        dep = Deployment.init(home, admin=demo.ADMIN)
        opened.append(dep)
        demo.setup(dep, lambda *a: None)
        demo.schemas(dep, demo.DemoResult(), lambda *a: None)
        dep.transport.create_stream(demo.TOPIC)
        plane = ControlPlane.open(dep)
        opened.append(plane)
        yield NatsWorld(tmp_path, node.url(tls=False), dep, plane, opened)
    finally:
        for o in reversed(opened):
            (o.stop if isinstance(o, DirectAuditor) else o.close)()
        natsserver.stop(node)


def test_one_replica_runs_the_reconciler_and_another_takes_over(world: NatsWorld, pg_server) -> None:
    producer = world.client(world.identity(demo.PRODUCER))
    raw = world.nats()
    first = world.auditor().start()
    assert wait_until(lambda: first.leader.held, timeout=10, what="the first replica leads")
    second = world.auditor().start()  # a second serve replica on the same database
    produce(producer, 4)
    batches = stored_batches(raw)
    until("Publish records of the first term", lambda: len(direct_publishes(world)) == len(batches))
    assert first.leader.held and not second.leader.held  # one leader; the other waits

    # The leader dies (its thread stops, its database session ends as on SIGKILL): the other leads.
    first._stop.set()
    first._thread.join(10)
    with first.leader._conn.cursor() as cur:
        pid = cur.execute("SELECT pg_backend_pid()").fetchone()[0]
    with pg_server.admin() as adm:
        adm.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert wait_until(lambda: second.leader.held, timeout=10, what="the second replica takes over")
    produce(producer, 3, start=4)
    batches = stored_batches(raw)
    recs = until("records of the second term", lambda: len(direct_publishes(world)) >= len(batches)
                 and direct_publishes(world))
    assert [r.meta["batch"] for r in recs] == batches  # every batch once, in stream order
    assert not (world.dep.home.root / "control.db").exists()  # positions in the database: any host continues
    # The tail position is written after the records it covers (a crash in between replays them,
    # deduplicated), so it may trail the records just read by one pass: wait for it.
    until("the tail position of the second term", lambda: tail_seq(world) >= len(batches))


def tail_seq(world: NatsWorld) -> int:
    with psycopg.connect(world_dsn(world)) as c:
        row = c.execute("SELECT last_seq FROM eventward_control.direct_tail WHERE stream = %s",
                        (demo.TOPIC,)).fetchone()
    return row[0] if row else 0


def world_dsn(world: NatsWorld) -> str:
    import os

    return os.environ["EW_TEST_DSN"]
