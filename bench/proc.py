"""Benchmark roles that run as processes of their own, as deployed services do.

    python -m bench.proc consume HOME --events N [--group G] [--marks 10000,100000]
    python -m bench.proc produce HOME --events N [--customers C] [--batch B]
    python -m bench.proc read HOME --events N [--marks ...]   (baseline: read + parse, no checks)

Each role prints ``ready`` once its deployment is open, then one JSON line: counts,
wall-clock instants (``time.time()``, comparable across processes on one machine) and the
process's own peak RSS (VmHWM), so a parent measures a consumer's memory without
its own heap in the number, and a pipeline's time from the first send to the last delivery.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from bench import deployed
from bench.workload import order_placed
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward._internal.log.embedded import EmbeddedLog

ROOT = Path(__file__).resolve().parent.parent
READY = "ready"
IDLE_S = 60.0  # a consumer waiting for a producer that has not started yet


def peak_rss_mb() -> float:
    """This process's own peak resident set so far, in MiB.

    Linux: VmHWM of /proc/self/status, which starts afresh at exec. Not ru_maxrss: that keeps
    the parent's peak from before the fork, so a child would report its parent's heap.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def cpu_seconds() -> float:
    """This process's user + system CPU time so far (getrusage): on a shared machine a ratio of
    CPU times is steadier than one of wall-clock rates."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now, for a server a benchmark starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds_of(pid: int) -> float:
    """Another process's user + system CPU time so far (/proc/PID/stat; 0 where unreadable):
    a server the benchmark started, whose work a client's own CPU time does not show."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def maxrss_mb() -> float:
    """Peak RSS as getrusage reports it (ru_maxrss; kept across exec, so it may include a
    parent's peak before the exec: peak_rss_mb is the process's own)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def _ready() -> None:
    print(READY, flush=True)


class _Marks:
    """Peak RSS each time the event count reaches one of ``marks``."""

    def __init__(self, marks: Sequence[int]) -> None:
        self.marks = set(marks)
        self.count = 0
        self.rss: dict[int, float] = {}

    def __call__(self, _event: object = None) -> None:
        self.count += 1
        if self.count in self.marks:
            self.rss[self.count] = peak_rss_mb()


def consume(home: Path, events: int, group: str, marks: Sequence[int]) -> dict[str, Any]:
    with Deployment.open(Home(home)) as d:
        seen = _Marks(marks)
        _ready()
        t0, c0 = time.time(), cpu_seconds()
        deployed.consume(d, events, group=group, idle_timeout=IDLE_S, on_event=seen)
        t1, c1 = time.time(), cpu_seconds()
    return {"events": events, "started": t0, "last_delivered": t1, "cpu_s": c1 - c0, "rss_mb": seen.rss,
            "peak_rss_mb": peak_rss_mb(), "maxrss_mb": maxrss_mb()}


def produce(home: Path, events: int, customers: int, batch: int) -> dict[str, Any]:
    data = [order_placed(i, customers) for i in range(events)]  # the workload is not what is timed
    with Deployment.open(Home(home)) as d:
        _ready()
        t0 = time.time()
        deployed.produce(d, data, batch=batch)
        t1 = time.time()
    return {"events": events, "first_send": t0, "flushed": t1, "peak_rss_mb": peak_rss_mb()}


def read_plain(home: Path, events: int, marks: Sequence[int]) -> dict[str, Any]:
    """The insecure floor: the same log read and parsed, nothing verified, nothing decrypted."""
    log = EmbeddedLog.open(Home(home))
    try:
        seen = _Marks(marks)
        _ready()
        t0, c0 = time.time(), cpu_seconds()
        pos = 0
        while seen.count < events:
            records = log.read(deployed.TOPIC, pos, min(500, events - seen.count))
            if not records:
                raise RuntimeError(f"the log ended after {seen.count} of {events} events")
            for r in records:
                orjson.loads(r.data)
                seen()
            pos = records[-1].offset + 1
        t1, c1 = time.time(), cpu_seconds()
    finally:
        log.close()
    return {"events": events, "started": t0, "last_delivered": t1, "cpu_s": c1 - c0, "rss_mb": seen.rss,
            "peak_rss_mb": peak_rss_mb(), "maxrss_mb": maxrss_mb()}


def spawn(role: str, home: Path, *args: str) -> subprocess.Popen[str]:
    """Start a role; stderr is inherited so a failing child explains itself in the bench output."""
    cmd = [sys.executable, "-m", "bench.proc", role, str(home), *args]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)


def wait_ready(p: subprocess.Popen[str], role: str) -> None:
    line = p.stdout.readline().strip() if p.stdout else ""
    if line != READY:
        p.kill()
        p.wait()
        raise RuntimeError(f"bench.proc {role} did not start (exit {p.returncode}; see stderr above)")


def report(p: subprocess.Popen[str], role: str, timeout: float = 900.0) -> dict[str, Any]:
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise RuntimeError(f"bench.proc {role} ran longer than {timeout:.0f} s") from None
    if p.returncode != 0:
        raise RuntimeError(f"bench.proc {role} failed with exit {p.returncode} (see stderr above)")
    lines = [ln for ln in out.splitlines() if ln.strip() and ln.strip() != READY]
    return json.loads(lines[-1])


def run_role(role: str, home: Path, *args: str, timeout: float = 900.0) -> dict[str, Any]:
    p = spawn(role, home, *args)
    wait_ready(p, role)
    return report(p, role, timeout)


def _marks(text: str) -> list[int]:
    return [int(m) for m in text.split(",") if m.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.proc", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("role", choices=("consume", "produce", "read"))
    ap.add_argument("home", type=Path)
    ap.add_argument("--events", type=int, required=True)
    ap.add_argument("--group", default="bench")
    ap.add_argument("--marks", type=_marks, default=[])
    ap.add_argument("--customers", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args(argv)
    roles: dict[str, Callable[[], dict[str, Any]]] = {
        "consume": lambda: consume(args.home, args.events, args.group, args.marks),
        "produce": lambda: produce(args.home, args.events, args.customers, args.batch),
        "read": lambda: read_plain(args.home, args.events, args.marks),
    }
    print(json.dumps(roles[args.role]()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
