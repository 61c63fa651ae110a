"""Fixtures for the audit tests: a fresh home, an open log, and raw-SQLite tampering helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventward._internal.audit.log import AuditLog
from eventward._internal.home import Home


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home").ensure()


@pytest.fixture
def log(home: Home):
    with AuditLog.open(home) as lg:
        yield lg
