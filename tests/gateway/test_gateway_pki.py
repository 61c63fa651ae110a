"""Certificate lifecycle (issue 21): revocation reaches the gateway without a restart, renewed
server certificates are served without a restart, expiring certificates alert, bad input is clear."""

from __future__ import annotations

import http.client
import json
import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from eventward._internal import certstore, pki
from eventward._internal.audit.base import MemoryAudit
from eventward._internal.cli import app, common
from eventward._internal.gateway.config import GatewayConfig
from eventward._internal.gateway.metrics import GatewayMetrics
from eventward._internal.gateway.tls import server_context
from eventward.errors import ConfigError, EventwardError, InputError
from support_wait import wait_until

from .conftest import Running, start_gateway

BOUND_S = 5.0  # reload_s 0.2 in these tests; the documented bound is gateway.tls.reload_s (5 s)


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    d = tmp_path / "home" / "certs"
    certstore.init(d)
    certstore.issue(d, "gateway", server=True, sans=["127.0.0.1", "localhost"])
    for who in ("orders", "reader"):
        certstore.issue(d, who)
    return d


def _ctx(certs: Path, who: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    ctx.load_cert_chain(str(certs / "clients" / f"{who}.crt"), str(certs / "clients" / f"{who}.key"))
    return ctx


def _whoami(port: int, ctx: ssl.SSLContext) -> int | str:
    """The status, or "handshake" when the TLS handshake (or the first read) was refused."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    try:
        conn.request("GET", "/v1/whoami")
        return conn.getresponse().status
    except (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected):
        return "handshake"
    finally:
        conn.close()


@pytest.fixture
def gateway(certs: Path) -> Running:
    cfg = GatewayConfig.from_mapping({"host": "127.0.0.1", "port": 0, "tls": {"reload_s": 0.2}})
    run = start_gateway(cfg, certs.parent)
    yield run
    run.gw.stop()


def test_attack_revoked_certificate_gateway(certs: Path, gateway: Running) -> None:
    """A stolen service key: revoked, it is refused for new handshakes and on an open
    keep-alive connection within the reload bound, with no restart; others are unaffected."""
    assert _whoami(gateway.port, _ctx(certs, "orders")) == 200
    kept = http.client.HTTPSConnection("127.0.0.1", gateway.port, context=_ctx(certs, "orders"), timeout=5)
    kept.request("GET", "/v1/whoami")
    assert kept.getresponse().read() and True
    certstore.revoke(certs, "orders", "key-compromise")
    wait_until(lambda: _whoami(gateway.port, _ctx(certs, "orders")) == "handshake", timeout=BOUND_S,
               what="revoked certificate refused at the handshake")
    for path in ("/v1/whoami", "/v1/control/trust"):  # the gateway's and the control API's routes
        kept.request("GET", path)
        r = kept.getresponse()
        assert r.status == 401 and b"revoked" in r.read()
    kept.close()
    assert _whoami(gateway.port, _ctx(certs, "reader")) == 200
    assert gateway.metrics.denials.value("revoked") >= 2


def test_renewed_server_certificate_is_served_without_restart(certs: Path, gateway: Running) -> None:
    def served_serial() -> int:
        ctx = _ctx(certs, "reader")
        with ctx.wrap_socket(__import__("socket").create_connection(("127.0.0.1", gateway.port), timeout=5),
                             server_hostname="127.0.0.1") as s:
            return x509.load_der_x509_certificate(s.getpeercert(binary_form=True)).serial_number

    before = served_serial()
    renewed = certstore.renew(certs, "gateway")
    assert int(renewed.serial, 16) != before
    wait_until(lambda: served_serial() == int(renewed.serial, 16), timeout=BOUND_S, what="renewed certificate served")
    # a renewed client certificate works at once (same CA, new key), the old one until it expires
    certstore.renew(certs, "reader")
    assert _whoami(gateway.port, _ctx(certs, "reader")) == 200


def test_expiring_certificate_alerts_once(certs: Path) -> None:
    certstore.issue(certs, "short-lived", days=2)
    audit, metrics = MemoryAudit(), GatewayMetrics()
    monitor = certstore.ExpiryMonitor(certs, 7, audit=audit, metrics=metrics)
    due = monitor.check()
    assert [r.principal for r in due] == ["short-lived"]
    assert [(e.action, e.resource) for e in audit.events] == [("pki.expiring", f"Certificate::{due[0].serial}")]
    assert metrics.cert_expiring.value("client") == 1
    assert "eventward_gateway_certificates_expiring_total" in metrics.render()
    assert monitor.check() == []  # one alert per certificate
    assert len(audit.events) == 1


def test_crl_lists_revocations_with_reason(certs: Path) -> None:
    (rec,) = certstore.revoke(certs, "reader", "privilege-withdrawn")
    crl = certstore.load_crl(certs / certstore.CRL_NAME)
    ca = x509.load_pem_x509_certificate((certs / "ca.crt").read_bytes())
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    entry = crl.get_revoked_certificate_by_serial_number(int(rec.serial, 16))
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.privilege_withdrawn
    with pytest.raises(InputError, match="reason must be one of"):
        certstore.revoke(certs, "orders", "because")


def _csr(cn: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    req = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
    return req.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_bad_input_is_refused_clearly(certs: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not enrolled"):
        certstore.sign_csr(certs, _csr("stranger"), "stranger", enrolled=False)
    with pytest.raises(InputError, match="not a PEM PKCS#10 CSR"):
        certstore.sign_csr(certs, b"-----BEGIN GARBAGE-----", "orders", enrolled=True)
    rec = certstore.sign_csr(certs, _csr("orders"), "orders", enrolled=True)
    assert rec.serial in [r.serial for r in certstore.CertRegistry(certs).list("orders")]
    assert Path(rec.path).parent.name == "issued"  # the key pair in clients/ stays matched
    pki.load(certs / "clients" / "orders.crt", certs / "clients" / "orders.key")
    with pytest.raises(InputError, match="subject is not the enrolled principal"):
        certstore.sign_csr(certs, _csr("admin"), "orders", enrolled=True)
    bad = tmp_path / "bad.crt"
    bad.write_bytes(b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    with pytest.raises(InputError, match=r"not a PEM X\.509 certificate"):
        certstore.load_cert_file(bad)
    with pytest.raises(ConfigError, match=r"not a PEM X\.509 CRL"):
        server_context(certs / "gateway.crt", certs / "gateway.key", certs / "ca.crt",
                       require_client_cert=True, crl=bad)


def _cli(args: list[str], home: Path) -> tuple[int, str]:
    """Exit code and text as ``eventward`` (common.run) gives them for a typed error."""
    r = CliRunner().invoke(app, args, env={"EVENTWARD_HOME": str(home), "COLUMNS": "200"})
    if isinstance(r.exception, EventwardError):
        return common.exit_code(r.exception), r.exception.message
    return r.exit_code, r.stdout


def test_cli_lifecycle_and_errors(tmp_path: Path) -> None:
    home = tmp_path / "cli-home"
    code, out = _cli(["pki", "list"], home)
    assert code == 9 and out  # no home, no PKI: refused with a configuration error
    assert _cli(["pki", "init"], home)[0] == 0
    code, out = _cli(["pki", "issue", "billing-svc", "--days", "10"], home)
    assert code == 0 and "issued billing-svc" in out, out
    (cert,) = json.loads(_cli(["pki", "list", "--json"], home)[1])["certificates"]
    assert cert["principal"] == "billing-svc" and cert["status"] == "valid" and 9 < cert["days_left"] <= 10
    assert _cli(["pki", "list", "--expiring-within", "5"], home)[0] == 0
    code, out = _cli(["pki", "list", "--expiring-within", "12", "--json"], home)
    assert code == 1 and json.loads(out)["certificates"][0]["principal"] == "billing-svc"
    code, out = _cli(["pki", "revoke", "billing-svc", "--reason", "key-compromise"], home)
    assert code == 0 and "revoked billing-svc" in out, out
    assert json.loads(_cli(["pki", "list", "--json"], home)[1])["certificates"][0]["status"] == "revoked"
    csr = tmp_path / "x.csr"
    csr.write_bytes(_csr("intruder"))
    code, out = _cli(["pki", "sign-csr", str(csr), "--principal", "intruder"], home)
    assert code == 5 and "not enrolled" in out
    (home / "eventward.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    code, out = _cli(["gateway", "cert", "someone"], home)
    assert code == 9 and "eventward.yaml" in out


def test_cli_malformed_certificate_is_one_clear_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.crt"
    junk.write_bytes(b"\x00\x01 not a certificate")
    r = subprocess.run(
        [sys.executable, "-m", "eventward._internal.cli", "pki", "inspect", str(junk)], capture_output=True, text=True,
        timeout=60, env={**os.environ, "EVENTWARD_HOME": str(tmp_path / "h")},
    )
    assert r.returncode == 5
    assert "not a PEM X.509 certificate" in r.stderr and "Traceback" not in r.stderr + r.stdout


def test_certificates_issued_on_first_use_are_booked(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certstore.init(certs)
    cert, _ = pki.ensure_client_cert(certs, "late-comer")
    serial = format(x509.load_pem_x509_certificate(cert.read_bytes()).serial_number, "x")
    (rec,) = certstore.CertRegistry(certs).list("late-comer")
    assert rec.serial == serial and 29 < rec.days_left() <= 30  # short-lived once the CA is managed


def test_serve_alerts_expiring_certificates_at_start(certs: Path) -> None:
    certstore.issue(certs, "expiring-svc", days=3)
    cfg = GatewayConfig.from_mapping({"host": "127.0.0.1", "port": 0, "tls": {"expiry_warn_days": 7}})
    run = start_gateway(cfg, certs.parent)
    try:
        wait_until(lambda: run.metrics.cert_expiring.value("client") == 1, timeout=BOUND_S, what="expiry alert")
        (event,) = [e for e in run.audit.events if e.action == "pki.expiring"]
        assert event.meta["subject"] == "expiring-svc" and 2 < float(event.meta["days_left"]) <= 3
        assert "expiring-svc" not in run.metrics.render()  # identities never become metric labels
    finally:
        run.gw.stop()


def test_one_identity_in_cn_dns_san_and_uri(certs: Path, gateway: Running) -> None:
    """The gateway's default mapping (CN), nats-server's verify_and_map (DNS SAN first) and the
    URI SAN all name the same principal."""
    cert = x509.load_pem_x509_certificate((certs / "clients" / "orders.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["orders"]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://eventward/orders"]
    conn = http.client.HTTPSConnection("127.0.0.1", gateway.port, context=_ctx(certs, "orders"), timeout=5)
    conn.request("GET", "/v1/whoami")
    assert json.loads(conn.getresponse().read())["principal"] == "orders"
    conn.close()


def test_adopt_books_only_this_cas_certificates(certs: Path, tmp_path: Path) -> None:
    ca = pki.load(*pki.ca_paths(certs))
    early = pki.issue_cert(ca, "early-svc", client=True)
    path = tmp_path / "early.crt"
    path.write_bytes(early.cert_pem())
    rec = certstore.adopt(certs, path)
    assert rec.principal == "early-svc" and rec.spki in certstore.CertRegistry(certs).pins()
    foreign = tmp_path / "foreign.crt"
    foreign.write_bytes(pki.issue_cert(pki.issue_ca("other CA"), "early-svc", client=True).cert_pem())
    with pytest.raises(InputError, match="not issued by this deployment's CA"):
        certstore.adopt(certs, foreign)


def test_broken_crl_on_reload_keeps_the_last_good_context(
    certs: Path, gateway: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """A half-written or foreign CRL is logged and ignored; the revocations already loaded stay."""
    import logging

    caplog.set_level(logging.WARNING, logger="eventward.gateway")
    certstore.revoke(certs, "orders", "key-compromise")
    wait_until(lambda: _whoami(gateway.port, _ctx(certs, "orders")) == "handshake", timeout=BOUND_S, what="revoked")
    (certs / certstore.CRL_NAME).write_bytes(b"-----BEGIN X509 CRL-----\ngarbage\n-----END X509 CRL-----\n")
    wait_until(lambda: "do not load" in caplog.text, timeout=BOUND_S, what="broken CRL reported")
    assert "garbage" not in caplog.text
    assert _whoami(gateway.port, _ctx(certs, "orders")) == "handshake"
    assert _whoami(gateway.port, _ctx(certs, "reader")) == 200
