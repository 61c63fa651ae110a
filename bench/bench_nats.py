"""NATS JetStream: eventward's transport against raw nats-py, on one nats-server started here.

Scenarios (events of 600 bytes, batches of 500, a 16 KB seal per batch):

* append: the transport appending sealed batches (one JetStream message per batch, offset
  CAS, dedup id, PubAck awaited) vs raw ``publish_async`` of one message per event (no
  atomicity, no seal) and vs one message per event in JetStream atomic batches (the
  alternative design: atomic and per-event sequences, but a message per event).
* read: the transport reading those batches (pipelined direct gets) vs a raw pull
  consumer fetching one message per event.

* full path: eventward's Producer and Consumer on the NATS transport as deployed
  (eventward._internal.deployment: Cedar policy, schema validation, field encryption, seals, audit log,
  seal verification, replay guard, audited key unwraps, decryption, group offsets in the KV
  bucket) against raw ``publish_async`` of the same OrderPlaced events as plain CloudEvents
  JSON, one message each (and, end to end, plus a raw pull consumer). Target: >= 1.0x. One
  deployment serves every repeat, as raw's one client does; a deployment opened per run (its
  first use of every key and decision timed) is reported beside it. CPU per event of each side
  (this process + nats-server) too: wall-clock ratios swing with this shared machine's load.

The append ratios are what chose one message per batch (see eventward/_internal/log/nats.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import nats
import orjson
from nats.js import api

from bench import deployed, proc
from bench.common import frozen_inputs, print_scenario, rate, scenario, summarize
from bench.subjects import populate
from bench.workload import EVENT_TYPE, SOURCE, customer, order_placed
from eventward._internal import envelope
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward._internal.log import natsserver
from eventward._internal.log.nats import NatsTransport

EVENT_BYTES = 600
BATCH = 500
CUSTOMERS = 1000
SEAL = os.urandom(16 * 1024)



class _Raw:
    """Raw nats-py on its own event loop: the baselines."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.nc = self.loop.run_until_complete(nats.connect(url))
        self.js = self.nc.jetstream()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def stream(self, name: str, **cfg: Any) -> str:
        subject = f"raw.{name}"
        cfg = api.StreamConfig(name=name, subjects=[subject], storage=api.StorageType.FILE, **cfg)
        self.run(self.js.add_stream(cfg))
        return subject

    async def publish_async(self, subject: str, events: list[bytes]) -> int:
        futures = [await self.js.publish_async(subject, e) for e in events]
        await asyncio.gather(*futures)
        return len(events)

    async def atomic_batches(self, subject: str, events: list[bytes]) -> int:
        for start in range(0, len(events), BATCH):
            bid = uuid.uuid4().hex
            chunk = events[start : start + BATCH]
            for i, e in enumerate(chunk):
                headers = {"Nats-Batch-Id": bid, "Nats-Batch-Sequence": str(i + 1)}
                await self.nc.publish(subject, e, headers=headers)
            commit = {"Nats-Batch-Id": bid, "Nats-Batch-Sequence": str(len(chunk) + 1)}
            commit["Nats-Batch-Commit"] = "1"  # the seal rides on the commit message
            ack = json.loads((await self.nc.request(subject, SEAL, headers=commit, timeout=10)).data)
            if "error" in ack:
                raise RuntimeError(f"atomic batch refused: {ack['error']}")
        return len(events)

    async def pull_all(self, stream: str, subject: str, n: int) -> int:
        sub = await self.js.pull_subscribe(
            subject, durable=None, stream=stream,
            config=api.ConsumerConfig(ack_policy=api.AckPolicy.NONE, deliver_policy=api.DeliverPolicy.ALL),
        )
        got = 0
        while got < n:
            got += len(await sub.fetch(batch=BATCH, timeout=10))
        await sub.unsubscribe()
        return got

    def close(self) -> None:
        self.run(self.nc.close())
        self.loop.close()


def _cpu_s(pid: int) -> float:
    """This process's CPU seconds plus those of process ``pid`` (the nats-server)."""
    return time.process_time() + proc.cpu_seconds_of(pid)


def _eventward_once(d: Deployment, events: list[dict[str, Any]], topic: str) -> tuple[float, float]:
    """(produce seconds, consume seconds) on a fresh topic, through an open deployment."""
    _, produce_s = deployed.timed(lambda: deployed.produce(d, events, topic=topic))
    _, consume_s = deployed.timed(lambda: deployed.consume(d, len(events), topic=topic, group=topic))
    return produce_s, consume_s


