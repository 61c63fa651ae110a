"""The deployment CA with its key in a networked KMS: an ecdsa-p256 key in OpenBao Transit
(``bao server -dev``) and an ECC_NIST_P256 key in AWS KMS (moto). The key never leaves the KMS;
every certificate and CRL is verified against ca.crt; a KMS that cannot answer writes nothing."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import boto3
import pytest
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from eventward._internal import certstore, pki
from eventward._internal.cli import app
from eventward.errors import KMSUnavailable

from .conftest import TOKEN_ENV, Bao, Moto, free_port


def _transit_yaml(url: str, key: str) -> str:
    return (f"pki:\n  ca_key:\n    backend: transit\n    key: {key}\n    transit:\n      url: '{url}'\n"
            f"      token_env: {TOKEN_ENV}\n      timeout_s: 2\n")


def _aws_yaml(url: str, key: str) -> str:
    return (f"pki:\n  ca_key:\n    backend: aws\n    key: {key}\n    aws:\n      region: eu-west-1\n"
            f"      endpoint_url: '{url}'\n      timeout_s: 2\n")


def _ca_token(bao: Bao, key: str) -> str:
    """Least privilege for the CA: create/read its one Transit key and sign with it, nothing else."""
    root = bao.root()
    rules = (f'path "transit/keys/{key}" {{ capabilities = ["create", "read", "update"] }}\n'
             f'path "transit/sign/{key}" {{ capabilities = ["update"] }}\n')
    root.sys.create_or_update_policy(name=f"ca-{key}", policy=rules)
    return root.auth.token.create(policies=[f"ca-{key}"], ttl="1h")["auth"]["client_token"]


def _home(tmp_path: Path, yaml_text: str) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "eventward.yaml").write_text(yaml_text)
    return home


def _files(root: Path) -> dict[str, bytes]:
    """Every file's bytes; a SQLite database by its content (a WAL checkpoint moves pages between
    the -wal file and the main file without changing what the database says)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name.endswith(("-wal", "-shm")):
            continue
        if p.suffix == ".db":
            with closing(sqlite3.connect(f"file:{p}?mode=ro", uri=True)) as db:
                out[str(p.relative_to(root))] = "\n".join(db.iterdump()).encode()
        else:
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def _issue_revoke_verify(certs: Path) -> None:
    certstore.init(certs)
    ca = pki.ca_certificate(certs)
    ca.verify_directly_issued_by(ca)
    rec = certstore.issue(certs, "orders")
    cert = certstore.load_cert_file(Path(rec.path))
    cert.verify_directly_issued_by(ca)
    renewed = certstore.renew(certs, "orders")
    assert renewed.serial != rec.serial
    certstore.load_cert_file(Path(renewed.path)).verify_directly_issued_by(ca)
    certstore.revoke(certs, rec.serial, "key-compromise")
    crl = certstore.load_crl(certs / certstore.CRL_NAME)
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert [r.serial_number for r in crl] == [cert.serial_number]


def _no_ca_private_key(home: Path) -> None:
    certs = home / "certs"
    ca_pub = pki.ca_certificate(certs).public_key()
    assert not (certs / "ca.key").exists()
    for path in home.rglob("*"):
        if path.is_file():
            for block in path.read_bytes().split(b"-----BEGIN ")[1:]:
                if b"PRIVATE KEY-----" in block.split(b"\n", 1)[0]:
                    key = serialization.load_pem_private_key(b"-----BEGIN " + block, password=None)
                    assert key.public_key() != ca_pub, f"{path} holds the CA private key"


# --- Transit ------------------------------------------------------------------------------------


def test_transit_ca_issues_and_revokes(bao: Bao, prefix: str, tmp_path: Path, monkeypatch) -> None:
    key = f"{prefix}-ca"
    monkeypatch.setenv(TOKEN_ENV, _ca_token(bao, key))
    home = _home(tmp_path, _transit_yaml(bao.url, key))
    _issue_revoke_verify(home / "certs")
    data = bao.root().secrets.transit.read_key(key)["data"]
    assert data["type"] == "ecdsa-p256" and not data["exportable"] and not data["allow_plaintext_backup"]


def test_attack_ca_key_not_on_disk_transit(bao: Bao, prefix: str, tmp_path: Path, monkeypatch) -> None:
    key = f"{prefix}-ca"
    monkeypatch.setenv(TOKEN_ENV, _ca_token(bao, key))
    home = _home(tmp_path, _transit_yaml(bao.url, key))
    certstore.init(home / "certs")
    rec = certstore.issue(home / "certs", "orders")
    certstore.load_cert_file(Path(rec.path)).verify_directly_issued_by(pki.ca_certificate(home / "certs"))
    assert not (home / "certs" / "ca.key").exists()
    _no_ca_private_key(home)


