"""The README's walk-through, run as written: the shell lines of "Using it", the Python snippet,
and the "Moving from embedded to NATS JetStream" steps, all read from README.md itself (so the
README and this test cannot drift), each line a subprocess in a temporary directory holding
``./prod``. The only substitution: ``nats up`` gets a free ``--port`` (and eventward.yaml the
matching server URLs, as ``nats up`` prints them), so parallel runs never collide on 4222.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent

# What each README line must do: (command marker, text its output must contain).
EXPECT = [
    (" init ", "initialized"),
    ("policy apply", "active"),
    ("trust register", "registered"),
    ("schema propose", "proposed"),
    ("schema approve", "is active"),
    (" produce ", ""),
    (" consume ", ""),
    ("policy explain", "DENY"),
    (" forget ", "erasure certificate"),
    ("audit verify", "OK:"),
    ("nats up", "Clients:"),
    ("nats cert", "certificate"),
]


def section(title: str) -> str:
    start = README.index(f"\n## {title}")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else len(README)]


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def shell_lines(block: str) -> list[str]:
    """Commands of a ```sh block: continuations joined, comment-only lines dropped."""
    joined = block.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


USING = section("Using it")
WALK = shell_lines(blocks(USING, "sh")[0])
SNIPPET = blocks(USING, "python")[0]
NATS = section("Moving from embedded to NATS")
NATS_STEPS = shell_lines(blocks(NATS, "sh")[0])
NATS_YAML = blocks(NATS, "yaml")[0]


class Shell:
    """Runs README lines with bash in ``cwd`` (``src`` links to the repository's, as in a checkout)."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        (cwd / "src").symlink_to(ROOT / "src")
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "COLUMNS": "200"}
        for var in ("EVENTWARD_HOME", "EVENTWARD_PRINCIPAL", "EVENTWARD_PASSPHRASE"):
            self.env.pop(var, None)

    def run(self, line: str, rcs: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
        p = subprocess.run(
            ["bash", "-c", line], capture_output=True, text=True, env=self.env, cwd=self.cwd, timeout=120
        )
        assert p.returncode in rcs, (line, p.returncode, p.stdout[-2000:], p.stderr[-2000:])
        assert "Traceback" not in p.stderr, (line, p.stderr[-2000:])
        return p

    def step(self, line: str) -> subprocess.CompletedProcess:
        """One README line with its expected outcome (every line must have one)."""
        want = [text for marker, text in EXPECT if marker in f" {line} "]
        assert want, f"README line without an expectation in this test: {line}"
        # explain answers DENY; whether that is exit 0 or a denial code is the CLI's convention
        p = self.run(line, (0, 1, 3) if "policy explain" in line else (0,))
        assert want[0] in p.stdout + p.stderr, (line, p.stdout[-2000:], p.stderr[-2000:])
        return p

    def python(self, code: str) -> subprocess.CompletedProcess:
        p = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=self.env, cwd=self.cwd, timeout=120
        )
        assert p.returncode == 0 and "Traceback" not in p.stderr, (p.stdout[-2000:], p.stderr[-2000:])
        return p


def first(marker: str) -> str:
    return next(line for line in WALK if marker in line)


def events(p: subprocess.CompletedProcess) -> dict[str, dict]:
    out = {}
    for line in p.stdout.splitlines():
        if line.startswith("{"):
            e = orjson.loads(line)
            out[e["id"]] = e
    return out


def check_produced_and_consumed(sh: Shell) -> None:
    """The README's produce and consume lines: shipping-svc (cleared for pii) reads Ada in clear."""
    produced = sh.step(first(" produce ")).stdout.split()
    assert len(produced) >= 1
    got = events(sh.step(first(" consume ")))
    assert produced[-1] in got, (produced, list(got))
    customer = got[produced[-1]]["data"]["customer"]
    assert (customer["name"], customer["email"]) == ("Ada", "ada@example.com")


def check_snippet(sh: Shell) -> None:
    out = sh.python(SNIPPET).stdout
    assert "'order_id': 'ord-1001'" in out and "'name': 'Grace'" in out, out


def test_readme_walkthrough_runs_as_written(tmp_path):
    assert all("--home ./prod" in line for line in WALK)
    sh = Shell(tmp_path)
    for line in WALK:
        if " produce " in line:
            check_produced_and_consumed(sh)
        elif " consume " not in line:
            p = sh.step(line)
            if " forget " in line:
                assert "gdpr-art17" in p.stdout
    assert (tmp_path / "prod" / "master.key").stat().st_mode & 0o077 == 0
    check_snippet(sh)


def _free_base() -> int:
    """A client port p with p..p+2 and the route ports p+2000..p+2002 free on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + 2002 > 65535:
            continue
        try:
            for port in [base + i for i in range(3)] + [base + 2000 + i for i in range(3)]:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError("no free port range on 127.0.0.1")


def _gone(pid: int) -> bool:
    """No such process, or a zombie waiting for its reaper (it runs no more)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.timeout(240)
def test_readme_move_to_nats_runs_as_written(tmp_path):
    """The shipped example policy on a 3-server mTLS cluster: the README's produce, consume and
    Python snippet work with the compiled permissions (no stream listing, typed grant on orders)."""
    sh = Shell(tmp_path)
    setup = WALK[: WALK.index(first(" produce "))]
    for line in setup:
        sh.step(line)
    port = _free_base()
    assert re.search(r"^eventward --home \./prod nats up --cluster 3\b", NATS_STEPS[0])
    assert yaml.safe_load(NATS_YAML)["nats"]["servers"] == [f"tls://127.0.0.1:{4222 + i}" for i in range(3)]
    servers = [f"tls://127.0.0.1:{port + i}" for i in range(3)]
    try:
        up = sh.step(NATS_STEPS[0].replace("--cluster 3", f"--cluster 3 --port {port}", 1))
        assert orjson.dumps(servers).decode().replace(",", ", ") in up.stdout  # what eventward.yaml gets
        for line in NATS_STEPS[1:]:
            sh.step(line)
        config_path = tmp_path / "prod" / "eventward.yaml"
        config = yaml.safe_load(config_path.read_text()) or {}
        settings = yaml.safe_load(NATS_YAML)
        settings["nats"]["servers"] = servers
        config.update(settings)
        config_path.write_text(yaml.safe_dump(config))
        check_produced_and_consumed(sh)
        check_snippet(sh)
    finally:
        down = sh.run("eventward --home ./prod nats down")
    pids = [int(pid) for pid in re.findall(r"stopped ew-\d \(pid (\d+)\)", down.stdout)]
    assert len(pids) == 3, down.stdout
    deadline = time.monotonic() + 10
    while not all(_gone(pid) for pid in pids):
        assert time.monotonic() < deadline, "nats-servers still running after nats down"
        time.sleep(0.05)
