"""The key commands, through Typer's runner and through the installed ``eventward`` binary."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from eventward.cli import common
from eventward.cli import keys as keys_cli
from eventward.errors import AccessDenied, ConfigError, LegalHoldError
from eventward.home import Home

from .conftest import SENTINEL, make_authz


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
    monkeypatch.delenv("EVENTWARD_ADMINS", raising=False)
    app, runner, home = make_app(), CliRunner(), tmp_path / "home"

    def run(*args: str, input: str | None = None):
        return runner.invoke(app, ["--home", str(home), *args], input=input)

    run.home = Home(home)
    return run


def test_init_status_hold_forget_release_rotate(cli):
    r = cli("init")
    assert r.exit_code == 0, r.output
    assert "master.key" in r.output and "pii.v1" in r.output
    home = cli.home
    assert home.master_key.stat().st_mode & 0o777 == 0o600
    assert cli("init").exit_code != 0  # never overwrites a keyring

    from eventward.keys.service import KeyService

    with KeyService.open(home, authorizer=make_authz()) as svc:
        kid, _ = svc.encryption_key(SENTINEL, "pii", principal="producer")
        h = svc.subject_hash(SENTINEL)

    r = cli("hold", "-", "--reason", "case 9", input=SENTINEL + "\n")
    assert r.exit_code == 0 and h in r.output and SENTINEL not in r.output
    r = cli("forget", SENTINEL)
    assert isinstance(r.exception, LegalHoldError)
    assert cli("release", SENTINEL).exit_code == 0
    r = cli("forget", SENTINEL, "--reason", "gdpr")
    assert r.exit_code == 0, r.output
    assert h in r.output and SENTINEL not in r.output and "pii.v1" in r.output
    r = cli("forget", "bob", "--as", "mallory")
    assert isinstance(r.exception, AccessDenied)

    r = cli("keys", "rotate", "--class", "pii")
    assert r.exit_code == 0, r.output
    assert "pii.v2" in r.output and "destroyed pii.v1" in r.output
    r = cli("keys", "status")
    assert r.exit_code == 0 and "pii.v2" in r.output and "erasures: 1" in r.output

    with KeyService.open(home, authorizer=make_authz()) as svc:
        assert svc.kms.destroyed("pii") == ["pii.v1"]
        assert svc.store.tombstone(kid) is not None


def test_passphrase_init_and_use(cli, monkeypatch):
    monkeypatch.setenv("MY_PW", "a long passphrase")
    r = cli("init", "--passphrase-env", "MY_PW")
    assert r.exit_code == 0, r.output
    assert not cli.home.master_key.exists() and "scrypt" in r.output
    assert isinstance(cli("keys", "status").exception, ConfigError)  # no passphrase given
    assert cli("keys", "status", "--passphrase-env", "MY_PW").exit_code == 0
    monkeypatch.setenv("EVENTWARD_PASSPHRASE", "wrong one")
    r = cli("keys", "status")
    assert r.exception is not None and "wrong passphrase" in str(r.exception)
    assert "wrong one" not in str(r.exception)
    monkeypatch.delenv("MY_PW")
    assert isinstance(cli("keys", "status", "--passphrase-env", "MY_PW").exception, ConfigError)


def test_installed_binary_prints_typed_errors_as_one_line(tmp_path):
    exe = shutil.which("eventward", path=str(Path(sys.executable).parent))
    assert exe is not None
    env = {**os.environ, "EVENTWARD_HOME": str(tmp_path / "h")}
    env.pop("EVENTWARD_PASSPHRASE", None)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=60, check=False)

    assert run("init").returncode == 0
    assert run("hold", SENTINEL, "--reason", "case").returncode == 0
    r = run("forget", SENTINEL)
    assert r.returncode == 2
    assert "legal_hold" in r.stderr and "Traceback" not in r.stderr and SENTINEL not in r.stderr + r.stdout
    r = run("keys", "rotate", "--class", "payment")
    assert r.returncode == 0 and "payment.v2" in r.stdout
