"""The deployment CA with its key in a PKCS#11 token (SoftHSM2): generated in the token, never on disk;
certificates and CRLs signed with CKM_ECDSA and verified; the gateway accepts what it issues."""

from __future__ import annotations

import http.client
import os
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters
from typer.testing import CliRunner

from eventward._internal import casigner, certstore, pki
from eventward._internal.cli import app
from eventward._internal.gateway.config import GatewayConfig
from eventward._internal.keys.kms.pkcs11 import Pkcs11Config, token_session
from eventward.errors import ConfigError, KMSUnavailable

from .conftest import PIN_ENV, TOKEN

LABEL = "ew-test-ca"


def _yaml(cfg: Pkcs11Config, token: str = TOKEN) -> str:
    return (f"pki:\n  ca_key:\n    backend: pkcs11\n    key: {LABEL}\n    pkcs11:\n      module: {cfg.module}\n"
            f"      token_label: {token}\n      pin_env: {PIN_ENV}\n")


@pytest.fixture
def home(tmp_path: Path, cfg: Pkcs11Config) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    (h / "eventward.yaml").write_text(_yaml(cfg))
    return h


def _ca_objects(cfg: Pkcs11Config) -> list[dict]:
    with token_session(cfg) as s:
        return [{a: o[a] for a in (Attribute.SENSITIVE, Attribute.EXTRACTABLE, Attribute.NEVER_EXTRACTABLE,
                                   Attribute.LOCAL)}
                for o in s.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: LABEL})]


def test_hsm_ca_issues_and_revokes(home: Path, cfg: Pkcs11Config) -> None:
    certs = home / "certs"
    certstore.init(certs)
    assert _ca_objects(cfg) == [{Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
                                 Attribute.NEVER_EXTRACTABLE: True, Attribute.LOCAL: True}]
    ca = pki.ca_certificate(certs)
    ca.verify_directly_issued_by(ca)
    rec = certstore.issue(certs, "orders")
    cert = certstore.load_cert_file(Path(rec.path))
    cert.verify_directly_issued_by(ca)
    certstore.revoke(certs, "orders", "key-compromise")
    crl = certstore.load_crl(certs / certstore.CRL_NAME)
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert [r.serial_number for r in crl] == [cert.serial_number]
    again = certstore.issue(certs, "orders")  # a fresh one after revocation, then renewed
    renewed = certstore.renew(certs, "orders")
    assert renewed.serial != again.serial
    certstore.load_cert_file(Path(renewed.path)).verify_directly_issued_by(ca)
    # an enrolled service's own key, certified from its CSR (the enrollment path)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "billing")])).sign(key, hashes.SHA256())
    rec = certstore.sign_csr(certs, csr.public_bytes(serialization.Encoding.PEM), "billing", True)
    certstore.load_cert_file(Path(rec.path)).verify_directly_issued_by(ca)


def test_attack_ca_key_not_on_disk(home: Path, cfg: Pkcs11Config) -> None:
    """With the CA key in the token, nothing in the home can sign as the CA: there is no ca.key,
    and no private key found anywhere in the home belongs to the CA certificate."""
    certs = home / "certs"
    certstore.init(certs)
    certstore.issue(certs, "orders")
    pki.ensure_server_cert(certs, "gateway")
    ca_pub = pki.ca_certificate(certs).public_key()
    assert not (certs / "ca.key").exists()
    found = 0
    for path in home.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        for block in data.split(b"-----BEGIN ")[1:]:
            if b"PRIVATE KEY-----" not in block.split(b"\n", 1)[0]:
                continue
            key = serialization.load_pem_private_key(b"-----BEGIN " + block, password=None)
            found += 1
            assert key.public_key() != ca_pub, f"{path} holds the CA private key"
    assert found == 2  # the two end-entity keys, and nothing else


def test_init_uses_an_existing_token_key(home: Path, cfg: Pkcs11Config) -> None:
    """An HSM administrator made the key: pki init adopts it instead of generating another."""
    signer = casigner.Pkcs11Signer.open(cfg, LABEL, create=True)
    certstore.init(home / "certs")
    assert pki.ca_certificate(home / "certs").public_key() == signer.public_key()
    assert len(_ca_objects(cfg)) == 1


def test_attack_extractable_ca_key_refused(home: Path, cfg: Pkcs11Config) -> None:
    """A key planted under the CA label that could be exported (someone may hold a copy) is refused."""
    with token_session(cfg) as s:
        params = s.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True)
        params.generate_keypair(store=True, label=LABEL, private_template={
            Attribute.TOKEN: True, Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True, Attribute.SIGN: True})
    with pytest.raises(ConfigError, match="extractable"):
        certstore.init(home / "certs")
    assert not (home / "certs" / "ca.crt").exists() and not (home / "certs" / certstore.DB_NAME).exists()


def test_token_unavailable_writes_nothing(tmp_path: Path, cfg: Pkcs11Config) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "eventward.yaml").write_text(_yaml(cfg, token="no-such-token"))
    r = CliRunner().invoke(app, ["--home", str(home), "pki", "init"])
    assert isinstance(r.exception, KMSUnavailable), r.output
    assert "no PKCS#11 token labelled" in r.exception.message and os.environ[PIN_ENV] not in r.exception.message
    assert not (home / "certs" / "ca.crt").exists() and not (home / "certs" / certstore.DB_NAME).exists()


def test_cli_init_says_the_key_is_in_the_token(home: Path, cfg: Pkcs11Config) -> None:
    r = CliRunner().invoke(app, ["--home", str(home), "pki", "init"])
    assert r.exit_code == 0, r.output
    assert f"key in PKCS#11 token {TOKEN!r} (key label {LABEL!r})" in r.output
    assert not (home / "certs" / "ca.key").exists()


def test_gateway_accepts_a_certificate_from_the_hsm_ca(home: Path, cfg: Pkcs11Config) -> None:
    from gateway.conftest import start_gateway

    certs = home / "certs"
    certstore.init(certs)
    certstore.issue(certs, "gateway", server=True, sans=["127.0.0.1", "localhost"])
    certstore.issue(certs, "orders")
    run = start_gateway(GatewayConfig.from_mapping({"host": "127.0.0.1", "port": 0}), home)
    try:
        ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        ctx.load_cert_chain(str(certs / "clients" / "orders.crt"), str(certs / "clients" / "orders.key"))
        conn = http.client.HTTPSConnection("127.0.0.1", run.port, context=ctx, timeout=5)
        conn.request("GET", "/v1/whoami")
        resp = conn.getresponse()
        assert resp.status == 200 and b"orders" in resp.read()
        conn.close()
        served = x509.load_der_x509_certificate(_peer_cert(run.port, ctx))
        served.verify_directly_issued_by(pki.ca_certificate(certs))
    finally:
        run.gw.stop()


def _peer_cert(port: int, ctx: ssl.SSLContext) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der
