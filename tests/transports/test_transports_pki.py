"""The deployment PKI: chains verify for their purpose only, a leaf cannot act as a CA,
names cannot smuggle DN syntax, private keys stay 0600 and never appear in a repr."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from eventward._internal import pki
from eventward.errors import ConfigError, InputError, KeyFilePermissionError


def verifier(ca: pki.Issued) -> PolicyBuilder:
    return PolicyBuilder().store(Store([ca.cert])).time(dt.datetime.now(dt.UTC))


def test_server_and_client_certificates_verify_for_their_purpose() -> None:
    ca = pki.issue_ca("test CA")
    server = pki.issue_cert(ca, "nats-server", server=True, sans=["localhost", "127.0.0.1"])
    client = pki.issue_cert(ca, "billing", client=True)
    verifier(ca).build_server_verifier(x509.DNSName("localhost")).verify(server.cert, [])
    loopback = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    verifier(ca).build_server_verifier(loopback).verify(server.cert, [])
    verified = verifier(ca).build_client_verifier().verify(client.cert, [])
    assert client.cn == "billing"
    # the principal rides along as a SAN so nats-server's verify_and_map names the user "billing"
    assert x509.DNSName("billing") in verified.subjects
    with pytest.raises(VerificationError):  # a client certificate is not a server certificate
        verifier(ca).build_server_verifier(x509.DNSName("billing")).verify(client.cert, [])
    with pytest.raises(VerificationError):  # and the server certificate only for its names
        verifier(ca).build_server_verifier(x509.DNSName("evil.example")).verify(server.cert, [])


def test_a_leaf_certificate_cannot_act_as_a_ca() -> None:
    """An attacker holding a client key signs a certificate for 'admin': no chain verifies."""
    ca = pki.issue_ca()
    stolen = pki.issue_cert(ca, "billing", client=True)
    forged = pki.issue_cert(stolen, "admin", client=True)
    assert forged.cert.issuer == stolen.cert.subject
    with pytest.raises(VerificationError):
        verifier(ca).build_client_verifier().verify(forged.cert, [stolen.cert])


def test_foreign_ca_certificates_do_not_verify() -> None:
    ca, rogue = pki.issue_ca(), pki.issue_ca("rogue")
    with pytest.raises(VerificationError):
        verifier(ca).build_client_verifier().verify(pki.issue_cert(rogue, "billing", client=True).cert, [])


@pytest.mark.parametrize("cn", ["", "CN=admin,O=x", "a b", "billing\nadmin", "x" * 65, "*", "-lead", "é"])
def test_names_that_could_be_misread_are_refused(cn: str) -> None:
    with pytest.raises(InputError):
        pki.issue_cert(pki.issue_ca(), cn, client=True)


def test_certificates_need_a_purpose_and_servers_need_names() -> None:
    ca = pki.issue_ca()
    with pytest.raises(InputError):
        pki.issue_cert(ca, "nobody")
    with pytest.raises(InputError):
        pki.issue_cert(ca, "srv", server=True)
    with pytest.raises(InputError):
        pki.issue_cert(ca, "srv", server=True, sans=["bad name!"])


def test_keys_are_private_and_never_printed(tmp_path: Path) -> None:
    ca = pki.issue_ca()
    c = pki.issue_cert(ca, "svc@corp", client=True)
    pki.save(c, tmp_path / "c.crt", tmp_path / "c.key")
    assert (tmp_path / "c.key").stat().st_mode & 0o777 == 0o600
    assert "PRIVATE" not in repr(c) and c.key_pem().decode() not in repr(c)
    assert pki.load(tmp_path / "c.crt", tmp_path / "c.key").cert == c.cert
    assert x509.RFC822Name("svc@corp") in c.cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value
    (tmp_path / "c.key").chmod(0o640)
    with pytest.raises(KeyFilePermissionError):
        pki.load(tmp_path / "c.crt", tmp_path / "c.key")


def test_swapped_or_corrupt_files_are_refused(tmp_path: Path) -> None:
    ca = pki.issue_ca()
    a, b = pki.issue_cert(ca, "a", client=True), pki.issue_cert(ca, "b", client=True)
    pki.save(a, tmp_path / "a.crt", tmp_path / "a.key")
    pki.save(b, tmp_path / "b.crt", tmp_path / "b.key")
    with pytest.raises(ConfigError, match="does not belong"):
        pki.load(tmp_path / "a.crt", tmp_path / "b.key")
    (tmp_path / "junk.crt").write_text("not a certificate")
    with pytest.raises(ConfigError):
        pki.load(tmp_path / "junk.crt", tmp_path / "a.key")
    with pytest.raises(ConfigError):
        pki.load(tmp_path / "missing.crt", tmp_path / "a.key")


def test_deployment_files_are_issued_once(tmp_path: Path) -> None:
    cert, key = pki.ensure_client_cert(tmp_path, "billing")
    again = pki.ensure_client_cert(tmp_path, "billing")
    assert (cert, key) == again and pki.load(cert, key).cn == "billing"
    s1 = pki.ensure_server_cert(tmp_path, "nats-server")
    first = s1[0].read_bytes()
    pki.ensure_server_cert(tmp_path, "nats-server")
    assert s1[0].read_bytes() == first
    ca = pki.load(*pki.ca_paths(tmp_path))
    leaf = x509.load_pem_x509_certificate(first)
    ca.cert.public_key().verify(leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
    assert leaf.issuer == ca.cert.subject
    assert ca.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "eventward CA"
    with pytest.raises(InputError):
        pki.ensure_client_cert(tmp_path, "../escape")
