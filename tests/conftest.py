"""Suite-wide: keep every test's per-user state (``audit verify``'s remembered checkpoints under
``$XDG_CONFIG_HOME/eventward``) in a temporary directory, never in the real home directory; and
compile the gateway's request validators once per worker instead of once per gateway started."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson
import pytest

from eventward._internal.gateway import app as gateway_app

# pytest-xdist workers inherit COLUMNS=80, which makes the CLI wrap its tables (eventward._internal.cli.common reads
# COLUMNS when stdout is not a terminal); tests read whole lines, as a pipe would get them.
os.environ.pop("COLUMNS", None)


def _memoized_compile(compile_: Callable[..., Callable[[Any], Any]]) -> Callable[..., Callable[[Any], Any]]:
    """Every gateway app compiles ~66 fastjsonschema validators (~2 s of CPU); the suite starts
    a hundred gateways in-process. Compiled validators are pure functions of their schema, so one
    compile per distinct (schema, components) serves every gateway of a worker: the same code
    validates, each distinct schema (e.g. another max_batch_events) is still compiled and used."""
    cache: dict[bytes, Callable[[Any], Any]] = {}

    def compiled(schema: Mapping[str, Any], schemas: Mapping[str, Any]) -> Callable[[Any], Any]:
        key = orjson.dumps([schema, schemas], option=orjson.OPT_SORT_KEYS)
        fn = cache.get(key)
        if fn is None:
            fn = cache[key] = compile_(schema, schemas)
        return fn

    return compiled


gateway_app._compile = _memoized_compile(gateway_app._compile)  # AttributeError if it is renamed: fix here


@pytest.fixture(autouse=True, scope="session")
def _private_config_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))
        yield
