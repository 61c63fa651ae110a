"""nats-server process management and ``eventward nats up/down``: only our processes are ever
signalled, servers bind 127.0.0.1 only, and the compiled authorization is what runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from eventward._internal.cli import common
from eventward._internal.cli import nats as nats_cli
from eventward._internal.log import natsserver
from eventward._internal.policy.compile_nats import compile_nats
from eventward._internal.policy.spec import parse
from eventward.errors import ConfigError

from .conftest import port_block
from .nats_world import POLICY


def test_config_binds_loopback_and_requires_verified_certificates(tmp_path: Path) -> None:
    nodes = natsserver.plan(tmp_path, size=3, port=24222)
    tls = natsserver.TlsFiles(tmp_path / "ca.crt", tmp_path / "s.crt", tmp_path / "s.key")
    text = natsserver.render_config(nodes[1], nodes, tls=tls, auth_include="auth.conf", max_payload=1 << 20)
    assert 'listen: "127.0.0.1:24223"' in text and 'listen: "127.0.0.1:26223"' in text
    assert "verify_and_map: true" in text and "verify: true" in text  # clients mapped, routes verified
    assert '"nats-route://127.0.0.1:26222"' in text and '"nats-route://127.0.0.1:26224"' in text
    assert "26223" not in text.split("routes:")[1].split("]")[0]  # no route to itself
    assert 'include "auth.conf"' in text and "0.0.0.0" not in text
    with pytest.raises(ConfigError):
        natsserver.plan(tmp_path, size=2)  # no even quorums
    with pytest.raises(ConfigError):
        natsserver.plan(tmp_path, port=80)


def test_stop_never_signals_a_process_that_is_not_this_nats_server(tmp_path: Path) -> None:
    """A stale PID file whose PID now belongs to something else (here: a sleeping python)."""
    node = natsserver.plan(tmp_path, size=1, port=port_block(1))[0]
    node.dir.mkdir(parents=True)
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        node.pid_file.write_text(f"{victim.pid}\n")
        assert natsserver.running(node) is None
        assert natsserver.stop(node) is None
        assert victim.poll() is None  # still alive
        assert not node.pid_file.exists()
    finally:
        victim.kill()
        victim.wait()


def test_stop_never_signals_another_deployments_nats_server(tmp_path: Path) -> None:
    ours, theirs = (natsserver.plan(tmp_path / d, size=1, port=port_block(1))[0] for d in ("ours", "theirs"))
    natsserver.prepare([theirs])
    pid = natsserver.start(theirs)
    try:
        ours.dir.mkdir(parents=True)
        ours.pid_file.write_text(f"{pid}\n")  # forged/stale: points at the other deployment's server
        natsserver.prepare([ours])
        assert natsserver.stop(ours) is None
        assert natsserver.running(theirs) == pid
    finally:
        assert natsserver.stop(theirs) == pid
    assert natsserver.running(theirs) is None and not theirs.pid_file.exists()


def test_a_port_in_use_is_reported_not_fought_over(tmp_path: Path) -> None:
    port = port_block(1)
    nodes = natsserver.start_all(tmp_path / "a", size=1, port=port)
    try:
        with pytest.raises(ConfigError, match=f"port {port}"):
            natsserver.start_all(tmp_path / "b", size=1, port=port)
        with pytest.raises(ConfigError, match="already running"):
            natsserver.start(nodes[0])
    finally:
        natsserver.stop_all(tmp_path / "a")
    assert natsserver.discover(tmp_path / "a")[0].port == port


def test_operator_is_added_to_the_compiled_authorization() -> None:
    text = nats_cli.with_operator(compile_nats(parse(POLICY)))
    assert text.count('"user": "eventward-operator"') == 1 and '"user": "billing"' in text
    reserved = POLICY.replace("analytics:", "eventward-operator:")
    with pytest.raises(ConfigError, match="reserved"):
        nats_cli.with_operator(compile_nats(parse(reserved)))
    with pytest.raises(ConfigError):
        nats_cli.with_operator("authorization { token: x }")


def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root(home: str = typer.Option(None, "--home")) -> None:
        common.STATE.home = home

    nats_cli.register(app)
    return app


def test_nats_up_requires_a_policy_and_down_stops_exactly_what_it_started(tmp_path: Path) -> None:
    home = tmp_path / "home"
    runner = CliRunner()
    refused = runner.invoke(cli(), ["--home", str(home), "nats", "up", "--port", str(port_block(1))])
    assert isinstance(refused.exception, ConfigError) and "no policy" in refused.exception.message
    assert natsserver.discover(home / "run" / "nats") == []  # refused before anything started

    auth = tmp_path / "auth.conf"
    auth.write_text(nats_cli.with_operator(compile_nats(parse(POLICY))))
    port = port_block(1)
    args = ["--home", str(home), "nats", "up", "--port", str(port), "--auth-config", str(auth)]
    up = runner.invoke(cli(), args)
    assert up.exit_code == 0, up.output
    nodes = natsserver.discover(home / "run" / "nats")
    try:
        pid = natsserver.running(nodes[0])
        assert pid is not None and f"tls://127.0.0.1:{port}" in up.output
        assert (home / "certs" / "ca.key").stat().st_mode & 0o777 == 0o600
        assert (nodes[0].dir / "auth.conf").stat().st_mode & 0o777 == 0o600
        status = runner.invoke(cli(), ["--home", str(home), "nats", "status"])
        assert str(pid) in status.output
        cert = runner.invoke(cli(), ["--home", str(home), "nats", "cert", "billing"])
        assert cert.exit_code == 0 and (home / "certs" / "clients" / "billing.key").exists()
    finally:
        down = runner.invoke(cli(), ["--home", str(home), "nats", "down"])
    assert f"pid {pid}" in down.output
    assert natsserver.running(nodes[0]) is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