def test_transit_rotation_keeps_the_ca_key_version(bao: Bao, prefix: str, tmp_path: Path, monkeypatch) -> None:
    """Someone rotates the Transit key: the CA keeps signing with the version its certificate holds."""
    key = f"{prefix}-ca"
    monkeypatch.setenv(TOKEN_ENV, _ca_token(bao, key))
    home = _home(tmp_path, _transit_yaml(bao.url, key))
    certs = home / "certs"
    certstore.init(certs)
    bao.root().secrets.transit.rotate_key(key)
    assert bao.root().secrets.transit.read_key(key)["data"]["latest_version"] == 2
    rec = certstore.issue(certs, "orders")
    cert = certstore.load_cert_file(Path(rec.path))
    cert.verify_directly_issued_by(pki.ca_certificate(certs))  # raises if signed by version 2
    assert rec.principal == "orders" and cert.issuer == pki.ca_certificate(certs).subject


def test_transit_unavailable_writes_nothing(bao: Bao, prefix: str, tmp_path: Path, monkeypatch) -> None:
    key = f"{prefix}-ca"
    monkeypatch.setenv(TOKEN_ENV, _ca_token(bao, key))
    dead = f"http://127.0.0.1:{free_port()}"
    home = _home(tmp_path, _transit_yaml(dead, key))
    r = CliRunner().invoke(app, ["--home", str(home), "pki", "init"])
    assert isinstance(r.exception, KMSUnavailable), r.output
    assert not (home / "certs" / "ca.crt").exists() and not (home / "certs" / certstore.DB_NAME).exists()
    # initialised while the server answered, then it goes away: issue and revoke change nothing
    (home / "eventward.yaml").write_text(_transit_yaml(bao.url, key))
    certstore.init(home / "certs")
    rec = certstore.issue(home / "certs", "billing")
    (home / "eventward.yaml").write_text(_transit_yaml(dead, key))
    before = _files(home)
    with pytest.raises(KMSUnavailable):
        certstore.issue(home / "certs", "orders")
    with pytest.raises(KMSUnavailable):
        certstore.revoke(home / "certs", "billing", "key-compromise")
    assert _files(home) == before
    reg = certstore.CertRegistry(home / "certs")
    assert reg.get(rec.serial).status == certstore.VALID
    reg.close()


def test_attack_transit_token_revoked(bao: Bao, prefix: str, tmp_path: Path, monkeypatch) -> None:
    """A CA token that was revoked in Transit signs nothing (KMSUnavailable), and says so without the token."""
    key = f"{prefix}-ca"
    token = _ca_token(bao, key)
    monkeypatch.setenv(TOKEN_ENV, token)
    home = _home(tmp_path, _transit_yaml(bao.url, key))
    certstore.init(home / "certs")
    bao.root().auth.token.revoke(token)
    with pytest.raises(KMSUnavailable) as e:
        certstore.issue(home / "certs", "orders")
    assert token not in e.value.message
    assert not (home / "certs" / "clients" / "orders.crt").exists()


# --- AWS KMS ------------------------------------------------------------------------------------


def test_aws_ca_issues_and_revokes(moto: Moto, prefix: str, tmp_path: Path, aws_env) -> None:
    home = _home(tmp_path, _aws_yaml(moto.url, f"{prefix}-ca"))
    _issue_revoke_verify(home / "certs")
    _no_ca_private_key(home)
    kms = boto3.client("kms", region_name="eu-west-1", endpoint_url=moto.url)
    meta = kms.describe_key(KeyId=f"alias/{prefix}-ca")["KeyMetadata"]
    assert (meta["KeySpec"], meta["KeyUsage"]) == ("ECC_NIST_P256", "SIGN_VERIFY")


def test_aws_disabled_ca_key_signs_nothing(moto: Moto, prefix: str, tmp_path: Path, aws_env) -> None:
    home = _home(tmp_path, _aws_yaml(moto.url, f"{prefix}-ca"))
    certstore.init(home / "certs")
    kms = boto3.client("kms", region_name="eu-west-1", endpoint_url=moto.url)
    kms.disable_key(KeyId=kms.describe_key(KeyId=f"alias/{prefix}-ca")["KeyMetadata"]["KeyId"])
    before = _files(home)
    with pytest.raises(KMSUnavailable, match="not Enabled"):
        certstore.issue(home / "certs", "orders")
    assert _files(home) == before


def test_aws_unreachable_writes_nothing(prefix: str, tmp_path: Path, aws_env) -> None:
    home = _home(tmp_path, _aws_yaml(f"http://127.0.0.1:{free_port()}", f"{prefix}-ca"))
    r = CliRunner().invoke(app, ["--home", str(home), "pki", "init"])
    assert isinstance(r.exception, KMSUnavailable), r.output
    assert not (home / "certs" / "ca.crt").exists() and not (home / "certs" / certstore.DB_NAME).exists()
