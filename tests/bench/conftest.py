"""Fixtures for the benchmark harness tests (see benchkit.py for why there is no __init__.py)."""

from __future__ import annotations

from typing import Any

import pytest
from benchkit import results_doc


@pytest.fixture
def doc() -> dict[str, Any]:
    return results_doc()
