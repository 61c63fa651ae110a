"""The CA signer seam (issue 21): every certificate and CRL is assembled from a TBS signed by a
CASigner and verified against the CA before anything is written; configuration, harden, threats."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from eventward._internal import casigner, certstore, pki
from eventward._internal.casigner import FileSigner, _der_len, ca_key_config, sign_crl
from eventward._internal.cli import app
from eventward._internal.config import Config
from eventward._internal.harden import eventward_yaml
from eventward._internal.keys.kms.pkcs11 import Pkcs11Config
from eventward._internal.keys.kms.transit import TransitConfig
from eventward.errors import CASignatureInvalid, ConfigError, KMSUnavailable


class OtherKeySigner:
    """Claims the CA's public key but signs with a key of its own: a compromised or mixed-up KMS."""

    signature_algorithm = FileSigner.signature_algorithm
    where = "a signer holding another key"

    def __init__(self, claimed: ec.EllipticCurvePublicKey) -> None:
        self._claimed = claimed
        self._other = ec.generate_private_key(ec.SECP256R1())
        self.calls = 0

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._claimed

    def sign(self, tbs: bytes) -> bytes:
        self.calls += 1
        return self._other.sign(tbs, ec.ECDSA(hashes.SHA256()))

    def close(self) -> None:
        pass


class GarbageSigner(OtherKeySigner):
    def sign(self, tbs: bytes) -> bytes:
        self.calls += 1
        return os.urandom(70)


class DownSigner(OtherKeySigner):
    def sign(self, tbs: bytes) -> bytes:
        raise KMSUnavailable("the KMS is down")


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    d = tmp_path / "home" / "certs"
    certstore.init(d)
    return d


