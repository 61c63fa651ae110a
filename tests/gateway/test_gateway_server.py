"""No listener without TLS and authentication, unless the explicit dev flag (loudly logged)."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eventward._internal.gateway.config import GatewayConfig
from eventward._internal.gateway.server import create_server
from eventward._internal.home import Home
from eventward.errors import ConfigError

from .conftest import MemoryBackend, gateway_config, start_gateway
from .gw_support import Pki, ThreadedGateway, call

TESTS_DIR = Path(__file__).resolve().parents[1]
CLI = "from eventward._internal.cli import app, common, gateway; gateway.register(app); common.run(app)"


def test_no_certificate_means_no_listener(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not serve without TLS"):
        create_server(GatewayConfig.from_mapping({"port": 0}), Home(tmp_path), MemoryBackend())


def test_mtls_without_client_ca_means_no_listener(gw_pki: Pki, tmp_path: Path) -> None:
    cfg = gateway_config(gw_pki, tls={"client_ca": str(tmp_path / "missing-ca.crt")})
    with pytest.raises(ConfigError, match="does not exist"):
        create_server(cfg, Home(tmp_path), MemoryBackend())


def test_world_readable_server_key_refused(gw_pki: Pki, tmp_path: Path) -> None:
    key = tmp_path / "server.key"
    key.write_bytes(gw_pki.server_key.read_bytes())
    key.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        create_server(gateway_config(gw_pki, tls={"key": str(key)}), Home(tmp_path), MemoryBackend())


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"auth": "none"}, "auth must be one of"),
        ({"auth": "jwt", "jwt": {"jwks_file": "x.json"}}, "issuer and audience"),
        ({"auth": "jwt", "jwt": {"issuer": "i", "audience": "a"}}, "exactly one of"),
        (
            {
                "auth": "jwt",
                "jwt": {"jwks_file": "x", "issuer": "i", "audience": "a", "algorithms": ["HS256"]},
            },
            "not allowed",
        ),
        ({"limits": {"burst_events": 10, "max_batch_events": 100}}, "a full batch must fit"),
        ({"limits": {"max_body_bytes": -1}}, "must be positive"),
        ({"limits": {"max_batch_events": 5000, "burst_events": 6000}}, "at most 1000"),
        ({"limitz": {}}, "unknown key"),
        ({"port": "8443"}, "expected int"),
    ],
)
def test_bad_gateway_config_refused(doc, match) -> None:
    with pytest.raises(ConfigError, match=match):
        GatewayConfig.from_mapping(doc)


def test_dev_flag_is_loopback_only(tmp_path: Path) -> None:
    cfg = GatewayConfig.from_mapping({"host": "0.0.0.0", "port": 0})
    with pytest.raises(ConfigError, match="loopback"):
        create_server(cfg, Home(tmp_path), MemoryBackend(), dev_no_auth=True)


def test_dev_flag_serves_and_warns_at_startup_and_per_request(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="eventward.gateway")
    backend = MemoryBackend()
    server = create_server(GatewayConfig.from_mapping({"port": 0}), Home(tmp_path), backend, dev_no_auth=True)
    assert any("authenticates NO ONE" in r.getMessage() for r in caplog.records)
    gw = ThreadedGateway(server).start()
    try:
        caplog.clear()
        r = call(gw.port, None, "GET", "/v1/whoami")  # plain HTTP: no certificates in the home
        assert r.json == {"principal": "dev", "method": "dev"}
        r = call(gw.port, None, "GET", "/healthz")
        assert r.status == 200
        warnings = [
            r for r in caplog.records if r.levelno == logging.WARNING and "INSECURE" in r.getMessage()
        ]
        assert len(warnings) == 2
    finally:
        gw.stop()


def test_jwt_mode_without_client_ca_serves_tls_without_client_certs(
    gw_pki: Pki, jwks_file: Path, tmp_path: Path, signers
) -> None:
    from .conftest import AUDIENCE, ISSUER
    from .gw_support import claims

    cfg = GatewayConfig.from_mapping(
        {
            "port": 0,
            "auth": "jwt",
            "tls": {"cert": str(gw_pki.server_cert), "key": str(gw_pki.server_key)},
            "jwt": {"jwks_file": str(jwks_file), "issuer": ISSUER, "audience": AUDIENCE},
        }
    )
    run = start_gateway(cfg, tmp_path)
    try:
        token = signers["rsa"].sign(claims(ISSUER, AUDIENCE))
        ok = call(
            run.port,
            gw_pki.client_ctx(None),
            "GET",
            "/v1/whoami",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert ok.json["principal"] == "jwt:idp.test.local:orders"  # no subject rule: namespaced
        assert call(run.port, gw_pki.client_ctx(None), "GET", "/v1/whoami").status == 401
    finally:
        run.gw.stop()


def _cli(home: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(TESTS_DIR), "COLUMNS": "200"}
    return subprocess.Popen(
        [sys.executable, "-c", CLI, "--home", str(home), "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_cli_refuses_to_serve_without_auth(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "--port", "0", "--backend", "gateway.conftest:memory_backend")
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    assert proc.returncode == 9  # configuration error (docs/cli.md)
    assert "does not serve without TLS" in err and "listening" not in out
    assert "Traceback" not in err


def test_cli_dev_flag_serves_with_loud_warnings(tmp_path: Path) -> None:
    proc = _cli(
        tmp_path, "--port", "0", "--insecure-dev-no-auth", "--backend", "gateway.conftest:memory_backend"
    )
    try:
        line = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "listening" not in line:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert m, line
        r = call(int(m.group(1)), None, "GET", "/v1/whoami")
        assert r.json["method"] == "dev"
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert "authenticates NO ONE" in err
    assert "INSECURE: unauthenticated dev gateway served GET whoami" in err


def test_cli_unknown_backend_is_a_clear_error(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "--port", "0", "--insecure-dev-no-auth", "--backend", "no.such.module:x")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 9 and "cannot be imported" in err and "Traceback" not in err
