"""The ``eventward schema`` commands and ``eventward validate`` on a real home directory."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest
from typer.testing import CliRunner

from eventward.cli import app, common
from eventward.errors import AccessDenied, NotFoundError, SchemaSecurityError

from .conftest import SENTINEL, TYPE, mutate, order_event, order_schema

runner = CliRunner()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setattr(common.console, "width", 200)  # tables unwrapped, for matching
    return tmp_path / "home"


def run(home, *args: str):
    return runner.invoke(app, ["--home", str(home), *args], catch_exceptions=True)


def write(path, doc) -> str:
    path.write_bytes(orjson.dumps(doc))
    return str(path)


def test_propose_approve_list_show(home, tmp_path):
    f1 = write(tmp_path / "v1.json", order_schema())
    r = run(home, "schema", "propose", TYPE, f1, "--as", "alice")
    assert r.exit_code == 0 and "proposed" in r.output and "v1" in r.output
    r = run(home, "schema", "approve", TYPE, "1", "--as", "alice")
    assert isinstance(r.exception, AccessDenied)  # the CLI keeps the two-person rule
    r = run(home, "schema", "approve", TYPE, "1", "--as", "bob")
    assert r.exit_code == 0 and "is active" in r.output
    r = run(home, "schema", "list")
    assert TYPE in r.output and "v1" in r.output and "BACKWARD" in r.output
    r = run(home, "schema", "show", TYPE)
    assert "customer.email" in r.output and "customer.id" in r.output and "(active)" in r.output


def test_check_shows_findings_and_security_flow(home, tmp_path):
    run(home, "schema", "propose", TYPE, write(tmp_path / "v1.json", order_schema()), "--as", "alice")
    run(home, "schema", "approve", TYPE, "1", "--as", "bob")
    weaker = write(tmp_path / "v2.json", mutate(order_schema(), "customer.email", x_eventward=None))
    r = run(home, "schema", "check", TYPE, weaker)
    assert r.exit_code == 0 and "tag_removed" in r.output and "$.customer.email" in r.output
    broken = write(tmp_path / "v3.json", mutate(order_schema(), "customer.name", maxLength=3))
    r = run(home, "schema", "check", TYPE, broken)
    assert r.exit_code == 1 and "max_length_lowered" in r.output
    r = run(home, "schema", "propose", TYPE, weaker, "--as", "alice")
    assert "security" in r.output
    r = run(home, "schema", "approve", TYPE, "2", "--as", "bob")
    assert "still proposed" in r.output
    r = run(home, "schema", "approve", TYPE, "2", "--security", "--as", "carol")
    assert r.exit_code == 0 and "is active" in r.output
    r = run(home, "schema", "mode", TYPE, "full", "--as", "bob")
    assert "FULL" in r.output


def test_reads_never_create_a_registry(home):
    r = run(home, "schema", "list")
    assert isinstance(r.exception, NotFoundError)
    assert not (home / "registry.db").exists()


def test_unsafe_schema_refused(home, tmp_path):
    doc = {"type": "object", "properties": {"a": {"type": "string", "pattern": "(a+)+$"}}}
    r = run(home, "schema", "propose", TYPE, write(tmp_path / "bad.json", doc), "--as", "alice")
    assert isinstance(r.exception, SchemaSecurityError)


def test_validate_lines(home, tmp_path):
    run(home, "schema", "propose", TYPE, write(tmp_path / "v1.json", order_schema()), "--as", "alice")
    run(home, "schema", "approve", TYPE, "1", "--as", "bob")
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
    r = run(home, "validate", TYPE, str(events))
    assert r.exit_code == 1
    out = r.output
    assert "line 1: OK" in out and "line 4: OK" in out
    assert "line 2: $.customer.name: maxLength" in out
    assert "line 3: not JSON" in out and "line 5: envelope: type differs" in out
    assert "2 valid, 3 invalid" in out
    assert SENTINEL not in out
    events.write_bytes(orjson.dumps(good) + b"\n")
    assert run(home, "validate", TYPE, str(events)).exit_code == 0


def test_typed_error_is_one_line_without_traceback(home, tmp_path):
    f1 = write(tmp_path / "v1.json", order_schema())
    base = [sys.executable, "-c", "from eventward.cli import main; main()", "--home", str(home), "schema"]
    subprocess.run([*base, "propose", TYPE, f1, "--as", "alice"], check=True, capture_output=True, timeout=60)
    out = subprocess.run(
        [*base, "approve", TYPE, "1", "--as", "alice"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert "error (forbidden)" in out.stderr and "Traceback" not in out.stderr