def _files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` and its bytes (SQLite's -wal/-shm sidecars aside: opening a
    database may create them without writing a record)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith(("-wal", "-shm"))}


def test_file_backend_issues_and_revokes_through_the_signer(certs: Path) -> None:
    ca = pki.ca_certificate(certs)
    rec = certstore.issue(certs, "orders")
    cert = certstore.load_cert_file(Path(rec.path))
    cert.verify_directly_issued_by(ca)
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == x509.SubjectKeyIdentifier.from_public_key(ca.public_key()).digest  # type: ignore[arg-type]
    certstore.revoke(certs, "orders", "key-compromise")
    crl = certstore.load_crl(certs / certstore.CRL_NAME)
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert [r.serial_number for r in crl] == [cert.serial_number]
    assert (certs / "ca.key").stat().st_mode & 0o777 == 0o600  # the file backend is today's behaviour


def test_der_lengths_short_and_long_form() -> None:
    assert _der_len(0) == b"\x00" and _der_len(127) == b"\x7f"
    assert _der_len(128) == b"\x81\x80" and _der_len(255) == b"\x81\xff"
    assert _der_len(256) == b"\x82\x01\x00" and _der_len(70000) == b"\x83\x01\x11\x70"


def test_large_crl_assembles_with_a_three_byte_length() -> None:
    """Over 64 KiB of revoked entries: the hand-made DER lengths must still be right."""
    ca = pki.issue_ca()
    now = dt.datetime.now(dt.UTC)
    builder = x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject).last_update(now).next_update(
        now + dt.timedelta(days=1))
    for serial in range(1, 2501):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(2**120 + serial).revocation_date(now).build())
    crl = sign_crl(builder, FileSigner(ca.key), ca.cert)
    assert len(crl.tbs_certlist_bytes) > 65535 and len(crl) == 2500
    assert crl.is_signature_valid(ca.cert.public_key())  # type: ignore[arg-type]


def test_attack_signer_returns_wrong_signature(certs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A signer that answers with another key's signature: issue, CRL and CA creation are refused
    with CASignatureInvalid, and no certificate, key, record or CRL is written."""
    real = pki.open_ca(certs)
    evil = OtherKeySigner(real.signer.public_key())
    monkeypatch.setattr(pki, "open_ca", lambda *a, **k: pki.CA(real.cert, evil))
    before = _files(certs.parent)
    with pytest.raises(CASignatureInvalid) as e:
        certstore.issue(certs, "mallory")
    assert e.value.code == "ca_signature_invalid" and evil.calls == 1
    assert _files(certs.parent) == before
    with pytest.raises(CASignatureInvalid):
        pki.issue_cert(pki.CA(real.cert, evil), "mallory", client=True)
    reg = certstore.CertRegistry(certs)
    assert reg.list("mallory") == []
    reg.close()
    assert not (certs / "clients" / "mallory.crt").exists() and not (certs / "clients" / "mallory.key").exists()
    monkeypatch.undo()
    rec = certstore.issue(certs, "orders")
    monkeypatch.setattr(pki, "open_ca", lambda *a, **k: pki.CA(real.cert, evil))
    crl_before = (certs / certstore.CRL_NAME).read_bytes()
    with pytest.raises(CASignatureInvalid):
        certstore.revoke(certs, rec.serial, "key-compromise")
    assert (certs / certstore.CRL_NAME).read_bytes() == crl_before
    # a self-signed CA through the wrong key is refused too
    with pytest.raises(CASignatureInvalid):
        pki.self_sign_ca(evil)


def test_attack_signer_returns_garbage() -> None:
    ca = pki.issue_ca()
    garbage = GarbageSigner(ca.cert.public_key())  # type: ignore[arg-type]
    with pytest.raises(CASignatureInvalid, match=r"not DER ECDSA|does not verify"):
        pki.issue_cert(pki.CA(ca.cert, garbage), "x", client=True)
    now = dt.datetime.now(dt.UTC)
    builder = x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject).last_update(now).next_update(now)
    with pytest.raises(CASignatureInvalid):
        sign_crl(builder, garbage, ca.cert)


def test_attack_signer_for_another_ca_refused() -> None:
    """An honest signer of a different key (pki.ca_key pointed at the wrong key) is refused too."""
    ca, other = pki.issue_ca(), pki.issue_ca()
    with pytest.raises(CASignatureInvalid):
        pki.issue_cert(pki.CA(ca.cert, FileSigner(other.key)), "x", client=True)


def test_kms_down_at_issue_writes_nothing(certs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The KMS failing at signing time: issue and revoke fail with KMSUnavailable and the book, the
    CRL and the certificate files are unchanged (the revocation can simply be retried)."""
    rec = certstore.issue(certs, "billing")
    real = pki.open_ca(certs)
    monkeypatch.setattr(pki, "open_ca", lambda *a, **k: pki.CA(real.cert, DownSigner(real.signer.public_key())))
    before = _files(certs.parent)
    with pytest.raises(KMSUnavailable):
        certstore.issue(certs, "orders")
    with pytest.raises(KMSUnavailable):
        certstore.revoke(certs, "billing", "superseded")
    assert _files(certs.parent) == before
    reg = certstore.CertRegistry(certs)
    assert reg.get(rec.serial).status == certstore.VALID
    reg.close()


def test_certificate_builder_round_trip_keeps_every_field() -> None:
    ca = pki.issue_ca()
    issued = pki.issue_cert(ca, "svc", server=True, client=True, sans=["127.0.0.1", "svc.local"])
    reference = pki.issue_ca()  # cryptography's own signing, for the algorithm element
    assert issued.cert.signature_algorithm_oid == reference.cert.signature_algorithm_oid
    assert issued.cert.signature_hash_algorithm is not None
    issued.cert.verify_directly_issued_by(ca.cert)
    san = issued.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "svc.local" in san.get_values_for_type(x509.DNSName)


# --- configuration ------------------------------------------------------------------------------


def test_ca_key_config_is_checked_by_name() -> None:
    assert ca_key_config({}, {"backend": "local"}).backend == "file"
    with pytest.raises(ConfigError, match=r"pki\.ca_key\.backend must be one of"):
        Config.parse("pki: {ca_key: {backend: vault}}\n")
    with pytest.raises(ConfigError, match="unknown key"):
        Config.parse("pki: {ca_key: {backend: file, module: /x.so}}\n")
    with pytest.raises(ConfigError, match="pki: unknown key"):
        Config.parse("pki: {ca: {}}\n")
    with pytest.raises(ConfigError, match=r"give pki\.ca_key\.transit"):
        Config.parse("pki: {ca_key: {backend: transit}}\n")
    with pytest.raises(ConfigError, match=r"pki\.ca_key\.key"):
        Config.parse("pki: {ca_key: {backend: file, key: '../x'}}\n")
    # secrets in the section are refused as in kms.<backend>, and never echoed
    with pytest.raises(ConfigError, match="never put the token") as e:
        Config.parse("pki: {ca_key: {backend: transit, transit: {url: 'http://v:8200', token: s3cr3t-t0k}}}\n")
    assert "s3cr3t-t0k" not in str(e.value)
    with pytest.raises(ConfigError, match="never put the PIN"):
        Config.parse("pki: {ca_key: {backend: pkcs11, pkcs11: {module: /m.so, token_label: t, pin: '1234'}}}\n")
    with pytest.raises(ConfigError, match="AWS credentials"):
        Config.parse("pki: {ca_key: {backend: aws, aws: {region: eu-west-1, aws_secret_access_key: x}}}\n")
    # the KMS section is reused when the CA key lives in the same backend
    cfg = Config.parse("kms: {backend: transit, transit: {url: 'http://v:8200', token_env: VT}}\n"
                       "pki: {ca_key: {backend: transit, key: ew-ca}}\n")
    key = ca_key_config(cfg.pki, cfg.kms)
    assert key.transit is not None and key.section is key.transit and key.key == "ew-ca"
    assert (key.transit.url, key.transit.token_env) == ("http://v:8200", "VT")
    assert cfg.pki.ca_key.transit is None  # as written: the kms section is reused, not copied into pki
    assert "Transit at http://v:8200" in casigner.describe(key)


def test_existing_ca_must_belong_to_the_configured_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Switching pki.ca_key to another key cannot silently sign with it under the old ca.crt."""
    certs = tmp_path / "home" / "certs"
    certstore.init(certs)
    other = FileSigner(ec.generate_private_key(ec.SECP256R1()), "another key")
    monkeypatch.setattr(pki, "connect_signer", lambda *a, **k: other)
    key = casigner.CAKeyConfig("transit", "ew-ca", transit=TransitConfig("http://127.0.0.1:1", token_env="X"))
    with pytest.raises(ConfigError, match="does not belong to"):
        pki.open_ca(certs, key=key)


def test_external_ca_created_only_after_the_signature_verified(tmp_path: Path, monkeypatch) -> None:
    certs = tmp_path / "home" / "certs"
    key = casigner.CAKeyConfig("pkcs11", "ew-ca", pkcs11=Pkcs11Config("/m.so", "t", pin_env="P"))
    evil = OtherKeySigner(ec.generate_private_key(ec.SECP256R1()).public_key())
    monkeypatch.setattr(pki, "connect_signer", lambda *a, **k: evil)
    with pytest.raises(CASignatureInvalid):
        pki.open_ca(certs, create=True, key=key)
    assert not (certs / "ca.crt").exists() and not (certs / "ca.key").exists()


# --- harden and threats -------------------------------------------------------------------------

_TRANSIT = "kms:\n  backend: transit\n  transit: {url: 'http://vault:8200', token_env: VAULT_TOKEN}\n"


def test_harden_flags_a_file_ca_key_beside_a_kms(tmp_path: Path) -> None:
    path = tmp_path / "eventward.yaml"
    path.write_text(_TRANSIT)
    found = [f for f in eventward_yaml.check_file(path) if f.id == "EW-006"]
    assert len(found) == 1 and found[0].rule.severity == "medium" and found[0].line == 2
    assert "pki: {ca_key: {backend" in found[0].rule.fix
    path.write_text(_TRANSIT + "pki:\n  ca_key: {backend: file}\n")
    assert [f.line for f in eventward_yaml.check_file(path) if f.id == "EW-006"] == [5]
    path.write_text(_TRANSIT + "pki:\n  ca_key: {backend: transit}\n")
    assert not [f for f in eventward_yaml.check_file(path) if f.id == "EW-006"]
    path.write_text("transport: embedded\n")  # local keyring: the KEKs are in the home anyway
    assert not [f for f in eventward_yaml.check_file(path) if f.id == "EW-006"]


def test_threats_say_where_the_ca_key_lives(tmp_path: Path) -> None:
    runner = CliRunner()
    path = tmp_path / "eventward.yaml"
    path.write_text(_TRANSIT)
    args = ["--home", str(tmp_path / "home"), "threats", "--config", str(path), "--json"]
    doc = orjson.loads(runner.invoke(app, args).stdout)
    s2 = next(t for t in doc["threats"] if t["id"] == "S2")
    assert doc["deployment"]["ca_key_backend"] == "file"
    assert any("CA key is a 0600 file" in o for o in s2["open"])
    path.write_text(_TRANSIT + "pki:\n  ca_key: {backend: transit, key: ew-ca}\n")
    doc = orjson.loads(runner.invoke(app, args).stdout)
    s2 = next(t for t in doc["threats"] if t["id"] == "S2")
    assert doc["deployment"]["ca_key_backend"] == "transit"
    assert any("never leaves Vault/OpenBao Transit at http://vault:8200" in c for c in s2["covered_by"])
    assert not any("0600 file" in o for o in s2["open"])


def test_cli_init_names_where_the_key_is(tmp_path: Path) -> None:
    home = tmp_path / "home"
    r = CliRunner().invoke(app, ["--home", str(home), "pki", "init"])
    assert r.exit_code == 0, r.output
    assert "key in a 0600 file in the home" in r.output
    r = CliRunner().invoke(app, ["--home", str(home), "pki", "crl"])
    assert r.exit_code == 0, r.output
    crl = certstore.load_crl(home / "certs" / certstore.CRL_NAME)
    assert crl.is_signature_valid(pki.ca_certificate(home / "certs").public_key())  # type: ignore[arg-type]


# --- the KMS signers' message handling, against recording stand-ins ------------------------------


class _Kms:
    """Records AWS KMS Sign calls; signs like KMS would (RAW: hash the message; DIGEST: as given)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self.key, self.calls = key, []

    def sign(self, *, KeyId: str, Message: bytes, MessageType: str, SigningAlgorithm: str) -> dict:
        from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

        self.calls.append((MessageType, len(Message), SigningAlgorithm))
        algo = ec.ECDSA(hashes.SHA256()) if MessageType == "RAW" else ec.ECDSA(Prehashed(hashes.SHA256()))
        return {"Signature": self.key.sign(Message, algo)}


def test_aws_signer_sends_long_tbs_as_a_digest() -> None:
    """AWS takes RAW messages up to 4096 bytes: a bigger CRL goes as its SHA-256 DIGEST, and both verify."""
    ca = pki.issue_ca()
    signer = object.__new__(casigner.AwsSigner)
    signer.where, signer.key_id, signer._public = "stub", "k", ca.cert.public_key()
    signer._kms = _Kms(ca.key)
    now = dt.datetime.now(dt.UTC)
    small = x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject).last_update(now).next_update(now)
    big = small
    for serial in range(1, 200):
        big = big.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(2**100 + serial).revocation_date(now).build())
    for builder in (small, big):
        assert sign_crl(builder, signer, ca.cert).is_signature_valid(ca.cert.public_key())  # type: ignore[arg-type]
    (kind1, n1, alg1), (kind2, n2, _) = signer._kms.calls
    assert (kind1, alg1) == ("RAW", "ECDSA_SHA_256") and n1 <= 4096
    assert (kind2, n2) == ("DIGEST", 32)


class _Transit:
    def __init__(self, answer: str) -> None:
        self.answer, self.calls = answer, []

    def sign_data(self, name: str, **kw) -> dict:
        self.calls.append(kw)
        return {"data": {"signature": self.answer}}


def test_transit_signer_asks_prehashed_asn1_and_refuses_a_malformed_answer() -> None:
    ca = pki.issue_ca()
    signer = object.__new__(casigner.TransitSigner)
    signer.where, signer.name, signer.version, signer._public = "stub", "ew-ca", 3, ca.cert.public_key()
    signer.config = type("C", (), {"mount": "transit"})()
    for answer in ("vault:v2:MEUCIQ==", "vault:v3:not base64!", "no-prefix"):
        transit = _Transit(answer)
        signer._client = type("H", (), {"secrets": type("S", (), {"transit": transit})()})()
        with pytest.raises(CASignatureInvalid):
            pki.issue_cert(pki.CA(ca.cert, signer), "x", client=True)
    assert transit.calls[0] | {"hash_input": None} == {
        "hash_input": None, "key_version": 3, "hash_algorithm": "sha2-256", "prehashed": True,
        "marshaling_algorithm": "asn1", "mount_point": "transit"}
