"""Legal hold end to end and the regulator's report: a held subject's forget names the hold's code
and who placed it; the report carries the verified certificate, the epoch status, holds and the
residual-copy statement, and never the subject's id."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import orjson
import pytest
import typer
from typer.testing import CliRunner

from eventward._internal.audit.log import AuditLog
from eventward._internal.audit.report import erasure_report
from eventward._internal.audit.witness import Witness, request_document
from eventward._internal.cli import common
from eventward._internal.cli import erasure as erasure_cli
from eventward._internal.cli import keys as keys_cli
from eventward._internal.cli import witness as witness_cli
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward.errors import AccessDenied, AuditIntegrityError, LegalHoldError, NotFoundError

SUBJECT = "SENTINEL-carol.report@example.net-77"
POLICY = """\
principals:
  admin: {type: user, roles: [ops]}
  legal: {type: user, roles: [counsel]}
  nobody: {type: user, roles: []}
roles:
  ops:
    - {allow: manage_policy}
    - {allow: [forget, hold]}
    - {allow: read_audit}
    - {allow: rotate_keys, class: "*"}
    - {allow: [encrypt, decrypt], class: "*"}
  counsel:
    - {allow: hold}
"""


@pytest.fixture
def home(tmp_path) -> Home:
    h = Home(tmp_path / "home")
    Deployment.init(h, policy_yaml=POLICY).close()
    with Deployment.open(h) as dep:
        dep.keys.encryption_key(SUBJECT, "pii", principal="admin")
        dep.keys.encryption_key(SUBJECT, "payment", principal="admin")
    return h


@pytest.fixture
def cli(home, monkeypatch, tmp_path):
    monkeypatch.setattr(common.STATE, "home", str(home.root))
    monkeypatch.delenv("EVENTWARD_PRINCIPAL", raising=False)
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        return None

    keys_cli.register(app)
    erasure_cli.register(app)
    witness_cli.register(app)
    runner = CliRunner()
    return lambda *args, **kw: runner.invoke(app, list(args), **kw)


def _clean(text: str) -> None:
    assert SUBJECT not in text and "carol" not in text


def test_attack_held_subject_forget_is_refused_naming_code_and_placer(cli, home):
    r = cli("hold", SUBJECT, "--reason", "case-2026-117", "--as", "legal")
    assert r.exit_code == 0, r.output
    r = cli("forget", SUBJECT, "--reason", "gdpr-art17", "--as", "admin")
    err = r.exception
    assert isinstance(err, LegalHoldError) and common.exit_code(err) == common.EXIT_CONFLICT
    assert "case-2026-117" in err.message and "placed by legal" in err.message
    assert err.details["hold_code"] == "case-2026-117" and err.details["held_by"] == "legal"
    _clean(err.message)
    doc = orjson.loads(cli("erasure", "report", SUBJECT).stdout)
    assert doc["status"] == "held" and doc["certificate"] is None
    assert doc["hold"]["code"] == "case-2026-117" and doc["hold"]["placed_by"] == "legal"
    assert [h["action"] for h in doc["history"]] == ["key.hold", "key.forget"]
    assert doc["history"][1]["outcome"] == "denied" and doc["history"][1]["reason"] == "legal_hold"
    assert cli("release", SUBJECT, "--as", "legal").exit_code == 0
    r = cli("forget", SUBJECT, "--reason", "gdpr-art17", "--as", "admin", "--json")
    assert r.exit_code == 0, r.output
    forgot = orjson.loads(r.stdout)
    assert forgot["keys_destroyed"] == 2 and forgot["subject_hash"] == doc["subject_hash"]
    doc = orjson.loads(cli("erasure", "report", forgot["subject_hash"], "--hash").stdout)
    assert doc["status"] == "erased" and doc["hold"] is None
    assert [h["action"] for h in doc["history"]] == [
        "key.hold", "key.forget", "key.release", "key.forget", "erasure.certificate"]


def test_report_verifies_certificate_epochs_and_witness(cli, home, tmp_path):
    with AuditLog.open(home) as log:
        vkey = log.verifier.vkey()
    w = Witness.init(tmp_path / "w", "witness.example/w1", vkey)
    with AuditLog.open(home) as log:
        w.cosign(log.checkpoint().text, None)
    r = cli("forget", SUBJECT, "--reason", "gdpr-art17", "--as", "admin", "--json")
    assert r.exit_code == 0, r.output
    h = orjson.loads(r.stdout)["subject_hash"]
    with AuditLog.open(home) as log:
        last = w.last()
        cp = log.checkpoint()
        cosigned = w.cosign(*[cp.text, log.consistency(last.size, cp.size)]).text
    (tmp_path / "cosigned.txt").write_text(cosigned)
    (tmp_path / "w.vkey").write_text(w.vkey())
    r = cli("erasure", "report", h, "--hash", "--witness", str(tmp_path / "w.vkey"), "--witnessed",
            str(tmp_path / "cosigned.txt"))
    assert r.exit_code == 0, r.output
    _clean(r.stdout)
    doc = orjson.loads(r.stdout)
    v = doc["certificate"]["verified"]
    assert v["witnessed"] and v["witnessed_checkpoints"][0]["witnesses"] == ["witness.example/w1"]
    assert v["log_extends_checkpoint"] and doc["certificate"]["claims"]["subject_hash"] == doc["subject_hash"]
    assert {e["class"] for e in doc["kek_epochs"]} == {"pii", "payment"}
    assert not any(e["epoch_ended"] for e in doc["kek_epochs"]) and "stay decryptable" in doc["residual_copies"]
    with Deployment.open(home) as dep:
        dep.keys.rotate_kek("pii", principal="admin")
        dep.keys.rotate_kek("payment", principal="admin")
    doc = orjson.loads(cli("erasure", "report", h, "--hash").stdout)
    assert all(e["epoch_ended"] for e in doc["kek_epochs"]) and "unrecoverable" in doc["residual_copies"]
    r = cli("erasure", "report", h, "--hash", "--format", "html", "--out", str(tmp_path / "r.html"))
    assert r.exit_code == 0 and r.stdout.startswith("<!doctype html>") and "epoch pii.v1: ended" in r.stdout
    _clean(r.stdout)
    assert (tmp_path / "r.html").read_text() == r.stdout


def test_attack_report_rejects_a_witnessed_checkpoint_without_the_cosignature(home, tmp_path):
    with Deployment.open(home) as dep:
        h = dep.forget(SUBJECT, principal="admin", reason="gdpr-art17").receipt.subject_hash
        w = Witness.init(tmp_path / "w", "witness.example/w1", dep.audit.verifier.vkey())
        plain = dep.audit.checkpoint().text  # signed by the log, never cosigned
        with pytest.raises(AuditIntegrityError, match="lacks the cosignature"):
            erasure_report(dep, h, log=dep.audit, witnesses=[w.key], witnessed=[plain])
        assert request_document(plain, None)  # the witness could cosign it on request; the report did not pretend


def test_report_bad_input(cli, home):
    r = cli("erasure", "report", "never-seen-person@example.org")
    assert isinstance(r.exception, NotFoundError) and "never-seen" not in r.exception.message
    r = cli("erasure", "report", SUBJECT, "--format", "pdf")
    assert r.exit_code != 0 and common.exit_code(r.exception) == common.EXIT_INVALID
    r = cli("erasure", "report", SUBJECT, "--as", "nobody")
    assert isinstance(r.exception, AccessDenied)
    _clean(str(r.exception))
    doc = orjson.loads(cli("erasure", "report", SUBJECT).stdout)
    assert doc["status"] == "not_erased" and "No erasure" in doc["residual_copies"]


def test_report_against_a_served_witness(cli, home, tmp_path):
    """The certificate's checkpoint is shown consistent with what a witness process cosigned."""
    with AuditLog.open(home) as log:
        vkey = log.verifier.vkey()
    Witness.init(tmp_path / "w", "witness.example/srv", vkey)
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "eventward._internal.cli", "witness", "serve", "--state", str(tmp_path / "w"),
         "--listen", "127.0.0.1:0", "--port-file", str(port_file)],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not (port_file.exists() and port_file.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, "witness did not start"
            time.sleep(0.02)
        url = f"http://127.0.0.1:{port_file.read_text()}"
        r = cli("forget", SUBJECT, "--reason", "gdpr-art17", "--as", "admin", "--json")
        h = orjson.loads(r.stdout)["subject_hash"]
        assert cli("witness", "submit", "--url", url).exit_code == 0
        r = cli("erasure", "report", h, "--hash", "--witness-url", url)
        assert r.exit_code == 0, r.output
        v = orjson.loads(r.stdout)["certificate"]["verified"]
        assert v["witnessed"] and v["witnessed_checkpoints"][0]["witnesses"] == ["witness.example/srv"]
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
