"""CLI conventions (docs/cli.md): every listing or report command takes --json and prints one
parseable document; errors exit with the documented code of their class; --help shows readable
metavars; piped tables are never wrapped; --version works."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import typer

from eventward import errors
from eventward._internal.cli import app, common

EXAMPLES = resources.files("eventward._internal.examples")
ORDER = {
    "type": "OrderPlaced",
    "data": {
        "order_id": "ord-1000",
        "customer": {"id": "c1", "name": "Ada", "email": "ada@example.com"},
        "items": [],
        "total": 10,
    },
}


class Ran:
    def __init__(self, rc: int, out: str, err: str) -> None:
        self.rc, self.out, self.err = rc, out, err

    def json(self) -> Any:
        assert self.rc == 0, self.err
        return json.loads(self.out)


@pytest.fixture
def ew(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Runs the real entry point (common.run, so exit codes are the real ones) in-process."""
    monkeypatch.delenv("EVENTWARD_PRINCIPAL", raising=False)
    monkeypatch.delenv("EVENTWARD_HOME", raising=False)
    home = tmp_path / "home"

    def run(*args: str, stdin: str | None = None, home_dir: Path | None = None) -> Ran:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["eventward", "--home", str(home_dir or home), *args])
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", _Stdin(stdin))
        try:
            common.run(app)
            rc = 0
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 0
        out, err = capsys.readouterr()
        return Ran(rc, out, err)

    run.home = home  # type: ignore[attr-defined]
    run.dir = tmp_path  # type: ignore[attr-defined]
    return run


class _Stdin:
    def __init__(self, text: str) -> None:
        import io

        self.buffer = io.BytesIO(text.encode())

    def readline(self) -> str:
        return self.buffer.readline().decode()


@pytest.fixture
def deployed(ew) -> Iterator[Any]:
    """A home with the example policy, a schema, six events, a consumer and a forgotten subject."""
    policy = ew.dir / "policy.yaml"
    policy.write_text(EXAMPLES.joinpath("policy.yaml").read_text())
    schema = ew.dir / "order.schema.json"
    schema.write_text(EXAMPLES.joinpath("order_placed.schema.json").read_text())
    steps = [
        ("init", "--admin", "admin"),
        ("policy", "apply", str(policy), "--as", "admin"),
        ("trust", "register", "orders-svc", "--as", "admin"),
        ("schema", "propose", "OrderPlaced", str(schema), "--as", "alice"),
        ("schema", "approve", "OrderPlaced", "1", "--as", "bob"),
    ]
    for step in steps:
        r = ew(*step)
        assert r.rc == 0, (step, r.err)
    events = "".join(  # the last order is c9's, the subject forgotten below
        json.dumps({**ORDER, "data": {**ORDER["data"], "order_id": f"ord-100{i}", "customer": {
            **ORDER["data"]["customer"], "id": "c9" if i == 2 else "c1"}}}) + "\n" for i in range(3)
    )
    r = ew("produce", "orders", "--as", "orders-svc", "-", stdin=events)
    assert r.rc == 0, r.err
    r = ew("consume", "orders", "--as", "shipping-svc", "--from-beginning")
    assert r.rc == 0, r.err
    assert ew("forget", "c9", "--reason", "gdpr-art17", "--as", "admin").rc == 0
    yield ew


