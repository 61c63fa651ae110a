"""Partitioned topics: does a second process on a second partition double the throughput?

e2e_partitions: end to end (produce, then consume, each event verified, guarded, decrypted and
handed to a handler, offsets committed) on the deployed configuration (``eventward init`` +
examples/policy.yaml, audit log, KeyService with keys.db and the local KMS, embedded log),
as OS processes of their own:

* baseline: ONE process on a topic of one partition, ``n`` events;
* measured: TWO processes at once on a topic of two partitions (policy.yaml
  ``resources: {Topic: {orders: {partitions: 2}}}``), each producing ``n`` events whose
  customers hash to its partition and consuming that partition as a member of one group
  (``partitions=[p]``), so each process does the baseline's work.

The rate is events / (last process done - first process started); the ratio is the two-process
rate over the one-process rate (the goal: >= 1.7). It needs two idle cores: on a machine other
work is loading, the number is pessimistic (the JSON records the load average and the CPU count).
So each process also reports, from Linux schedstat, how long it waited for a CPU (run queue)
and how long it was blocked (wall - CPU - run queue: I/O and locks). Blocked time near zero in
both configurations shows the two processes do not serialize on a shared lock or file;
``ratio_unstarved`` is the ratio with run-queue waits taken out (a projection for two free cores).

A control tells what the home shares from what the machine does: TWO processes at once, each
doing exactly the baseline's work on a home of its own (nothing shared: no file, lock or
database). ``ratio_two_homes`` is what two processes reach on this machine at this moment (two
busy cores run each process slower than one busy core does: shared caches, memory bandwidth,
the host's clock), and ``partitions_vs_two_homes`` is the two-partition rate over it: 1.0 means
the two partitions of one home cost each other nothing (below 1.0: something in the home is shared).

e2e_partitions over NATS: the same one-vs-two-process comparison with the homes' transport on a
nats-server started here (one JetStream stream per partition, group offsets in its KV bucket),
a fresh server for each run. The server is a third process on the same two cores, so its CPU
time is recorded too (``server_cpu_s``, ``cores_used`` with it): the ratio is what a user's two
processes get from a machine that also runs their broker.

    python -m bench.bench_partitions [--quick]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench import deployed, proc
from bench.common import frozen_inputs, print_scenario, scenario, summarize
from bench.subjects import populate
from bench.workload import EVENT_TYPE, ORDER_JSON_SCHEMA, customer, order_placed
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward._internal.log import natsserver
from eventward._internal.log.partitions import partition_for, partition_stream

CUSTOMERS = 1000
GROUP = "bench-partitions"
GO = "go"
PHASES = ("produce_s", "consume_s", "wall_s", "runqueue_s", "blocked_s")


def policy(partitions: int) -> str:
    """The example policy as a user applies it, with the topic's partition count declared."""
    text = deployed.example_policy()
    if partitions > 1:
        text += f"resources:\n  Topic:\n    {deployed.TOPIC}: {{partitions: {partitions}}}\n"
    return text


def make_home(root: Path, partitions: int, config: dict[str, Any] | None = None) -> tuple[Home, dict[int, list[int]]]:
    """A deployed home whose customers' keys exist, and which customers land in which partition;
    ``config`` (the home's eventward.yaml) picks another transport than the embedded log."""
    home = Home(root).ensure()
    if config:
        home.config.write_text(yaml.safe_dump(config))
    with Deployment.init(home, policy_yaml=policy(partitions)) as d:
        proposal = d.registry.propose(deployed.AUTHOR, EVENT_TYPE, ORDER_JSON_SCHEMA)
        d.registry.approve(deployed.APPROVER, EVENT_TYPE, proposal.version)
        for p in (deployed.PRODUCER, deployed.CONSUMER):
            d.trust.ensure(p, by=deployed.ADMIN)
    with Deployment.open(home) as d:
        ids = [customer(c)["id"] for c in range(CUSTOMERS)]
        populate(d.keys, ids, ("pii",))
        by_partition: dict[int, list[int]] = {p: [] for p in range(partitions)}
        for c, cid in enumerate(ids):  # the producer routes by the subject's pseudonym
            by_partition[partition_for(d.keys.subject_hash(cid), partitions)].append(c)
        for p in range(partitions):
            d.transport.create_stream(partition_stream(deployed.TOPIC, p))
    return home, by_partition