def _fresh_once(home: Home, events: list[dict[str, Any]], topic: str) -> tuple[float, float]:
    """The same through a deployment opened for this run alone (the open not timed): every key,
    decision and schema is used for the first time, as just after a service starts."""
    with Deployment.open(home) as d:
        return _eventward_once(d, events, topic)


def _raw_once(raw: _Raw, plain: list[bytes], name: str) -> tuple[float, float]:
    """(publish seconds, pull seconds) of the plain messages on a fresh JetStream stream."""
    subject = raw.stream(name)
    _, publish_s = deployed.timed(lambda: raw.run(raw.publish_async(subject, plain)))
    _, pull_s = deployed.timed(lambda: raw.run(raw.pull_all(name, subject, len(plain))))
    return publish_s, pull_s


def _full_path(url: str, raw: _Raw, root: Path, n: int, repeats: int, nats_pid: int) -> list[dict[str, Any]]:
    """eventward's Producer and Consumer on the NATS transport, everything on, against raw nats-py
    publishing (and pulling) the same events as plain CloudEvents JSON, one message each. Besides
    the wall-clock rates, the CPU each side spent (this process + nats-server) per repeat: on this
    shared machine wall-clock ratios swing with the load, CPU per event much less."""
    home = deployed.init_home(root / "home", config={"transport": "nats", "nats": {"servers": [url]}})
    topics = [f"orders-{k}" for k in range(repeats)]
    fresh_topics = [f"orders-f{k}" for k in range(repeats)]
    with Deployment.open(home) as d:
        populate(d.keys, (customer(c)["id"] for c in range(CUSTOMERS)), ("pii",))
        # Each topic's stream exists before the clock starts, as raw's does (``_Raw.stream``, untimed)
        # and as in a deployment, where ``eventward nats up`` creates one per topic of the policy.
        for topic in (*topics, *fresh_topics, "orders-warm"):
            d.transport.create_stream(topic)
    events = [order_placed(i, CUSTOMERS) for i in range(n)]
    plain = [orjson.dumps(envelope.make(EVENT_TYPE, SOURCE, e)) for e in events]
    ew, fresh, plain_runs, ew_cpu, raw_cpu = [], [], [], [], []
    # One deployment serves every repeat, as raw's one client does (and as a service runs): each
    # repeat is a new topic and group, its keys and decisions cached by the runs before, within
    # their TTLs. One untimed run of each side comes first (as bench_control does). A deployment
    # opened per run is measured too: its first use of every key and decision is in its time.
    with Deployment.open(home) as d:
        warm = min(n, 2000)
        _eventward_once(d, events[:warm], "orders-warm")
        _raw_once(raw, plain[:warm], "RAW_FULL_WARM")
        with frozen_inputs():  # the same inputs for all, out of the collector's sight (bench.common)
            for k in range(repeats):  # interleaved, so a busy moment of the machine hits all alike
                c0 = _cpu_s(nats_pid)
                ew.append(_eventward_once(d, events, topics[k]))
                c1 = _cpu_s(nats_pid)
                plain_runs.append(_raw_once(raw, plain, f"RAW_FULL_{k}"))
                ew_cpu.append(c1 - c0)
                raw_cpu.append(_cpu_s(nats_pid) - c1)
                fresh.append(_fresh_once(home, events, fresh_topics[k]))
    ew_produce, ew_e2e = [n / p for p, _ in ew], [n / (p + c) for p, c in ew]
    fresh_produce, fresh_e2e = [n / p for p, _ in fresh], [n / (p + c) for p, c in fresh]
    raw_publish, raw_e2e = [n / p for p, _ in plain_runs], [n / (p + c) for p, c in plain_runs]
    setup = {
        "events": n,
        "event_data_bytes": round(statistics.mean(len(orjson.dumps(e)) for e in events)),
        "raw_message_bytes": round(statistics.mean(map(len, plain))),
        "wiring": "eventward._internal.deployment (Cedar policy, audit log, KeyService + local KMS) on NatsTransport",
        "target_ratio": 1.0,
        "repeats": repeats,
        "order": "eventward, raw and eventward on a deployment opened per run interleaved per repeat, after one "
                 "untimed run of each; streams made untimed",
    }
    return [
        scenario(
            "nats produce: Producer, everything on",
            summarize(ew_produce),
            {"raw publish_async, msg per event (same events, plain)": summarize(raw_publish),
             "same, a deployment opened per run (first use of every key)": summarize(fresh_produce)},
            paired_ratios=paired(ew_produce, raw_publish),
            **setup,
        ),
        scenario(
            "nats e2e: Producer + Consumer, everything on",
            summarize(ew_e2e),
            {"raw publish_async + pull consumer (plain)": summarize(raw_e2e),
             "same, a deployment opened per run (first use of every key)": summarize(fresh_e2e)},
            paired_ratios=paired(ew_e2e, raw_e2e),
            paired_ratios_fresh={"raw": paired(fresh_e2e, raw_e2e), "note": "a deployment opened per run vs raw"},
            cpu_us_per_event={"eventward (this process + nats-server)": round(statistics.median(ew_cpu) / n * 1e6, 1),
                              "raw (this process + nats-server)": round(statistics.median(raw_cpu) / n * 1e6, 1)},
            cpu_ratio={"raw": paired(raw_cpu, ew_cpu),
                       "note": "raw CPU / eventward CPU per repeat, process + nats-server (>1: eventward cheaper)"},
            **setup,
        ),
    ]


