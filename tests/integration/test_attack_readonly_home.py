"""A read-only home (a mounted backup, an auditor's copy, a container's read-only volume) must not
crash every CLI command in logging setup: the log file cannot be created, so warnings go to
stderr and the command goes on. Run as real subprocesses on a chmod-read-only home; as root the
process runs without CAP_DAC_OVERRIDE/CAP_FOWNER (``setpriv``), or root would write anyway."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventward._internal.deployment import Deployment
from eventward._internal.home import Home

SUBJECT = "cust-ro-1"
_NO_DAC = ("--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--")


def _set_tree_mode(root: Path, writable: bool) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        bits = stat.S_IWUSR if writable else 0
        path.chmod((mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)) | bits)


@pytest.fixture
def readonly_home(tmp_path: Path) -> Iterator[tuple[Path, Path, str]]:
    """(home, certificate file outside it, audit verifier key); the home is made read-only."""
    home = Home(tmp_path / "home")
    dep = Deployment.init(home, admin="admin")
    try:
        cert = dep.forget(SUBJECT, principal="admin", reason="gdpr-art17").certificate
        vkey = dep.audit.verifier.vkey()
    finally:
        dep.close()
    cert_file = tmp_path / "certificate.json"
    cert_file.write_text(cert.to_json())
    assert not home.run_dir.exists()  # nothing created the log directory yet
    _set_tree_mode(home.root, writable=False)
    try:
        yield home.root, cert_file, vkey
    finally:
        _set_tree_mode(home.root, writable=True)


def _ew(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("eventward", path=str(Path(sys.executable).parent))
    assert exe is not None
    cmd = [exe, *args]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv is not None, "setpriv (util-linux) is needed to drop root's DAC override"
        cmd = [setpriv, *_NO_DAC, *cmd]
    env = {**os.environ, "EVENTWARD_HOME": str(home), "EVENTWARD_PRINCIPAL": "admin", "COLUMNS": "200"}
    env.pop("EVENTWARD_PASSPHRASE", None)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


def test_attack_readonly_home_read_only_command_still_runs(readonly_home: tuple[Path, Path, str]) -> None:
    home, cert_file, vkey = readonly_home
    p = _ew(home, "audit", "verify-certificate", str(cert_file), "--offline", "--key", vkey)
    assert "Traceback" not in p.stderr, p.stderr
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "logging to stderr" in p.stderr  # degraded, and says so
    assert not (home / "run").exists()  # the read-only home was not written


@pytest.mark.parametrize("args", [("policy", "show"), ("audit", "verify")], ids=["policy-show", "audit-verify"])
def test_attack_readonly_home_commands_fail_typed_not_with_a_traceback(
    readonly_home: tuple[Path, Path, str], args: tuple[str, ...]
) -> None:
    """Commands that open the home's databases either work or say why in one typed line."""
    home, _, _ = readonly_home
    p = _ew(home, *args)
    assert "Traceback" not in p.stderr, p.stderr
    if p.returncode != 0:  # a typed error: one line naming its code, a documented exit code (not 1)
        assert p.returncode in range(2, 11), (p.returncode, p.stdout, p.stderr)
        assert "error (" in p.stderr, p.stderr


def test_attack_readonly_home_offline_audit_verify(readonly_home: tuple[Path, Path, str]) -> None:
    """An auditor verifies the audit database of a read-only copy: SQLite cannot create the WAL
    index next to it, so the cleanly closed file is read as immutable, and every record checks."""
    home, _, vkey = readonly_home
    p = _ew(home, "audit", "verify", "--db", str(home / "audit.db"), "--key", vkey)
    assert "Traceback" not in p.stderr, p.stderr
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert p.stdout.startswith("OK: ") and " records" in p.stdout
    assert not (home / "audit.db-shm").exists() and not (home / "run").exists()
