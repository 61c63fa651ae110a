"""scripts/ensure-system-deps: what make needs from Debian, installed as root or named in one line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ensure-system-deps"
BASH = shutil.which("bash") or "/bin/bash"
CHMOD = shutil.which("chmod") or "/bin/chmod"


def _bin(tmp_path: Path, uid: int, apt_get: str | None = None) -> Path:
    """A PATH of one directory: a fake ``id`` (no softhsm2-util), and optionally a fake apt-get."""
    d = tmp_path / "bin"
    d.mkdir()
    (d / "id").write_text(f"#!{BASH}\necho {uid}\n")
    if apt_get is not None:
        (d / "apt-get").write_text(f"#!{BASH}\n{apt_get}\n")
    for f in d.iterdir():
        f.chmod(0o755)
    return d


def _run(path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {"PATH": str(path), "HOME": os.environ.get("HOME", "/tmp"), "PYTHON": sys.executable, **env}
    return subprocess.run([BASH, str(SCRIPT), *args], env=full, capture_output=True, text=True, timeout=20,
                          check=False)


def test_not_root_and_missing_stops_with_one_line_naming_the_package(tmp_path: Path) -> None:
    """The real list, with a PATH lacking softhsm2-util and a fake non-root id."""
    r = _run(_bin(tmp_path, 1000))
    assert r.returncode == 1
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert "softhsm2" in lines[0] and "sudo apt-get install -y" in lines[0]
    assert "Traceback" not in r.stderr


def test_base_only_checks_what_creating_the_venv_needs(tmp_path: Path) -> None:
    d = _bin(tmp_path, 1000)
    assert (_run(d, "--base").returncode, _run(d, "--base").stderr) == (0, "")  # softhsm2 not asked for
    fake_python = d / "py"
    fake_python.write_text(f"#!{BASH}\nexit 1\n")  # a Python without ensurepip
    fake_python.chmod(0o755)
    r = _run(d, "--base", PYTHON=str(fake_python))
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "python3-venv" in r.stderr


def test_root_installs_the_missing_packages_with_apt_get(tmp_path: Path) -> None:
    log = tmp_path / "apt.log"
    # the fake apt-get "installs" softhsm2 by putting softhsm2-util on PATH
    fake = (
        f'echo "$@" >> {log}\n'
        f'if [ "$1" = install ]; then printf "#!{BASH}\\n" > {tmp_path}/bin/softhsm2-util; '
        f"{CHMOD} 755 {tmp_path}/bin/softhsm2-util; fi"
    )
    r = _run(_bin(tmp_path, 0, fake), ENSURE_SYSTEM_DEPS_LIST="softhsm2 softhsm2-util\n")
    assert r.returncode == 0, r.stderr
    calls = log.read_text().splitlines()
    assert calls == ["update -qq", "install -y -qq softhsm2"]


def test_root_whose_install_does_not_provide_the_command_fails_in_one_line(tmp_path: Path) -> None:
    r = _run(_bin(tmp_path, 0, "exit 0"), ENSURE_SYSTEM_DEPS_LIST="softhsm2 softhsm2-util\n")
    assert r.returncode == 1
    assert r.stderr.splitlines() == ["ensure-system-deps: installed but still missing: softhsm2"]


def test_root_whose_apt_get_fails_says_so_in_one_line(tmp_path: Path) -> None:
    r = _run(_bin(tmp_path, 0, "echo 'E: Unable to locate package softhsm2' >&2; exit 100"),
             ENSURE_SYSTEM_DEPS_LIST="softhsm2 softhsm2-util\n")
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        "ensure-system-deps: 'apt-get install softhsm2' failed: E: Unable to locate package softhsm2"
    ]


def test_nothing_missing_is_silent(tmp_path: Path) -> None:
    d = _bin(tmp_path, 1000)
    (d / "softhsm2-util").write_text(f"#!{BASH}\n")
    (d / "softhsm2-util").chmod(0o755)
    r = _run(d, ENSURE_SYSTEM_DEPS_LIST=f"softhsm2 softhsm2-util\npython3-venv python:ensurepip\nx {SCRIPT}\n")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


@pytest.mark.parametrize("goal", ["test", "bench"])
def test_make_test_stops_at_once_with_one_line(tmp_path: Path, goal: str) -> None:
    """The Makefile wiring: `make test` (and `make bench`, whose HSM benchmark and slow tests need
    SoftHSM2 too) as a non-root user without softhsm2-util prints make's one '*** ... Stop.' line
    naming the package, before building anything (-n: nothing would run)."""
    d = _bin(tmp_path, 1000)
    for tool in ("make", "env", "sh"):
        found = shutil.which(tool)
        assert found is not None
        (d / tool).symlink_to(found)
    (d / "bash").symlink_to(BASH)
    r = subprocess.run(
        ["make", "-n", goal, f"PYTHON={sys.executable}"],
        cwd=SCRIPT.parents[1], env={"PATH": str(d), "HOME": os.environ.get("HOME", "/tmp")},
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Makefile:") and lines[0].endswith("Stop."), r.stderr
    assert "softhsm2" in lines[0] and "sudo apt-get install -y" in lines[0]


def test_the_package_lists_are_blocks_at_the_top() -> None:
    text = SCRIPT.read_text()
    assert text.index("BASE='") < text.index("PACKAGES='") < text.index("set -u")
    assert "\nsofthsm2 softhsm2-util\n" in text and "\npython3-venv python:ensurepip\n" in text