def paired(ours: list[float], theirs: list[float]) -> dict[str, Any]:
    """Each repeat's ratio (eventward and the baseline ran back to back) and their median: on a
    shared machine whose load swings within a run, steadier than the ratio of the medians."""
    ratios = [a / b for a, b in zip(ours, theirs, strict=True) if b]
    return {"median": round(statistics.median(ratios), 3) if ratios else None, "each": [round(r, 3) for r in ratios]}


def run(quick: bool = False, full_events: int | None = None, full_repeats: int | None = None) -> list[dict]:
    """``full_events``/``full_repeats`` size the full-path scenarios (``--events N --repeats R``)."""
    batches, repeats = (2, 1) if quick else (40, 3)
    events = [os.urandom(EVENT_BYTES) for _ in range(BATCH * batches)]
    root = Path(tempfile.mkdtemp(prefix="bench-nats-"))
    nodes = natsserver.start_all(root, size=1, port=proc.free_port())
    url = nodes[0].url(tls=False)
    raw = _Raw(url)
    t = NatsTransport(url)
    try:
        per_event = raw.stream("RAW_EVENTS")
        atomic = raw.stream("RAW_ATOMIC", allow_atomic=True)
        stream = f"bench.{uuid.uuid4().hex[:8]}"
        t.create_stream(stream)

        def append() -> int:
            for start in range(0, len(events), BATCH):
                t.append(stream, uuid.uuid4().hex, events[start : start + BATCH], SEAL)
            return len(events)

        def read() -> int:
            n, pos, end = 0, 0, t.end_offset(stream)
            fresh = NatsTransport(url)
            try:
                while pos < end:
                    got = fresh.read(stream, pos, 2000)
                    n, pos = n + len(got), got[-1].offset + 1
            finally:
                fresh.close()
            return n

        ew_append = rate(append, repeats)
        raw_async = rate(lambda: raw.run(raw.publish_async(per_event, events)), repeats)
        raw_atomic = rate(lambda: raw.run(raw.atomic_batches(atomic, events)), repeats)
        total = len(events) * repeats
        ew_read = rate(read, repeats)
        raw_pull = rate(lambda: raw.run(raw.pull_all("RAW_EVENTS", per_event, total)), repeats)
        setup = {"event_bytes": EVENT_BYTES, "batch": BATCH, "seal_bytes": len(SEAL), "events": len(events)}
        nats_pid = int(nodes[0].pid_file.read_text())
        sizes = (full_events or (1_000 if quick else 20_000), full_repeats or repeats)
        full = _full_path(url, raw, root, *sizes, nats_pid)
        return [
            scenario(
                "nats append: sealed batch per message",
                ew_append,
                {"raw publish_async, msg per event": raw_async, "atomic batch API, msg/event": raw_atomic},
                **setup,
            ),
            scenario(
                "nats read: batch per message", ew_read, {"raw pull consumer, msg/event": raw_pull}, **setup
            ),
            *full,
        ]
    finally:
        t.close()
        raw.close()
        natsserver.stop_all(root)
        shutil.rmtree(root, ignore_errors=True)


def _sizes(argv: list[str]) -> dict[str, int]:
    """``--events N`` / ``--repeats R`` from the command line (the full-path scenarios' sizes)."""
    out = {}
    for flag, name in (("--events", "full_events"), ("--repeats", "full_repeats")):
        if flag in argv:
            out[name] = int(argv[argv.index(flag) + 1])
    return out


if __name__ == "__main__":
    for res in run(quick="--quick" in sys.argv[1:], **_sizes(sys.argv[1:])):
        print_scenario(res)
        if "paired_ratios" in res:
            print(f"    paired ratios (per repeat): {res['paired_ratios']}")
        if "cpu_ratio" in res:
            print(f"    CPU us/event: {res['cpu_us_per_event']}, CPU ratio (per repeat): {res['cpu_ratio']['raw']}")
