"""External attestation: a witness cosigns only consistent checkpoints, and ``audit verify`` keeps
its own state outside the home, so truncating the log and deleting its checkpoints is caught."""

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

from eventward._internal.audit.checkpoint import verify_checkpoint
from eventward._internal.audit.log import AuditLog
from eventward._internal.audit.state import verify_with_state
from eventward._internal.audit.witness import Witness, parse_request, request_document
from eventward._internal.cli import audit as audit_cli
from eventward._internal.cli import common
from eventward._internal.cli import witness as witness_cli
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward.errors import AuditIntegrityError, ConflictError, NotFoundError, WitnessRefused

from .helpers import fill, rebuild_tree, tamper


@pytest.fixture
def home(tmp_path) -> Home:
    h = Home(tmp_path / "home")
    Deployment.init(h).close()
    return h


@pytest.fixture
def cli(home, monkeypatch, tmp_path):
    monkeypatch.setattr(common.STATE, "home", str(home.root))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("EVENTWARD_PRINCIPAL", raising=False)
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        return None

    audit_cli.register(app)
    witness_cli.register(app)
    runner = CliRunner()
    return lambda *args, **kw: runner.invoke(app, list(args), **kw)


def _vkey(home: Home) -> str:
    with AuditLog.open(home) as log:
        return log.verifier.vkey()


def _truncate(home: Home, keep: int) -> None:
    """What an attacker with the file does: drop records from ``keep`` on, every stored checkpoint,
    and recompute the stored tree so the shorter log is self-consistent."""
    db = home.audit_db
    tamper(db, "DELETE FROM records WHERE idx >= ?", keep)
    tamper(db, "DELETE FROM checkpoints")
    tamper(db, "DELETE FROM attachments")
    rebuild_tree(db)


def test_witness_cosigns_consistent_checkpoints_and_keeps_its_state(home, tmp_path):
    w = Witness.init(tmp_path / "w", "witness.example/w1", _vkey(home))
    with AuditLog.open(home) as log:
        fill(log, 5)
        first = log.checkpoint()
        r1 = w.cosign(first.text, None, now=1000)
        assert r1.old_size is None and r1.new_size == first.size
        fill(log, 7)
        second = log.checkpoint()
        r2 = w.cosign(second.text, log.consistency(first.size, second.size), now=999)  # clock went back
        cp = verify_checkpoint(r2.text, log.verifier, witnesses=[w.key])
    assert r2.old_size == first.size and [s.name for s in cp.cosignatures] == ["witness.example/w1"]
    assert int.from_bytes(cp.cosignatures[0].signature[:8], "big") == 1000  # cosign time never goes back
    again = Witness.open(tmp_path / "w")
    assert again.last().size == second.size and again.vkey() == w.vkey()
    with pytest.raises(ConflictError):
        Witness.init(tmp_path / "w", "witness.example/w1", _vkey(home))


def test_attack_witness_refuses_rollback_fork_and_missing_proof(home, tmp_path):
    w = Witness.init(tmp_path / "w", "witness.example/w1", _vkey(home))
    with AuditLog.open(home) as log:
        fill(log, 8)
        small = log.checkpoint()
        fill(log, 8)
        big = log.checkpoint()
        w.cosign(big.text, None)
        with pytest.raises(WitnessRefused, match="rollback"):
            w.cosign(small.text, None)
        fill(log, 3)
        bigger = log.checkpoint()
        with pytest.raises(WitnessRefused, match="no consistency proof"):
            w.cosign(bigger.text, None)
        wrong = log.consistency(small.size, bigger.size)  # a proof from the wrong size
        with pytest.raises(WitnessRefused, match="not from"):
            w.cosign(bigger.text, wrong)
    other = Home(tmp_path / "other")
    with AuditLog.open(other) as olog:  # a checkpoint of another log: its signature is not the log's
        fill(olog, 30)
        foreign = olog.checkpoint().text
    with pytest.raises(AuditIntegrityError):
        w.cosign(foreign, None)
    assert w.last().size == big.size  # nothing refused was kept


def test_attack_witness_shown_an_inconsistent_checkpoint(home, tmp_path, cli):
    """History rewritten at the same length plus growth: the proof cannot bridge it (bad input (c))."""
    w = Witness.init(tmp_path / "w", "witness.example/w1", _vkey(home))
    with AuditLog.open(home) as log:
        fill(log, 10)
        cp = log.checkpoint()
    w.cosign(cp.text, None)
    tamper(home.audit_db, "UPDATE records SET body = replace(body, '\"k3\"', '\"k9\"') WHERE idx = ?", cp.size - 7)
    tamper(home.audit_db, "UPDATE records SET leaf = ? WHERE idx = ?", b"\x00" * 32, cp.size - 7)
    rebuild_tree(home.audit_db)
    with AuditLog.open(home) as log:
        fill(log, 4)
        forged = log.checkpoint()
        req = request_document(forged.text, log.consistency(cp.size, forged.size))
    (tmp_path / "req.json").write_text(req)
    r = cli("witness", "cosign", str(tmp_path / "req.json"), "--state", str(tmp_path / "w"))
    assert isinstance(r.exception, WitnessRefused) and "inconsistent" in r.exception.message
    with pytest.raises(WitnessRefused, match="inconsistent"):
        w.cosign(*parse_request(req))


