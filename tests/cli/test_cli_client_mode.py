"""The CLI as a real client: operator commands against ``eventward serve`` with the operator's own
certificate (``--profile``/``--connect``), never a home, never ``--as``.

One control plane (a real ``eventward serve`` process on 127.0.0.1, mTLS) serves the module; each
CLI call is its own process, as an operator's would be, so exit codes and stderr are the real ones.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from eventward._internal import demo, pki
from eventward._internal.cli import app, common
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home, write_secret
from gateway.conftest import AUDIENCE, ISSUER, SUBJECT_RULES, gateway_config, start_gateway
from gateway.gw_support import claims, make_pki, make_signers, write_jwks
from keys_net.conftest import free_port

OPERATOR, INTERN = demo.ADMIN, "intern"  # the intern's certificate is valid; the policy grants it nothing
OPERATORS = (OPERATOR, INTERN, demo.AUTHOR, demo.APPROVER, demo.SHIPPING)
SUBJECTS = [f"cust-cli-{i}" for i in range(8)]


@dataclass
class ControlPlane:
    home: Path
    url: str
    ca: Path
    certs: dict[str, tuple[Path, Path]]


def _orders(n: int) -> list[dict]:
    out = []
    for i in range(n):
        o = demo.order(i)
        o["customer"]["id"] = SUBJECTS[i % len(SUBJECTS)]
        out.append(o)
    return out


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    root = tmp_path_factory.mktemp("control-plane")
    home = Home(root / "home")
    dep = Deployment.init(home, admin=demo.ADMIN)
    try:
        demo.setup(dep, lambda *a: None)
        demo.schemas(dep, demo.DemoResult(), lambda *a: None)
        with dep.producer(demo.PRODUCER, demo.TOPIC) as p:  # every subject gets keys to destroy
            p.send_many(demo.EVENT_TYPE, _orders(len(SUBJECTS)))
            p.flush()
        reader = dep.consumer(demo.SHIPPING, demo.TOPIC, group="ship", from_beginning=True)  # a group for `lag`
        reader.run(lambda e: None, idle_timeout=0.3)
        reader.close()
    finally:
        dep.close()
    certs = {name: pki.ensure_client_cert(home.certs, name) for name in OPERATORS}
    proc = subprocess.Popen(
        [sys.executable, "-m", "eventward._internal.cli", "--home", str(home.root), "serve", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(root / "no-profiles"),
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        m = re.search(r"https://127\.0\.0\.1:(\d+)", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        yield ControlPlane(home.root, f"https://127.0.0.1:{m.group(1)}", pki.ca_paths(home.certs)[0], certs)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err, err[-2000:]


def _env(profile_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTWARD_")}
    env.update(EVENTWARD_PROFILE_DIR=str(profile_dir), COLUMNS="200", **extra)
    return env


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def cli(profile_dir: Path, *args: str, cwd: Path | None = None, **extra: str) -> Ran:
    """``eventward ARGS`` through the console script's entry point (typed errors to one line and
    their exit code), in this process: a fresh interpreter per call costs seconds."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("EVENTWARD_")}
    env.update(EVENTWARD_PROFILE_DIR=str(profile_dir), COLUMNS="200", **extra)
    old_argv, old_cwd, code = sys.argv, os.getcwd(), 0
    with CliRunner().isolation(env=env) as (out, err, _):
        sys.argv = ["eventward", *args]
        if cwd is not None:
            os.chdir(cwd)
        try:
            common.run(app)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        finally:
            sys.argv = old_argv
            os.chdir(old_cwd)
            common.STATE.remote = None
        sys.stdout.flush()
        sys.stderr.flush()
        return Ran(code, out.getvalue().decode(), err.getvalue().decode())


def cli_process(profile_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The same in its own process, as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "eventward._internal.cli", *args], capture_output=True, text=True,
                          timeout=60, env=_env(profile_dir))


def add_profile(profile_dir: Path, name: str, urls: list[str], ca: Path, cert: Path, key: Path, *pins: str) -> None:
    r = CliRunner().invoke(app, ["profile", "add", name, "--url", ",".join(urls), "--ca", str(ca),
                                 "--cert", str(cert), "--key", str(key), *pins],
                           env={"EVENTWARD_PROFILE_DIR": str(profile_dir)})
    assert r.exit_code == 0, r.output


@pytest.fixture(scope="module")
def pins(plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ...]:
    """``--anchor`` and ``--audit-key`` as an operator pins them: printed where the home is."""
    nowhere = tmp_path_factory.mktemp("no-profiles")
    anchor = cli(nowhere, "--home", str(plane.home), "trust", "anchor")
    vkey = cli(nowhere, "--home", str(plane.home), "audit", "public-key")
    assert anchor.returncode == 0 and vkey.returncode == 0, (anchor.stderr, vkey.stderr)
    return ("--anchor", anchor.stdout.strip(), "--audit-key", vkey.stdout.strip())


