"""``eventward audit`` on a deployment home: reads need read_audit under its Cedar policy, documents
round-trip through files, checks of files need no grant, failures exit non-zero naming the index."""

from __future__ import annotations

import base64
import subprocess
import sys

import orjson
import pytest
import typer
from typer.testing import CliRunner

from eventward._internal.audit.certificate import issue_erasure_certificate
from eventward._internal.audit.checkpoint import verify_checkpoint
from eventward._internal.audit.log import AuditLog
from eventward._internal.audit.tree import InclusionProof
from eventward._internal.audit.verify import verify_inclusion_proof
from eventward._internal.cli import audit as audit_cli
from eventward._internal.cli import common
from eventward._internal.crypto import seal as sealing
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward._internal.policy.base import ENCRYPT, FORGET, AllowList
from eventward.errors import AccessDenied, AuditIntegrityError, NotFoundError

from .helpers import backup, fill, flip, restore, tamper

SUBJECT = "alice.cli@example.com"
POLICY = """\
principals:
  admin: {type: user, roles: [eventward-admin]}
  auditor: {type: user, roles: [auditor]}
  ops: {type: user, roles: [policy]}
roles:
  eventward-admin:
    - {allow: manage_policy}
    - {allow: [forget, hold]}
    - {allow: read_audit}
    - {allow: rotate_keys, producer: "*"}
  auditor: [{allow: read_audit}]
  policy: [{allow: manage_policy}]
"""


@pytest.fixture
def home(tmp_path) -> Home:
    """A deployment home (overrides the audit suite's bare home)."""
    h = Home(tmp_path / "home")
    Deployment.init(h, policy_yaml=POLICY).close()
    return h


@pytest.fixture
def cli(home, monkeypatch):
    monkeypatch.setattr(common.STATE, "home", str(home.root))
    monkeypatch.setattr(common.console, "width", 250)
    monkeypatch.delenv("EVENTWARD_PRINCIPAL", raising=False)
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        return None

    audit_cli.register(app)
    runner = CliRunner()
    return lambda *args, **kw: runner.invoke(app, ["audit", *args], **kw)


@pytest.fixture
def filled(home) -> int:
    """Twelve sample records after the deployment's own; returns the index of the first."""
    with AuditLog.open(home) as log:
        base = log.size()
        fill(log, 12)
    return base


def size(home: Home) -> int:
    with AuditLog.open(home) as log:
        return log.size()


def test_read_commands_and_documents(cli, home, filled, tmp_path):
    r = cli("tail", "-n", "3")
    assert r.exit_code == 0 and "key.unwrap" in r.stdout and str(filled + 11) in r.stdout
    r = cli("show", str(filled + 4), "--as", "auditor")
    doc = orjson.loads(r.stdout)
    assert doc["record"]["index"] == filled + 4 and doc["record"]["meta"]["kid"] == "k4"
    vkey = cli("public-key").stdout.strip()
    out = tmp_path / "cp.txt"
    r = cli("checkpoint", "--out", str(out))
    assert r.exit_code == 0 and out.read_text() == r.stdout
    cp = verify_checkpoint(out.read_text(), vkey)
    assert cp.size == filled + 12
    r = cli("prove", str(filled + 5))
    doc = orjson.loads(r.stdout)
    verify_inclusion_proof(InclusionProof.from_dict(doc["proof"]), cp, record=doc["record"].encode())
    assert base64.b64decode(doc["root"]) == cp.root


