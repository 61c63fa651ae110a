"""A user's whole workflow through the installed ``eventward`` command, one subprocess per step:
init, policy, trust, two-person schema approval, produce, consume per clearance, forget,
re-read, audit verification and the erasure certificate checked from files alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import orjson
import pytest

from eventward._internal import demo

EXAMPLES = resources.files("eventward._internal.examples")
FORGOTTEN = demo.FORGOTTEN  # cust-1002


# ~40 CLI processes, each importing the package: ~60 s on a quiet machine, twice that on a busy one.
@pytest.mark.timeout(300)
def test_the_whole_workflow_through_the_cli(tmp_path):
    exe = shutil.which("eventward", path=str(Path(sys.executable).parent))
    assert exe is not None
    env = {**os.environ, "EVENTWARD_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    for var in ("EVENTWARD_PRINCIPAL", "EVENTWARD_PASSPHRASE"):
        env.pop(var, None)

    def ew(*args: str, rc: int = 0) -> subprocess.CompletedProcess:
        p = subprocess.run([exe, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
        assert p.returncode == rc, (args, p.stdout, p.stderr)
        assert "Traceback" not in p.stderr
        return p

    def ew_parallel(*commands: tuple[str, ...]) -> list[subprocess.CompletedProcess]:
        """Independent steps at once (SQLite WAL lets them share the home), each checked like ew()."""
        pipe = subprocess.PIPE
        procs = [
            subprocess.Popen([exe, *args], stdout=pipe, stderr=pipe, text=True, env=env, cwd=tmp_path)
            for args in commands
        ]
        done = []
        for args, proc in zip(commands, procs, strict=True):
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0 and "Traceback" not in err, (args, out, err)
            done.append(subprocess.CompletedProcess(args, 0, out, err))
        return done

    def denied(*args: str) -> None:
        p = ew(*args, rc=3)  # forbidden (docs/cli.md)
        assert p.stderr.startswith("error (forbidden)") and p.stderr.count("\n") == 1, p.stderr

    def events(p: subprocess.CompletedProcess) -> list[dict]:
        return [orjson.loads(line) for line in p.stdout.splitlines()]

    # 1. a new deployment, then the real policy (deny by default, every grant named)
    out = ew("init").stdout
    assert "initialized" in out and "admin      admin" in out
    vkey = out.split("audit public key (publish it; verifiers need it):\n")[1].split()[0]
    assert "policy version 2 active" in ew("policy", "apply", str(EXAMPLES / "policy.yaml")).stdout

    # 2. signing keys for the services, registered by the administrator
    out = ew("trust", "register", "orders-svc", "shipping-svc", "analytics-svc").stdout
    assert out.count("registered") == 3

    # 3. the schema: alice proposes, she may not approve her own, bob approves
    schema = str(EXAMPLES / "order_placed.schema.json")
    assert "awaiting approval" in ew("schema", "propose", "OrderPlaced", schema, "--as", "alice").stdout
    denied("schema", "approve", "OrderPlaced", "1", "--as", "alice")
    assert "is active" in ew("schema", "approve", "OrderPlaced", "1", "--as", "bob").stdout

    # 4. orders-svc produces JSON lines
    orders = tmp_path / "orders.jsonl"
    orders.write_text(
        "".join(
            orjson.dumps({"type": "OrderPlaced", "data": demo.order(i), "source": "/shop"}).decode() + "\n"
            for i in range(6)
        )
    )
    ids = ew("produce", "orders", str(orders), "--as", "orders-svc").stdout.split()
    assert len(ids) == 6

    # 5. two consumers, two clearances (decided by the policy's decrypt grants)
    shipping_p, analytics_p = ew_parallel(
        ("consume", "orders", "--as", "shipping-svc", "--from-beginning", "--idle", "0"),
        ("consume", "orders", "--as", "analytics-svc", "--from-beginning", "--idle", "0"),
    )
    shipping, analytics = events(shipping_p), events(analytics_p)
    assert [e["id"] for e in shipping] == [e["id"] for e in analytics] == ids
    assert [e["data"] for e in shipping] == [demo.order(i) for i in range(6)]
    assert {e["data"]["customer"]["email"] for e in analytics} == {"[redacted]"}
    assert {e["data"]["customer"]["country"] for e in analytics} == {"GB", "US", "NL"}
    assert not any(v in analytics_p.stdout for v in demo.pii_values())

    # 6. right to erasure: only the administrator; then the log reads as erased for that customer
    denied("forget", FORGOTTEN, "--as", "analytics-svc")
    out = ew("forget", FORGOTTEN, "--reason", "gdpr-art17").stdout
    assert "destroyed 1 key(s)" in out and FORGOTTEN not in out
    index = int(out.split("erasure certificate: audit record ")[1].split()[0])
    ref = out.split("audit certificate ")[1].split()[0]  # the pseudonym: after forget, the only way in
    reread = events(
        ew("consume", "orders", "--as", "shipping-svc", "-g", "reread", "--from-beginning", "--idle", "0")
    )
    assert len(reread) == 6 and any(e["data"]["customer"]["id"] == "[erased]" for e in reread)
    for e in reread:
        customer = e["data"]["customer"]
        if customer["id"] == "[erased]":  # the subject id is pii too: erased with the rest
            assert customer["name"] == customer["email"] == customer["address"] == "[erased]"
        else:
            assert "@example.com" in customer["email"]

    # 7. the audit log: verified, checkpointed, the certificate fetched; unreadable without read_audit
    verified, _, _ = ew_parallel(
        ("audit", "verify"),
        ("audit", "checkpoint", "--out", "cp.txt"),
        ("audit", "certificate", ref, "--hash", "--out", "cert.json"),
    )
    assert verified.stdout.startswith("OK:")
    denied("audit", "tail", "--as", "nobody")
    cert = orjson.loads((tmp_path / "cert.json").read_text())
    assert cert["proof"]["index"] == index and cert["certificate"]["reason_code"] == "gdpr-art17"

    # 8. the certificate against the live log, then from files alone (certificate, checkpoint, public key)
    (tmp_path / "audit.vkey").write_text(vkey + "\n")
    files = ("--key", "audit.vkey", "--checkpoint", "cp.txt")
    live, offline, db = ew_parallel(
        ("audit", "verify-certificate", "cert.json"),
        ("audit", "verify-certificate", "cert.json", "--offline", *files),
        ("audit", "verify", "--db", str(tmp_path / "home" / "audit.db"), *files),
    )
    assert "still extends" in live.stdout
    assert offline.stdout.startswith("OK: erasure certificate") and "(offline)" in offline.stdout
    assert db.stdout.startswith("OK:") and "checkpoints not checked" not in db.stdout

    # nothing personal at rest: the log holds ciphertext, the audit log metadata (subject hashes) only
    home = tmp_path / "home"

    def stored(name: str) -> bytes:
        return b"".join(f.read_bytes() for f in home.iterdir() if f.name.startswith(name))

    log_bytes, audit_bytes = stored("log.db"), stored("audit.db")
    assert len(log_bytes) > 0 and len(audit_bytes) > 0
    for value in demo.pii_values():
        assert value.encode() not in log_bytes and value.encode() not in audit_bytes
    assert FORGOTTEN.encode() not in audit_bytes
