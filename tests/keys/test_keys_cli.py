"""The deployment and key commands under the home's real Cedar policy and audit log."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from eventward._internal.audit.certificate import find_certificate, verify_certificate
from eventward._internal.audit.log import AuditLog
from eventward._internal.audit.verify import verify_log
from eventward._internal.cli import common
from eventward._internal.cli import keys as keys_cli
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward._internal.policy.base import ENCRYPT, AllowList
from eventward.errors import AccessDenied, ConfigError, ConflictError, InputError, LegalHoldError, PolicyError

from .conftest import SENTINEL

ROOT_POLICY = """\
principals:
  root: {type: user, roles: [ops]}
  helpdesk: {type: user, roles: [support]}
roles:
  ops:
    - {allow: manage_policy}
    - {allow: [forget, hold]}
    - {allow: read_audit}
  support:
    - {allow: hold}
"""


def make_app() -> typer.Typer:
    """The key commands on their own root, so these tests do not depend on other areas' commands."""
    app = typer.Typer()

    @app.callback()
    def _root(home: str = typer.Option(None, "--home")) -> None:
        common.STATE.home = home

    keys_cli.register(app)
    return app


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.delenv("EVENTWARD_PASSPHRASE", raising=False)
    monkeypatch.delenv("EVENTWARD_PRINCIPAL", raising=False)
    monkeypatch.setattr(common.console, "width", 250)
    app, runner, home = make_app(), CliRunner(), tmp_path / "home"

    def run(*args: str, input: str | None = None):
        return runner.invoke(app, ["--home", str(home), *args], input=input)

    run.home = Home(home)
    return run


def audit_bytes(home: Home) -> bytes:
    return b"".join(p.read_bytes() for p in home.root.glob("audit.db*"))


def subject_key(home: Home, subject: str) -> tuple[str, str]:
    """Give ``subject`` a pii key, as a producer would; returns (kid, subject hash)."""
    with Deployment.open(home) as dep:
        # The bootstrap policy grants no Encrypt: stand in for a producer's grant.
        dep.keys._authz = AllowList([("orders-svc", ENCRYPT, ("Class", "pii"))])
        kid, _ = dep.keys.encryption_key(subject, "pii", principal="orders-svc", topic="orders")
        return kid, dep.keys.subject_hash(subject)


def test_init_prints_what_it_made_and_never_a_secret(cli):
    r = cli("init")
    assert r.exit_code == 0, r.output
    home = cli.home
    with AuditLog.open(home) as log:
        vkey = log.verifier.vkey()
    assert vkey in r.output  # the audit public key, to publish
    for shown in (str(home.master_key), str(home.keyring), str(home.audit_db), "pii.v1", "admin"):
        assert shown in r.output
    master = home.master_key.read_bytes()
    for secret in (master.hex(), home.audit_key.read_text().strip()):
        assert secret not in r.output
    assert home.master_key.stat().st_mode & 0o777 == 0o600
    assert home.audit_key.stat().st_mode & 0o777 == 0o600
    assert "manage_policy" in (home.policy_dir / "policy.yaml").read_text()  # the working copy

    keyring = home.keyring.read_bytes()
    r = cli("init")
    assert isinstance(r.exception, ConflictError)  # never re-initializes, never overwrites a key
    assert home.keyring.read_bytes() == keyring and home.master_key.read_bytes() == master


def test_init_from_a_policy_file_and_a_bad_one_writes_nothing(cli, tmp_path):
    bad = tmp_path / "bad" / "policy.yaml"
    bad.parent.mkdir()
    bad.write_text(ROOT_POLICY.replace("roles: [ops]", "roles: [nope]"))
    r = cli("init", "--policy", str(bad))
    assert isinstance(r.exception, PolicyError)
    assert not cli.home.root.exists()  # refused before anything was written

    good = tmp_path / "policy.yaml"
    good.write_text(ROOT_POLICY)
    r = cli("init", "--policy", str(good))
    assert r.exit_code == 0, r.output
    assert "admin      root" in r.output  # who may manage the policy, read from the policy itself
    assert (cli.home.policy_dir / "policy.yaml").read_text() == ROOT_POLICY
    subject_key(cli.home, SENTINEL)
    assert isinstance(cli("forget", SENTINEL).exception, AccessDenied)  # 'admin' is nobody here
    assert isinstance(cli("forget", SENTINEL, "--as", "helpdesk").exception, AccessDenied)
    assert cli("hold", SENTINEL, "--reason", "case-7", "--as", "helpdesk").exit_code == 0
    assert isinstance(cli("forget", SENTINEL, "--as", "root").exception, LegalHoldError)


