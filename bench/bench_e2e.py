"""End to end on the embedded log, and what seals buy over per-event signatures.

e2e_embedded (the headline): produce and consume OrderPlaced events (bench/workload.py) on
the configuration a user deploys: ``eventward init`` + the example policy (Cedar), the audit
log, the KeyService (keys.db, local KMS, customers' keys existing), the registry. Everything
on: authorization, schema validation, field encryption (3 PII fields, per-subject DEKs),
CloudEvents envelope, sealing, SQLite append (WAL, synchronous=FULL), then seal
verification, replay guard (persisted), decryption and a handler, with group offsets
committed. The rate is events / (produce time + consume time) in one process. Baselines in
the same run, one of each per round: the same events as plain JSON through the same SQLite
layout (the price of security), and a hand-written loop doing the same work without the
framework (same_work_loop: what the framework costs over doing it by hand). The events
given to all of them are frozen out of the garbage collector's sight (common.frozen_inputs,
as for the anchors): a service holds no such list, and every contender would otherwise
pay for walking it.

e2e_embedded ablation: the same flow and events on the SDK's own lighter wiring (in-memory
keys, an allow-list authorizer, no audit log), with the per-step breakdown, in the same rounds.
Labelled: not a deployment anyone runs.

e2e_embedded_pipelined: producer and consumer as two processes on one home at the same
time, as deployed services run, each wired by eventward._internal.deployment (Cedar policy engine,
audit log, KeyService with keys.db and the local KMS, registry, trust registry): everything
above plus audited key unwraps. The rate is events / (last delivery - first send). Baselines:
the same deployed wiring in one process (produce, then consume: e2e_embedded's runs, which
alternate with these in the same rounds) and plain JSON in SQLite.

seal_verify: the consumer's per-event authenticity check. eventward verifies one Ed25519
signature per batch (500 events) plus one SHA-256 per event; the baseline verifies one
Ed25519 signature per event.

    python -m bench.bench_e2e [--quick]
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench import deployed, proc
from bench.common import frozen_inputs, print_scenario, rate, scenario, summarize
from bench.subjects import populate
from bench.workload import EVENT_TYPE, ORDER_JSON_SCHEMA, SOURCE, customer, order_placed
from eventward._internal import envelope
from eventward._internal.client.consumer import Consumer
from eventward._internal.client.dlq import DeadLetters
from eventward._internal.client.producer import Producer
from eventward._internal.client.replay import ReplayGuard
from eventward._internal.client.trust import ACTIVE, TrustedKey, TrustRegistry
from eventward._internal.client.verify import SealVerifier
from eventward._internal.crypto import seal as sealing
from eventward._internal.crypto.fields import FieldEncryptor
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward._internal.keys.memory import MemoryKeys
from eventward._internal.log.base import Record
from eventward._internal.log.embedded import EmbeddedLog
from eventward._internal.policy.base import (
    APPROVE_SCHEMA,
    DECRYPT,
    PROPOSE_SCHEMA,
    PUBLISH,
    ROTATE_KEYS,
    SUBSCRIBE,
    AllowList,
)
from eventward._internal.schema.registry import Registry

TOPIC = "orders"
PRODUCER, CONSUMER, ADMIN = "checkout", "fulfilment", "admin"
BATCH = 500


class _Stack:
    """A fresh home with the whole client stack, torn down after one measured run."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ew-bench-e2e-"))
        self.home = Home(self.dir / "home").ensure()
        self.auth = AllowList(
            [
                (PRODUCER, PUBLISH, ("Topic", TOPIC)),
                (CONSUMER, SUBSCRIBE, ("Topic", TOPIC)),
                (CONSUMER, DECRYPT, ("Class", "pii")),
                (ADMIN, ROTATE_KEYS, ("Producer", "*")),
                ("alice", PROPOSE_SCHEMA, ("Schema", EVENT_TYPE)),
                ("bob", APPROVE_SCHEMA, ("Schema", EVENT_TYPE)),
            ]
        )
        self.registry = Registry.open(self.home, authorizer=self.auth)
        self.registry.propose("alice", EVENT_TYPE, ORDER_JSON_SCHEMA)
        self.registry.approve("bob", EVENT_TYPE, 1)
        self.log = EmbeddedLog.open(self.home)
        self.trust = TrustRegistry.open(self.home, self.auth)
        self.keys = MemoryKeys(self.auth)
        self.enc = FieldEncryptor(self.keys)
        self.trust.register(PRODUCER, by=ADMIN)
        self.trust.register(CONSUMER, by=ADMIN)
        self.guard = ReplayGuard.open(self.home, CONSUMER)

    def producer(self, max_batch: int = BATCH) -> Producer:
        return Producer(
            TOPIC,
            principal=PRODUCER,
            transport=self.log,
            signer=self.trust.signer_for(PRODUCER),
            schemas=self.registry,
            encryptor=self.enc,
            authorizer=self.auth,
            source=SOURCE,
            max_batch=max_batch,
            max_delay_ms=60_000,
        )

    def consumer(self) -> Consumer:
        verifier = SealVerifier(self.trust)
        dlq = DeadLetters(
            TOPIC,
            transport=self.log,
            verifier=verifier,
            authorizer=self.auth,
            signer=self.trust.signer_for(CONSUMER),
        )
        return Consumer(
            TOPIC,
            principal=CONSUMER,
            transport=self.log,
            verifier=verifier,
            schemas=self.registry,
            encryptor=self.enc,
            authorizer=self.auth,
            guard=self.guard,
            dlq=dlq,
            from_beginning=True,
            read_batch=BATCH,
        )

    def close(self) -> None:
        for c in (self.guard, self.trust, self.log, self.registry):
            c.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _e2e(events: list[dict[str, Any]]) -> tuple[float, float]:
    """(produce seconds, consume seconds) of one run on a fresh stack; building it is not timed."""
    stack = _Stack()
    try:
        seen = 0

        def handler(event: Any) -> None:
            nonlocal seen
            seen += 1

        t0 = time.perf_counter()
        with stack.producer() as p:
            for data in events:
                p.send(EVENT_TYPE, data)
        t1 = time.perf_counter()
        stats = stack.consumer().run(handler, idle_timeout=0)
        t2 = time.perf_counter()
        if seen != len(events) or stats.delivered != len(events):
            raise RuntimeError(f"delivered {stats.delivered} of {len(events)} events: {stats}")
        return t1 - t0, t2 - t1
    finally:
        stack.close()