def test_every_listing_and_report_command_prints_parseable_json(deployed, tmp_path: Path) -> None:
    ew = deployed
    schema = str(tmp_path / "order.schema.json")
    docs = {
        "trust list": ew("trust", "list", "--json").json(),
        "schema list": ew("schema", "list", "--as", "alice", "--json").json(),
        "schema show": ew("schema", "show", "OrderPlaced", "--as", "alice", "--json").json(),
        "schema check": ew("schema", "check", "OrderPlaced", schema, "--as", "alice", "--json").json(),
        "policy show": ew("policy", "show", "--json").json(),
        "policy show --compiled": ew("policy", "show", "--compiled", "--json").json(),
        "policy versions": ew("policy", "versions", "--json").json(),
        "policy explain": ew("policy", "explain", "analytics-svc", "decrypt", "Class::pii", "--json").json(),
        "policy compile": ew("policy", "compile", "--target", "kafka", "--json").json(),
        "policy diff": ew("policy", "diff", "1", "2", "--json").json(),
        "dlq list": ew("dlq", "list", "orders", "--as", "shipping-svc", "--json").json(),
        "keys status": ew("keys", "status", "--json").json(),
        "audit tail": ew("audit", "tail", "-n", "5", "--json").json(),
        "audit show": ew("audit", "show", "0", "--json").json(),
        "audit verify": ew("audit", "verify", "--json").json(),
        "audit checkpoint": ew("audit", "checkpoint", "--json").json(),
        "nats status": ew("nats", "status", "--json").json(),
    }
    assert {k["principal"] for k in docs["trust list"]["keys"]} >= {"orders-svc"}
    assert all(k["status"] == "active" for k in docs["trust list"]["keys"])
    assert docs["schema list"]["schemas"][0] | {"fingerprint": None} == {
        "type": "OrderPlaced", "mode": docs["schema list"]["schemas"][0]["mode"], "active": 1, "pending": None,
        "versions": 1, "format": "json", "fingerprint": None,
    }
    assert docs["schema show"]["version"] == 1 and docs["schema show"]["fields"]
    assert docs["schema check"]["compatible"] is True
    assert docs["policy show"]["version"] == 2 and "principals:" in docs["policy show"]["yaml"]
    assert "permit" in docs["policy show --compiled"]["compiled"]
    assert [v["active"] for v in docs["policy versions"]["versions"]] == [False, True]
    assert docs["policy explain"]["allowed"] is False and docs["policy explain"]["resource"] == {
        "kind": "Class", "id": "pii"}
    assert docs["policy compile"]["target"] == "kafka" and "kafka-acls" in docs["policy compile"]["text"]
    assert docs["policy diff"]["from"] == 1 and docs["policy diff"]["kafka"]["add"]
    assert docs["dlq list"] == {"topic": "orders", "entries": []}
    assert {c["class"] for c in docs["keys status"]["classes"]} >= {"pii"}
    assert docs["keys status"]["erasures"] >= 1
    assert len(docs["audit tail"]["records"]) == 5
    assert docs["audit show"]["record"] and docs["audit show"]["leaf_hash"]
    assert docs["audit verify"]["ok"] is True and docs["audit verify"]["error"] is None
    assert docs["audit checkpoint"]["text"].startswith(docs["audit checkpoint"]["origin"])
    assert docs["nats status"] == {"servers": []}


def test_forget_reports_as_json(deployed) -> None:
    doc = deployed("forget", "c1", "--reason", "gdpr-art17", "--as", "admin", "--json").json()
    assert doc["reason_code"] == "gdpr-art17" and doc["keys_destroyed"] >= 1
    assert '"c1"' not in json.dumps(doc)  # the subject is only ever its hash (which may contain "c1" in hex)


def test_init_propose_validate_rotate_and_certificates_report_as_json(ew, tmp_path: Path) -> None:
    r = ew("init", "--admin", "admin", "--json")
    doc = r.json()
    assert doc["policy_version"] == 1 and doc["admins"] == ["admin"] and doc["audit_public_key"]
    master = Path(doc["master_key"]).read_bytes()  # a path to the key, never the key itself
    assert master.hex() not in r.out and base64.b64encode(master).decode() not in r.out
    assert ew("policy", "apply", str(_example(tmp_path, "policy.yaml")), "--as", "admin").rc == 0
    schema = _example(tmp_path, "order_placed.schema.json")
    proposed = ew("schema", "propose", "OrderPlaced", str(schema), "--as", "alice", "--json").json()
    assert proposed["version"] == 1 and proposed["report"]["compatible"] is True
    assert ew("schema", "approve", "OrderPlaced", "1", "--as", "bob").rc == 0
    lines = tmp_path / "events.jsonl"
    lines.write_text(json.dumps(ORDER["data"]) + "\n" + json.dumps({**ORDER["data"], "total": "ten"}) + "\n")
    r = ew("validate", "OrderPlaced", str(lines), "--as", "alice", "--json")
    assert r.rc == common.EXIT_PROBLEM
    report = json.loads(r.out)
    assert (report["valid"], report["invalid"]) == (1, 1) and report["problems"][0]["line"] == 2
    assert "ten" not in r.out  # paths and rules, never values
    rotated = ew("keys", "rotate", "--class", "pii", "--as", "admin", "--json").json()
    assert rotated["class"] == "pii" and rotated["new_kek"] != rotated["destroyed"]
    ref = ew("forget", "c1", "--reason", "gdpr-art17", "--as", "admin", "--json").json()["subject_hash"]
    cert = tmp_path / "cert.json"
    assert ew("audit", "certificate", "c1", "--out", str(cert)).rc == common.EXIT_NOT_FOUND
    assert ew("audit", "certificate", ref, "--hash", "--out", str(cert)).rc == 0  # the pseudonym finds it
    checked = ew("audit", "verify-certificate", str(cert), "--json").json()
    assert checked["ok"] is True and checked["log_size"] >= checked["checkpoint_size"]


