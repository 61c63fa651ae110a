"""Bad input through the real ``eventward`` command (typed error, documented exit code, one line on
stderr): a report for a subject never seen, a restore of another deployment's backup, a witness shown
an inconsistent checkpoint. Never a traceback, never the subject's data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from eventward._internal.audit.log import AuditLog
from eventward._internal.audit.witness import Witness, request_document
from eventward._internal.backup import backup
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home

from .helpers import fill, rebuild_tree, tamper

SUBJECT = "SENTINEL-dave.unknown@example.com"


def eventward(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EVENTWARD_HOME": str(home), "XDG_CONFIG_HOME": str(home.parent / "xdg")}
    env.pop("EVENTWARD_PRINCIPAL", None)
    return subprocess.run([sys.executable, "-m", "eventward._internal.cli", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=60, check=False)


def _clear(p: subprocess.CompletedProcess[str], code: int, error: str) -> None:
    assert p.returncode == code, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr + p.stdout and SUBJECT not in p.stderr + p.stdout
    assert p.stderr.startswith(f"error ({error}):"), p.stderr


@pytest.fixture
def home(tmp_path) -> Home:
    h = Home(tmp_path / "home")
    Deployment.init(h).close()
    return h


def test_attack_bad_input_is_a_clear_error(home, tmp_path):
    _clear(eventward(home.root, "erasure", "report", "-", stdin=SUBJECT + "\n"), 4, "not_found")

    other = Home(tmp_path / "other")
    Deployment.init(other).close()
    with Deployment.open(other) as dep:
        backup(dep, tmp_path / "bk", principal="admin")
    _clear(eventward(home.root, "restore", str(tmp_path / "bk")), 8, "restore_refused")
    _clear(eventward(home.root, "restore", str(tmp_path / "nothing")), 4, "not_found")

    with AuditLog.open(home) as log:
        fill(log, 10)
        cp = log.checkpoint()
        w = Witness.init(tmp_path / "w", "witness.example/w1", log.verifier.vkey())
    w.cosign(cp.text, None)
    tamper(home.audit_db, "UPDATE records SET leaf = ? WHERE idx = ?", b"\x01" * 32, cp.size - 3)
    rebuild_tree(home.audit_db)
    with AuditLog.open(home) as log:
        fill(log, 2)
        forged = log.checkpoint()
        (tmp_path / "req.json").write_text(request_document(forged.text, log.consistency(cp.size, forged.size)))
    p = eventward(home.root, "witness", "cosign", str(tmp_path / "req.json"), "--state", str(tmp_path / "w"))
    _clear(p, 8, "witness_refused")
    assert "inconsistent" in p.stderr
