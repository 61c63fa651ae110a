"""A data-subject id that is not valid Unicode (undecodable bytes on the command line or stdin
arrive in Python as lone surrogates) is a typed InputError at the key service, not a
UnicodeEncodeError traceback from inside the subject hash; nothing is forgotten or held."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward.errors import InputError

LATIN1_ID = "caf\xe9-7".encode("latin-1")  # undecodable as UTF-8


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    Deployment.init(Home(tmp_path / "home"), admin="admin").close()
    yield tmp_path / "home"


def test_attack_undecodable_subject_sdk(home: Path) -> None:
    with Deployment.open(Home(home)) as dep:
        bad = LATIN1_ID.decode("utf-8", "surrogateescape")
        for attempt in (
            lambda: dep.keys.subject_hash(bad),
            lambda: dep.keys.hold(bad, principal="admin", reason="case-1"),
            lambda: dep.forget(bad, principal="admin"),
        ):
            with pytest.raises(InputError, match="valid Unicode"):
                attempt()
        assert not dep.keys.is_held("caf\xe9-7")


@pytest.mark.parametrize("via", ["argv", "stdin"])
def test_attack_undecodable_subject_cli(home: Path, via: str) -> None:
    exe = shutil.which("eventward", path=str(Path(sys.executable).parent))
    assert exe is not None
    env = {**os.environ, "EVENTWARD_HOME": str(home), "EVENTWARD_PRINCIPAL": "admin", "LC_ALL": "C"}
    args: list[str | bytes] = [exe, "forget", LATIN1_ID if via == "argv" else "-"]
    p = subprocess.run(args, input=LATIN1_ID + b"\n", capture_output=True, env=env, timeout=60)
    err = p.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err, err
    assert p.returncode == 5 and "error (bad_input)" in err, (p.returncode, err)
