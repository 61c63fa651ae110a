"""The control API over HTTPS with mutual TLS: what a service on another host really uses."""

from __future__ import annotations

import time

import orjson
import pytest

from eventward._internal import demo
from eventward._internal.control.client import ControlPlaneUnavailable
from eventward._internal.control.connect import connect
from eventward._internal.control.http import HttpControlAPI
from eventward._internal.control.identity import ServiceIdentity
from eventward._internal.gateway.config import SERVER_CERT, GatewayConfig
from eventward._internal.gateway.deployment_backend import DeploymentBackend
from eventward._internal.gateway.server import create_server
from eventward._internal.gateway.tls import ensure_home_material
from eventward._internal.log.embedded import EmbeddedLog
from eventward.errors import AccessDenied, InputError
from gateway.gw_support import ThreadedGateway
from keys_net.conftest import free_port

ERASED, REDACTED = "[erased]", "[redacted]"


@pytest.fixture
def served(world):
    ensure_home_material(world.dep.home, "127.0.0.1", SERVER_CERT)
    backend = DeploymentBackend(world.dep, poll_interval=0.05)
    cfg = GatewayConfig.from_mapping({"host": "127.0.0.1", "port": 0,
                                      "limits": {"rate_events_per_s": 100_000.0, "burst_events": 100_000}})
    gw = ThreadedGateway(create_server(cfg, world.dep.home, backend, audit=backend.audit)).start()
    dead = f"https://127.0.0.1:{free_port()}"  # a replica that is down: clients fail over past it
    urls = [dead, f"https://127.0.0.1:{gw.port}"]
    clients = []

    def enroll(principal: str) -> ServiceIdentity:
        ident = ServiceIdentity.create(world.root / "svc" / principal, principal)
        from .conftest import MAY_SEAL

        ident.install(world.plane.approve(demo.ADMIN, ident.request_path.read_bytes(), MAY_SEAL[principal],
                                          control_urls=urls))
        return ident

    def client(principal: str):
        ident = enroll(principal)
        c = connect(ident.root, transport=EmbeddedLog.open(world.dep.home), notice_wait=0.5)
        clients.append(c)
        return c

    try:
        yield client, gw
    finally:
        for c in clients:
            c.close()
            c.transport.close()
        gw.stop()
        backend.close()


def test_client_mode_over_https_with_failover(world, served, monkeypatch):
    # An environment CA bundle must never replace the deployment's CA (requests honours it by default).
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    client, _ = served
    producer = client(demo.PRODUCER)
    with producer.producer(demo.TOPIC) as p:
        ids = [p.send(demo.EVENT_TYPE, demo.order(i)) for i in range(4)]
        p.flush()
    seen: list = []
    shipping = client(demo.SHIPPING)
    c = shipping.consumer(demo.TOPIC, group="s", from_beginning=True)
    c.run(seen.append, idle_timeout=0.3)
    c.close()
    assert [e.id for e in seen] == ids and all(e.data["customer"]["name"] != REDACTED for e in seen)
    analytics = client(demo.ANALYTICS)
    seen2: list = []
    c = analytics.consumer(demo.TOPIC, group="a", from_beginning=True)
    c.run(seen2.append, idle_timeout=0.3)
    c.close()
    assert {e.data["customer"]["name"] for e in seen2} == {REDACTED}

    world.dep.forget(demo.FORGOTTEN, principal=demo.ADMIN, reason="gdpr-art17")
    deadline = time.monotonic() + 1.0
    applied = shipping.notices.applied
    while shipping.notices.applied == applied and time.monotonic() < deadline:
        time.sleep(0.02)
    assert shipping.notices.applied > applied, "the erasure notice did not arrive within 1 s"
    seen3: list = []
    c = shipping.consumer(demo.TOPIC, group="s2", from_beginning=True)
    c.run(seen3.append, idle_timeout=0.3)
    c.close()
    assert any(e.data["customer"]["name"] == ERASED for e in seen3)


def test_attack_http_requests_refused_with_problems_and_nothing_released(world, served):
    client, _ = served
    analytics = client(demo.ANALYTICS)
    api = analytics.api
    with pytest.raises(AccessDenied):
        api.encryption_keys(demo.TOPIC, demo.EVENT_TYPE, [("cust-1", "pii", 1)])
    with pytest.raises(InputError):
        api.decryption_keys(demo.TOPIC, demo.EVENT_TYPE, [("k", "pii", None)] * 1001)
    with pytest.raises(InputError):
        api.decryption_keys(demo.TOPIC, demo.EVENT_TYPE, [("k", "NOT A CLASS", None)])
    denials = [e for e in world.dep.audit.tail(100) if e.action == "control.encrypt_keys"]
    assert denials and denials[-1].outcome == "denied" and denials[-1].principal == demo.ANALYTICS


