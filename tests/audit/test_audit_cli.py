"""``eventward audit``: documents round-trip through files, and failures exit non-zero naming the index."""

from __future__ import annotations

import base64
import subprocess
import sys

import orjson
import pytest
import typer
from typer.testing import CliRunner

from eventward.audit.certificate import issue_erasure_certificate
from eventward.audit.checkpoint import verify_checkpoint
from eventward.audit.log import AuditLog
from eventward.audit.tree import InclusionProof
from eventward.audit.verify import verify_inclusion_proof
from eventward.cli import audit as audit_cli
from eventward.cli import common
from eventward.errors import AuditIntegrityError, NotFoundError
from eventward.keys.service import KeyService
from eventward.policy.base import AllowList

from .helpers import backup, fill, flip, restore, tamper

SUBJECT = "alice.cli@example.com"


@pytest.fixture
def cli(home, monkeypatch):
    monkeypatch.setattr(common.STATE, "home", str(home.root))
    monkeypatch.setattr(common.console, "width", 250)
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        return None

    audit_cli.register(app)
    runner = CliRunner()
    return lambda *args, **kw: runner.invoke(app, ["audit", *args], **kw)


@pytest.fixture
def filled(home):
    with AuditLog.open(home) as log:
        fill(log, 12)
    return home


def test_read_commands_and_documents(cli, filled, tmp_path):
    r = cli("tail", "-n", "3")
    assert r.exit_code == 0 and "key.unwrap" in r.stdout and "11" in r.stdout
    r = cli("show", "4")
    doc = orjson.loads(r.stdout)
    assert doc["record"]["index"] == 4 and doc["record"]["meta"]["kid"] == "k4"
    vkey = cli("public-key").stdout.strip()
    out = tmp_path / "cp.txt"
    r = cli("checkpoint", "--out", str(out))
    assert r.exit_code == 0 and out.read_text() == r.stdout
    cp = verify_checkpoint(out.read_text(), vkey)
    assert cp.size == 12
    r = cli("prove", "5")
    doc = orjson.loads(r.stdout)
    verify_inclusion_proof(InclusionProof.from_dict(doc["proof"]), cp, record=doc["record"].encode())
    assert base64.b64decode(doc["root"]) == cp.root


def test_tail_never_renders_record_text_as_markup(cli, home):
    with AuditLog.open(home) as log:
        log.record("a.b", principal="[bold red]admin[/]", resource="r")
    r = cli("tail", "-n", "1")
    assert "[bold red]admin[/]" in r.stdout


def test_verify_ok_then_names_the_first_bad_index(cli, filled):
    r = cli("verify")
    assert r.exit_code == 0 and "OK" in r.stdout and "12 records" in r.stdout
    conn_body = AuditLog.open_readonly(filled.audit_db)
    original = conn_body.get(7).body
    conn_body.close()
    tamper(filled.audit_db, "UPDATE records SET body = ? WHERE idx = 7", flip(original))
    r = cli("verify")
    assert r.exit_code == 1 and "first bad index: 7" in r.stderr


def test_verify_detects_rollback_against_a_saved_checkpoint(cli, filled, tmp_path):
    copy = tmp_path / "old.db"
    backup(filled.audit_db, copy)
    with AuditLog.open(filled) as log:
        fill(log, 5, start=12)
    saved = tmp_path / "cp.txt"
    assert cli("checkpoint", "--out", str(saved)).exit_code == 0
    restore(copy, filled.audit_db)
    r = cli("verify", "--checkpoint", str(saved))
    assert r.exit_code == 1 and "rollback" in r.stderr and "first bad index: 12" in r.stderr


def test_verify_needs_only_the_db_file_and_the_public_key(cli, filled, tmp_path, monkeypatch):
    vkey_file = tmp_path / "audit.vkey"
    vkey_file.write_text(cli("public-key").stdout)
    saved = tmp_path / "cp.txt"
    cli("checkpoint", "--out", str(saved))
    monkeypatch.setattr(common.STATE, "home", str(tmp_path / "nowhere"))
    r = cli("verify", "--db", str(filled.audit_db), "--key", str(vkey_file), "--checkpoint", str(saved))
    assert r.exit_code == 0, r.stderr
    assert "2 signed checkpoints" in r.stdout


def test_certificate_by_hash_and_verification_of_the_file(cli, home, tmp_path):
    with AuditLog.open(home) as log:
        fill(log, 3)
        cert = issue_erasure_certificate(
            log, subject_hash="0123456789abcdef0123456789abcdef", time=1.7e9, classes=["pii"], destroyed=1
        )
    out = tmp_path / "cert.json"
    r = cli("certificate", "--hash", "0123456789abcdef0123456789abcdef", "--out", str(out))
    assert r.exit_code == 0 and orjson.loads(out.read_text())["proof"]["index"] == cert.index
    r = cli("verify-certificate", str(out))
    assert r.exit_code == 0 and "record 3 included" in r.stdout and "still extends" in r.stdout
    r = cli("verify-certificate", str(out), "--offline", "--key", cli("public-key").stdout.strip())
    assert r.exit_code == 0 and "offline" in r.stdout
    doc = orjson.loads(out.read_text())
    doc["certificate"]["dek_versions_destroyed"] = 0
    out.write_bytes(orjson.dumps(doc))
    r = cli("verify-certificate", str(out))
    assert isinstance(r.exception, AuditIntegrityError)
    r = cli("certificate", "--hash", "f" * 32)
    assert isinstance(r.exception, NotFoundError)


def test_certificate_for_a_raw_subject_uses_the_key_services_hash(cli, home):
    with KeyService.init(home, authorizer=AllowList()) as keys:
        h = keys.subject_hash(SUBJECT)
    with AuditLog.open(home) as log:
        issue_erasure_certificate(log, subject_hash=h, time=1.7e9, classes=["pii"], destroyed=2)
    for args, stdin in (((SUBJECT,), None), (("-",), SUBJECT + "\n")):
        r = cli("certificate", *args, input=stdin)
        assert r.exit_code == 0, r.exception
        assert orjson.loads(r.stdout)["certificate"]["subject_hash"] == h
        assert SUBJECT not in r.stdout + r.stderr


def test_the_real_command_prints_one_line_errors_and_exit_codes(filled):
    run = [
        sys.executable,
        "-c",
        "from eventward.cli import main; main()",
        "--home",
        str(filled.root),
        "audit",
    ]
    r = subprocess.run([*run, "show", "999"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not_found" in r.stderr and "Traceback" not in r.stderr
    tamper(filled.audit_db, "DELETE FROM records WHERE idx = 3")
    r = subprocess.run([*run, "verify"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "first bad index: 3" in r.stderr and "Traceback" not in r.stderr
