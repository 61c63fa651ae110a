"""The log CLI on a deployment home under its Cedar policy: produce, consume per Decrypt grant,
dead letters, replay, trust. Grants come from the policy only; there is no --clearance."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import orjson
import pytest
from typer.testing import CliRunner

from eventward._internal.cli import app
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward._internal.log.embedded import EmbeddedLog
from eventward.errors import AccessDenied, InputError, NotFoundError

from .client_world import SCHEMA, SENTINEL_EMAIL, SENTINEL_NAME, TOPIC, TYPE, customer

POLICY = """\
principals:
  admin: {type: user, roles: [eventward-admin]}
  alice: {type: user, roles: [schema-author]}
  bob: {type: user, roles: [schema-admin]}
  signup: {type: service, roles: [writer]}
  billing: {type: service, roles: [reader, pii-reader]}
  analytics: {type: service, roles: [reader]}
  ops: {type: user, roles: [reader, operator]}
  intruder: {type: service, roles: []}
roles:
  eventward-admin:
    - {allow: manage_policy}
    - {allow: rotate_keys, producer: "*"}
    - {allow: read_audit}
  schema-author: [{allow: propose_schema, schema: "*"}]
  schema-admin: [{allow: approve_schema, schema: "*"}]
  writer:
    - {allow: publish, topic: customers, event_types: [CustomerRegistered]}
    - {allow: encrypt, class: pii, on_topics: [customers], event_types: [CustomerRegistered]}
  reader: [{allow: subscribe, topic: customers}]
  pii-reader: [{allow: decrypt, class: pii}]
  operator: [{allow: [replay, redrive_dlq], topic: customers}]