def test_attack_unknown_certificate_is_refused(world, served, tmp_path):
    _, gw = served
    ident = ServiceIdentity.create(tmp_path / "rogue", demo.SHIPPING)  # never approved
    other = ServiceIdentity.create(tmp_path / "legit", demo.ANALYTICS)
    other.install(world.plane.approve(demo.ADMIN, other.request_path.read_bytes(), {}))
    # the rogue presents a self-made certificate for shipping-svc: TLS refuses it (not our CA)
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = serialization.load_pem_private_key(ident.tls_key_path.read_bytes(), None)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, demo.SHIPPING)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    (tmp_path / "rogue.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    api = HttpControlAPI([f"https://127.0.0.1:{gw.port}"], principal=demo.SHIPPING, cert=str(tmp_path / "rogue.crt"),
                         key=str(ident.tls_key_path), ca=str(other.ca_path), timeout=2.0)
    with pytest.raises(ControlPlaneUnavailable):  # the TLS handshake fails: nothing answered
        api.trust_entries()
    assert orjson.loads(other.grant_path.read_bytes())["principal"] == demo.ANALYTICS


def test_client_mode_groups_acknowledge_erasures_over_https(world, served):
    """Client-mode consumer groups are registered, run their on_forget hooks and acknowledge
    through the control API; a failing hook is reported by its code; completion follows the last ack."""
    client, _ = served
    producer = client(demo.PRODUCER)
    with producer.producer(demo.TOPIC) as p:
        p.send_many(demo.EVENT_TYPE, [demo.order(i) for i in range(3)])
        p.flush()
    shipping = client(demo.SHIPPING)
    purged: list[str] = []
    good = shipping.consumer(demo.TOPIC, group="read-model", from_beginning=True)
    good.on_forget(purged.append)
    bad = shipping.consumer(demo.TOPIC, group="search-index", from_beginning=True)

    def broken(_: str) -> None:
        raise RuntimeError("index offline: Grace Hopper")  # its message must never travel

    bad.on_forget(broken)
    done = world.dep.forget(demo.FORGOTTEN, principal=demo.ADMIN, reason="gdpr-art17")
    pseudonym = done.receipt.subject_hash
    for consumer in (good, bad):
        consumer.run(lambda e: None, idle_timeout=0.3)
        consumer.close()
    assert purged == [pseudonym]
    status = {g.group: g for g in world.dep.notices.status(pseudonym).groups}
    assert status[f"{demo.SHIPPING}/read-model"].state == "acked"
    failed = status[f"{demo.SHIPPING}/search-index"]
    assert failed.state == "failed" and "Grace" not in repr(failed)
    assert world.dep.notices.status(pseudonym).completed is None  # one group still owes its purge
    with pytest.raises(InputError):  # an acknowledgement's error is a code, never free text
        shipping.api.acknowledge("search-index", pseudonym, "Grace Hopper's index is down")
    assert shipping.api.acknowledge("search-index", pseudonym, None) is True
    assert world.dep.notices.status(pseudonym).completed is not None


def test_attack_forget_between_two_polls_is_not_held_for_the_whole_wait(world, served):
    """A forget recorded after the client's last notice but before its next long-poll reached the
    server used to wait out the whole poll (the server only woke on a *later* change): erasure
    propagation must not depend on that timing."""
    client, _ = served
    with client(demo.PRODUCER).producer(demo.TOPIC) as p:  # the subject gets keys to destroy
        p.send_many(demo.EVENT_TYPE, [demo.order(i) for i in range(3)])
    api = client(demo.SHIPPING).api
    first = api.notices(0.0, 0)
    until = orjson.loads(_payload(first))["until"]
    world.dep.forget(demo.FORGOTTEN, principal=demo.ADMIN, reason="gdpr-art17")  # between two polls
    t = time.monotonic()
    notice = api.notices(until, 10)
    assert time.monotonic() - t < 2.0  # answered at once, not after the 10 s wait
    assert world.plane.erased_after(until) and orjson.loads(_payload(notice))["erased"]


def _payload(statement: dict) -> bytes:
    import base64

    body = statement["body"]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
