"""``eventward harden check`` and ``eventward threats`` end to end: exit codes for CI, --json,
SARIF 2.1.0, the configs ``eventward nats up`` writes (zero findings, accepted by
``nats-server -t``), and a live server read through its monitoring port."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from eventward._internal import pki
from eventward._internal.cli import app, common
from eventward._internal.cli import nats as nats_cli
from eventward._internal.log import natsserver
from eventward._internal.policy.compile_nats import compile_nats
from eventward._internal.policy.spec import parse
from eventward.errors import ConfigError, NotFoundError
from support_wait import wait_until

from .corpus import KAFKA_KRAFT, NATS_GOOD, kafka_bad

POLICY = """
principals:
  orders-svc: {type: service, roles: [writer]}
  billing: {type: service, roles: [reader]}
roles:
  writer: [{allow: publish, topic: orders}]
  reader: [{allow: subscribe, topic: orders}]
"""


def run(home: Path, *args: str) -> Any:
    return CliRunner().invoke(app, ["--home", str(home), *args], env={"COLUMNS": "300"})


def free_ports(n: int) -> int:
    """p with p..p+n-1 and p+2000.. free on 127.0.0.1."""
    for _ in range(200):
        base = random.randrange(20000, 40000)
        socks = []
        try:
            for p in [*range(base, base + n), *range(base + 2000, base + 2000 + n)]:
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise AssertionError("no free ports")


def nats_t(conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(natsserver.binary()), "-t", "-c", str(conf)], capture_output=True, text=True,
                          timeout=30, check=False, cwd=conf.parent)  # relative cert paths, as in the corpus


def test_exit_codes_json_and_sarif(tmp_path: Path) -> None:
    good = tmp_path / "good.properties"
    good.write_text(KAFKA_KRAFT)
    r = run(tmp_path / "h", "harden", "check", "--kafka", str(good))
    assert r.exit_code == 0 and "no findings" in r.output
    bad = tmp_path / "bad.properties"
    bad.write_text(kafka_bad("KAFKA-005")[0] + "auto.create.topics.enable=true\n")
    r = run(tmp_path / "h", "harden", "check", "--kafka", str(bad), "--json", "--sarif", str(tmp_path / "o.sarif"))
    assert r.exit_code == common.EXIT_PROBLEM
    doc = orjson.loads(r.stdout)
    assert [f["id"] for f in doc["findings"]] == ["KAFKA-005", "KAFKA-006"]  # most severe first
    first = doc["findings"][0]
    assert first["severity"] == "critical" and first["text"] == "allow.everyone.if.no.acl.found=true"
    assert set(first) >= {"id", "severity", "checklist", "source", "line", "text", "fix"}
    assert doc["counts"]["critical"] == 1 and doc["checked"] == [str(bad)]
    sarif = json.loads((tmp_path / "o.sarif").read_text())
    assert sarif["version"] == "2.1.0" and "sarif-2.1.0" in sarif["$schema"]
    (run_,) = sarif["runs"]
    rules = run_["tool"]["driver"]["rules"]
    assert len({r["id"] for r in rules}) == len(rules) >= 25
    res = run_["results"][0]
    assert res["ruleId"] == "KAFKA-005" and res["level"] == "error"
    assert rules[res["ruleIndex"]]["id"] == "KAFKA-005"
    loc = res["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"]["uri"] == bad.resolve().as_uri()
    assert bad.read_text().splitlines()[loc["region"]["startLine"] - 1] == "allow.everyone.if.no.acl.found=true"
    # --fail-on: only findings at or above the threshold fail the run.
    assert run(tmp_path / "h", "harden", "check", "--kafka", str(bad), "--fail-on", "critical").exit_code == 1
    only_medium = tmp_path / "m.properties"
    only_medium.write_text(KAFKA_KRAFT.replace("auto.create.topics.enable=false", ""))
    assert run(tmp_path / "h", "harden", "check", "--kafka", str(only_medium), "--fail-on", "high").exit_code == 0
    r = run(tmp_path / "h", "harden", "check", "--kafka", str(bad), "--sarif", "-")
    assert r.exit_code == 1 and json.loads(r.stdout)["version"] == "2.1.0"


def test_bad_input_is_a_clear_error_with_the_config_exit_code(tmp_path: Path) -> None:
    junk = tmp_path / "photo.jpg"
    junk.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00")
    for flag in ("--kafka", "--nats", "--config"):
        r = run(tmp_path / "h", "harden", "check", flag, str(junk))
        assert isinstance(r.exception, ConfigError), (flag, r.output)
        assert common.exit_code(r.exception) == common.EXIT_CONFIG
    r = run(tmp_path / "h", "threats", "--config", str(junk))
    assert isinstance(r.exception, ConfigError)
    r = run(tmp_path / "empty-home", "harden", "check")
    assert isinstance(r.exception, NotFoundError) and "nothing to check" in r.exception.message
    r = run(tmp_path / "h", "harden", "check", "--nats", str(junk), "--fail-on", "severe")
    assert r.exception is not None and common.exit_code(r.exception) == common.EXIT_INVALID


def test_every_nats_config_eventward_writes_passes(tmp_path: Path) -> None:
    """``nats up`` (the compiled policy) has zero findings and runs; every config ``prepare``
    writes, single or clustered, is accepted by ``nats-server -t``."""
    home = tmp_path / "home"
    auth = tmp_path / "auth.conf"
    auth.write_text(nats_cli.with_operator(compile_nats(parse(POLICY))))
    port = free_ports(1)
    up = run(home, "nats", "up", "--port", str(port), "--auth-config", str(auth))
    assert up.exit_code == 0, up.output
    try:
        (node,) = natsserver.discover(home / "run" / "nats")
        assert natsserver.running(node) is not None
        r = run(home, "harden", "check", "--json")
        assert r.exit_code == 0, r.output
        doc = orjson.loads(r.stdout)
        assert doc["findings"] == [] and str(node.config) in doc["checked"]
        t = nats_t(node.config)
        assert t.returncode == 0, t.stdout + t.stderr
    finally:
        run(home, "nats", "down")
    certs = tmp_path / "certs"
    cert, key = pki.ensure_server_cert(certs, "nats-server")
    tls = natsserver.TlsFiles(pki.ca_paths(certs)[0], cert, key)
    nodes = natsserver.plan(tmp_path / "cluster", size=3, port=free_ports(3))
    natsserver.prepare(nodes, tls=tls, auth_config=auth.read_text())
    for n in nodes:
        assert nats_t(n.config).returncode == 0, nats_t(n.config).stderr
        assert run(home, "harden", "check", "--nats", str(n.config)).exit_code == 0
    # --open is the one deliberate exception: mTLS only, no authorization, and the checker says so.
    opened = natsserver.plan(tmp_path / "open", size=1, port=free_ports(1))
    natsserver.prepare(opened, tls=tls, auth_config=None)
    assert nats_t(opened[0].config).returncode == 0
    r = run(home, "harden", "check", "--nats", str(opened[0].config), "--json")
    assert [f["id"] for f in orjson.loads(r.stdout)["findings"]] == ["NATS-003"]


@pytest.fixture
def live_nats(tmp_path: Path) -> Any:
    """A plaintext nats-server with monitoring on 127.0.0.1 (what the checker must flag)."""
    port, http = free_ports(1), free_ports(1)
    conf = tmp_path / "live.conf"
    conf.write_text(f'listen: "127.0.0.1:{port}"\nhttp: "127.0.0.1:{http}"\nmax_payload: 64MB\n')
    proc = subprocess.Popen([str(natsserver.binary()), "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{http}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(url + "/varz", timeout=1):
                return True
        except OSError:
            return False

    try:
        wait_until(up, timeout=15, what="nats-server monitoring port")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_live_nats_server_through_its_monitoring_port(live_nats: str, tmp_path: Path) -> None:
    r = run(tmp_path / "h", "harden", "check", "--nats-url", live_nats, "--json")
    assert r.exit_code == 1
    ids = sorted(f["id"] for f in orjson.loads(r.stdout)["findings"])
    assert ids == ["NATS-001", "NATS-002", "NATS-007"]  # monitoring itself is loopback-only: fine
    r = run(tmp_path / "h", "harden", "check", "--nats-url", live_nats + "/nope")
    assert r.exception is not None
    # Credentials in the URL stay out of findings, SARIF and errors.
    with_creds = live_nats.replace("http://", "http://ops:s3cret-pw@")
    r = run(tmp_path / "h", "harden", "check", "--nats-url", with_creds, "--json", "--sarif", str(tmp_path / "s"))
    assert r.exit_code == 1 and "s3cret-pw" not in r.stdout and "s3cret-pw" not in (tmp_path / "s").read_text()
    r = run(tmp_path / "h", "harden", "check", "--nats-url", "http://ops:s3cret-pw@127.0.0.1:1")
    assert common.exit_code(r.exception) == common.EXIT_UNAVAILABLE and "s3cret-pw" not in r.exception.message
    r = run(tmp_path / "h", "harden", "check", "--nats-url", live_nats, "--json", "--sarif", "-")
    assert common.exit_code(r.exception) == common.EXIT_INVALID


def test_threats_report(tmp_path: Path) -> None:
    home = tmp_path / "home"
    r = run(home, "threats", "--json")
    assert r.exit_code == 0, r.output
    doc = orjson.loads(r.stdout)
    assert doc["deployment"]["transport"] == "embedded"
    cats = {t["category"] for t in doc["threats"]}
    assert cats == {"Spoofing", "Tampering", "Repudiation", "Information disclosure", "Denial of service",
                    "Elevation of privilege"}
    opens = " ".join(o for t in doc["threats"] for o in t["open"])
    assert "transport embedded: no broker ACLs" in opens and "seals.require_hybrid is empty" in opens
    assert all(t["covered_by"] for t in doc["threats"])
    cfg = tmp_path / "eventward.yaml"
    cfg.write_text("transport: kafka\nkafka: {security_protocol: PLAINTEXT}\nseals: {require_hybrid: [orders]}\n")
    doc = orjson.loads(run(home, "threats", "--config", str(cfg), "--json").stdout)
    by_id = {t["id"]: t for t in doc["threats"]}
    assert any("without TLS" in o for o in by_id["I2"]["open"])
    assert any("require_hybrid" in c for c in by_id["S1"]["covered_by"]) and not by_id["S1"]["open"]
    assert any("no client credentials" in o for o in by_id["S2"]["open"])
    table = run(home, "threats", "--config", str(cfg))
    assert table.exit_code == 0 and "Elevation of privilege" in table.output


def test_nats_good_corpus_passes_nats_server_t(tmp_path: Path) -> None:
    """The good corpus is a real configuration, not just one our parser likes."""
    certs = tmp_path / "certs"
    cert, key = pki.ensure_server_cert(certs, "server")
    for name, src in (("server.crt", cert), ("server.key", key), ("ca.crt", pki.ca_paths(certs)[0])):
        (tmp_path / name).write_bytes(src.read_bytes())
    conf = tmp_path / "nats.conf"
    conf.write_text(NATS_GOOD.replace("/var/lib/nats", str(tmp_path / "js")))
    t = nats_t(conf)
    assert t.returncode == 0, t.stdout + t.stderr
