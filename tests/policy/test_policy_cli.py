"""``eventward policy`` end to end on a real home: init, apply (authorized), explain, compile,
versions, show, rollback; bad input is one typed error line, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from eventward._internal.cli import app
from eventward._internal.deployment import BOOTSTRAP_POLICY, Deployment
from eventward._internal.home import Home
from eventward.errors import AccessDenied, ConflictError, InputError, PolicyError

from .support import ABAC, POLICY


@pytest.fixture
def cli(tmp_path):
    runner = CliRunner()
    home = tmp_path / "home"

    def invoke(*args, ok=True):
        result = runner.invoke(app, ["--home", str(home), "policy", *args])
        if ok:
            assert result.exit_code == 0, (result.output, result.exception)
        return result

    invoke.home = home
    invoke.dir = tmp_path
    return invoke


@pytest.fixture
def applied(cli):
    cli("init", "--admin", "alice")
    work = cli.dir / "work"
    work.mkdir()
    (work / "policy.yaml").write_text(POLICY)
    (work / "abac.cedar").write_text(ABAC)
    out = cli("apply", str(work / "policy.yaml"), "--as", "alice").output
    assert "policy version 2 active (1 Cedar file(s))" in out
    return work


def test_init_writes_default_deny_policy(cli):
    out = cli("init").output
    assert "policy version 1 active" in out
    assert (cli.home / "policy" / "policy.yaml").read_text().count("manage_policy") == 1
    out = cli("explain", "admin", "manage_policy", "Policy::active").output
    assert "ALLOW admin ManagePolicy Policy::active" in out
    out = cli("explain", "admin", "publish", "Topic::orders", "--event-type", "X").output
    assert "DENY admin Publish Topic::orders" in out
    second = cli("init", ok=False)
    assert second.exit_code != 0


def test_policy_init_bootstraps_exactly_what_eventward_init_does(cli):
    cli("init", "--admin", "root")
    assert BOOTSTRAP_POLICY.format(admin="root") in (cli.home / "policy" / "policy.yaml").read_text()
    for action, resource in (
        ("forget", "Subject::ab12"),
        ("rotate_keys", "Class::pii"),
        ("read_audit", "Audit::log"),
    ):
        assert "ALLOW root" in cli("explain", "root", action, resource).output
    assert "DENY" in cli("explain", "root", "decrypt", "Class::pii").output


def test_a_deployment_home_takes_policy_changes_from_its_admin_only(cli):
    Deployment.init(Home(cli.home)).close()
    assert isinstance(cli("init", ok=False).exception, ConflictError)  # the home already has a policy
    (cli.dir / "p.yaml").write_text(POLICY)
    assert isinstance(
        cli("apply", str(cli.dir / "p.yaml"), "--as", "alice", ok=False).exception, AccessDenied
    )
    assert "policy version 2 active" in cli("apply", str(cli.dir / "p.yaml"), "--as", "admin").output
    assert isinstance(
        cli("apply", str(cli.dir / "p.yaml"), "--as", "admin", ok=False).exception, AccessDenied
    )


def test_explain_names_deciding_policy_and_missing_grant(cli, applied):
    out = cli("explain", "shipping-svc", "Subscribe", "Topic::orders").output
    assert "ALLOW shipping-svc Subscribe Topic::orders" in out and "decided by: role:shipping:0" in out
    out = cli("explain", "analytics-svc", "subscribe", "topic::payments").output
    assert "DENY" in out and "decided by: role:analytics:1" in out
    out = cli("explain", "shipping-svc", "SUBSCRIBE", "Topic::payments").output
    assert "missing grant: a role of shipping-svc with {allow: subscribe, topic: payments}" in " ".join(
        out.split()
    )
    out = cli(
        "explain", "orders-svc", "decrypt", "Class::payment", "--context", '{"zone": "internal"}'
    ).output
    assert "ALLOW" in out and "internal-decrypt" in out


def test_apply_without_manage_policy_is_refused(cli, applied):
    r = cli("apply", str(applied / "policy.yaml"), "--as", "auditor", ok=False)
    assert isinstance(r.exception, AccessDenied)
    (applied / "policy.yaml").write_text(POLICY.replace("roles: [shipping]", "roles: [nope]"))
    r = cli("apply", str(applied / "policy.yaml"), "--as", "alice", ok=False)
    assert isinstance(r.exception, PolicyError)
    out = cli("versions").output
    assert out.count("alice") == 1 and "bootstrap" in out


def test_compile_targets(cli, applied):
    out_file = cli.dir / "nats.conf"
    cli("compile", "--target", "nats", "--out", str(out_file))
    text = out_file.read_text()
    assert "authorization {" in text and '"user": "shipping-svc"' in text
    out = cli("compile", "--target", "kafka").output
    assert "kafka-acls.sh" in out and "--resource-pattern-type prefixed" in out
    r = cli("compile", "--target", "rabbitmq", ok=False)
    assert isinstance(r.exception, InputError)


def test_show_versions_rollback(cli, applied):
    out = cli("show").output
    assert "version 2" in out and "order-writer" in out and "abac.cedar" in out
    assert '@id("role:shipping:0")' in cli("show", "--compiled").output
    assert "manage_policy" in cli("show", "--version", "1").output
    out = cli("rollback", "1", "--as", "alice").output
    assert "policy version 3 active (copy of version 1)" in out


@pytest.mark.parametrize(
    ("args", "exc"),
    [
        (["explain", "a", "fly", "Topic::x"], PolicyError),
        (["explain", "a", "publish", "orders"], InputError),
        (["explain", "a", "publish", "Galaxy::x"], InputError),
        (["explain", "a", "publish", "Topic::x", "--context", "{not json"], InputError),
        (["explain", "a", "publish", "Topic::x", "--context", "[1]"], InputError),
    ],
)
def test_bad_cli_input_is_typed(cli, applied, args, exc):
    r = cli(*args, ok=False)
    assert isinstance(r.exception, exc)


def test_errors_print_one_line_not_a_traceback(cli):
    cli("init")
    cmd = [sys.executable, "-c", "from eventward._internal.cli import main; main()", "--home", str(cli.home), "policy"]
    r = subprocess.run(
        [*cmd, "explain", "admin", "publish", "Nope::x"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 5  # invalid input (docs/cli.md)
    assert "Traceback" not in r.stderr and r.stderr.strip().startswith("error (bad_input)")


def test_init_from_file_keeps_cedar_next_to_it(cli):
    work = cli.dir / "seed"
    work.mkdir()
    (work / "policy.yaml").write_text(POLICY)
    (work / "abac.cedar").write_text(ABAC)
    cli("init", str(work / "policy.yaml"))
    pdir = cli.home / "policy"
    assert (pdir / "policy.yaml").read_text() == POLICY and (pdir / "abac.cedar").read_text() == ABAC
    # the working copy in the policy dir re-applies as is (Cedar files included)
    assert "(1 Cedar file(s))" in cli("apply", str(pdir / "policy.yaml"), "--as", "alice").output
    assert "batch-window" in cli("show", "--compiled").output
