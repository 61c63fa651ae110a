"""Suite-wide: keep every test's per-user state (``audit verify``'s remembered checkpoints under
``$XDG_CONFIG_HOME/eventward``) in a temporary directory, never in the real home directory; and
compile the gateway's request validators once per worker instead of once per gateway started;
hand the longest test modules to the xdist workers first; and let the processes the tests start
(the ``eventward`` command, ``eventward serve``, workers) share one bytecode cache."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from eventward._internal.gateway import app as gateway_app

# pytest-xdist workers inherit COLUMNS=80, which makes the CLI wrap its tables (eventward._internal.cli.common reads
# COLUMNS when stdout is not a terminal); tests read whole lines, as a pipe would get them.
os.environ.pop("COLUMNS", None)


def _shared_bytecode_cache() -> None:
    """Hundreds of tests run ``eventward`` in a fresh interpreter. With PYTHONDONTWRITEBYTECODE set
    (it is on the shared development machine) each one compiled eventward's sources again: ~0.6 s
    of CPU of its ~1.5 s start. Children of this run (and the xdist workers, started after this
    module is imported) write and reuse bytecode in a private directory instead, never in the
    tree; it is removed when the run ends. A PYTHONPYCACHEPREFIX set by the caller is kept."""
    if os.environ.get("PYTHONPYCACHEPREFIX"):
        return
    cache = tempfile.mkdtemp(prefix="eventward-test-pycache-")
    os.environ["PYTHONPYCACHEPREFIX"] = cache
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    atexit.register(shutil.rmtree, cache, True)


_shared_bytecode_cache()


def _memoized_compile(compile_: Callable[..., Callable[[Any], Any]]) -> Callable[..., Callable[[Any], Any]]:
    """Every gateway app compiles the fastjsonschema validators of each operation it serves at
    its first request (~66 in all, ~2 s of CPU); the suite starts a hundred gateways in-process.
    Compiled validators are pure functions of their schema, so one
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


# Modules that run longest (one worker each; measured with --durations and junit per-module sums on
# 2 cores), longest first. xdist's --dist loadscope orders modules by their number of tests, so these
# (most hold one or two long end-to-end tests) came last and one worker ran them alone at the end
# while the other idled; and since a worker asks for more as soon as it has <= 2 tests pending, it
# took several of them at once. Started first, they overlap with the many short modules instead.
# A renamed module only loses its priority (the order is a schedule, never a filter).
LONGEST_FIRST = (
    "tests/integration/test_client_mode_processes.py",
    "tests/integration/test_readme.py",
    "tests/integration/test_cli_workflow.py",
    "tests/cli/test_cli_client_mode.py",
    "tests/tooling/test_cli_conventions.py",
    "tests/schema/test_schema_tight.py",
    "tests/keys_net/test_kms_net.py",
    "tests/pg/test_pg_policy.py",
    "tests/guard/test_guard_fastpath.py",
    "tests/integration/test_demo.py",
    "tests/pg/test_pg_gateway_groups.py",
    "tests/transports/test_transports_nats_admin.py",
    "tests/pg/test_pg_serve_outage.py",
    "tests/client/test_client_first_use_key.py",
    "tests/pg/test_pg_pki.py",
    "tests/pg/test_pg_replicas.py",
)


@pytest.hookimpl(tryfirst=True)  # before xdist's own implementation (firstresult)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """--dist loadscope with LONGEST_FIRST at the head of the queue (other modules keep xdist's order)."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class LongestFirst(LoadScopeScheduling):
        _ordered = False

        def _assign_work_unit(self, node: Any) -> None:
            if not self._ordered:  # the queue is complete when the first unit is handed out
                self._ordered = True
                rank = {m: i for i, m in enumerate(LONGEST_FIRST)}
                first = sorted((s for s in self.workqueue if _module(s) in rank), key=lambda s: rank[_module(s)])
                for scope in reversed(first):
                    self.workqueue.move_to_end(scope, last=False)
            super()._assign_work_unit(node)

    return LongestFirst(config, log)


def _module(scope: str) -> str:
    """The module path of an xdist scope (``path/test_x.py`` or ``path/test_x.py::Class``)."""
    return Path(scope.split("::", 1)[0]).as_posix()


@pytest.fixture(autouse=True, scope="session")
def _private_config_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))
        yield
