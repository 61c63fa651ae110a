"""Client mode against a control plane whose state is on PostgreSQL: the client-mode tests run
again on a deployment with ``store.backend: postgres`` (keys, audit, registry, trust registry and
seal grants in the database), and a second replica on the same database answers for services
the first one enrolled."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from control.conftest import World
from control.test_client_mode import (  # noqa: F401
    produce,
    read,
    test_attack_producer_cannot_publish_a_type_or_topic_it_is_not_granted,
    test_attack_replayed_enrollment_is_refused,
    test_attack_service_seals_as_another_principal,
    test_forget_reaches_a_client_mode_consumer_within_a_second,
    test_services_read_per_clearance_and_hold_only_their_own_keys,
)
from eventward._internal import demo
from eventward._internal.control import anchor as statements
from eventward._internal.control.client import LocalControlAPI
from eventward._internal.control.plane import ControlPlane
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward._internal.store.sqlcompat import PgTables


@pytest.fixture
def world(tmp_path, pg_dsn, monkeypatch) -> Iterator[World]:
    monkeypatch.setenv("EW_TEST_DSN", pg_dsn)
    home = Home(tmp_path / "control-plane").ensure()
    home.config.write_text("store: {backend: postgres, dsn_env: EW_TEST_DSN}\n")
    dep = Deployment.init(home, admin=demo.ADMIN)
    demo.setup(dep, lambda *a: None)
    demo.schemas(dep, demo.DemoResult(), lambda *a: None)
    plane = ControlPlane.open(dep)
    w = World(tmp_path, dep, plane)
    try:
        yield w
    finally:
        for c in w.clients:
            c.close()
            c.transport.close()
        plane.close()
        dep.close()


def test_second_replica_serves_services_the_first_enrolled(world, pg_dsn):
    assert isinstance(world.plane._db, PgTables) and isinstance(world.dep.trust._db, PgTables)
    ids = produce(world)
    home = world.dep.home
    assert not home.trust_db.exists() and not (home.root / "control.db").exists()
    ident = world.identities[demo.PRODUCER]
    producer_kid = ident.signer().kid
    with Deployment.open(home) as dep2:  # replica 2: same home material, same database
        plane2 = ControlPlane.open(dep2)
        try:
            assert plane2.anchor.public_text == world.plane.anchor.public_text  # the shared anchor key
            docs = {}
            for wire in plane2.trust_entries(demo.SHIPPING):
                body = statements.verify(ident.anchor_key(), wire, "trust").body
                docs[body["kid"]] = body
            assert docs[producer_kid]["may_seal"] == {demo.TOPIC: [demo.EVENT_TYPE]}
            seen = read(world.client(demo.SHIPPING, api=LocalControlAPI(plane2, demo.SHIPPING)), "r2")
            assert [e.id for e in seen] == ids
        finally:
            plane2.close()
    with psycopg.connect(pg_dsn) as c:
        kids = {r[0] for r in c.execute("SELECT kid FROM eventward_control.seal_grants")}
    assert producer_kid in kids


def test_race_two_replicas_approve_the_same_enrollment_one_winner(world, pg_dsn):
    """Two replicas approving one enrollment request at once: one grant, the other a ConflictError,
    one set of trusted keys and one seal-grant row."""
    from eventward._internal.control.identity import ServiceIdentity
    from eventward._internal.pki import open_ca
    from eventward.errors import ConflictError
    from pg.conftest import race

    open_ca(world.dep.home.certs, create=True).close()  # home material is made before replicas start
    ident = ServiceIdentity.create(world.root / "svc" / demo.PRODUCER, demo.PRODUCER)
    request = ident.request_path.read_bytes()
    may_seal = {demo.TOPIC: [demo.EVENT_TYPE]}
    with Deployment.open(world.dep.home) as dep2:
        plane2 = ControlPlane.open(dep2)
        try:
            def approve(plane):
                try:
                    return plane.approve(demo.ADMIN, request, may_seal)
                except ConflictError as e:
                    return e

            out = race(lambda: approve(world.plane), lambda: approve(plane2))
        finally:
            plane2.close()
    assert sorted(type(o).__name__ for o in out) == ["ConflictError", "bytes"], out
    ident.install(next(o for o in out if isinstance(o, bytes)))
    keys = [k for k in world.dep.trust.list(demo.PRODUCER) if k.status == "active"]
    assert sorted(k.purpose for k in keys) == ["dead_letter", "seal"]
    assert ident.signer().kid in {k.kid for k in keys}
    with psycopg.connect(pg_dsn) as c:
        assert c.execute("SELECT count(*) FROM eventward_control.seal_grants").fetchone()[0] == 1


def test_replica_with_another_anchor_key_is_refused(world):
    """A replica whose home holds another control-anchor.key would sign grants and trust
    statements the enrolled services reject (or enroll services under a second anchor): it is
    refused at start, naming the file to copy."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from eventward._internal.control.anchor import Anchor
    from eventward.errors import ConfigError

    with pytest.raises(ConfigError, match=r"control-anchor\.key is not the anchor key"):
        ControlPlane(world.dep, Anchor(Ed25519PrivateKey.generate()))
    ControlPlane.open(world.dep).close()  # the home's own key is accepted
