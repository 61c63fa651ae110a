"""``eventward serve`` runs the anomaly rules in the background and shows the eventward metrics on
/metrics next to the gateway's: a burst of denied requests becomes one alert, visible in the
scrape (parsed with prometheus_client) and in ``eventward alerts``."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from eventward._internal import pki
from eventward._internal.cli import app
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home


def call(port: int, ctx: ssl.SSLContext, method: str, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_serve_monitors_live_and_exposes_metrics(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    Deployment.init(home, admin="admin").close()
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules: {denial_burst: {threshold: 3, window_s: 300}}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "eventward._internal.cli", "--home", str(home.root), "serve", "--port", "0",
         "--monitor-rules", str(rules)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        m = re.search(r"https://127\.0\.0\.1:(\d+)", line)
        assert m, line
        port = int(m.group(1))
        ca = pki.ca_paths(home.certs)[0]
        cert, key = pki.ensure_client_cert(home.certs, "admin")
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.load_cert_chain(str(cert), str(key))
        for _ in range(5):  # the administrator may not read topics under the bootstrap policy
            assert call(port, ctx, "GET", "/v1/topics/orders/events?group=g")[0] == 403
        key_ = ("eventward_alerts_total", (("rule", "denial_burst"), ("severity", "high")))
        deadline = time.monotonic() + 20
        while True:
            scrape = _samples(call(port, ctx, "GET", "/metrics")[1].decode())
            if scrape.get(key_) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert scrape.get(key_) == 1
        assert any(name == "eventward_gateway_requests_total" for name, _ in scrape)
        assert scrape[("eventward_authz_denials_total", (("action", "Subscribe"),))] >= 5
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "Traceback" not in err, err[-2000:]
    r = CliRunner().invoke(app, ["--home", str(home.root), "alerts", "--json"])  # in-process: no second start-up
    assert r.exit_code == 0, r.output
    assert [a["rule"] for a in json.loads(r.stdout)["alerts"]] == ["denial_burst"]
