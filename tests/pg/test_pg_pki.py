"""The PKI's book of issued certificates and the current CRL in the store (migration 7): with
``store.backend: postgres`` they live in the shared database, not in ``certs/issued.db``, so every
``serve`` replica approving a CSR or revoking sees one book; the same book tests run on SQLite.
Replicas racing give one winner and a ConflictError, and no revocation is ever missing from the
CRL a replica publishes or serves."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import psycopg
import pytest
from cryptography import x509

from eventward._internal import certstore, pki
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward.errors import ConflictError, NotFoundError
from pg.conftest import race
from pg.test_pg_control import world  # noqa: F401  (the client-mode world on PostgreSQL)


def _pg_home(root: Path, dsn: str, monkeypatch: pytest.MonkeyPatch) -> Home:
    monkeypatch.setenv("EW_TEST_DSN", dsn)
    home = Home(root).ensure()
    home.config.write_text("store: {backend: postgres, dsn_env: EW_TEST_DSN}\n")
    Deployment.init(home, admin="admin").close()  # migrates the database and binds it to this deployment
    return home


@pytest.fixture(params=["sqlite", "postgres"])
def home(request, tmp_path, monkeypatch) -> Home:
    """A home whose PKI is initialised, its book on either backend."""
    if request.param == "sqlite":
        h = Home(tmp_path / "home").ensure()
    else:
        h = _pg_home(tmp_path / "home", request.getfixturevalue("pg_dsn"), monkeypatch)
    reg, _ = certstore.init(h.certs)
    reg.close()
    return h


@pytest.fixture
def replicas(tmp_path, pg_dsn, monkeypatch) -> Iterator[tuple[Home, Home]]:
    """Two replicas' homes (one per host: the read-only material copied) on one database."""
    a = _pg_home(tmp_path / "a", pg_dsn, monkeypatch)
    certstore.init(a.certs)[0].close()
    b = Home(tmp_path / "b")
    shutil.copytree(a.root, b.root)
    yield a, b


def _serials(path: Path) -> set[str]:
    return {format(r.serial_number, "x") for r in x509.load_pem_x509_crl(path.read_bytes())}


def _outcome(call):
    try:
        return call()
    except ConflictError as e:
        return e


def test_book_contract_on_both_backends(home):
    """Issue, list, pins, revoke (with its CRL), expiry alerts: the same answers on both backends."""
    a = certstore.issue(home.certs, "orders")
    b = certstore.issue(home.certs, "billing", days=2)
    assert certstore.CertRegistry.managed(home.certs)
    reg = certstore.CertRegistry(home.certs)
    try:
        assert {r.serial for r in reg.list()} == {a.serial, b.serial}
        assert reg.current("orders") == a and sorted(reg.pins()) == sorted({a.spki, b.spki})
        assert [r.serial for r in reg.expiring(7)] == [b.serial]
        assert reg.mark_alerted(b.serial) and not reg.mark_alerted(b.serial)  # one alert, whoever asks twice
        assert reg.expiring(7) == []
        (done,) = certstore.revoke(home.certs, "orders", "key-compromise")
        assert done.status == certstore.REVOKED and reg.pins() == [b.spki]
        assert _serials(home.certs / certstore.CRL_NAME) == {a.serial}
        number, pem = reg.crl()
        assert pem == (home.certs / certstore.CRL_NAME).read_bytes()
        with pytest.raises(ConflictError, match="already revoked"):
            certstore.revoke(home.certs, a.serial, "superseded")
        with pytest.raises(NotFoundError):
            certstore.revoke(home.certs, "nobody", "superseded")
        ca = pki.open_ca(home.certs)
        try:
            reg.publish_crl(ca)
        finally:
            ca.close()
        assert reg.crl()[0] > number  # CRL numbers only grow
        assert _serials(home.certs / certstore.CRL_NAME) == {a.serial}
    finally:
        reg.close()


def test_book_lives_in_the_database_not_in_the_home(replicas, pg_dsn):
    a, b = replicas
    rec = certstore.issue(a.certs, "orders")
    assert not (a.certs / certstore.DB_NAME).exists() and not (b.certs / certstore.DB_NAME).exists()
    with psycopg.connect(pg_dsn) as c:
        rows = c.execute("SELECT serial, principal, status FROM eventward_control.issued_certs").fetchall()
        assert c.execute("SELECT count(*) FROM eventward_control.crl").fetchone()[0] == 1
    assert rows == [(rec.serial, "orders", certstore.VALID)]
    assert certstore.CertRegistry.managed(b.certs)
    # the other replica revokes what this one issued, and refuses to issue a second one
    with pytest.raises(ConflictError, match="already has a valid certificate"):
        certstore.issue(b.certs, "orders")
    certstore.revoke(b.certs, "orders", "superseded")
    with closing(certstore.CertRegistry(a.certs)) as reg:  # closed here: a pool left to the GC warns
        assert reg.get(rec.serial).status == certstore.REVOKED


def test_attack_concurrent_revocations_on_two_replicas_all_reach_the_crl(replicas):
    """Two replicas revoking two certificates at once: each used to sign a CRL from its own view of
    the book, so the CRL published last could miss the other's revocation (a revoked client still
    accepted). Now book, stored CRL and crl.pem change under one write lock, and a replica's
    CrlSync serves the stored CRL: every CRL lists both."""
    a, b = replicas
    for _ in range(3):
        x, y = certstore.issue(a.certs, "svc-x"), certstore.issue(a.certs, "svc-y")
        out = race(lambda x=x: certstore.revoke(a.certs, x.serial, "key-compromise"),
                   lambda y=y: certstore.revoke(b.certs, y.serial, "key-compromise"))
        assert [r[0].serial for r in out] == [x.serial, y.serial]
        reg = certstore.CertRegistry(a.certs)
        try:
            _, pem = reg.crl()
        finally:
            reg.close()
        stored = {format(r.serial_number, "x") for r in x509.load_pem_x509_crl(pem)}
        assert {x.serial, y.serial} <= stored
        sync_a = certstore.CrlSync(a.certs, a.certs / certstore.CRL_NAME)
        sync_b = certstore.CrlSync(b.certs, b.certs / certstore.CRL_NAME)
        try:
            sync_a.run()
            sync_b.run()
        finally:
            sync_a.close()
            sync_b.close()
        for h in (a, b):
            assert {x.serial, y.serial} <= _serials(h.certs / certstore.CRL_NAME)
            assert (h.certs / certstore.CRL_NAME).read_bytes() == pem


