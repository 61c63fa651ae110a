"""Fixtures for the key-service tests: a real home (keyring file, SQLite store) per test."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eventward._internal.audit.base import MemoryAudit
from eventward._internal.home import Home
from eventward._internal.keys.service import KeyService, KeyServiceConfig
from eventward._internal.policy.base import DECRYPT, ENCRYPT, FORGET, HOLD, ROTATE_KEYS, AllowList

SENTINEL = "SENTINEL-jane.doe@example.org-4f1c"
WORKER = Path(__file__).with_name("keys_worker.py")
CLASSES = ("pii", "payment", "health")
WRITERS = ("admin", "p", "producer", "w", "writer")


def make_authz() -> AllowList:
    """admin may do everything; reader is cleared for pii only; nobody else for anything."""
    a = AllowList()
    for action, kind in ((DECRYPT, "Class"), (ROTATE_KEYS, "Class"), (FORGET, "Subject"), (HOLD, "Subject")):
        a.grant("admin", action, (kind, "*"))
    a.grant("reader", DECRYPT, ("Class", "pii"))
    for writer in WRITERS:  # producers' principals in these tests: Encrypt on every class
        a.grant(writer, ENCRYPT, ("Class", "*"))
    return a


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home")


@pytest.fixture
def audit() -> MemoryAudit:
    return MemoryAudit()


@pytest.fixture
def authz() -> AllowList:
    return make_authz()


@pytest.fixture
def open_svc(home, authz, audit):
    """Open (or init on first call) KeyServices on the test home; all closed at teardown."""
    opened: list[KeyService] = []

    def _open(config: KeyServiceConfig | None = None, **kw) -> KeyService:
        kw.setdefault("authorizer", authz)
        kw.setdefault("audit", audit)
        make = KeyService.open if home.keyring.exists() else KeyService.init
        svc = make(home, config=config, **kw)
        opened.append(svc)
        return svc

    yield _open
    for svc in opened:
        with contextlib.suppress(Exception):  # some tests close or break their service on purpose
            svc.close()


@pytest.fixture
def svc(open_svc) -> KeyService:
    return open_svc()


def worker(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(WORKER), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def store_files(home: Home) -> dict[str, bytes]:
    """Raw bytes of the key store and its WAL/SHM files, as a forensic reader would see them."""
    out = {}
    for suffix in ("", "-wal", "-shm"):
        p = home.keys_db.with_name(home.keys_db.name + suffix)
        if p.exists():
            out[p.name] = p.read_bytes()
    return out