@pytest.fixture
def profiles(tmp_path: Path, plane: ControlPlane, pins: tuple[str, ...]) -> Path:
    d = tmp_path / "profiles"
    add_profile(d, "ops", [plane.url], plane.ca, *plane.certs[OPERATOR], *pins)
    for name in OPERATORS[1:]:
        add_profile(d, name, [plane.url], plane.ca, *plane.certs[name], *pins)
    return d


def _one_line_error(r: Ran | subprocess.CompletedProcess[str], code: str) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error ({code}):"), r.stderr
    return lines[0]


def _forget_json(profile_dir: Path, *root: str, subject: str) -> dict:
    r = cli(profile_dir, *root, "forget", subject, "--json")
    assert r.returncode == 0, r.stderr
    return orjson.loads(r.stdout)


def test_forget_in_client_mode_is_audited_as_the_operator(plane: ControlPlane, profiles: Path) -> None:
    who = cli(profiles, "--profile", "ops", "whoami", "--json")
    assert who.returncode == 0, who.stderr
    assert orjson.loads(who.stdout) == {"principal": OPERATOR, "method": "mtls"}
    cert = _forget_json(profiles, "--profile", "ops", subject=SUBJECTS[0])
    assert cert["keys_destroyed"] >= 1 and SUBJECTS[0] not in orjson.dumps(cert).decode()
    # the certificate is in the control plane's audit log, read back over the API ...
    got = cli(profiles, "--profile", "ops", "audit", "certificate", cert["certificate"], "--json")
    assert got.returncode == 0, got.stderr
    assert orjson.loads(got.stdout)["subject_hash"] == cert["subject_hash"]
    # ... and the record names the operator the certificate authenticated (read on the host)
    shown = cli(profiles, "--home", str(plane.home), "audit", "show", str(cert["audit_index"]), "--as", "admin")
    assert shown.returncode == 0, shown.stderr
    record = orjson.loads(shown.stdout)["record"]
    assert record["principal"] == OPERATOR and record["action"] == "erasure.certificate"