def _deployed_home(root: Path, customers: int) -> Home:
    """A deployed home whose customers' keys exist already (bulk-loaded): a service in its steady state."""
    home = deployed.init_home(root / "home")
    with Deployment.open(home) as d:
        populate(d.keys, (customer(c)["id"] for c in range(customers)), ("pii",))
        d.transport.create_stream(deployed.TOPIC)
    return home


def pipelined(n: int, customers: int = 1000) -> dict[str, float]:
    """Producer and consumer as two processes on one deployed home, running at the same time.

    The consumer starts first and waits; the rate is n / (last delivery - first send).
    """
    root = Path(tempfile.mkdtemp(prefix="ew-bench-pipelined-"))
    try:
        home = _deployed_home(root, customers)
        consumer = proc.spawn("consume", home.root, "--events", str(n), "--group", "pipelined")
        try:
            proc.wait_ready(consumer, "consume")
            produced = proc.run_role("produce", home.root, "--events", str(n), "--customers", str(customers))
            consumed = proc.report(consumer, "consume")
        finally:
            if consumer.poll() is None:
                consumer.kill()
                consumer.wait()
        return {
            "e2e": n / (consumed["last_delivered"] - produced["first_send"]),
            "produce": n / (produced["flushed"] - produced["first_send"]),
            "consumer_rss_mb": consumed["peak_rss_mb"],
            "producer_rss_mb": produced["peak_rss_mb"],
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def sequential(events: list[dict[str, Any]], customers: int = 1000) -> tuple[float, float, float]:
    """(produce seconds, consume seconds, CPU seconds of both) of the deployed wiring in one
    process, producing then consuming ``events`` on a fresh home whose customers' keys exist
    (building it is not timed)."""
    n = len(events)
    root = Path(tempfile.mkdtemp(prefix="ew-bench-sequential-"))
    try:
        home = _deployed_home(root, customers)
        with Deployment.open(home) as d:
            cpu0 = time.process_time()
            _, produce_s = deployed.timed(lambda: deployed.produce(d, events))
            _, consume_s = deployed.timed(lambda: deployed.consume(d, n))
            cpu_s = time.process_time() - cpu0
        return produce_s, consume_s, cpu_s
    finally:
        shutil.rmtree(root, ignore_errors=True)


def plain_json_sqlite(events: list[dict[str, Any]], batch: int = BATCH) -> Callable[[], int]:
    """The insecure baseline: the same events as plain JSON through the same SQLite layout,
    one transaction per ``batch`` (as the log appends one sealed batch per transaction)."""

    def run_once() -> int:
        d = Path(tempfile.mkdtemp(prefix="ew-bench-plain-"))
        try:
            db = sqlite3.connect(d / "log.db", isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("CREATE TABLE events(stream TEXT, offset INTEGER, data BLOB, UNIQUE(stream, offset))")
            for start in range(0, len(events), batch):
                chunk = events[start : start + batch]
                raws = [orjson.dumps(envelope.make(EVENT_TYPE, SOURCE, e)) for e in chunk]
                db.execute("BEGIN IMMEDIATE")
                db.executemany(
                    "INSERT INTO events VALUES (?, ?, ?)", [(TOPIC, start + i, r) for i, r in enumerate(raws)]
                )
                db.execute("COMMIT")
            n, pos = 0, 0
            while True:
                rows = db.execute(
                    "SELECT offset, data FROM events WHERE stream = ? AND offset >= ? ORDER BY offset "
                    "LIMIT ?",
                    (TOPIC, pos, BATCH),
                ).fetchall()
                if not rows:
                    break
                for off, raw in rows:
                    orjson.loads(raw)
                    n += 1
                    pos = off + 1
            db.close()
            return n
        finally:
            shutil.rmtree(d, ignore_errors=True)

    return run_once


def same_work_loop(events: list[dict[str, Any]], batch: int = BATCH) -> Callable[[], int]:
    """The anchor: the same work written by hand, no framework. Validate (fastjsonschema of the
    same document), encrypt the 3 PII fields with a per-customer AES-256-GCM key (random nonce,
    the event id and field name as associated data), one Ed25519 signature per batch over the
    SHA-256 of each event, append to the same SQLite layout (WAL, synchronous=FULL, one
    transaction per batch), read back, verify the batch signature and every event's hash, and
    decrypt. No policy, audit, key store, replay guard or offsets: the floor for this work."""
    import base64
    import hashlib

    import fastjsonschema
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    validate = fastjsonschema.compile(ORDER_JSON_SCHEMA)
    key = Ed25519PrivateKey.generate()
    pub = key.public_key()
    ciphers: dict[str, AESGCM] = {}
    pii = ("name", "email", "phone")

    def run_once() -> int:
        d = Path(tempfile.mkdtemp(prefix="ew-bench-loop-"))
        try:
            db = sqlite3.connect(d / "log.db", isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("CREATE TABLE events(stream TEXT, offset INTEGER, data BLOB, UNIQUE(stream, offset))")
            db.execute("CREATE TABLE seals(stream TEXT, first INTEGER, n INTEGER, sig BLOB)")
            for start in range(0, len(events), batch):
                raws = []
                for i, data in enumerate(events[start : start + batch]):
                    validate(data)
                    eid = f"e-{start + i}"
                    cust = dict(data["customer"])
                    aes = ciphers.get(cust["id"])
                    if aes is None:
                        aes = ciphers[cust["id"]] = AESGCM(AESGCM.generate_key(256))
                    for f in pii:
                        nonce = os.urandom(12)
                        ct = aes.encrypt(nonce, cust[f].encode(), f"{eid}/{f}".encode())
                        cust[f] = base64.urlsafe_b64encode(nonce + ct).decode()
                    raws.append(orjson.dumps({"id": eid, "type": EVENT_TYPE, "data": {**data, "customer": cust}}))
                digest = hashlib.sha256(b"".join(hashlib.sha256(r).digest() for r in raws)).digest()
                db.execute("BEGIN IMMEDIATE")
                db.executemany(
                    "INSERT INTO events VALUES (?, ?, ?)", [(TOPIC, start + i, r) for i, r in enumerate(raws)]
                )
                db.execute("INSERT INTO seals VALUES (?, ?, ?, ?)", (TOPIC, start, len(raws), key.sign(digest)))
                db.execute("COMMIT")
            n = 0
            for first, count, sig in db.execute("SELECT first, n, sig FROM seals ORDER BY first").fetchall():
                rows = db.execute(
                    "SELECT data FROM events WHERE stream = ? AND offset >= ? ORDER BY offset LIMIT ?",
                    (TOPIC, first, count),
                ).fetchall()
                pub.verify(sig, hashlib.sha256(b"".join(hashlib.sha256(r).digest() for (r,) in rows)).digest())
                for (raw,) in rows:
                    env = orjson.loads(raw)
                    cust = env["data"]["customer"]
                    aes = ciphers[cust["id"]]
                    for f in pii:
                        blob = base64.urlsafe_b64decode(cust[f])
                        cust[f] = aes.decrypt(blob[:12], blob[12:], f"{env['id']}/{f}".encode()).decode()
                    n += 1
            db.close()
            return n
        finally:
            shutil.rmtree(d, ignore_errors=True)

    return run_once


class _Resolver:
    """The trust registry's answer for the benchmark's one producer key."""

    def __init__(self, signer: sealing.Signer) -> None:
        self._key = TrustedKey(signer.kid, signer.principal, signer.public_key(), ACTIVE, 0.0)

    def resolve(self, kid: str) -> TrustedKey:
        return self._key


def _sealed_records(n: int, signed_n: int) -> tuple[list[Record], list[tuple[bytes, bytes]], sealing.Signer]:
    """n envelopes in sealed batches of 500, and the first ``signed_n`` of them each with its own
    signature (the per-event baseline verifies ~6,000/s: a fifth of the events give the same rate
    at a fifth of the time)."""
    key = Ed25519PrivateKey.generate()
    signer = sealing.Signer(PRODUCER, key)
    raws = [orjson.dumps(envelope.make(EVENT_TYPE, SOURCE, order_placed(i))) for i in range(n)]
    records: list[Record] = []
    for start in range(0, n, BATCH):
        chunk = raws[start : start + BATCH]
        batch = f"b-{start}"
        blob = sealing.seal(signer, instance="i", stream=TOPIC, batch=batch, first_seq=start, events=chunk)
        records += [Record(TOPIC, start + i, r, batch, i, blob) for i, r in enumerate(chunk)]
    return records, [(r, key.sign(r)) for r in raws[:signed_n]], signer


def breakdown(events: list[dict[str, Any]]) -> dict[str, float]:
    """Microseconds per event of each step, timed alone on the same stack (where time goes)."""
    stack = _Stack()
    try:
        n = len(events)
        version = stack.registry.active(EVENT_TYPE)
        ids = [envelope.new_id() for _ in range(n)]
        out: dict[str, float] = {}

        def step(name: str, fn: Callable[[], Any]) -> Any:
            t0 = time.perf_counter()
            result = fn()
            out[name] = round((time.perf_counter() - t0) / n * 1e6, 2)
            return result

        step("validate", lambda: [version.validate(d) for d in events])
        enc = step(
            "encrypt",
            lambda: [
                stack.enc.encrypt(i, d, version.spec, principal=PRODUCER)
                for i, d in zip(ids, events, strict=True)
            ],
        )
        with stack.producer(max_batch=n + 1) as p:  # send only buffers; flush seals and appends
            p._schemas = _Fixed(version)  # the registry lookup is timed by "validate" above
            step(
                "producer.send (authz+validate+encrypt+envelope)",
                lambda: [p.send(EVENT_TYPE, d) for d in events],
            )
            step("seal + append (one batch, FULL fsync)", p.flush)
        records = stack.log.read(TOPIC, 0, n)
        verifier = SealVerifier(stack.trust)
        step("verify seal", lambda: [verifier.verify_record(r) for r in records])
        envs = step("parse envelope", lambda: [orjson.loads(r.data) for r in records])
        step(
            "decrypt",
            lambda: [
                stack.enc.decrypt(e["id"], e["data"], version.spec, e["ewsubject"], principal=CONSUMER)
                for e in envs
            ],
        )
        del enc
        c = stack.consumer()
        step("consumer.run (all of it)", lambda: c.run(lambda e: None, idle_timeout=0))
        return out
    finally:
        stack.close()


class _Fixed:
    def __init__(self, version: Any) -> None:
        self._v = version

    def active(self, type_: str) -> Any:
        return self._v

    def get(self, type_: str, version: int) -> Any:
        return self._v


def run(quick: bool = False) -> list[dict[str, Any]]:
    n = 2_000 if quick else 30_000
    repeats = 1 if quick else 3
    events = [order_placed(i) for i in range(n)]
    deployed_runs: list[tuple[float, float, float]] = []
    plain_rates: list[float] = []
    loop_rates: list[float] = []
    # CPU seconds per round (this process, all threads): the disk's fsync latency, which moves
    # from run to run, is wall time all three wait for but not CPU time any of them spends.
    cpu: dict[str, list[float]] = {"ew": [], "plain": [], "loop": []}
    runs: list[tuple[float, float]] = []  # the ablation (SDK wiring)
    piped: list[dict[str, float]] = []
    plain_fn, loop_fn = plain_json_sqlite(events), same_work_loop(events)
    steps = breakdown(events[:2_000])
    with frozen_inputs():
        # One of each per round, all on the same n events: load on the machine hits all alike, and
        # the deployed one-process runs are the baseline of both the headline and the pipelined one.
        for _ in range(repeats):
            deployed_runs.append(sequential(events))
            cpu["ew"].append(deployed_runs[-1][2])
            for name, fn, rates in (("plain", plain_fn, plain_rates), ("loop", loop_fn, loop_rates)):
                cpu0 = time.process_time()
                rates.append(rate(fn, 1)["median"])
                cpu[name].append(time.process_time() - cpu0)
            runs.append(_e2e(events))
            piped.append(pipelined(n))
    plain, loop = summarize(plain_rates), summarize(loop_rates)
    out = [
        scenario(
            "e2e_embedded",
            summarize([n / (p + c) for p, c, _ in deployed_runs]),
            {"plain_json_sqlite": plain, "hand-written same-work loop": loop},
            events=n,
            batch=BATCH,
            customers=1000,
            wiring="deployed: eventward init + examples/policy.yaml (Cedar), audit log, KeyService + local KMS",
            produce_rate=statistics.median(n / p for p, _, _ in deployed_runs),
            consume_rate=statistics.median(n / c for _, c, _ in deployed_runs),
            cpu_us_per_event={k: round(1e6 * statistics.median(v) / n, 1) for k, v in cpu.items()},
            cpu_ratio={
                name: {"median": round(statistics.median(each), 3), "each": [round(r, 3) for r in each]}
                for name, each in (
                    ("plain_json_sqlite", [b / e for b, e in zip(cpu["plain"], cpu["ew"], strict=True)]),
                    ("hand-written same-work loop", [b / e for b, e in zip(cpu["loop"], cpu["ew"], strict=True)]),
                )
            } | {"note": "baseline CPU / eventward CPU per round, this process (fsync waits are not CPU)"},
            target_ratio={"plain_json_sqlite": 0.5, "hand-written same-work loop": 0.9},
        )
    ]
    out.append(
        scenario(
            "e2e_embedded ablation: SDK wiring (in-memory keys, allow-list, no audit)",
            summarize([n / (p + c) for p, c in runs]),
            {"plain_json_sqlite": plain, "deployed (e2e_embedded, same rounds)": out[0]["rate"]},
            events=n,
            batch=BATCH,
            produce_rate=statistics.median(n / p for p, _ in runs),
            consume_rate=statistics.median(n / c for _, c in runs),
            us_per_event=steps,
        )
    )
    n_piped = n
    one_process = out[0]["rate"]
    out.append(
        scenario(
            "e2e_embedded_pipelined",
            summarize([r["e2e"] for r in piped]),
            {"same deployed wiring, one process, produce then consume": one_process,
             "plain_json_sqlite (one process)": plain},
            events=n_piped,
            batch=BATCH,
            processes=2,
            wiring="deployed: eventward init + examples/policy.yaml (Cedar), audit log, KeyService + local KMS",
            produce_rate=statistics.median(r["produce"] for r in piped),
            consumer_rss_mb=max(r["consumer_rss_mb"] for r in piped),
            producer_rss_mb=max(r["producer_rss_mb"] for r in piped),
        )
    )

    m = 2_000 if quick else 100_000
    records, signed, signer = _sealed_records(m, m // 5)
    pub = signer.public_key()

    def sealed() -> int:
        verifier = SealVerifier(_Resolver(signer))  # fresh caches: every batch's signature is verified
        for r in records:
            verifier.verify_record(r)
        return len(records)

    def per_event() -> int:
        for raw, sig in signed:
            pub.verify(sig, raw)
        return len(signed)

    out.append(
        scenario(
            "seal_verify",
            rate(sealed, repeats),
            {"per_event_ed25519_verify": rate(per_event, repeats)},
            events=m,
            baseline_events=len(signed),
            batch=BATCH,
            target_ratio=15,
        )
    )
    return out


def main() -> None:
    for res in run(quick="--quick" in sys.argv):
        print_scenario(res)
        extra = {k: v for k, v in res.items() if k not in ("name", "unit", "rate", "baselines")}
        print(f"    {extra}")


if __name__ == "__main__":
    main()
