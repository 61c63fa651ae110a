"""The OpenAPI document is the truth about a live ``eventward serve``: schemathesis drives every
operation of the served document against the CLI's own gateway process (real Deployment backend,
mTLS with the home's CA), and every reply must conform: no 5xx, statuses, content types, headers
and bodies as documented, bad input refused. Bounded: a few examples per operation, long polls off.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, settings

from eventward._internal import demo, pki
from eventward._internal.deployment import Deployment
from eventward._internal.gateway.openapi import document
from eventward._internal.home import Home

from .gw_deployment import APPROVER, AUTHOR, FUZZER, POLICY, TYPE
from .test_gateway_openapi import ACCEPTANCE, REJECTIONS

# Beyond what a schema can say, the real backend refuses schema-valid requests on meaning (400/422):
# a schema document that is not a usable schema, two events with one id, a traceparent with an
# all-zero id, data_base64 that is not JSON.
SCHEMA = schemathesis.openapi.from_dict(
    document(),
    config=schemathesis.Config.from_dict(
        {
            "checks": {
                "negative_data_rejection": {"expected-statuses": REJECTIONS},
                "positive_data_acceptance": {"expected-statuses": [*ACCEPTANCE, "400", "422"]},
                # mTLS: the certificate is the credential, there is no header for the check to drop
                "ignored_auth": {"enabled": False},
            }
        }
    ),
)
LIMITS = {"max_wait_s": 0.0, "rate_events_per_s": 1e6, "burst_events": 1_000_000}


def _home(root: Path) -> Home:
    home = Home(root / "home")
    dep = Deployment.init(home, admin="admin", policy_yaml=POLICY)
    try:
        dep.trust.ensure(FUZZER, by="admin")
        schema = orjson.loads(demo.example("order_placed.schema.json"))
        dep.registry.approve(APPROVER, TYPE, dep.registry.propose(AUTHOR, TYPE, schema).version)
    finally:
        dep.close()
    doc = yaml.safe_load(home.config.read_text()) or {}
    doc["gateway"] = {**doc.get("gateway", {}), "limits": LIMITS}
    home.config.write_text(yaml.safe_dump(doc))
    return home


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = _home(tmp_path_factory.mktemp("serve-fuzz"))
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
        cert, key = pki.ensure_client_cert(home.certs, FUZZER)
        session = requests.Session()
        yield {
            "base_url": f"https://127.0.0.1:{m.group(1)}",
            "session": session,
            "verify": str(pki.ca_paths(home.certs)[0]),
            "cert": (str(cert), str(key)),
            # one connection per request: the gateway closes idle keep-alive connections
            "headers": {"Connection": "close"},
        }
        session.close()
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err, err[-2000:]


@SCHEMA.parametrize()
@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_fuzz_eventward_serve(case: schemathesis.Case, served: dict[str, Any]) -> None:
    case.call_and_validate(**served)


def test_served_document_states_the_servers_batch_limit(served: dict[str, Any]) -> None:
    """The live server's document states its batch limit, and one event more gets 413."""
    kw = {k: served[k] for k in ("verify", "cert", "headers")}
    doc = requests.get(served["base_url"] + "/openapi.json", timeout=10, **kw).json()
    limit = doc["components"]["schemas"]["PublishRequest"]["maxItems"]
    assert limit == 500
    started = time.monotonic()
    over = [{"specversion": "1.0", "id": f"e{i}", "source": "/s", "type": TYPE, "data": {}} for i in range(limit + 1)]
    r = requests.post(served["base_url"] + "/v1/topics/orders.limit/events", json=over, timeout=30, **kw)
    assert r.status_code == 413 and r.json()["limit"] == limit
    assert time.monotonic() - started < 30
