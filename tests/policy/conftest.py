"""Fixtures for policy tests: a deployment home with the reference policy, a settable clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventward._internal.audit.base import MemoryAudit
from eventward._internal.home import Home
from eventward._internal.policy.engine import PolicyEngine
from eventward._internal.policy.store import PolicyStore

from .support import ABAC, POLICY, Clock, utc


@pytest.fixture
def clock() -> Clock:
    return Clock(utc(2025, 3, 4, 12, 0))


@pytest.fixture
def audit() -> MemoryAudit:
    return MemoryAudit()


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home").ensure()


@pytest.fixture
def store(home: Home, audit: MemoryAudit, clock: Clock) -> PolicyStore:
    s = PolicyStore.open(home, audit=audit, clock=clock)
    s.init(POLICY, {"abac.cedar": ABAC})
    yield s
    s.close()


@pytest.fixture
def engine(home: Home, store: PolicyStore, audit: MemoryAudit, clock: Clock) -> PolicyEngine:
    e = PolicyEngine.open(home, audit=audit, clock=clock)
    yield e
    e.close()