def runqueue_seconds() -> float:
    """Time this thread waited for a CPU while runnable (Linux schedstat; 0 elsewhere): wall time
    minus CPU minus this is time spent blocked (I/O, locks)."""
    try:
        return int(Path("/proc/thread-self/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def worker(home: Path, partition: int, events: int, customers: list[int]) -> dict[str, Any]:
    """One service process: produce ``events`` events (all of its partition), then consume its
    partition as a member of the group. Waits for ``go`` on stdin so processes start together."""
    data = [order_placed(customers[i % len(customers)] + CUSTOMERS * (i // len(customers)), CUSTOMERS)
            for i in range(events)]  # i % CUSTOMERS picks the customer: the same partition
    with Deployment.open(Home(home)) as d:
        consumer = d.consumer(deployed.CONSUMER, deployed.TOPIC, group=GROUP, from_beginning=True,
                              partitions=[partition])
        print(proc.READY, flush=True)
        if sys.stdin.readline().strip() != GO:
            raise SystemExit("no go")
        seen = 0

        def handler(_event: object) -> None:
            nonlocal seen
            seen += 1

        with frozen_inputs():  # the input events out of the collector's sight, as in every bench
            t0, c0, q0 = time.time(), proc.cpu_seconds(), runqueue_seconds()
            deployed.produce(d, data)
            t_produced = time.time()
            stats = consumer.run(handler, max_events=events, idle_timeout=5.0)
            t1, c1, q1 = time.time(), proc.cpu_seconds(), runqueue_seconds()
        consumer.close()
    if seen != events or stats.refused:
        raise SystemExit(f"partition {partition}: delivered {seen} of {events} (refused {dict(stats.refused)})")
    return {"events": events, "started": t0, "finished": t1, "cpu_s": c1 - c0, "runqueue_s": q1 - q0,
            "produce_s": t_produced - t0, "consume_s": t1 - t_produced}


def run_processes(partitions: int, events: int, *, homes: int = 1, nats: bool = False) -> dict[str, float]:
    """``partitions`` worker processes on a fresh home, one per partition, started together; or
    (``homes`` > 1, the control) one worker per fresh one-partition home, each the baseline's run.
    ``nats``: the home's transport is a nats-server started for this run alone (and stopped)."""
    root = Path(tempfile.mkdtemp(prefix="ew-bench-partitions-"))
    procs: list[subprocess.Popen[str]] = []
    server_pid = None
    config = None
    try:
        if nats:
            node = natsserver.start_all(root / "nats", size=1, port=proc.free_port())[0]
            server_pid = int(node.pid_file.read_text())
            config = {"transport": "nats", "nats": {"servers": [node.url(tls=False)]}}
        if homes > 1:
            made = [make_home(root / f"home{h}", 1, config) for h in range(homes)]
            runs = [(home, 0, by_partition[0]) for home, by_partition in made]
        else:
            home, by_partition = make_home(root / "home", partitions, config)
            runs = [(home, p, by_partition[p]) for p in range(partitions)]
        for home, p, customers in runs:
            cmd = [sys.executable, "-m", "bench.bench_partitions", "worker", str(home.root), str(p), str(events),
                   ",".join(map(str, customers))]
            procs.append(subprocess.Popen(cmd, cwd=proc.ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          text=True))
        for p in procs:
            proc.wait_ready(p, "worker")
        server_cpu0 = proc.cpu_seconds_of(server_pid) if server_pid else 0.0
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(GO + "\n")
            p.stdin.flush()
        reports = [proc.report(p, "worker") for p in procs]
        server_cpu = proc.cpu_seconds_of(server_pid) - server_cpu0 if server_pid else 0.0
        total = sum(r["events"] for r in reports)
        wall = max(r["finished"] for r in reports) - min(r["started"] for r in reports)
        return {"rate": total / wall, "cpu_s": sum(r["cpu_s"] for r in reports), "wall_s": wall,
                "server_cpu_s": server_cpu,
                "runqueue_s": max(r["runqueue_s"] for r in reports),
                "blocked_s": max(r["finished"] - r["started"] - r["cpu_s"] - r["runqueue_s"] for r in reports),
                # the rate had no process waited for a CPU (each on a core of its own)
                "unstarved_rate": total / max(r["finished"] - r["started"] - r["runqueue_s"] for r in reports),
                "produce_s": max(r["produce_s"] for r in reports), "consume_s": max(r["consume_s"] for r in reports)}
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if nats:
            natsserver.stop_all(root / "nats")
        shutil.rmtree(root, ignore_errors=True)



def run(quick: bool = False) -> list[dict[str, Any]]:
    n = 1_000 if quick else 20_000
    repeats = 1 if quick else 5  # per-round ratios swing 0.5-2x with this shared machine's load: a median of five
    return [_embedded(n, repeats), _over_nats(n, repeats)]


def _over_nats(n: int, repeats: int) -> dict[str, Any]:
    """The one-vs-two-process comparison over a nats-server (a fresh one per run)."""
    load_before = os.getloadavg()
    one: list[dict[str, float]] = []
    two: list[dict[str, float]] = []
    for _ in range(repeats):
        one.append(run_processes(1, n, nats=True))
        two.append(run_processes(2, n, nats=True))
    runs = {"1 process": (one, n), "2 processes": (two, 2 * n)}
    server = {f"nats-server, {k}": v for k, v in runs.items()}
    return _scenario(
        "e2e_partitions over NATS: 2 processes on 2 partitions", n, one, two, load_before,
        # the workers' CPU and the server's: on two cores, what the broker takes the clients lack
        cpu_us_per_event=_per_event(runs, "cpu_s") | _per_event(server, "server_cpu_s"),
        cores_used=_cores(runs, "cpu_s") | _cores(server, "server_cpu_s"),
        phases_s=_phases(runs),
        wiring="deployed: eventward init + examples/policy.yaml (Cedar) + Topic partitions, audit log, "
               "KeyService + local KMS, NATS JetStream transport (one stream per partition, a fresh "
               "nats-server per run)",
    )


def _embedded(n: int, repeats: int) -> dict[str, Any]:
    """The embedded-log comparison, with the two-homes control (module docstring)."""
    one: list[dict[str, float]] = []
    two: list[dict[str, float]] = []
    apart: list[dict[str, float]] = []
    load_before = os.getloadavg()
    for _ in range(repeats):  # one of each per round: load on the machine hits all alike
        one.append(run_processes(1, n))
        two.append(run_processes(2, n))
        apart.append(run_processes(1, n, homes=2))
    one_rate = statistics_median([r["rate"] for r in one])
    two_rate = statistics_median([r["rate"] for r in two])
    apart_rate = statistics_median([r["rate"] for r in apart])
    runs = {"1 process": (one, n), "2 processes": (two, 2 * n), "2 processes, 2 homes": (apart, 2 * n)}
    return _scenario(
        "e2e_partitions: 2 processes on 2 partitions", n, one, two, load_before,
        # CPU per event: 2 partitions as 2 homes means no lock or file of the home is shared on the
        # hot path; both above 1 process is the machine (two busy cores); cores_used: how many it had
        cpu_us_per_event=_per_event(runs, "cpu_s"),
        cores_used=_cores(runs, "cpu_s"),
        # the control: two processes sharing nothing (module docstring); the machine's ceiling now
        ratio_two_homes=round(apart_rate / one_rate, 2),
        ratio_two_homes_per_round=[round(c["rate"] / a["rate"], 2) for a, c in zip(one, apart, strict=True)],
        partitions_vs_two_homes=round(two_rate / apart_rate, 2),
        phases_s=_phases(runs),
        ratio_per_core_used=round(statistics_median([r["rate"] / (r["cpu_s"] / r["wall_s"]) for r in two])
                                  / statistics_median([r["rate"] / (r["cpu_s"] / r["wall_s"]) for r in one]), 2),
        wiring="deployed: eventward init + examples/policy.yaml (Cedar) + Topic partitions, audit log, "
               "KeyService + local KMS, embedded log (one file per partition)",
    )


Runs = dict[str, tuple[list[dict[str, float]], int]]  # label -> (its runs, events per run)


def _scenario(name: str, n: int, one: list[dict[str, float]], two: list[dict[str, float]],
              load_before: tuple[float, float, float], **extra: Any) -> dict[str, Any]:
    """Two processes on two partitions against one on one: what both transports report alike."""
    return scenario(
        name,
        summarize([r["rate"] for r in two]),
        {"1 process on 1 partition": summarize([r["rate"] for r in one])},
        events_per_process=n,
        processes=2,
        partitions=2,
        target_ratio={"1 process on 1 partition": 1.7},
        cpus=os.cpu_count(),
        load_average={"before": [round(x, 2) for x in load_before],
                      "after": [round(x, 2) for x in os.getloadavg()]},
        # what the ratio would be on two free cores: each process's time less its run-queue wait
        # (a projection: it assumes the two cores do not slow each other down)
        ratio_unstarved=round(statistics_median([r["unstarved_rate"] for r in two])
                              / statistics_median([r["unstarved_rate"] for r in one]), 2),
        ratio_per_round=[round(b["rate"] / a["rate"], 2) for a, b in zip(one, two, strict=True)],
        **extra,
    )


def _per_event(runs: Runs, key: str) -> dict[str, float]:
    """Microseconds of ``key`` (CPU seconds) per event, median over each label's runs."""
    return {k: round(statistics_median([r[key] / events for r in rs]) * 1e6, 1) for k, (rs, events) in runs.items()}


def _cores(runs: Runs, key: str) -> dict[str, float]:
    """Cores ``key`` (CPU seconds) kept busy over each run's wall time, median per label."""
    return {k: round(statistics_median([r[key] / r["wall_s"] for r in rs]), 2) for k, (rs, _) in runs.items()}


def _phases(runs: Runs) -> dict[str, dict[str, float]]:
    return {k: {p: round(statistics_median([r[p] for r in rs]), 2) for p in PHASES} for k, (rs, _) in runs.items()}


def statistics_median(values: list[float]) -> float:
    return summarize(values)["median"]


def main(argv: list[str]) -> int:
    if argv[:1] == ["worker"]:
        home, partition, events, customers = argv[1:5]
        out = worker(Path(home), int(partition), int(events), [int(c) for c in customers.split(",")])
        print(json.dumps(out), flush=True)
        return 0
    for res in run(quick="--quick" in argv):
        print_scenario(res)
        print(f"    {({k: v for k, v in res.items() if k not in ('name', 'unit', 'rate', 'baselines')})}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
