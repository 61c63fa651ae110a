"""``eventward schema`` and ``eventward validate`` on a deployment home, under its Cedar policy."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest
from typer.testing import CliRunner

from eventward._internal.cli import app, common
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward.errors import AccessDenied, ConfigError, SchemaSecurityError

from .conftest import SENTINEL, TYPE, mutate, order_event, order_schema

runner = CliRunner()

POLICY = """\
principals:
  admin: {type: user, roles: [ops]}
  alice: {type: user, roles: [author, approver]}
  carol: {type: user, roles: [author]}
  bob: {type: user, roles: [approver]}
  sec: {type: user, roles: [approver, security]}
  dev: {type: user, roles: [reader]}
  mallory: {type: user, roles: []}
roles:
  ops: [{allow: manage_policy}, {allow: read_audit}]
  author: [{allow: [propose_schema, read_schema], schema: "*"}]
  approver: [{allow: [approve_schema, read_schema], schema: "*"}]
  security: [{allow: approve_security, schema: "*"}]
  reader: [{allow: read_schema, schema: "com.example.", match: prefixed}]
"""


@pytest.fixture
def home(tmp_path, monkeypatch) -> Home:
    monkeypatch.setattr(common.console, "width", 200)  # tables unwrapped, for matching
    monkeypatch.delenv("EVENTWARD_PRINCIPAL", raising=False)
    h = Home(tmp_path / "home")
    Deployment.init(h, policy_yaml=POLICY).close()
    return h


def run(home: Home, *args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, ["--home", str(home.root), *args], env=env, catch_exceptions=True)


def write(path, doc) -> str:
    path.write_bytes(orjson.dumps(doc))
    return str(path)


def activate_v1(home: Home, tmp_path) -> None:
    f1 = write(tmp_path / "v1.json", order_schema())
    assert run(home, "schema", "propose", TYPE, f1, "--as", "alice").exit_code == 0
    assert run(home, "schema", "approve", TYPE, "1", "--as", "bob").exit_code == 0


def schema_records(home: Home) -> list[tuple[str, str, str]]:
    with Deployment.open(home) as dep:
        records = dep.audit.tail(200)
    return [(r.action, r.principal, r.outcome) for r in records if r.action.startswith("schema.")]


def test_two_person_change_control_under_the_policy(home, tmp_path):
    f1 = write(tmp_path / "v1.json", order_schema())
    r = run(home, "schema", "propose", TYPE, f1, "--as", "mallory")
    assert isinstance(r.exception, AccessDenied)
    r = run(home, "schema", "propose", TYPE, f1)
    assert r.exit_code == 2 and "--as" in r.output  # no default principal for a change
    r = run(home, "schema", "propose", TYPE, f1, env={"EVENTWARD_PRINCIPAL": "alice"})
    assert r.exit_code == 0 and "proposed" in r.output and "v1" in r.output
    r = run(home, "schema", "approve", TYPE, "1", "--as", "alice")
    assert isinstance(r.exception, AccessDenied)  # may approve, but never her own proposal
    r = run(home, "schema", "approve", TYPE, "1", "--as", "dev")
    assert isinstance(r.exception, AccessDenied)  # a reader may not approve
    r = run(home, "schema", "list", "--as", "bob")
    assert TYPE in r.output and "-" in r.output and "v1" in r.output  # still only pending
    r = run(home, "schema", "approve", TYPE, "1", "--as", "bob")
    assert r.exit_code == 0 and "is active" in r.output
    assert schema_records(home) == [
        ("schema.propose", "mallory", "denied"),
        ("schema.propose", "alice", "ok"),
        ("schema.approve", "alice", "denied"),
        ("schema.approve", "dev", "denied"),
        ("schema.approve", "bob", "ok"),
        ("schema.activate", "bob", "ok"),
    ]


def test_reads_need_read_schema(home, tmp_path):
    activate_v1(home, tmp_path)
    r = run(home, "schema", "list", "--as", "dev")
    assert r.exit_code == 0 and TYPE in r.output and "BACKWARD" in r.output
    r = run(home, "schema", "list", "--as", "mallory")
    assert r.exit_code == 0 and TYPE not in r.output  # what she may not read is not listed
    r = run(home, "schema", "show", TYPE, "--as", "dev")
    assert "customer.email" in r.output and "customer.id" in r.output and "(active)" in r.output
    for args in (("show", TYPE), ("check", TYPE, write(tmp_path / "c.json", order_schema()))):
        r = run(home, "schema", *args, "--as", "mallory")
        assert isinstance(r.exception, AccessDenied)
        assert "customer" not in r.output


def test_check_shows_findings_and_security_flow(home, tmp_path):
    activate_v1(home, tmp_path)
    weaker = write(tmp_path / "v2.json", mutate(order_schema(), "customer.email", x_eventward=None))
    r = run(home, "schema", "check", TYPE, weaker, "--as", "dev")
    assert r.exit_code == 0 and "tag_removed" in r.output and "$.customer.email" in r.output
    broken = write(tmp_path / "v3.json", mutate(order_schema(), "customer.name", maxLength=3))
    r = run(home, "schema", "check", TYPE, broken, "--as", "dev")
    assert r.exit_code == 1 and "max_length_lowered" in r.output
    r = run(home, "schema", "propose", TYPE, weaker, "--as", "carol")
    assert "security" in r.output
    r = run(home, "schema", "approve", TYPE, "2", "--as", "bob")
    assert "still proposed" in r.output
    r = run(home, "schema", "approve", TYPE, "2", "--security", "--as", "bob")
    assert isinstance(r.exception, AccessDenied)  # no approve_security grant
    with Deployment.open(home) as dep:
        assert dep.registry.active(TYPE).version == 1  # the weakened schema is still held
    r = run(home, "schema", "approve", TYPE, "2", "--security", "--as", "sec")
    assert r.exit_code == 0 and "is active" in r.output
    assert isinstance(run(home, "schema", "mode", TYPE, "full", "--as", "dev").exception, AccessDenied)
    r = run(home, "schema", "mode", TYPE, "full", "--as", "bob")
    assert "FULL" in r.output


def test_no_deployment_home_is_a_clear_error_and_creates_nothing(tmp_path):
    nowhere = Home(tmp_path / "nowhere")
    r = run(nowhere, "schema", "list", "--as", "dev")
    assert isinstance(r.exception, ConfigError) and "eventward init" in r.exception.message
    assert not nowhere.root.exists()


def test_unsafe_schema_refused(home, tmp_path):
    doc = {"type": "object", "properties": {"a": {"type": "string", "pattern": "(a+)+$"}}}
    r = run(home, "schema", "propose", TYPE, write(tmp_path / "bad.json", doc), "--as", "alice")
    assert isinstance(r.exception, SchemaSecurityError)
    with Deployment.open(home) as dep:
        assert dep.registry.list() == []


def test_validate_lines(home, tmp_path):
    activate_v1(home, tmp_path)
    good = order_event()
    bad = order_event()
    bad["customer"]["name"] = SENTINEL * 10
    env = {"specversion": "1.0", "id": "e1", "source": "/shop", "type": TYPE, "data": good}
    wrong_type = {**env, "type": "other.Type"}
    lines = [
        orjson.dumps(good),
        orjson.dumps(bad),
        b"{not json",
        orjson.dumps(env),
        orjson.dumps(wrong_type),
        b"",
    ]
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    assert isinstance(run(home, "validate", TYPE, str(events), "--as", "mallory").exception, AccessDenied)
    r = run(home, "validate", TYPE, str(events), "--as", "dev")
    assert r.exit_code == 1
    out = r.output
    assert "line 1: OK" in out and "line 4: OK" in out
    assert "line 2: $.customer.name: maxLength" in out
    assert "line 3: not JSON" in out and "line 5: envelope: type differs" in out
    assert "2 valid, 3 invalid" in out
    assert SENTINEL not in out
    events.write_bytes(orjson.dumps(good) + b"\n")
    assert run(home, "validate", TYPE, str(events), "--as", "dev").exit_code == 0


def test_typed_error_is_one_line_without_traceback(home, tmp_path):
    f1 = write(tmp_path / "v1.json", order_schema())
    base = [
        sys.executable,
        "-c",
        "from eventward._internal.cli import main; main()",
        "--home",
        str(home.root),
        "schema",
    ]
    subprocess.run([*base, "propose", TYPE, f1, "--as", "alice"], check=True, capture_output=True, timeout=60)
    out = subprocess.run(
        [*base, "approve", TYPE, "1", "--as", "alice"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 3  # forbidden (docs/cli.md)
    assert out.stderr.startswith("error (forbidden)") and out.stderr.count("\n") == 1
    assert "Traceback" not in out.stderr