def test_hold_forget_release_under_the_bootstrap_policy(cli):
    assert cli("init").exit_code == 0
    kid, h = subject_key(cli.home, SENTINEL)

    r = cli("hold", "-", "--reason", "case-9", input=SENTINEL + "\n")
    assert r.exit_code == 0 and h in r.output and SENTINEL not in r.output
    assert isinstance(cli("forget", SENTINEL).exception, LegalHoldError)
    r = cli("hold", SENTINEL, "--reason", f"asked by {SENTINEL}")  # free text could carry PII
    assert isinstance(r.exception, InputError)
    assert isinstance(cli("release", SENTINEL, "--as", "mallory").exception, AccessDenied)
    assert cli("release", SENTINEL).exit_code == 0

    r = cli("forget", SENTINEL, "--as", "mallory")
    assert isinstance(r.exception, AccessDenied)
    with Deployment.open(cli.home) as dep:
        assert dep.keys.store.tombstone(kid) is None  # a denied forget destroyed nothing

    r = cli("forget", "-", "--reason", "gdpr-art17", input=SENTINEL + "\n")
    assert r.exit_code == 0, r.output
    assert h in r.output and SENTINEL not in r.output and "pii.v1" in r.output
    assert "gdpr-art17" in r.output and "erasure certificate: audit record" in r.output
    index = int(r.output.split("erasure certificate: audit record ")[1].split()[0])
    with Deployment.open(cli.home) as dep:
        assert dep.keys.store.tombstone(kid) is not None
        cert = find_certificate(dep.audit, h)
        assert cert.index == index and cert.claims["reason_code"] == "gdpr-art17"
        assert verify_certificate(cert, dep.audit.verifier, log=dep.audit).subject_hash == h

    other = "Jane Q. Public, 1 Main St"
    r = cli("forget", other, "--reason", f"{other} asked us by phone")
    assert r.exit_code == 0 and "erasure-request" in r.output  # free text replaced by a code
    h2 = r.output.split("audit certificate ")[1].split()[0]  # a never-seen subject: "nothing to erase"
    assert "nothing to erase" in r.output
    with Deployment.open(cli.home) as dep:
        assert dep.keys.known_subject(other) is None  # the lookup left no pseudonym behind
        assert find_certificate(dep.audit, h2).claims["reason_code"] == "erasure-request"
        assert verify_log(dep.audit).ok
        denied = [rec for rec in dep.audit.tail(200) if rec.outcome == "denied"]
        assert {rec.principal for rec in denied} >= {"mallory"}  # denials are on the record
    stored = audit_bytes(cli.home)
    for secret in (SENTINEL, other, "phone"):
        assert secret.encode() not in stored


def test_rotation_and_status_are_authorized_and_audited(cli):
    assert cli("init").exit_code == 0
    subject_key(cli.home, SENTINEL)
    r = cli("keys", "rotate", "--class", "pii", "--as", "orders-svc")
    assert isinstance(r.exception, AccessDenied)
    with Deployment.open(cli.home) as dep:
        assert dep.keys.kms.current("pii") == "pii.v1"

    r = cli("keys", "rotate", "--class", "pii")
    assert r.exit_code == 0, r.output
    assert "pii.v2" in r.output and "re-wrapped 1 key(s)" in r.output and "destroyed pii.v1" in r.output
    with Deployment.open(cli.home) as dep:
        assert dep.keys.kms.destroyed("pii") == ["pii.v1"]
        rotations = [rec for rec in dep.audit.tail(50) if rec.action == "key.rotate_kek"]
        assert [(rec.principal, rec.outcome) for rec in rotations] == [
            ("orders-svc", "denied"),
            ("admin", "ok"),
        ]

    assert isinstance(cli("keys", "status", "--as", "orders-svc").exception, AccessDenied)
    r = cli("keys", "status")
    assert r.exit_code == 0 and "pii.v2" in r.output and "erasures: 0" in r.output


def test_passphrase_protected_home(cli, monkeypatch):
    monkeypatch.setenv("MY_PW", "a long passphrase")
    assert isinstance(cli("init", "--passphrase-env", "UNSET_VAR").exception, ConfigError)
    r = cli("init", "--passphrase-env", "MY_PW")
    assert r.exit_code == 0, r.output
    assert not cli.home.master_key.exists() and "scrypt" in r.output and "a long passphrase" not in r.output
    r = cli("keys", "status")
    assert isinstance(r.exception, ConfigError) and "EVENTWARD_PASSPHRASE" in r.exception.message
    monkeypatch.setenv("EVENTWARD_PASSPHRASE", "a long passphrase")
    assert cli("keys", "status").exit_code == 0
    monkeypatch.setenv("EVENTWARD_PASSPHRASE", "wrong one")
    r = cli("keys", "status")
    assert r.exception is not None and "wrong passphrase" in str(r.exception)
    assert "wrong one" not in str(r.exception)


def test_installed_binary_prints_typed_errors_as_one_line(tmp_path):
    exe = shutil.which("eventward", path=str(Path(sys.executable).parent))
    assert exe is not None
    env = {**os.environ, "EVENTWARD_HOME": str(tmp_path / "h"), "COLUMNS": "60"}
    env.pop("EVENTWARD_PASSPHRASE", None)
    env.pop("EVENTWARD_PRINCIPAL", None)

    def run(*args: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([exe, *args], capture_output=True, text=True, env={**env, **kw}, timeout=60)

    with Deployment.init(Home(tmp_path / "h")) as dep:
        dep.keys.hold(SENTINEL, principal="admin", reason="case-1")
    r = run("forget", SENTINEL)
    assert r.returncode == 7 and r.stderr.count("\n") == 1  # conflict; one line, even on a narrow terminal
    assert "legal_hold" in r.stderr and "Traceback" not in r.stderr and SENTINEL not in r.stderr + r.stdout
    # a name that is not a principal is refused, and printed as text, never as markup
    # (an unbalanced tag used to crash the error printer with a traceback)
    r = run("forget", SENTINEL, EVENTWARD_PRINCIPAL="[/]mallory[bold]")
    assert r.returncode == 5 and "Traceback" not in r.stderr
    assert "error (bad_input): invalid principal name '[/]mallory[bold]'" in r.stderr
    r = run("forget", SENTINEL, "--no-such-option")
    assert r.returncode == 2 and "No such option" in r.stderr and "Traceback" not in r.stderr
