"""The log CLI on a real home: produce, consume per clearance, dead letters, replay, trust."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest
from typer.testing import CliRunner

from eventward.cli import app
from eventward.errors import AccessDenied, InputError
from eventward.home import Home
from eventward.keys.service import KeyService
from eventward.policy.base import APPROVE_SCHEMA, PROPOSE_SCHEMA, AllowList
from eventward.schema.registry import Registry

from .client_world import SCHEMA, SENTINEL_EMAIL, TOPIC, TYPE, customer, grants


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Home:
    h = Home(tmp_path_factory.mktemp("cli") / "home").ensure()
    KeyService.init(h, authorizer=grants()).close()
    auth = AllowList([("alice", PROPOSE_SCHEMA, ("Schema", TYPE)), ("bob", APPROVE_SCHEMA, ("Schema", TYPE))])
    with Registry.open(h, authorizer=auth) as reg:
        reg.propose("alice", TYPE, SCHEMA)
        reg.approve("bob", TYPE, 1)
    return h


def run(home: Home, *args: str, input: str | None = None):
    return CliRunner().invoke(app, ["--home", str(home.root), *args], input=input, env={"COLUMNS": "300"})


def lines(text: str) -> list[dict]:
    return [orjson.loads(x) for x in text.splitlines() if x.startswith("{")]


def test_produce_then_consume_per_clearance(home):
    data = "\n".join(orjson.dumps({"type": TYPE, "data": customer(i)}).decode() for i in range(3))
    ce = orjson.dumps(
        {"specversion": "1.0", "id": "ce-1", "source": "/x", "type": TYPE, "data": customer(3)}
    ).decode()
    r = run(home, "produce", TOPIC, "-", "--as", "signup", input=data + "\n" + ce + "\n")
    assert r.exit_code == 0, r.output
    ids = r.stdout.split()
    assert len(ids) == 4 and ids[3] == "ce-1"
    cleared = run(
        home, "consume", TOPIC, "--as", "billing", "--from-beginning", "--idle", "0", "--clearance", "pii"
    )
    assert [e["id"] for e in lines(cleared.stdout)] == ids
    assert lines(cleared.stdout)[0]["data"] == customer(0)
    blind = run(home, "consume", TOPIC, "--as", "analytics", "--from-beginning", "--idle", "0")
    assert [e["data"]["email"] for e in lines(blind.stdout)] == ["[redacted]"] * 4
    assert SENTINEL_EMAIL not in blind.stdout
    again = run(home, "consume", TOPIC, "--as", "billing", "--idle", "0", "--clearance", "pii")
    assert lines(again.stdout) == []  # the group's offset was committed


def test_bad_input_line_sends_nothing_of_its_chunk(home):
    from eventward.log.embedded import EmbeddedLog

    before = EmbeddedLog.open(home).end_offset(TOPIC)
    good = orjson.dumps({"type": TYPE, "data": customer(9)}).decode()
    for bad, rule in (
        (orjson.dumps({"type": TYPE, "data": customer(1, plan="gold")}).decode(), "line 2"),
        (orjson.dumps({"type": TYPE, "data": customer(1), "ewseq": 5}).decode(), "line 2"),
        ("{not json", "line 2"),
    ):
        r = run(home, "produce", TOPIC, "--as", "signup", input=f"{good}\n{bad}\n")
        assert isinstance(r.exception, InputError) and rule in r.exception.message
        assert SENTINEL_EMAIL not in r.exception.message and r.stdout == ""
    assert EmbeddedLog.open(home).end_offset(TOPIC) == before


def test_dead_letters_replay_and_trust_commands(home):
    import sqlite3

    r = run(
        home,
        "produce",
        TOPIC,
        "--as",
        "signup",
        input=orjson.dumps({"type": TYPE, "data": customer(7)}).decode(),
    )
    db = sqlite3.connect(home.log_db, isolation_level=None)
    (off,) = db.execute("SELECT max(offset) FROM events").fetchone()
    (data,) = db.execute("SELECT data FROM events WHERE offset = ?", (off,)).fetchone()
    db.execute("UPDATE events SET data = ? WHERE offset = ?", (data.replace(b"pro", b"pr0"), off))
    run(home, "consume", TOPIC, "--as", "billing", "--idle", "0", "--clearance", "pii")
    listing = run(home, "dlq", "list", TOPIC, "--as", "billing")
    assert "digest_mismatch" in listing.stdout
    shown = orjson.loads(run(home, "dlq", "show", TOPIC, "0", "--as", "billing").stdout)
    assert shown["reason"] == "digest_mismatch" and shown["offset"] == off and "original" not in shown
    assert shown["original_attributes"]["id"] == r.stdout.strip()
    redrive = run(home, "dlq", "redrive", TOPIC, "--as", "billing", "--clearance", "pii")
    assert lines(redrive.stdout) == [] and "digest_mismatch=1" in redrive.stderr

    replayed = run(home, "replay", TOPIC, "--as", "auditor", "--from-offset", "0", "--to-offset", "2")
    assert len(lines(replayed.stdout)) == 2

    reg = run(home, "trust", "register", "billing-2", "--as", "admin")
    assert reg.exit_code == 0 and "registered" in reg.stdout
    denied = run(home, "trust", "rotate", "billing-2", "--as", "billing")
    assert isinstance(denied.exception, AccessDenied)
    kid = reg.stdout.split()[-1]
    assert run(home, "trust", "revoke", kid, "--as", "admin").exit_code == 0
    assert "revoked" in run(home, "trust", "list", "--principal", "billing-2").stdout


def test_errors_are_one_line_and_exit_2(home):
    p = subprocess.run(
        [
            sys.executable,
            "-c",
            "from eventward.cli import main; main()",
            "--home",
            str(home.root),
            "consume",
            "nope",
            "--as",
            "billing",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and "not_found" in p.stderr
    assert "Traceback" not in p.stderr
