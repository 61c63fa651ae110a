"""scripts/ensure-system-deps: what `make test` needs from Debian, installed as root or named in one line."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ensure-system-deps"
BASH = shutil.which("bash") or "/bin/bash"


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


def _run(path: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(path), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run([BASH, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=20, check=False)


def test_not_root_and_missing_stops_with_one_line_naming_the_package(tmp_path: Path) -> None:
    r = _run(_bin(tmp_path, 1000))
    assert r.returncode == 1
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert "softhsm2" in lines[0] and "apt-get install" in lines[0]
    assert "Traceback" not in r.stderr


def test_root_installs_the_missing_packages_with_apt_get(tmp_path: Path) -> None:
    log = tmp_path / "apt.log"
    # the fake apt-get "installs" softhsm2 by putting softhsm2-util on PATH
    fake = (
        f'echo "$@" >> {log}\n'
        f'if [ "$1" = install ]; then printf "#!{BASH}\\n" > {tmp_path}/bin/softhsm2-util; '
        f"{shutil.which('chmod')} 755 {tmp_path}/bin/softhsm2-util; fi"
    )
    r = _run(_bin(tmp_path, 0, fake))
    assert r.returncode == 0, r.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == "update -qq"
    assert calls[1].startswith("install -y -qq") and calls[1].split()[-1] == "softhsm2"


def test_root_whose_install_does_not_provide_the_command_fails_in_one_line(tmp_path: Path) -> None:
    r = _run(_bin(tmp_path, 0, "exit 0"))
    assert r.returncode == 1
    assert r.stderr.splitlines() == ["ensure-system-deps: installed but still missing: softhsm2"]


def test_nothing_missing_is_silent(tmp_path: Path) -> None:
    d = _bin(tmp_path, 1000)
    (d / "softhsm2-util").write_text(f"#!{BASH}\n")
    (d / "softhsm2-util").chmod(0o755)
    r = _run(d)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def test_the_package_list_is_one_block_at_the_top() -> None:
    text = SCRIPT.read_text()
    assert text.index("PACKAGES='") < text.index("set -u")
    assert "\nsofthsm2 softhsm2-util\n" in text
