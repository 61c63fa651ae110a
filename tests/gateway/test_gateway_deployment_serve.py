"""``eventward serve`` on a deployment home, and the gateway part of the demo.

The CLI serves the real backend by default, issuing the gateway's certificate from the home's
CA; clients authenticate with certificates from that same CA. The demo's gateway part runs the
three services' HTTPS requests against a demo home and returns what they got.
"""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from typer.testing import CliRunner

from eventward._internal import demo, pki
from eventward._internal.cli import app
from eventward._internal.crypto.fields import ERASED
from eventward._internal.deployment import Deployment
from eventward._internal.gateway_demo import run_gateway_demo
from eventward._internal.home import Home

from .gw_support import call


def test_serve_defaults_to_the_deployment_backend_with_the_homes_certificates(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    Deployment.init(home, admin="admin").close()
    issued = CliRunner().invoke(app, ["--home", str(home.root), "gateway", "cert", "admin"])
    assert issued.exit_code == 0, issued.output
    assert "curl --cacert" in issued.output
    proc = subprocess.Popen(
        [sys.executable, "-m", "eventward._internal.cli", "--home", str(home.root), "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        m = re.search(r"https://127\.0\.0\.1:(\d+)", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        ca = pki.ca_paths(home.certs)[0]
        cert, key = pki.ensure_client_cert(home.certs, "admin")
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.load_cert_chain(str(cert), str(key))
        port = int(m.group(1))
        assert call(port, ctx, "GET", "/v1/whoami").json == {"principal": "admin", "method": "mtls"}
        # the bootstrap policy lets the administrator read the audit log, through the real backend
        assert call(port, ctx, "GET", "/v1/audit/checkpoint").json["tree_size"] > 0
        denied = call(port, ctx, "GET", "/v1/topics/orders/events?group=g")
        assert denied.status == 403 and denied.json["code"] == "forbidden"
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err
    served = x509.load_pem_x509_certificate((home.certs / "gateway.crt").read_bytes())
    sans = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}


def test_gateway_demo_publishes_consumes_and_explains_a_denial(tmp_path: Path) -> None:
    home = Home(tmp_path / "demo-home")
    dep = Deployment.init(home, admin=demo.ADMIN)
    try:
        report = lambda name, data: None  # noqa: E731
        demo.setup(dep, report)
        demo.schemas(dep, demo.DemoResult(), report)
        dep.forget(demo.FORGOTTEN, principal=demo.ADMIN)  # as the SDK part of the demo does first
    finally:
        dep.close()

    r = run_gateway_demo(home)
    assert r.url.startswith("https://127.0.0.1:")
    assert r.published is not None and r.published.status == 200 and len(r.published_ids) == 4
    assert [e["id"] for e in r.consumed] == r.published_ids
    names = {c[1] for c in demo.CUSTOMERS}
    assert {e["data"]["customer"]["name"] for e in r.consumed} <= names  # decrypted for shipping-svc
    assert all(e["data"]["customer"]["email"] != ERASED for e in r.consumed)  # new keys after the forget
    assert r.committed == 4
    assert r.denied is not None and r.denied.status == 403 and r.denied.body["code"] == "forbidden"
    assert "a role of analytics-svc with {allow: publish, topic: orders" in r.denied.body["missing"]
    assert r.explained is not None and r.explained.status == 200 and r.explained.body["allowed"] is False
    assert "missing grant: a role of analytics-svc with {allow: publish" in r.explanation
    assert len(r.commands) == 3 and all(c.startswith("curl --cacert ") for c in r.commands)
    files = [p for p in home.root.rglob("*") if p.is_file()]
    assert any(p.name == "log.db" for p in files)
    for path in files:  # nothing the gateway handled left plaintext PII on disk (WAL files included)
        raw = path.read_bytes()
        for value in demo.pii_values():
            assert value.encode() not in raw, path.name
