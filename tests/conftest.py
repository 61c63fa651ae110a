"""Suite-wide: keep every test's per-user state (``audit verify``'s remembered checkpoints under
``$XDG_CONFIG_HOME/eventward``) in a temporary directory, never in the real home directory."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# pytest-xdist workers inherit COLUMNS=80, which makes the CLI wrap its tables (eventward._internal.cli.common reads
# COLUMNS when stdout is not a terminal); tests read whole lines, as a pipe would get them.
os.environ.pop("COLUMNS", None)


@pytest.fixture(autouse=True, scope="session")
def _private_config_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))
        yield
