"""Building the ``eventward`` command, ``--help`` and ``--version`` load no heavy dependency.

Every ``eventward`` process used to import the deployment, the control-plane HTTP client, the
gateway, the schema compilers and the database drivers before parsing its arguments (~1.3 s of
CPU). The command modules now import them in the command bodies that need them; these tests
pin that down in a fresh interpreter (sys.modules, never a timing), and check the few constants
the CLI spells itself (so that its options' defaults and help need no heavy module) against the
modules they come from.
"""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest

# Third-party packages a command may need, none of which parsing the command line does.
HEAVY = (
    "psycopg", "psycopg_pool", "requests", "urllib3", "boto3", "botocore", "hvac", "cedarpy",
    "fastjsonschema", "fastavro", "nats", "confluent_kafka", "aiohttp", "cryptography", "yaml", "re2",
    "prometheus_client", "email_validator", "asn1crypto", "sqlite3",
)
# eventward's own heavy subsystems (they import the packages above)
HEAVY_INTERNAL = (
    "eventward._internal.deployment", "eventward._internal.gateway", "eventward._internal.control",
    "eventward._internal.store", "eventward._internal.schema", "eventward._internal.policy",
    "eventward._internal.audit", "eventward._internal.keys", "eventward._internal.certstore",
    "eventward._internal.client",
)

_PROBE = """
import sys, orjson
sys.argv = ["eventward", *ARGS]
import typer
from eventward._internal.cli import app, common, remote
typer.main.get_group(app)  # every home-mode command and its options built
remote.client_group()  # and every client-mode one
if sys.argv[1:]:
    try:
        common.run(app)
    except SystemExit as e:
        assert e.code == 0, e.code
loaded = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY_INTERNAL))
sys.__stdout__.write("\\n" + orjson.dumps(loaded).decode() + "\\n")
"""


def _loaded_after(*args: str, prelude: str = "") -> list[str]:
    """The heavy modules loaded in a fresh interpreter after ``prelude``, building both command
    trees and running ``eventward ARGS`` (none: build only)."""
    code = f"HEAVY = {HEAVY!r}\nHEAVY_INTERNAL = {HEAVY_INTERNAL!r}\nARGS = {list(args)!r}\n{prelude}\n" + _PROBE
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTWARD_")}
    env.update(EVENTWARD_HOME="/nonexistent-eventward-home", COLUMNS="100")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, check=False, env=env)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    return list(orjson.loads(r.stdout.splitlines()[-1]))


@pytest.mark.parametrize("args", [(), ("--help",), ("--version",), ("keys", "--help"), ("pki", "revoke", "--help")])
def test_building_the_cli_loads_no_heavy_module(args: tuple[str, ...]) -> None:
    assert _loaded_after(*args) == []


def test_probe_sees_a_heavy_import() -> None:
    """The probe itself works: an eager import of the deployment is caught."""
    loaded = _loaded_after(prelude="import eventward._internal.deployment, eventward._internal.store.pg")
    assert "eventward._internal.deployment" in loaded
    assert "psycopg" in loaded and "psycopg_pool" in loaded


_SQLITE_HOME = """
import sys, tempfile
from pathlib import Path
import orjson
from eventward._internal import demo
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home

home = Home(Path(tempfile.mkdtemp()) / "home").ensure()
with Deployment.init(home, admin=demo.ADMIN) as dep:
    demo.setup(dep, lambda *a: None)
with Deployment.open(home) as dep:
    dep.keys.subject_hash("cust-1")
    dep.trust.ensure(demo.PRODUCER, by=demo.ADMIN)
sys.__stdout__.write("\\n" + orjson.dumps(sorted(m for m in sys.modules if m.startswith("psycopg"))).decode() + "\\n")
"""


def test_a_sqlite_home_never_loads_the_postgresql_driver() -> None:
    """A deployment on the embedded default (init, open, keys, trust) loads no psycopg: ~0.15-0.2 s
    of every command and service start on a SQLite home went to importing it."""
    r = subprocess.run([sys.executable, "-c", _SQLITE_HOME], capture_output=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert orjson.loads(r.stdout.splitlines()[-1]) == []


def test_cli_constants_match_their_modules() -> None:
    """Defaults and help the CLI spells itself (so --help loads nothing heavy) are the real ones."""
    from eventward._internal import certstore
    from eventward._internal.cli import log, pki
    from eventward._internal.client import trust
    from eventward._internal.crypto import seal

    assert (log.SEAL, log.DEAD_LETTER) == (trust.SEAL, trust.DEAD_LETTER)
    assert (log.ED25519, log.HYBRID, log.SUITES) == (seal.ED25519, seal.HYBRID, seal.SUITES)
    assert (pki.DEFAULT_DAYS, pki.CRL_DAYS) == (certstore.DEFAULT_DAYS, certstore.CRL_DAYS)
    assert tuple(certstore.REASONS) == pki.REASONS
