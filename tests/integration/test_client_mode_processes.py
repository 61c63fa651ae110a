"""Client mode across OS processes, each with its own directory: the control plane (`eventward
serve`, KEKs in OpenBao Transit), a 3-node NATS cluster (R3), a producer service, a consumer cleared
for pii and one that is not. Services talk to the control plane over mTLS and to NATS directly
with their own certificates; none of them holds anything but its own keys."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import yaml

from eventward._internal import demo
from keys_net.conftest import TOKEN_ENV, free_port

from .test_readme import _free_base

BIN = Path(sys.executable).parent
PROC = Path(__file__).with_name("client_mode_proc.py")
FORBIDDEN = {"master.key", "keyring.bin", "keys.db", "audit.key", "ca.key", "control-anchor.key", "registry.db",
             "trust.db", "log.db"}
REDACTED = "[redacted]"


def ew(home: Path, *args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "eventward"), *(["--home", str(home)] if home else []), *args]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    if check:
        assert p.returncode == 0, f"{' '.join(args)}: {p.stdout[-1500:]} {p.stderr[-1500:]}"
    assert "Traceback" not in p.stderr, p.stderr[-2000:]
    return p


def svc(env: dict, *args: str) -> tuple[int, dict]:
    p = subprocess.run([sys.executable, str(PROC), *args], capture_output=True, text=True, env=env, timeout=120)
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    return p.returncode, orjson.loads(p.stdout.strip().splitlines()[-1])


class ControlPlaneProcess:
    def __init__(self, home: Path, port: int, env: dict) -> None:
        self.home, self.port, self.env, self.proc = home, port, env, None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "eventward"), "--home", str(self.home), "serve", "--port", str(self.port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if "listening on" in line:
                return
            if not line and self.proc.poll() is not None:
                break
        raise AssertionError("eventward serve did not start")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.mark.timeout(300)
def test_client_mode_services_in_their_own_processes(tmp_path, bao, prefix):
    env = {**os.environ, TOKEN_ENV: bao.token_for(prefix), "COLUMNS": "200"}
    cp = tmp_path / "control-plane"
    cp.mkdir(mode=0o700)
    (cp / "eventward.yaml").write_text(yaml.safe_dump({
        "kms": {"backend": "transit", "transit": {"url": bao.url, "token_env": TOKEN_ENV, "key_prefix": prefix}},
        "gateway": {"tls": {"reload_s": 1.0}},  # a revocation reaches serve within a second
    }))
    ew(cp, "init", "--admin", "admin", env=env)
    ew(cp, "pki", "init", env=env)  # certificates recorded, a CRL, NATS pins: revocation works everywhere
    ew(cp, "policy", "apply", str(Path(demo.__file__).with_name("examples") / "policy.yaml"), "--as", "admin", env=env)
    schema = Path(demo.__file__).with_name("examples") / "order_placed.schema.json"
    ew(cp, "schema", "propose", "OrderPlaced", str(schema), "--as", "alice", env=env)
    ew(cp, "schema", "approve", "OrderPlaced", "1", "--as", "bob", env=env)
    nats_port = _free_base()
    ew(cp, "nats", "up", "--cluster", "3", "--port", str(nats_port), env=env)
    api_port = free_port()
    server = ControlPlaneProcess(cp, api_port, env)
    try:
        server.start()
        url = f"https://127.0.0.1:{api_port}"
        nats = [f"tls://127.0.0.1:{nats_port + i}" for i in range(3)]
        dirs = {}
        seals = {demo.PRODUCER: ["--seal", f"{demo.TOPIC}:{demo.EVENT_TYPE}"], demo.SHIPPING: [], demo.ANALYTICS: []}
        for principal, seal in seals.items():
            d = dirs[principal] = tmp_path / "hosts" / principal
            ew(None, "service", "enroll", "--dir", str(d), "--name", principal, env=env)
            grant = tmp_path / f"{principal}.grant.json"
            ew(cp, "service", "approve", str(d / "enrollment.json"), *seal, "--control-url", url,
               *[x for n in nats for x in ("--nats", n)], "--out", str(grant), "--as", "admin", env=env)
            ew(None, "service", "install", str(grant), "--dir", str(d), env=env)

        rc, out = svc(env, "produce", str(dirs[demo.PRODUCER]), "6", "0")
        assert rc == 0 and len(out["ids"]) == 6
        rc, shipping = svc(env, "consume", str(dirs[demo.SHIPPING]), "ship", "6", "0.5")
        assert rc == 0 and [e["id"] for e in shipping["events"]] == out["ids"]
        assert {e["name"] for e in shipping["events"]} <= {c[1] for c in demo.CUSTOMERS}
        rc, analytics = svc(env, "consume", str(dirs[demo.ANALYTICS]), "ana", "6", "0.5")
        assert rc == 0 and {e["name"] for e in analytics["events"]} == {REDACTED}

        # The uncleared consumer's raw stream access shows tokens only; its direct key request is refused.
        rc, raw = svc(env, "raw", str(dirs[demo.ANALYTICS]), "6")
        assert rc == 0 and len(raw["raw"]) == 6
        blob = "".join(raw["raw"])
        assert not any(v in blob for v in demo.pii_values())
        kid = orjson.loads(raw["raw"][0])["data"]["customer"]["name"].split(".")[2]
        rc, answer = svc(env, "unwrap", str(dirs[demo.ANALYTICS]), kid)
        assert answer == {"answer": {kid: "forbidden"}}
        records = orjson.loads(ew(cp, "audit", "tail", "-n", "50", "--json", env=env).stdout)["records"]
        denied = [r for r in records if r["action"] == "control.decrypt_keys" and r["outcome"] == "denied"]
        assert denied and denied[-1]["principal"] == demo.ANALYTICS and kid not in orjson.dumps(denied).decode()

        # A service cannot publish what it is not granted: refused at the control plane (no keys).
        rc, refused = svc(env, "produce", str(dirs[demo.ANALYTICS]), "1", "100")
        assert rc == 3 and refused["error"] == "forbidden"

        # The control plane dies: a cold consumer stops before the event, then resumes; nothing is lost.
        rc, more = svc(env, "produce", str(dirs[demo.PRODUCER]), "3", "50")
        assert rc == 0
        server.kill()
        rc, stopped = svc(env, "consume", str(dirs[demo.SHIPPING]), "cold", "9", "0.5")
        assert rc == 3 and stopped["error"] in ("control_plane_unavailable", "kms_unavailable")
        server.start()
        rc, resumed = svc(env, "consume", str(dirs[demo.SHIPPING]), "cold", "9", "0.5")
        assert rc == 0 and [e["id"] for e in resumed["events"]] == out["ids"] + more["ids"]

        # A revoked identity is refused at its next call to the control plane and by NATS.
        ew(cp, "pki", "revoke", demo.ANALYTICS, "--reason", "key-compromise", env=env)
        deadline = time.monotonic() + 15  # serve reloads its CRL every gateway.tls.reload_s
        while time.monotonic() < deadline:
            rc, answer = svc(env, "unwrap", str(dirs[demo.ANALYTICS]), kid)
            if rc == 3:
                break
            time.sleep(0.5)
        assert rc == 3 and answer["error"] in ("control_plane_unavailable", "authentication", "unauthenticated"), answer
        rc, raw = svc(env, "raw", str(dirs[demo.ANALYTICS]), "1")
        assert rc == 3, raw  # NATS no longer admits its certificate
        rc, still = svc(env, "consume", str(dirs[demo.SHIPPING]), "after-revoke", "9", "0.5")
        assert rc == 0 and len(still["events"]) == 9  # everyone else carries on

        for d in dirs.values():  # each service's directory holds only its own material
            names = {p.name for p in d.rglob("*")}
            assert not names & FORBIDDEN, names & FORBIDDEN
            assert not any(re.search(r"\.key$", n) and n not in ("seal.key", "dead-letter.key", "tls.key")
                           for n in names), names
    finally:
        server.kill()
        ew(cp, "nats", "down", env=env, check=False)