def test_reconcile_adds_the_records_a_killed_producer_never_wrote(cli, home):
    """A sealed batch stored without its Publish record (the producer died before its audit
    flush) gets one from ``audit reconcile``; ``read_audit`` is needed, a second run adds none."""
    with Deployment.open(home) as dep:
        signer = dep.trust.ensure("orders-svc", by="admin")
        dep.transport.create_stream("orders")
        events = [b'{"n":1}', b'{"n":2}']
        blob = sealing.seal(signer, instance="i", stream="orders", batch="b-1", first_seq=0, events=events)
        dep.transport.append("orders", "b-1", events, blob)
    r = cli("reconcile", "--topic", "orders", "--as", "ops")
    assert isinstance(r.exception, AccessDenied)
    r = cli("reconcile", "--topic", "orders", "--json")
    assert r.exit_code == 0, r.output
    assert orjson.loads(r.stdout) == {"batches_checked": 1, "records_added": 0, "held_back": 1}  # may be live
    r = cli("reconcile", "--topic", "orders", "--grace", "0", "--json", "--as", "auditor")
    assert orjson.loads(r.stdout) == {"batches_checked": 1, "records_added": 1, "held_back": 0}
    with AuditLog.open(home) as log:
        (rec,) = [x for x in log.tail(50) if x.action == "Publish"]
    assert rec.principal == "orders-svc" and rec.meta["batch"] == "b-1" and rec.meta["reconciled"] is True
    assert rec.meta["count"] == 2 and rec.meta["seal"] == "verified" and rec.outcome == "ok"
    r = cli("reconcile", "--grace", "0", "--json")
    assert orjson.loads(r.stdout)["records_added"] == 0


def test_every_read_of_the_home_log_needs_read_audit(cli, home, filled, tmp_path):
    with AuditLog.open(home) as log:
        checkpoints = len(log.checkpoints())
    cert = tmp_path / "cert.json"
    with AuditLog.open(home) as log:
        cert.write_text(
            issue_erasure_certificate(
                log, subject_hash="ab" * 16, time=1.7e9, classes=["pii"], destroyed=1
            ).to_json()
        )
    for who in ("ops", "nobody"):  # ops manages policy but may not read the audit log
        for args in (
            ("tail",),
            ("show", "1"),
            ("prove", "1"),
            ("checkpoint",),
            ("verify",),
            ("certificate", "--hash", "ab" * 16),
            ("verify-certificate", str(cert)),
        ):
            r = cli(*args, "--as", who)
            assert isinstance(r.exception, AccessDenied), (who, args, r.output)
            assert r.stdout == ""
    r = cli("tail", "-n", "100", "--as", "auditor")
    assert r.exit_code == 0
    with AuditLog.open(home) as log:
        assert len(log.checkpoints()) == checkpoints + 1  # only the certificate's own; none for denied reads
        denied = [x for x in log.tail(200) if x.action == "audit.read" and x.outcome == "denied"]
    assert {x.principal for x in denied} == {"ops", "nobody"} and len(denied) == 14  # every attempt recorded


def test_tail_never_renders_record_text_as_markup(cli, home):
    with AuditLog.open(home) as log:
        log.record("a.b", principal="[bold red]admin[/]", resource="r")
    r = cli("tail", "-n", "1")
    assert "[bold red]admin[/]" in r.stdout


def test_verify_ok_then_names_the_first_bad_index(cli, home, filled):
    r = cli("verify", "--as", "auditor")
    assert r.exit_code == 0 and "OK" in r.stdout and f"{filled + 12} records" in r.stdout
    reader = AuditLog.open_readonly(home.audit_db)
    original = reader.get(filled + 7).body
    reader.close()
    tamper(home.audit_db, "UPDATE records SET body = ? WHERE idx = ?", flip(original), filled + 7)
    r = cli("verify")
    assert r.exit_code == 1 and f"first bad index: {filled + 7}" in r.stderr


def test_verify_detects_rollback_against_a_saved_checkpoint(cli, home, filled, tmp_path):
    copy = tmp_path / "old.db"
    backup(home.audit_db, copy)
    with AuditLog.open(home) as log:
        fill(log, 5, start=12)
    saved = tmp_path / "cp.txt"
    assert cli("checkpoint", "--out", str(saved)).exit_code == 0
    restore(copy, home.audit_db)
    r = cli("verify", "--checkpoint", str(saved))
    assert r.exit_code == 1 and "rollback" in r.stderr and f"first bad index: {filled + 12}" in r.stderr


