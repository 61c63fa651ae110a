"""The CLI's own cost over the SDK it wraps, on one deployment home under the example policy.

cli_produce: ``eventward produce orders FILE --as orders-svc`` (JSON lines parsed, chunked,
ids printed) run in-process through Typer. Baseline: the same OrderPlaced events sent with
``Deployment.producer`` in a loop. Both validate, authorize, encrypt 3 PII fields and seal.

cli_consume: ``eventward consume orders --as shipping-svc`` (verify, decrypt, one JSON line
per event on stdout) in-process, a new group each run. Baseline: ``Deployment.consumer``
delivering the same events to a no-op handler.

cli_startup: one ``eventward trust list`` process (interpreter, imports, Deployment.open) per
command, in commands/min. Baseline: ``python -c pass``. This is what each step of a shell
script costs; the workflow test's runtime is mostly this.

cli_help: one ``eventward --help`` process: the interpreter, typer and the command tree, which
loads none of the heavy modules (the commands import them: tests/cli/test_cli_lazy_imports.py).
Baseline: ``python -c pass``.

Measured at 280f756 (before) and 548d32b (after) (whole processes, bytecode cached, A/B interleaved,
median of 5, load 5-6 on 2 cores), CPU seconds before -> after: ``--help`` 0.98 -> 0.30 (0.32x),
``--version`` 0.87 -> 0.26 (0.30x), ``keys status --json`` 0.80 -> 0.77 (0.90x), ``trust list``
0.76 -> 0.65 (0.90x; a command that opens the deployment still loads it: store.dsn imports psycopg
even for an embedded home). ``serve`` until listening (median of 4): 2.56 -> 0.81 s CPU, 5.0 ->
1.7 s wall, the gateway's request validators now compiled per operation at first use.

    python -m bench.bench_cli [--quick]
"""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
from typer.testing import CliRunner

from bench.common import print_scenario, rate, scenario
from eventward._internal import demo
from eventward._internal.cli import app
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home

TOPIC, TYPE = demo.TOPIC, demo.EVENT_TYPE


def _setup(root: Path) -> Home:
    home = Home(root / "home")
    with Deployment.init(home, policy_yaml=demo.example("policy.yaml")) as dep:
        doc = orjson.loads(demo.example("order_placed.schema.json"))
        dep.registry.propose(demo.AUTHOR, TYPE, doc)
        dep.registry.approve(demo.APPROVER, TYPE, 1)
        for p in (demo.PRODUCER, demo.SHIPPING):
            dep.trust.ensure(p, by=demo.ADMIN)
    return home


def _cli(home: Home, *args: str) -> str:
    r = CliRunner().invoke(app, ["--home", str(home.root), *args], catch_exceptions=False)
    if r.exit_code != 0:
        raise RuntimeError(f"eventward {args[0]} exited {r.exit_code}")
    return r.stdout


def run(quick: bool = False) -> list[dict[str, Any]]:
    n = 100 if quick else 5_000
    repeats = 2 if quick else 3
    root = Path(tempfile.mkdtemp(prefix="ew-bench-cli-"))
    try:
        home = _setup(root)
        events = [demo.order(i) for i in range(n)]
        lines = root / "orders.jsonl"
        lines.write_bytes(b"".join(orjson.dumps({"type": TYPE, "data": e}) + b"\n" for e in events))

        def cli_produce() -> int:
            return len(_cli(home, "produce", TOPIC, str(lines), "--as", demo.PRODUCER).split())

        def sdk_produce() -> int:
            with Deployment.open(home) as dep, dep.producer(demo.PRODUCER, TOPIC) as producer:
                for e in events:
                    producer.send(TYPE, e, source="/bench")
                producer.flush()
            return n

        groups = iter(range(1_000_000))

        def cli_consume() -> int:
            out = _cli(home, "consume", TOPIC, "--as", demo.SHIPPING, "-g", f"c{next(groups)}",
                       "--from-beginning", "--idle", "0", "--max", str(n))
            return out.count("\n")

        def sdk_consume() -> int:
            with Deployment.open(home) as dep:
                consumer = dep.consumer(demo.SHIPPING, TOPIC, group=f"s{next(groups)}", from_beginning=True)
                return consumer.run(lambda e: None, max_events=n, idle_timeout=0).delivered

        produced = rate(cli_produce, repeats)
        results = [
            scenario("cli_produce", produced, {"Deployment.producer (SDK)": rate(sdk_produce, repeats)},
                     events=n, policy="examples/policy.yaml")
        ]
        with contextlib.redirect_stderr(io.StringIO()):  # consume's summary lines
            consumed = rate(cli_consume, repeats)
        results.append(
            scenario("cli_consume", consumed, {"Deployment.consumer (SDK)": rate(sdk_consume, repeats)},
                     events=n, decrypted_classes="pii")
        )

        exe = shutil.which("eventward", path=str(Path(sys.executable).parent)) or "eventward"

        def spawn(*cmd: str) -> int:
            subprocess.run(cmd, check=True, capture_output=True, timeout=120)
            return 60  # one command: rate() then reads commands per minute

        spawns = 1 if quick else 5
        startup = rate(lambda: spawn(exe, "--home", str(home.root), "trust", "list"), spawns)
        bare = rate(lambda: spawn(sys.executable, "-c", "pass"), spawns)
        results.append(scenario("cli_startup", startup, {"python -c pass": bare}, unit="commands/min"))
        helped = rate(lambda: spawn(exe, "--help"), spawns)
        results.append(scenario("cli_help", helped, {"python -c pass": bare}, unit="commands/min"))
        return results
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    for res in run(quick="--quick" in sys.argv):
        print_scenario(res)