"""
CLI = [sys.executable, "-c", "from eventward._internal.cli import main; main()"]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Home:
    h = Home(tmp_path_factory.mktemp("cli") / "home")
    with Deployment.init(h, policy_yaml=POLICY) as dep:
        dep.registry.propose("alice", TYPE, SCHEMA)
        dep.registry.approve("bob", TYPE, 1)
    for p in ("signup", "billing", "analytics", "ops", "intruder"):
        assert run(h, "trust", "register", p, "--as", "admin").exit_code == 0
    return h


def run(home: Home, *args: str, input: str | None = None):
    return CliRunner().invoke(
        app,
        ["--home", str(home.root), *args],
        input=input,
        env={"COLUMNS": "300", "EVENTWARD_PRINCIPAL": None},
    )


def lines(text: str) -> list[dict]:
    return [orjson.loads(x) for x in text.splitlines() if x.startswith("{")]


def end(home: Home, stream: str = TOPIC) -> int:
    log = EmbeddedLog.open(home)
    try:
        return log.end_offset(stream)
    finally:
        log.close()


def test_produce_then_consume_as_the_policy_allows(home):
    data = "\n".join(orjson.dumps({"type": TYPE, "data": customer(i)}).decode() for i in range(3))
    ce = orjson.dumps(
        {"specversion": "1.0", "id": "ce-1", "source": "/x", "type": TYPE, "data": customer(3)}
    ).decode()
    before = end(home)
    r = run(home, "produce", TOPIC, "-", "--as", "analytics", input=data)
    assert isinstance(r.exception, AccessDenied) and r.stdout == ""  # may read, may not write
    r = run(home, "produce", TOPIC, "-", "--as", "newcomer", input=data)
    assert isinstance(r.exception, NotFoundError)
    assert "eventward trust register newcomer --as admin" in r.exception.message
    assert end(home) == before
    assert run(home, "produce", TOPIC, "-", input=data).exit_code == 2  # --as is required

    r = run(home, "produce", TOPIC, "-", "--as", "signup", input=data + "\n" + ce + "\n")
    assert r.exit_code == 0, r.output
    ids = r.stdout.split()
    assert len(ids) == 4 and ids[3] == "ce-1"

    cleared = run(home, "consume", TOPIC, "--as", "billing", "--from-beginning", "--idle", "0")
    assert [e["id"] for e in lines(cleared.stdout)] == ids
    assert lines(cleared.stdout)[0]["data"] == customer(0)
    blind = run(home, "consume", TOPIC, "--as", "analytics", "--from-beginning", "--idle", "0")
    assert [e["data"]["email"] for e in lines(blind.stdout)] == ["[redacted]"] * 4
    assert [e["data"]["plan"] for e in lines(blind.stdout)] == ["pro"] * 4  # untagged fields stay readable
    assert SENTINEL_EMAIL not in blind.stdout and SENTINEL_NAME not in blind.stdout
    tokens = run(
        home, "consume", TOPIC, "--as", "analytics", "-g", "t", "--from-beginning", "--idle", "0", "--tokens"
    )
    assert len(lines(tokens.stdout)) == 4 and SENTINEL_EMAIL not in tokens.stdout
    assert all(e["data"]["email"] not in ("[redacted]", customer(0)["email"]) for e in lines(tokens.stdout))
    r = run(home, "consume", TOPIC, "--as", "analytics", "--clearance", "pii", "--idle", "0")
    assert r.exit_code == 2 and "No such option" in r.output  # clearance comes from the policy only
    denied = run(home, "consume", TOPIC, "--as", "intruder", "--from-beginning", "--idle", "0")
    assert isinstance(denied.exception, AccessDenied) and lines(denied.stdout) == []
    again = run(home, "consume", TOPIC, "--as", "billing", "--idle", "0")
    assert lines(again.stdout) == []  # the group's offset was committed


def test_bad_input_line_sends_nothing_of_its_chunk(home):
    before = end(home)
    good = orjson.dumps({"type": TYPE, "data": customer(9)}).decode()
    for bad in (
        orjson.dumps({"type": TYPE, "data": customer(1, plan="gold")}).decode(),
        orjson.dumps({"type": TYPE, "data": customer(1), "ewseq": 5}).decode(),
        orjson.dumps({"type": "SomethingElse", "data": customer(1)}).decode(),  # not a granted event type
        "{not json",
    ):
        r = run(home, "produce", TOPIC, "--as", "signup", input=f"{good}\n{bad}\n")
        assert r.exception is not None and "line 2" in r.exception.message, r.exception
        assert isinstance(r.exception, InputError | AccessDenied)
        assert SENTINEL_EMAIL not in r.exception.message and r.stdout == ""
    assert end(home) == before
    for bad_name in ("../../etc/passwd", "a b", ""):  # a principal may name key and credential files
        r = run(home, "produce", TOPIC, "--as", bad_name, input=good)
        assert isinstance(r.exception, InputError) and "invalid principal name" in r.exception.message
    assert end(home) == before


def test_dead_letters_replay_and_trust_commands(home):
    r = run(
        home,
        "produce",
        TOPIC,
        "--as",
        "signup",
        input=orjson.dumps({"type": TYPE, "data": customer(7)}).decode(),
    )
    assert r.exit_code == 0, r.output
    db = sqlite3.connect(home.log_db, isolation_level=None)
    (off,) = db.execute("SELECT max(offset) FROM events WHERE stream = ?", (TOPIC,)).fetchone()
    (data,) = db.execute("SELECT data FROM events WHERE stream = ? AND offset = ?", (TOPIC, off)).fetchone()
    db.execute(
        "UPDATE events SET data = ? WHERE stream = ? AND offset = ?",
        (data.replace(b"pro", b"pr0"), TOPIC, off),
    )
    db.close()
    consumed = run(home, "consume", TOPIC, "--as", "billing", "--idle", "0")
    assert lines(consumed.stdout) == [] and "digest_mismatch" in consumed.stderr
    listing = run(home, "dlq", "list", TOPIC, "--as", "billing")
    assert "digest_mismatch" in listing.stdout
    assert isinstance(run(home, "dlq", "list", TOPIC, "--as", "intruder").exception, AccessDenied)
    shown = orjson.loads(run(home, "dlq", "show", TOPIC, "0", "--as", "billing").stdout)
    assert shown["reason"] == "digest_mismatch" and shown["offset"] == off and "original" not in shown
    assert shown["original_attributes"]["id"] == r.stdout.strip()
    assert isinstance(run(home, "dlq", "redrive", TOPIC, "--as", "billing").exception, AccessDenied)
    redrive = run(home, "dlq", "redrive", TOPIC, "--as", "ops")
    assert lines(redrive.stdout) == [] and "digest_mismatch=1" in redrive.stderr

    assert isinstance(
        run(home, "replay", TOPIC, "--as", "analytics", "--from-offset", "0").exception, AccessDenied
    )
    replayed = run(home, "replay", TOPIC, "--as", "ops", "--from-offset", "0", "--to-offset", "2")
    assert len(lines(replayed.stdout)) == 2
    assert {e["data"]["email"] for e in lines(replayed.stdout)} == {"[redacted]"}  # ops may not decrypt

    reg = run(home, "trust", "register", "billing-2")  # --as defaults to admin
    assert reg.exit_code == 0 and "registered" in reg.stdout
    denied = run(home, "trust", "rotate", "billing-2", "--as", "billing")
    assert isinstance(denied.exception, AccessDenied)
    assert isinstance(run(home, "trust", "register", "intruder-2", "--as", "signup").exception, AccessDenied)
    kid = reg.stdout.split()[-1]
    assert isinstance(run(home, "trust", "revoke", kid, "--as", "billing").exception, AccessDenied)
    assert run(home, "trust", "revoke", kid, "--as", "admin").exit_code == 0
    listed = run(home, "trust", "list", "--principal", "billing-2").stdout
    assert "revoked" in listed and "intruder-2" not in run(home, "trust", "list").stdout
    with Deployment.open(home) as dep:
        trust = [
            (x.action, x.principal, x.outcome) for x in dep.audit.tail(300) if x.action.startswith("trust.")
        ]
    assert ("trust.rotate", "billing", "denied") in trust and ("trust.revoke", "admin", "ok") in trust


def test_closed_output_stops_quietly_and_dead_letters_nothing(home):
    dlq_before = end(home, f"{TOPIC}.dlq")
    p = subprocess.Popen(
        [
            *CLI,
            "--home",
            str(home.root),
            "consume",
            TOPIC,
            "--as",
            "analytics",
            "-g",
            "piped",
            "--from-beginning",
            "--idle",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    p.stdout.close()  # the reader is gone before the first event is written (like `| head -0`)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0 and "output closed" in err and "Traceback" not in err
    assert end(home, f"{TOPIC}.dlq") == dlq_before  # a closed pipe is not a bad event
    r = run(home, "consume", TOPIC, "--as", "analytics", "-g", "piped", "--from-beginning", "--idle", "0")
    assert len(lines(r.stdout)) >= 4  # nothing was lost: the same group gets every event


def test_errors_are_one_line_and_exit_2(home):
    p = subprocess.run(
        [*CLI, "--home", str(home.root), "consume", "nope", "--as", "billing"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # billing may not subscribe to "nope": authorization is decided first, so it is told that
    # (exit 3), not whether the stream exists
    assert p.returncode == 3 and p.stderr.strip().count("\n") == 0 and "forbidden" in p.stderr
    assert "Traceback" not in p.stderr
