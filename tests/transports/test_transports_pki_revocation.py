"""Revocation and renewal reach nats-server without a restart (issue 21): eventward writes
``pinned_certs`` from the CA's book and reloads the server with SIGHUP."""

from __future__ import annotations

import asyncio
import re
import ssl
import subprocess
from pathlib import Path

import nats
import pytest

from eventward._internal import certstore, pki
from eventward._internal.cli.nats import OPERATOR, SERVER_CERT, with_operator
from eventward._internal.log import natsserver
from eventward._internal.policy.compile_nats import compile_nats
from eventward._internal.policy.spec import parse
from support_wait import wait_until

from .conftest import port_block
from .nats_world import POLICY, Deployment

BOUND_S = 5.0


@pytest.fixture
def world(tmp_path: Path):
    certs = tmp_path / "certs"
    certstore.init(certs)
    cert, key = pki.ensure_server_cert(certs, SERVER_CERT)
    for p in (OPERATOR, "signup-svc", "billing"):
        pki.ensure_client_cert(certs, p)
    reg = certstore.CertRegistry(certs)
    pins = reg.pins()
    reg.close()
    tls = natsserver.TlsFiles(pki.ca_paths(certs)[0], cert, key)
    auth = with_operator(compile_nats(parse(POLICY)))
    nodes = natsserver.start_all(tmp_path / "run", port=port_block(1), tls=tls, auth_config=auth, pinned=pins)
    dep = Deployment(certs, nodes)
    yield dep, tmp_path / "run"
    dep.stop()


def _connect(dep: Deployment, who: str) -> object:
    """A raw nats-py connection with ``who``'s certificate files as they are now, or the error."""
    async def go() -> object:
        ctx = ssl.create_default_context(cafile=str(dep.ca))
        ctx.load_cert_chain(str(dep.certs / "clients" / f"{who}.crt"), str(dep.certs / "clients" / f"{who}.key"))
        try:
            nc = await nats.connect(dep.urls[0], tls=ctx, allow_reconnect=False, connect_timeout=2)
        except Exception as e:  # the refusal is the result
            return e
        await nc.close()
        return "connected"

    return asyncio.run(go())


def test_attack_revoked_certificate_nats(world) -> None:
    dep, run_root = world
    assert _connect(dep, "signup-svc") == "connected"
    transport = dep.client("signup-svc")  # connected before the revocation
    try:
        assert transport.has_stream("customers") in (True, False)
        certstore.revoke(dep.certs, "signup-svc", "key-compromise")
        assert certstore.apply_nats_pins(dep.certs, run_root) == ["ew-1"]
        log = run_root / "ew-1" / "nats.log"
        # refused for the pin (a connection attempt while the server reloads may fail otherwise first)
        wait_until(lambda: _connect(dep, "signup-svc") != "connected" and "certificate not pinned" in log.read_text(),
                   timeout=BOUND_S, what="revoked key refused")
        # the open connection too: the server logs it once its reload has walked the clients (an attempt
        # that raced the reload is dropped with it, so the count may be more than one)
        wait_until(lambda: re.search(r"Disconnect [1-9]\d* clients due to pinned certs reload", log.read_text()),
                   timeout=BOUND_S, what="open connection dropped")
        assert _connect(dep, "billing") == "connected"  # everyone else is untouched
        assert "pinned_certs" in (run_root / "ew-1" / "nats.conf").read_text()
    finally:
        transport.close()


def test_renewed_client_certificate_is_used_on_reconnect(world) -> None:
    dep, run_root = world
    transport = dep.client("billing")
    try:
        assert transport.has_stream("customers") in (True, False)
        old = certstore.CertRegistry(dep.certs).current("billing")
        assert old is not None
        certstore.renew(dep.certs, "billing")  # new key and certificate over the old files
        certstore.apply_nats_pins(dep.certs, run_root)
        certstore.revoke(dep.certs, old.serial, "superseded")  # the server drops the old connection
        certstore.apply_nats_pins(dep.certs, run_root)
        wait_until(lambda: "Disconnect 1 clients due to pinned certs reload" in
                   (run_root / "ew-1" / "nats.log").read_text(), timeout=BOUND_S, what="old connection dropped")
        # the transport reconnects by itself, presenting the renewed certificate (no restart)
        wait_until(lambda: transport.has_stream("customers") in (True, False), timeout=BOUND_S, what="reconnected")
        assert _connect(dep, "billing") == "connected"
    finally:
        transport.close()


def test_nats_server_accepts_the_pinned_config(world) -> None:
    """``nats-server -t`` on the configuration eventward wrote (pins included) and rewrote."""
    dep, run_root = world
    certstore.revoke(dep.certs, "billing", "cessation-of-operation")
    certstore.apply_nats_pins(dep.certs, run_root)
    conf = run_root / "ew-1" / "nats.conf"
    r = subprocess.run([str(natsserver.binary()), "-t", "-c", str(conf)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr[-500:]
    text = conf.read_text()
    reg = certstore.CertRegistry(dep.certs)
    assert all(p in text for p in reg.pins())
    assert not any(r.spki in text for r in reg.list("billing"))