def test_operator_commands_over_the_api(plane: ControlPlane, profiles: Path) -> None:
    listed = cli(profiles, "--profile", "alice", "schema", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert demo.EVENT_TYPE in {s["type"] for s in orjson.loads(listed.stdout)["schemas"]}
    active = orjson.loads(cli(profiles, "--profile", "alice", "schema", "show", demo.EVENT_TYPE, "--json").stdout)
    doc = dict(active["schema"], description="v-next, proposed over the API")
    (profiles / "next.json").write_bytes(orjson.dumps(doc))
    proposed = cli(profiles, "--profile", "alice", "schema", "propose", demo.EVENT_TYPE, str(profiles / "next.json"),
                   "--json")
    assert proposed.returncode == 0, proposed.stderr
    version = orjson.loads(proposed.stdout)["version"]
    own = cli(profiles, "--profile", "alice", "schema", "approve", demo.EVENT_TYPE, str(version))
    assert own.returncode == 3, own.stderr  # two people: the proposer's certificate cannot approve
    approved = cli(profiles, "--profile", "bob", "schema", "approve", demo.EVENT_TYPE, str(version), "--json")
    assert approved.returncode == 0, approved.stderr
    now = orjson.loads(cli(profiles, "--profile", "alice", "schema", "show", demo.EVENT_TYPE, "--json").stdout)
    assert now["version"] == version and now["schema"]["description"] == doc["description"]
    held = cli(profiles, "--profile", "ops", "hold", SUBJECTS[1], "--reason", "case-2026-1")
    assert held.returncode == 0, held.stderr
    refused = cli(profiles, "--profile", "ops", "forget", SUBJECTS[1])
    assert refused.returncode == 7  # conflict: under legal hold
    _one_line_error(refused, "conflict")
    assert cli(profiles, "--profile", "ops", "release", SUBJECTS[1]).returncode == 0
    assert _forget_json(profiles, "--profile", "ops", subject=SUBJECTS[1])["keys_destroyed"] >= 1
    trust = cli(profiles, "--profile", "ops", "trust", "list", "--json")
    assert trust.returncode == 0, trust.stderr
    assert demo.PRODUCER in {k["principal"] for k in orjson.loads(trust.stdout)["keys"]}


def test_attack_operator_the_policy_does_not_allow_is_refused(plane: ControlPlane, profiles: Path) -> None:
    r = cli(profiles, "--profile", "intern", "forget", SUBJECTS[2])
    assert r.returncode == 3, r.stderr
    _one_line_error(r, "forbidden")
    # nothing was erased: the operator who may forget still finds the subject's keys
    assert _forget_json(profiles, "--profile", "ops", subject=SUBJECTS[2])["keys_destroyed"] >= 1


def test_attack_as_flag_in_client_mode(plane: ControlPlane, profiles: Path, tmp_path: Path) -> None:
    for args, extra in (
        (["--profile", "ops", "forget", SUBJECTS[3], "--as", "admin"], {}),
        (["--profile", "ops", "forget", SUBJECTS[3], "--as=admin"], {}),
        (["--profile", "intern", "forget", "--as", "admin", SUBJECTS[3]], {}),  # the intern claiming admin
        (["--profile", "ops", "forget", SUBJECTS[3]], {"EVENTWARD_PRINCIPAL": "admin"}),
    ):
        r = cli(profiles, *args, cwd=tmp_path, **extra)
        assert r.returncode == 5, (args, r.stderr)
        line = _one_line_error(r, "not_in_client_mode")
        assert "--as does not exist in client mode: the principal is your certificate's identity" in line
    home_too = cli(profiles, "--profile", "ops", "--home", str(plane.home), "forget", SUBJECTS[3], cwd=tmp_path)
    assert home_too.returncode == 5 and "--home" in _one_line_error(home_too, "not_in_client_mode")
    assert not (tmp_path / ".eventward").exists()  # no home was opened or made
    # nothing was erased by any refused attempt
    assert _forget_json(profiles, "--profile", "ops", subject=SUBJECTS[3])["keys_destroyed"] >= 1


def test_home_only_commands_and_options_say_so(plane: ControlPlane, profiles: Path, tmp_path: Path) -> None:
    for args, named in ((["keys", "rotate", "--class", "pii"], "'keys rotate'"), (["init"], "'init'"),
                        (["audit", "verify", "--db", "x.db"], "--db of 'audit verify'"), (["monitor"], "'monitor'"),
                        (["trust", "list", "--principal", "orders-svc"], "--principal of 'trust list'"),
                        (["nats", "up"], "'nats'")):
        r = cli(profiles, "--profile", "ops", *args, cwd=tmp_path)
        assert r.returncode == 5, (args, r.stderr)
        assert named in _one_line_error(r, "not_in_client_mode")
    assert not (tmp_path / ".eventward").exists()


def test_failover_first_url_dead(plane: ControlPlane, tmp_path: Path) -> None:
    d = tmp_path / "profiles"
    dead = f"https://127.0.0.1:{free_port()}"
    add_profile(d, "ops", [dead, plane.url], plane.ca, *plane.certs[OPERATOR])
    # the profile in use selects client mode without any flag
    assert CliRunner().invoke(app, ["profile", "use", "ops"], env={"EVENTWARD_PROFILE_DIR": str(d)}).exit_code == 0
    assert _forget_json(d, subject=SUBJECTS[4])["keys_destroyed"] >= 1
    # --connect overrides the profile's URLs, the same way
    r = cli(d, "--connect", f"{dead},{plane.url}", "schema", "list", "--json")
    assert r.returncode == 0, r.stderr


def test_control_plane_down_is_a_clear_typed_error(plane: ControlPlane, profiles: Path) -> None:
    dead = [f"https://127.0.0.1:{free_port()}" for _ in range(2)]
    r = cli_process(profiles, "--profile", "ops", "--connect", ",".join(dead), "forget", SUBJECTS[5])
    assert r.returncode == 6, r.stderr
    assert "no control-plane replica answered" in _one_line_error(r, "control_plane_unavailable")
    assert r.stdout == ""
    # nothing changed: the subject's keys are still there to destroy
    assert _forget_json(profiles, "--profile", "ops", subject=SUBJECTS[5])["keys_destroyed"] >= 1


def test_attack_profile_world_readable(plane: ControlPlane, tmp_path: Path) -> None:
    d = tmp_path / "profiles"
    add_profile(d, "ops", [plane.url], plane.ca, *plane.certs[OPERATOR])
    path = d / "profiles.toml"
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o644)
    r = cli(d, "--profile", "ops", "whoami")
    assert r.returncode == 9 and "chmod 600" in _one_line_error(r, "key_file_permissions")
    path.chmod(0o600)
    # a key others can read is refused before anything is sent, by `profile add` and at use
    loose = tmp_path / "loose.key"
    shutil.copyfile(plane.certs[OPERATOR][1], loose)
    loose.chmod(0o644)
    added = CliRunner().invoke(app, ["profile", "add", "loose", "--url", plane.url, "--ca", str(plane.ca),
                                     "--cert", str(plane.certs[OPERATOR][0]), "--key", str(loose)],
                               env={"EVENTWARD_PROFILE_DIR": str(d)})
    assert added.exit_code != 0
    loose.chmod(0o600)
    add_profile(d, "loose", [plane.url], plane.ca, plane.certs[OPERATOR][0], loose)
    loose.chmod(0o644)
    r = cli(d, "--profile", "loose", "whoami")
    assert r.returncode == 9 and "loose.key" in _one_line_error(r, "key_file_permissions")
    # secrets are never inline: a profile holding key material is refused
    path.write_text(path.read_text().replace(f'key = "{loose}"', 'key = "-----BEGIN PRIVATE KEY-----"'))
    r = cli(d, "--profile", "loose", "whoami")
    assert r.returncode == 9 and "never the key" in _one_line_error(r, "config")