def _example(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_text(EXAMPLES.joinpath(name).read_text())
    return path


def test_exit_codes_per_class_of_error(deployed, tmp_path: Path) -> None:
    ew = deployed
    cases = {
        common.EXIT_FORBIDDEN: ("audit", "tail", "--as", "nobody"),
        common.EXIT_NOT_FOUND: ("audit", "show", "9999"),
        common.EXIT_INVALID: ("policy", "explain", "admin", "publish", "Nope::x"),
        common.EXIT_CONFLICT: ("init",),
        common.EXIT_USAGE: ("policy", "diff", "1", "--no-such-option"),
    }
    for code, args in cases.items():
        r = ew(*args)
        assert r.rc == code, (args, r.rc, r.err)
        assert "Traceback" not in r.err and r.out == ""
        if code != common.EXIT_USAGE:
            assert r.err.startswith("error (") and r.err.count("\n") == 1, r.err
    # configuration: a home that is not there
    r = ew("schema", "list", "--as", "alice", home_dir=tmp_path / "nowhere")
    assert r.rc == common.EXIT_CONFIG and "no deployment home" in r.err
    # unavailable: a NATS home whose servers do not answer
    nats_home = tmp_path / "nats-home"
    nats_home.mkdir()
    (nats_home / "eventward.yaml").write_text(
        "transport: nats\nnats:\n  servers: [nats://127.0.0.1:9]\n  timeout_s: 0.2\n"
    )
    r = ew("nats", "streams", home_dir=nats_home)
    assert r.rc == common.EXIT_UNAVAILABLE, r.err
    # a check that finds a problem: an incompatible schema change
    bad = tmp_path / "bad.schema.json"
    doc = json.loads((tmp_path / "order.schema.json").read_text())
    doc["required"] = [*doc.get("required", []), "brand_new_field"]
    doc["properties"]["brand_new_field"] = {"type": "string", "maxLength": 5}
    bad.write_text(json.dumps(doc))
    r = ew("schema", "check", "OrderPlaced", str(bad), "--as", "alice", "--json")
    assert r.rc == common.EXIT_PROBLEM and json.loads(r.out)["compatible"] is False


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


def test_every_typed_error_class_has_a_specific_exit_code() -> None:
    classes = [c for c in _subclasses(errors.EventwardError) if c.__module__ == "eventward.errors"]
    assert len(classes) > 20
    for cls in classes:
        try:
            instance = cls("x")
        except TypeError:
            continue
        code = common.exit_code(instance)
        assert code not in (common.EXIT_OK, common.EXIT_PROBLEM, common.EXIT_USAGE, common.EXIT_ERROR), cls
    assert common.exit_code(errors.AccessDenied("x")) == 3
    assert common.exit_code(errors.KeyNotFound("x")) == 4  # a KeyServiceError, but "not found"
    assert common.exit_code(errors.ValidationError("x")) == 5
    assert common.exit_code(errors.KMSUnavailable("x")) == 6
    assert common.exit_code(errors.LegalHoldError("x")) == 7
    assert common.exit_code(errors.SealError("x")) == 8
    assert common.exit_code(errors.KeyFilePermissionError("x")) == 9
    assert common.exit_code(errors.EventwardError("x")) == 10


def _commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, group
    for name, sub in getattr(group, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_help_has_readable_metavars_everywhere_and_examples_on_main_commands(ew) -> None:
    root = typer.main.get_command(app)
    seen = 0
    for path, _ in _commands(root):
        r = ew(*path, "--help")
        assert r.rc == 0, (path, r.err)
        for bad in ("<bool>", "<str>", "<int>", "<float>", "<path>"):
            assert bad not in r.out, (path, bad)
        assert not re.search(r"\{[a-z_]+\}", r.out), path  # typer's {argument} usage names
        seen += 1
    assert seen > 40
    for main in (("consume",), ("produce",), ("init",), ("policy", "diff"), ("policy", "explain"),
                 ("trust", "register"), ("schema", "propose"), ("audit", "verify"), ("nats", "streams")):
        assert "Examples:" in ew(*main, "--help").out, main
    r = ew("consume", "--help")
    assert "TOPIC" in r.out and "--from-beginning " in r.out


def test_version_and_unwrapped_tables_in_the_real_command(deployed, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "EVENTWARD_HOME", "FORCE_COLOR")}
    cmd = [sys.executable, "-m", "eventward._internal.cli"]
    p = subprocess.run([*cmd, "--version"], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert p.returncode == 0 and p.stdout.startswith("eventward ")
    long_name = "a-principal-name-long-enough-to-wrap-any-eighty-column-table.svc"
    r = deployed("trust", "register", long_name, "--as", "admin")
    assert r.rc in (0, common.EXIT_FORBIDDEN), r.err  # the admin may rotate any producer's keys
    p = subprocess.run([*cmd, "--home", str(deployed.home), "trust", "list"], capture_output=True, text=True,
                       env=env, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    assert "\x1b[" not in p.stdout  # no colour when piped
    rows = [line for line in p.stdout.splitlines() if "orders-svc" in line]
    assert rows and all(len(line) > 80 or "orders-svc" in line for line in rows)
    if r.rc == 0:
        assert any(long_name in line for line in p.stdout.splitlines())  # whole on one line

