"""RFC 3161 timestamps of checkpoints from a local TSA (``openssl ts -reply`` behind HTTP on 127.0.0.1):
tokens verify offline against the exact checkpoint text and the pinned TSA certificate, and
``openssl ts -verify`` agrees; a token for other data, from another TSA or altered is refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import typer
from typer.testing import CliRunner

from eventward._internal.audit.checkpoint import verify_checkpoint
from eventward._internal.audit.log import AuditLog
from eventward._internal.audit.timestamp import request_timestamp, timestamp_request, verify_timestamp
from eventward._internal.cli import audit as audit_cli
from eventward._internal.cli import common
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward.errors import TimestampError

SERVER = Path(__file__).with_name("tsa_server.py")
EXT = """basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=critical,timeStamping
"""
CNF = """[ tsa ]
default_tsa = tsa_config1
[ tsa_config1 ]
dir = {dir}
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.crt
certs = $dir/ca.crt
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = 1.2.3.4.1
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


def _ssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_tsa(d: Path, name: str = "Test TSA") -> Path:
    """A CA and a TSA certificate (P-256, timeStamping EKU) made with the openssl CLI."""
    d.mkdir(parents=True, exist_ok=True)
    _ssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
         "-out", "ca.crt", "-subj", f"/CN={name} CA", "-days", "2", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign", cwd=d)
    _ssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "tsa.key",
         "-out", "tsa.csr", "-subj", f"/CN={name}", cwd=d)
    (d / "ext.cnf").write_text(EXT)
    _ssl("x509", "-req", "-in", "tsa.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "tsa.crt",
         "-days", "2", "-extfile", "ext.cnf", cwd=d)
    (d / "serial").write_text("01\n")
    (d / "tsa.cnf").write_text(CNF.format(dir=d))
    return d


@pytest.fixture(scope="module")
def tsa(tmp_path_factory):
    """(URL, directory) of a TSA server process on 127.0.0.1, stopped by its PID."""
    d = make_tsa(tmp_path_factory.mktemp("tsa"))
    port_file = d / "port"
    proc = subprocess.Popen([sys.executable, str(SERVER), str(d), str(port_file)])
    deadline = time.monotonic() + 10
    while not port_file.exists() or not port_file.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, "TSA server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port_file.read_text()}/", d
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


@pytest.fixture
def home(tmp_path) -> Home:
    h = Home(tmp_path / "home")
    Deployment.init(h).close()
    return h


def test_checkpoint_timestamp_verifies_offline_and_with_openssl(tsa, home, tmp_path):
    url, d = tsa
    with AuditLog.open(home) as log:
        cp = log.checkpoint()
    token = request_timestamp(url, cp.text.encode())
    ts = verify_timestamp(token, cp.text.encode(), (d / "tsa.crt").read_bytes(), ca_cert=(d / "ca.crt").read_bytes())
    assert ts.tsa == "CN=Test TSA" and ts.policy == "1.2.3.4.1" and abs(ts.gen_time.timestamp() - time.time()) < 60
    (tmp_path / "cp.txt").write_text(cp.text)
    (tmp_path / "t.der").write_bytes(token)
    done = subprocess.run(
        ["openssl", "ts", "-verify", "-data", str(tmp_path / "cp.txt"), "-in", str(tmp_path / "t.der"), "-token_in",
         "-CAfile", str(d / "ca.crt"), "-untrusted", str(d / "tsa.crt")],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0 and "Verification: OK" in done.stdout


def test_attack_timestamp_for_other_data_other_tsa_or_altered_is_refused(tsa, home, tmp_path):
    url, d = tsa
    with AuditLog.open(home) as log:
        cp = log.checkpoint()
    token = request_timestamp(url, cp.text.encode())
    cert, ca = (d / "tsa.crt").read_bytes(), (d / "ca.crt").read_bytes()
    with pytest.raises(TimestampError, match="other data"):
        verify_timestamp(token, cp.text.replace("\n", "\n ", 1).encode(), cert)
    other = make_tsa(tmp_path / "other", "Other TSA")
    with pytest.raises(TimestampError, match="pinned"):
        verify_timestamp(token, cp.text.encode(), (other / "tsa.crt").read_bytes())
    with pytest.raises(TimestampError, match="not issued by"):
        verify_timestamp(token, cp.text.encode(), cert, ca_cert=(other / "ca.crt").read_bytes())
    bad = bytearray(token)
    bad[-5] ^= 0x01  # inside the signature
    with pytest.raises(TimestampError):
        verify_timestamp(bytes(bad), cp.text.encode(), cert, ca_cert=ca)
    with pytest.raises(TimestampError, match="not an RFC 3161"):
        verify_timestamp(b"\x30\x03\x02\x01\x01", cp.text.encode(), cert)
    with pytest.raises(TimestampError, match="cannot be reached"):
        request_timestamp("http://127.0.0.1:9/", b"x", timeout=2)
    with pytest.raises(TimestampError, match="http"):
        request_timestamp("file:///etc/passwd", b"x")
    assert timestamp_request(b"x", nonce=7)[1] == 7


def test_audit_timestamp_cli_keeps_and_reverifies(tsa, home, tmp_path, monkeypatch):
    url, d = tsa
    monkeypatch.setattr(common.STATE, "home", str(home.root))
    monkeypatch.delenv("EVENTWARD_PRINCIPAL", raising=False)
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        return None

    audit_cli.register(app)
    run = CliRunner()
    r = run.invoke(app, ["audit", "timestamp", "--tsa", url, "--tsa-cert", str(d / "tsa.crt"), "--ca-cert",
                         str(d / "ca.crt"), "--out", str(tmp_path / "t.der"), "--json"])
    assert r.exit_code == 0, r.output
    doc = orjson.loads(r.stdout)
    (tmp_path / "cp.txt").write_text(doc["checkpoint"])
    with AuditLog.open(home) as log:
        assert verify_checkpoint(doc["checkpoint"], log.verifier).size == doc["size"]
        kept = log.attachments("timestamp", str(doc["size"]))
    assert kept and orjson.loads(kept[-1][1])["token"] == doc["token"]
    r = run.invoke(app, ["audit", "verify-timestamp", str(tmp_path / "cp.txt"), str(tmp_path / "t.der"),
                         "--tsa-cert", str(d / "tsa.crt"), "--json"])
    assert r.exit_code == 0 and orjson.loads(r.stdout)["ok"]
    (tmp_path / "cp.txt").write_text(doc["checkpoint"] + " ")
    r = run.invoke(app, ["audit", "verify-timestamp", str(tmp_path / "cp.txt"), str(tmp_path / "t.der"),
                         "--tsa-cert", str(d / "tsa.crt")])
    assert isinstance(r.exception, TimestampError) and common.exit_code(r.exception) == common.EXIT_REFUSED
