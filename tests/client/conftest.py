from __future__ import annotations

from collections.abc import Iterator

import pytest

from .client_world import World


@pytest.fixture
def world(tmp_path) -> Iterator[World]:
    w = World(tmp_path / "home")
    yield w
    w.close()