def test_race_two_replicas_revoke_the_same_certificate_one_winner(replicas):
    a, b = replicas
    for _ in range(3):
        rec = certstore.issue(a.certs, "svc")
        s = rec.serial
        out = race(lambda s=s: _outcome(lambda: certstore.revoke(a.certs, s, "key-compromise")),
                   lambda s=s: _outcome(lambda: certstore.revoke(b.certs, s, "superseded")))
        assert sorted(type(o).__name__ for o in out) == ["ConflictError", "list"], out
        winner = next(o for o in out if isinstance(o, list))[0]
        with closing(certstore.CertRegistry(b.certs)) as reg:
            assert reg.get(rec.serial).reason == winner.reason


def test_revocation_is_final_in_the_database(replicas, pg_dsn):
    """A replica (or a stale retry) writing 'valid' over a revoked row is refused by the database."""
    a, _ = replicas
    rec = certstore.issue(a.certs, "svc")
    certstore.revoke(a.certs, rec.serial, "key-compromise")
    with psycopg.connect(pg_dsn) as c, pytest.raises(psycopg.errors.RaiseException, match="stay revoked"):
        c.execute("UPDATE eventward_control.issued_certs SET status = 'valid' WHERE serial = %s", (rec.serial,))


def test_crl_sync_keeps_a_newer_local_crl_and_takes_a_newer_stored_one(replicas):
    a, b = replicas
    rec = certstore.issue(a.certs, "svc")
    certstore.revoke(a.certs, rec.serial, "key-compromise")
    path = b.certs / certstore.CRL_NAME
    assert rec.serial not in _serials(path)  # b's file is the one copied before the revocation
    sync = certstore.CrlSync(b.certs, path)
    try:
        sync.run()
        assert rec.serial in _serials(path)
        before = path.read_bytes()
        sync.run()  # nothing new: the file is left alone
        assert path.read_bytes() == before
    finally:
        sync.close()


def test_race_two_replicas_approve_one_enrollment_book_one_certificate(world, pg_dsn):  # noqa: F811
    """Both replicas passed the enrollment checks and had the CA sign: each booked its certificate
    for the one key (two valid certificates, one never handed out). Now the book is the referee:
    one approval books its certificate and returns the grant, the other a ConflictError."""
    from eventward._internal import demo
    from eventward._internal.control.identity import ServiceIdentity
    from eventward._internal.control.plane import ControlPlane

    certstore.init(world.dep.home.certs)[0].close()
    ident = ServiceIdentity.create(world.root / "svc" / demo.PRODUCER, demo.PRODUCER)
    request = ident.request_path.read_bytes()
    with Deployment.open(world.dep.home) as dep2:
        plane2 = ControlPlane.open(dep2)
        try:
            grants = {demo.TOPIC: [demo.EVENT_TYPE]}
            out = race(lambda: _outcome(lambda: world.plane.approve(demo.ADMIN, request, grants)),
                       lambda: _outcome(lambda: plane2.approve(demo.ADMIN, request, grants)))
        finally:
            plane2.close()
    assert sorted(type(o).__name__ for o in out) == ["ConflictError", "bytes"], out
    with psycopg.connect(pg_dsn) as c:
        rows = c.execute("SELECT status FROM eventward_control.issued_certs WHERE principal = %s",
                         (demo.PRODUCER,)).fetchall()
    assert rows == [(certstore.VALID,)]


def test_attack_revocation_on_one_replica_is_enforced_by_the_other(tmp_path, pg_dsn, monkeypatch):
    """A stolen service key revoked through one replica's home: the other replica (its own copy of
    the home's material, as on another host) used to keep accepting it, its crl.pem never changed.
    Now its CRL sync writes the stored CRL and its TLS reload refuses the key within the bound."""
    from eventward._internal.gateway.config import GatewayConfig
    from gateway.conftest import start_gateway
    from gateway.test_gateway_pki import BOUND_S, _ctx, _whoami
    from support_wait import wait_until

    a = _pg_home(tmp_path / "a", pg_dsn, monkeypatch)
    certstore.init(a.certs)[0].close()
    certstore.issue(a.certs, "gateway", server=True, sans=["127.0.0.1", "localhost"])
    for who in ("orders", "reader"):
        certstore.issue(a.certs, who)
    b = Home(tmp_path / "b")
    shutil.copytree(a.root, b.root)
    cfg = GatewayConfig.from_mapping({"host": "127.0.0.1", "port": 0, "tls": {"reload_s": 0.2}})
    run = start_gateway(cfg, b.root)
    try:
        assert _whoami(run.port, _ctx(b.certs, "orders")) == 200
        certstore.revoke(a.certs, "orders", "key-compromise")
        wait_until(lambda: _whoami(run.port, _ctx(b.certs, "orders")) == "handshake", timeout=BOUND_S,
                   what="revoked on replica a, refused by replica b")
        assert _whoami(run.port, _ctx(b.certs, "reader")) == 200
    finally:
        run.gw.stop()