def test_checking_files_needs_only_the_files_and_the_public_key(cli, home, filled, tmp_path, monkeypatch):
    vkey_file = tmp_path / "audit.vkey"
    vkey_file.write_text(cli("public-key").stdout)
    saved = tmp_path / "cp.txt"
    cli("checkpoint", "--out", str(saved))
    with AuditLog.open(home) as log:
        cert = tmp_path / "cert.json"
        cert.write_text(
            issue_erasure_certificate(
                log, subject_hash="cd" * 16, time=1.7e9, classes=["pii"], destroyed=1
            ).to_json()
        )
    monkeypatch.setattr(common.STATE, "home", str(tmp_path / "nowhere"))  # no home, no policy, no grant
    r = cli("verify", "--db", str(home.audit_db), "--key", str(vkey_file), "--checkpoint", str(saved))
    assert r.exit_code == 0, r.stderr
    assert "3 signed checkpoints" in r.stdout  # stored: ours and the certificate's; and the given one
    r = cli("verify-certificate", str(cert), "--key", str(vkey_file), "--as", "nobody")
    assert r.exit_code == 0 and "offline" in r.stdout
    monkeypatch.setattr(common.STATE, "home", str(home.root))
    r = cli("verify-certificate", str(cert), "--offline", "--key", str(vkey_file), "--as", "nobody")
    assert r.exit_code == 0 and "offline" in r.stdout


def test_certificate_by_hash_and_verification_of_the_file(cli, home, tmp_path):
    with AuditLog.open(home) as log:
        fill(log, 3)
        cert = issue_erasure_certificate(
            log, subject_hash="0123456789abcdef0123456789abcdef", time=1.7e9, classes=["pii"], destroyed=1
        )
    out = tmp_path / "cert.json"
    r = cli("certificate", "--hash", "0123456789abcdef0123456789abcdef", "--out", str(out), "--as", "auditor")
    assert r.exit_code == 0 and orjson.loads(out.read_text())["proof"]["index"] == cert.index
    r = cli("verify-certificate", str(out))
    assert r.exit_code == 0 and f"record {cert.index} included" in r.stdout and "still extends" in r.stdout
    r = cli("verify-certificate", str(out), "--offline", "--key", cli("public-key").stdout.strip())
    assert r.exit_code == 0 and "offline" in r.stdout
    doc = orjson.loads(out.read_text())
    doc["certificate"]["dek_versions_destroyed"] = 0
    out.write_bytes(orjson.dumps(doc))
    r = cli("verify-certificate", str(out))
    assert isinstance(r.exception, AuditIntegrityError)
    r = cli("certificate", "--hash", "f" * 32)
    assert isinstance(r.exception, NotFoundError)


def test_certificate_for_a_raw_subject_after_a_real_forget(cli, home):
    with Deployment.open(home) as dep:
        dep.keys._authz = AllowList([("orders-svc", ENCRYPT, ("Class", "pii")), ("admin", FORGET, ("Subject", "*"))])
        dep.keys.encryption_key(SUBJECT, "pii", principal="orders-svc")  # as the producer would
        h = dep.forget(SUBJECT, principal="admin", reason="gdpr-art17").receipt.subject_hash
    # after the forget nothing maps the raw id to its pseudonym: only the printed reference finds it
    for args, stdin in (((SUBJECT,), None), (("-",), SUBJECT + "\n")):
        r = cli("certificate", *args, input=stdin)
        assert isinstance(r.exception, NotFoundError) and "--hash" in str(r.exception)
        assert SUBJECT not in r.stdout + r.stderr + str(r.exception)
    r = cli("certificate", h, "--hash")
    assert r.exit_code == 0, r.exception
    doc = orjson.loads(r.stdout)
    assert doc["certificate"]["subject_hash"] == h and doc["certificate"]["reason_code"] == "gdpr-art17"
    assert SUBJECT.encode() not in home.audit_db.read_bytes()


def test_the_real_command_prints_one_line_errors_and_exit_codes(home, filled):
    run = [sys.executable, "-c", "from eventward._internal.cli import main; main()", "--home", str(home.root), "audit"]
    r = subprocess.run([*run, "show", "999"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 4 and "not_found" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([*run, "tail", "--as", "nobody"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and r.stderr.startswith("error (forbidden)") and r.stderr.count("\n") == 1
    tamper(home.audit_db, "DELETE FROM records WHERE idx = ?", filled + 3)
    r = subprocess.run([*run, "verify"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and f"first bad index: {filled + 3}" in r.stderr and "Traceback" not in r.stderr
