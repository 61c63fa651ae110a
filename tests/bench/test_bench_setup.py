"""What the large benchmarks build on: bulk-loaded keys are the key service's own, bulk-written
events are genuinely sealed and encrypted (tampering is still caught), a child process reports
its own peak memory, and the scaling workload stays valid against the strict schema."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from bench.bench_scaling import SIZES, event
from bench.subjects import load, populate
from bench.workload import EVENT_TYPE, ORDER_JSON_SCHEMA, customer, order_placed
from benchkit import ROOT

from bench import bulk, deployed
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward._internal.keys.service import KeyService
from eventward._internal.policy.base import DECRYPT, ENCRYPT, FORGET, AllowList
from eventward._internal.schema.compiled import compile_schema
from eventward.errors import KeyDestroyed, KeyNotFound


def _svc(root: Path) -> KeyService:
    auth = AllowList([("reader", DECRYPT, ("Class", "*")), ("admin", FORGET, ("Subject", "*")),
                      ("writer", ENCRYPT, ("Class", "*"))])
    return KeyService.init(Home(root), authorizer=auth)


def test_bulk_loaded_keys_unwrap_as_the_services_own_and_shred(tmp_path: Path) -> None:
    with _svc(tmp_path / "home") as svc:
        loaded = [k for chunk in load(svc, (f"s-{i}" for i in range(60)), ("pii", "payment"), chunk=50) for k in chunk]
        assert len(loaded) == 120 and len({k.kid for k in loaded}) == 120
        for k in loaded:
            assert svc.decryption_key(k.kid, k.cls, principal="reader") == k.dek
            assert svc.encryption_key(k.subject, k.cls, principal="writer")[0] == k.kid  # the current version
        with pytest.raises(KeyNotFound):  # a key is bound to its class by the wrap's associated data
            svc.decryption_key(loaded[0].kid, "health", principal="reader")
        victim = loaded[0]
        svc.forget(victim.subject, principal="admin")
        svc.cache.clear()
        with pytest.raises(KeyDestroyed):
            svc.decryption_key(victim.kid, victim.cls, principal="reader")
        assert svc.decryption_key(loaded[-1].kid, loaded[-1].cls, principal="reader") == loaded[-1].dek


def test_bulk_load_refuses_to_silently_skip_existing_subjects(tmp_path: Path) -> None:
    with _svc(tmp_path / "home") as svc:
        assert populate(svc, ["a", "b"], ("pii",)) == 2
        with pytest.raises(RuntimeError, match="stored 1 of 2"):
            populate(svc, ["b", "c"], ("pii",))


def test_bulk_written_events_are_sealed_encrypted_and_tampering_is_caught(tmp_path: Path) -> None:
    home = deployed.init_home(tmp_path / "home")
    assert bulk.write(home, 120, workers=1) == 120
    with sqlite3.connect(home.log_db) as db:
        stored = [bytes(r[0]) for r in db.execute("SELECT data FROM events ORDER BY offset")]
        assert len(stored) == 120
        assert not any(customer(c)["email"].encode() in raw for c, raw in enumerate(stored))  # PII never clear
        hashes = {orjson.loads(raw)["ewsubject"] for raw in stored}
        assert len(hashes) == 120  # one data subject per event
        db.execute("UPDATE events SET data = ? WHERE offset = 7", (stored[7].replace(b'"EUR"', b'"USD"'),))
    got: list = []
    with Deployment.open(home) as d:
        consumer = d.consumer(deployed.CONSUMER, deployed.TOPIC, group="t", from_beginning=True)
        stats = consumer.run(got.append, idle_timeout=0)
        consumer.close()
    assert stats.delivered == 119 and sum(stats.refused.values()) == 1
    assert 7 not in {e.offset for e in got}
    assert sorted(e.data["customer"]["email"] for e in got) == sorted(
        customer(c)["email"] for c in range(120) if c != 7
    )


def test_a_child_process_reports_its_own_peak_memory_not_its_parents() -> None:
    ballast = bytearray(os.urandom(1024)) * (200 * 1024)  # 200 MiB resident in this process
    out = subprocess.run(
        [sys.executable, "-c", "from bench.proc import peak_rss_mb; print(peak_rss_mb())"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    assert len(ballast) == 200 * 1024 * 1024
    assert 1 < float(out) < 150  # ru_maxrss would have reported over 200 (the parent's peak)


def test_scaling_events_fit_the_strict_schema_and_grow_with_the_size_knob() -> None:
    schema = compile_schema(ORDER_JSON_SCHEMA)
    sizes = []
    for nominal in sorted(SIZES):
        data = [event(i, size=nominal) for i in range(20)]
        for d in data:
            schema.validate(d)
        mean = sum(len(orjson.dumps(d)) for d in data) / len(data)
        assert 0.7 * nominal < mean < 1.3 * nominal, (nominal, mean)
        sizes.append(mean)
    assert sizes == sorted(sizes)
    spread = {event(i, subjects_n=1_000)["customer"]["id"] for i in range(1_000)}
    assert len(spread) == 1_000  # every subject once before any repeats
    assert EVENT_TYPE == "OrderPlaced"


def _shape(x: object) -> object:
    """Keys and value types of a JSON document (lists by their first item)."""
    if isinstance(x, dict):
        return {k: _shape(v) for k, v in sorted(x.items())}
    if isinstance(x, list):
        return [_shape(v) for v in x[:1]]
    return type(x).__name__


def test_bulk_written_events_look_like_the_producers_own(tmp_path: Path) -> None:
    """The million-subject setup skips the Producer for speed; what it writes must not drift from
    what the Producer writes (the consumer measured on it would be measured on something else)."""
    bulk_home, real_home = deployed.init_home(tmp_path / "bulk"), deployed.init_home(tmp_path / "real")
    bulk.write(bulk_home, 3, workers=1)
    with Deployment.open(real_home) as d:
        populate(d.keys, (customer(c)["id"] for c in range(3)), ("pii",))
        deployed.produce(d, [order_placed(c, customers=3) for c in range(3)])
    envs = []
    for home in (bulk_home, real_home):
        with sqlite3.connect(home.log_db) as db:
            raws = [bytes(r[0]) for r in db.execute("SELECT data FROM events ORDER BY offset")]
        assert len(raws) == 3
        envs.append([orjson.loads(r) for r in raws])
    for b, r in zip(*envs, strict=True):
        assert _shape(b) == _shape(r)
        assert {k: b[k] for k in ("type", "source", "ewproducer", "ewschema", "ewseq")} == {
            k: r[k] for k in ("type", "source", "ewproducer", "ewschema", "ewseq")}
        for field in ("name", "email", "phone"):  # the same token format, not the same bytes
            assert b["data"]["customer"][field].split(".")[:2] == r["data"]["customer"][field].split(".")[:2]