def test_attack_truncated_log_without_checkpoints_is_caught_by_state_and_witness(home, tmp_path, cli):
    """Done-when (a): records truncated and every stored checkpoint deleted. Plain verification of the
    file passes (it is self-consistent); ``audit verify`` with its state and the witness both report it."""
    state = tmp_path / "verifier.state"
    wdir = tmp_path / "w"
    r = cli("witness", "init", "--state", str(wdir), "--name", "witness.example/w1", "--log-key", _vkey(home))
    assert r.exit_code == 0, r.output
    wkey = r.stdout.strip()
    with AuditLog.open(home) as log:
        fill(log, 20)
    r = cli("witness", "request", "--out", str(tmp_path / "req.json"))
    assert r.exit_code == 0, r.output
    r = cli("witness", "cosign", str(tmp_path / "req.json"), "--state", str(wdir), "--out", str(tmp_path / "w.cp"))
    assert r.exit_code == 0, r.output
    r = cli("audit", "verify", "--state", str(state), "--witness", wkey, "--witnessed", str(tmp_path / "w.cp"),
            "--json")
    doc = orjson.loads(r.stdout)
    assert r.exit_code == 0 and doc["ok"] and doc["witnessed"] and doc["unwitnessed_records"] == 0
    big = doc["saved_size"]
    assert state.exists() and verify_checkpoint(state.read_text(), _vkey(home)).size == big

    _truncate(home, 6)
    r = cli("audit", "verify", "--no-state", "--json")
    assert r.exit_code == 0 and orjson.loads(r.stdout)["ok"]  # without memory the rollback is invisible

    r = cli("audit", "verify", "--state", str(state), "--json")
    doc = orjson.loads(r.stdout)
    assert r.exit_code == 1 and not doc["ok"] and "rollback" in doc["error"]["message"]
    assert doc["error"]["index"] == 6
    r = cli("audit", "verify", "--state", str(state), "--witness", wkey, "--witnessed", str(wdir / "checkpoint"))
    assert r.exit_code == 1 and "never cosigned this rollback" in r.output
    assert verify_checkpoint(state.read_text(), _vkey(home)).size == big  # a failed run keeps the state

    status = orjson.loads(cli("witness", "status", "--state", str(wdir), "--json").stdout)
    r = cli("witness", "request", "--from-size", str(status["size"]), "--out", str(tmp_path / "req2.json"))
    assert r.exit_code == 0, r.output
    r = cli("witness", "cosign", str(tmp_path / "req2.json"), "--state", str(wdir))
    assert isinstance(r.exception, WitnessRefused) and "rollback" in r.exception.message
    assert common.exit_code(r.exception) == common.EXIT_REFUSED


def test_state_defaults_outside_the_home_and_moves_forward(home, tmp_path, cli):
    r = cli("audit", "verify", "--json")
    doc = orjson.loads(r.stdout)
    assert r.exit_code == 0 and doc["state"].startswith(str(tmp_path / "xdg")) and doc["remembered_size"] is None
    with AuditLog.open(home) as log:
        fill(log, 3)
    doc = orjson.loads(cli("audit", "verify", "--json").stdout)
    assert doc["ok"] and doc["remembered_size"] is not None and doc["saved_size"] > doc["remembered_size"]
    with AuditLog.open(home) as log:
        rep = verify_with_state(log, log.verifier, state=None)
    assert rep.report.ok and rep.saved is None


def test_witness_bad_input_is_a_clear_error(home, tmp_path, cli):
    r = cli("witness", "status", "--state", str(tmp_path / "nowhere"))
    assert r.exit_code == 4 or isinstance(r.exception, NotFoundError)
    Witness.init(tmp_path / "w", "witness.example/w1", _vkey(home))
    (tmp_path / "junk.json").write_text('{"checkpoint": 3}')
    with pytest.raises(AuditIntegrityError, match="expected exactly"):
        parse_request((tmp_path / "junk.json").read_text())
    with pytest.raises(AuditIntegrityError):
        parse_request("not json")


@pytest.fixture
def served(home, tmp_path):
    """A witness served over HTTP by its own process on 127.0.0.1, stopped by its PID."""
    state = tmp_path / "ws"
    Witness.init(state, "witness.example/http", _vkey(home))
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "eventward._internal.cli", "witness", "serve", "--state", str(state), "--listen",
         "127.0.0.1:0", "--port-file", str(port_file)],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while not (port_file.exists() and port_file.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, "witness did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port_file.read_text()}", state
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def test_attack_served_witness_follows_the_log_and_refuses_its_truncation(home, tmp_path, cli, served):
    url, state = served
    with AuditLog.open(home) as log:
        fill(log, 9)
    r = cli("witness", "submit", "--url", url, "--out", str(tmp_path / "c1.txt"))
    assert r.exit_code == 0, r.output
    first = verify_checkpoint(r.stdout, _vkey(home), witnesses=[Witness.open(state).key])
    with AuditLog.open(home) as log:
        fill(log, 5)
    r = cli("witness", "submit", "--url", url)
    assert r.exit_code == 0, r.output
    assert verify_checkpoint(r.stdout, _vkey(home)).size > first.size
    assert Witness.open(state).last().size == verify_checkpoint(r.stdout, _vkey(home)).size
    r = cli("audit", "verify", "--state", str(tmp_path / "st"), "--witness-url", url, "--json")
    assert r.exit_code == 0 and orjson.loads(r.stdout)["witnessed"], r.output
    _truncate(home, 4)
    r = cli("witness", "submit", "--url", url)
    assert isinstance(r.exception, WitnessRefused) and "rollback" in r.exception.message
    r = cli("audit", "verify", "--no-state", "--witness-url", url)
    assert r.exit_code == 1 and "never cosigned this rollback" in r.output
    r = cli("witness", "submit", "--url", url + "/nope", "--witness-key", Witness.open(state).vkey())
    assert isinstance(r.exception, AuditIntegrityError | NotFoundError)