def test_profile_list_show_use(plane: ControlPlane, profiles: Path) -> None:
    env = {"EVENTWARD_PROFILE_DIR": str(profiles)}
    listed = CliRunner().invoke(app, ["profile", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    doc = orjson.loads(listed.stdout)
    assert doc["current"] == "ops" and [p["name"] for p in doc["profiles"]] == ["ops", *OPERATORS[1:]]
    assert doc["profiles"][0]["urls"] == [plane.url] and doc["profiles"][0]["auth"] == "mtls"
    assert CliRunner().invoke(app, ["profile", "use", "intern"], env=env).exit_code == 0
    shown = CliRunner().invoke(app, ["profile", "show", "--json"], env=env)
    assert orjson.loads(shown.stdout)["name"] == "intern" and orjson.loads(shown.stdout)["problems"] == []
    assert CliRunner().invoke(app, ["profile", "use", "--none"], env=env).exit_code == 0
    assert orjson.loads(CliRunner().invoke(app, ["profile", "list", "--json"], env=env).stdout)["current"] is None
    bad = CliRunner().invoke(app, ["profile", "add", "x", "--url", "http://127.0.0.1:1", "--ca", str(plane.ca),
                                   "--cert", str(plane.certs[OPERATOR][0]), "--key", str(plane.certs[OPERATOR][1])],
                             env=env)
    assert bad.exit_code != 0  # plain http is refused: credentials only travel over TLS


def test_audit_keys_dlq_and_service_approval_over_the_api(plane: ControlPlane, profiles: Path, tmp_path: Path) -> None:
    from eventward._internal.control.identity import ServiceIdentity

    tail = cli(profiles, "--profile", "ops", "audit", "tail", "-n", "5", "--json")
    assert tail.returncode == 0, tail.stderr
    assert len(orjson.loads(tail.stdout)["records"]) == 5
    status = cli(profiles, "--profile", "ops", "keys", "status", "--json")
    assert status.returncode == 0, status.stderr
    assert "pii" in {c["class"] for c in orjson.loads(status.stdout)["classes"]}
    assert cli(profiles, "--profile", "intern", "keys", "status").returncode == 3  # audit metadata: read_audit
    alerts = cli(profiles, "--profile", "ops", "alerts", "--json")
    assert alerts.returncode == 0 and isinstance(orjson.loads(alerts.stdout)["alerts"], list), alerts.stderr
    lag = cli(profiles, "--profile", "ops", "lag", "--json")
    assert lag.returncode == 0, lag.stderr
    groups = orjson.loads(lag.stdout)["groups"]
    assert any("ship" in g["group"] and g["stream"] == demo.TOPIC and g["lag"] == 0 for g in groups), groups
    assert cli(profiles, "--profile", "intern", "lag").returncode == 3
    dlq = cli(profiles, "--profile", "ops", "dlq", "list", demo.TOPIC, "--json")
    assert dlq.returncode == 3, dlq.stderr  # the admin may not subscribe to orders, so not read its dead letters
    dlq = cli(profiles, "--profile", demo.SHIPPING, "dlq", "list", demo.TOPIC, "--json")
    assert dlq.returncode == 0, dlq.stderr
    assert orjson.loads(dlq.stdout) == {"topic": demo.TOPIC, "entries": [], "more": False}
    ident = ServiceIdentity.create(tmp_path / "billing", "billing-svc")
    grant = tmp_path / "grant.json"
    refused = cli(profiles, "--profile", "intern", "service", "approve", str(ident.request_path), "--out", str(grant))
    assert refused.returncode == 3 and not grant.exists()
    _one_line_error(refused, "forbidden")
    trusted = cli(profiles, "--profile", "ops", "trust", "list", "--json")
    assert "billing-svc" not in {k["principal"] for k in orjson.loads(trusted.stdout)["keys"]}  # nothing trusted
    approved = cli(profiles, "--profile", "ops", "service", "approve", str(ident.request_path),
                   "--control-url", plane.url, "--out", str(grant))
    assert approved.returncode == 0, approved.stderr
    assert ident.install(grant.read_bytes())["principal"] == "billing-svc"
    trusted = cli(profiles, "--profile", "ops", "trust", "list", "--json")
    assert "billing-svc" in {k["principal"] for k in orjson.loads(trusted.stdout)["keys"]}


def test_connect_with_a_jwt_file_authenticates_as_the_token_subject(tmp_path: Path) -> None:
    """``--connect`` with EVENTWARD_CA and EVENTWARD_TOKEN_FILE: the bearer token is the identity."""
    gw_pki, signers = make_pki(tmp_path / "pki"), make_signers()
    jwks = write_jwks(tmp_path / "jwks.json", list(signers.values()))
    cfg = gateway_config(gw_pki, auth="jwt", jwt={"jwks_file": str(jwks), "issuer": ISSUER, "audience": AUDIENCE,
                                                    "subject_rules": SUBJECT_RULES})
    run = start_gateway(cfg, tmp_path / "home")
    try:
        token_file = tmp_path / "ops.jwt"
        write_secret(token_file, signers["ec"].sign(claims(ISSUER, AUDIENCE, sub="orders")).encode() + b"\n")
        creds = {"EVENTWARD_CA": str(gw_pki.ca_file), "EVENTWARD_TOKEN_FILE": str(token_file)}
        url = f"https://127.0.0.1:{run.port}"
        r = cli(tmp_path / "profiles", "--connect", url, "whoami", "--json", **creds)
        assert r.returncode == 0, r.stderr
        assert orjson.loads(r.stdout) == {"principal": "orders", "method": "jwt"}
        r = cli(tmp_path / "profiles", "--connect", url, "whoami", "--as", "admin", **creds)
        assert r.returncode == 5 and "--as does not exist" in _one_line_error(r, "not_in_client_mode")
        token_file.chmod(0o644)
        r = cli(tmp_path / "profiles", "--connect", url, "whoami", **creds)
        assert r.returncode == 9 and "ops.jwt" in _one_line_error(r, "key_file_permissions")
    finally:
        run.gw.stop()


def test_forget_with_a_reason_code_and_now_over_the_api(plane: ControlPlane, profiles: Path) -> None:
    r = cli(profiles, "--profile", "ops", "forget", SUBJECTS[6], "--reason", "gdpr-art17", "--now", "--json")
    assert r.returncode == 0, r.stderr
    cert = orjson.loads(r.stdout)
    assert cert["keys_destroyed"] >= 1
    shown = cli(profiles, "--home", str(plane.home), "audit", "show", str(cert["audit_index"]), "--as", "admin")
    assert '"gdpr-art17"' in shown.stdout, shown.stderr
    status = orjson.loads(cli(profiles, "--profile", "ops", "keys", "status", "--json").stdout)
    pii = next(c for c in status["classes"] if c["class"] == "pii")
    assert pii["destroyed_keks"], "--now must end the pii KEK epoch that wrapped the subject's keys"


def test_tables_for_people_from_every_client_command(plane: ControlPlane, profiles: Path) -> None:
    """Without --json each command prints its table or line (no traceback, no stray markup)."""
    for who, args, expect in (
        ("ops", ["whoami"], "admin (mtls)"),
        ("alice", ["schema", "list"], demo.EVENT_TYPE),
        ("alice", ["schema", "show", demo.EVENT_TYPE], '"properties"'),
        ("ops", ["audit", "tail", "-n", "3"], "principal"),
        ("ops", ["audit", "checkpoint"], "tree size"),
        ("ops", ["keys", "status"], "legal holds"),
        ("ops", ["alerts"], "rule"),
        ("ops", ["lag"], "ship"),
        ("ops", ["trust", "list"], demo.PRODUCER),
        (demo.SHIPPING, ["dlq", "list", demo.TOPIC], "orders.dlq"),
        ("ops", ["policy", "explain", demo.ANALYTICS, "decrypt", "Class::pii"], "analytics-svc"),
        ("ops", ["forget", SUBJECTS[7]], "erasure certificate"),
    ):
        r = cli(profiles, "--profile", who, *args)
        assert r.returncode == 0, (args, r.stderr)
        assert expect in r.stdout, (args, r.stdout)
