"""Key service: crypto-shredding latency at scale, and what the DEK cache buys on the hot paths.

    python -m bench.bench_keys [--quick]

forget: p50/p99 latency with 10k / 100k / 1M subjects (quick: 1k), each holding one real
wrapped DEK per class (pii, payment, health), bulk-loaded in parallel (bench/subjects.py). Baseline: a
plain SQLite DELETE of the same rows (no secure_delete, no WAL truncation, no ledger), i.e.
what secure erasure costs.
decryption_key / encryption_key: the LRU cache against the same service with caching off
(a store read and a KEK unwrap per call).
encryption_keys: get-or-create of a control-API request's new subjects (500) in one batch against
the one-key path the control plane used before (one committed transaction per key).
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import interleaved, print_scenario, rate, scenario
from bench.subjects import load, populate_home
from eventward._internal.home import Home
from eventward._internal.keys.service import KeyService, KeyServiceConfig
from eventward._internal.policy.base import DECRYPT, ENCRYPT, FORGET, AllowList

ADMIN = "admin"


def _authz() -> AllowList:
    return AllowList([(ADMIN, DECRYPT, ("Class", "*")), (ADMIN, FORGET, ("Subject", "*")),
                      ("producer", ENCRYPT, ("Class", "*"))])


def _percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def _forget_scenario(root: Path, n: int, samples: int) -> dict[str, Any]:
    home = Home(root / f"forget-{n}")
    KeyService.init(home, authorizer=_authz()).close()
    populate_home(home, "subject-{}", n)
    plain = root / f"plain-{n}.db"
    shutil.copy(home.keys_db, plain)
    victims = random.Random(n).sample(range(n), samples)
    per_round = max(1, samples // 3)

    latencies: list[float] = []
    with KeyService.open(home, authorizer=_authz()) as svc:
        it = iter(victims)

        def forget_some() -> int:
            for _ in range(per_round):
                subject = f"subject-{next(it)}"
                t0 = time.perf_counter()
                svc.forget(subject, principal=ADMIN)
                latencies.append(time.perf_counter() - t0)
            return per_round

        hashes = [svc.subject_hash(f"subject-{v}") for v in victims]  # pseudonyms: gone after forget
        measured = rate(forget_some, repeats=3)

    db = sqlite3.connect(plain, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA secure_delete=OFF")
    hit = iter(hashes)

    def plain_delete() -> int:
        for _ in range(per_round):
            db.execute("DELETE FROM deks WHERE subject_hash = ?", (next(hit),))
        return per_round

    baseline = rate(plain_delete, repeats=3)
    db.close()
    return scenario(
        f"keys forget ({n:,} subjects x 3 classes)", measured,
        {"plain SQLite DELETE (no secure erase)": baseline}, unit="forgets/s",
        subjects=n, deks=3 * n,
        p50_ms=round(statistics.median(latencies) * 1000, 3),
        p99_ms=round(_percentile(latencies, 99) * 1000, 3),
    )


def _cache_scenarios(root: Path, kids_n: int, lookups: int) -> list[dict[str, Any]]:
    home = Home(root / "cache")
    with KeyService.init(home, authorizer=_authz()) as svc:  # bulk-loaded: one fsync per chunk, not two per key
        kids = [k.kid for chunk in load(svc, (f"s{i}" for i in range(kids_n)), ("pii",)) for k in chunk]
    rng = random.Random(7)
    seq = [rng.choice(kids) for _ in range(lookups)]
    subjects = [f"s{rng.randrange(kids_n)}" for _ in range(lookups)]
    out = []
    with KeyService.open(home, authorizer=_authz()) as cached, KeyService.open(
        home, authorizer=_authz(), config=KeyServiceConfig(cache_max=0)
    ) as uncached:
        def decrypt(svc: KeyService, ids: list[str]) -> int:
            for kid in ids:
                svc.decryption_key(kid, "pii", principal=ADMIN)
            return len(ids)

        def encrypt(svc: KeyService, subs: list[str]) -> int:
            for s in subs:
                svc.encryption_key(s, "pii", principal="producer")
            return len(subs)

        short = max(1, lookups // 10)  # uncached calls are slow: fewer of them
        r_cached = rate(lambda: decrypt(cached, seq), repeats=3)
        out.append(scenario(
            "keys decryption_key (LRU cache)", r_cached,
            {"decryption_key, cache off (store + unwrap)": rate(lambda: decrypt(uncached, seq[:short]))},
            unit="calls/s", hit_rate=round(cached.cache.hit_rate(), 4), keys=kids_n,
        ))
        r_enc = rate(lambda: encrypt(cached, subjects), repeats=3)
        out.append(scenario(
            "keys encryption_key (LRU cache)", r_enc,
            # a use-count write (fsync) per uncached call: a fifth of the calls give the same rate
            {"encryption_key, cache off (store + unwrap)": rate(lambda: encrypt(uncached, subjects[: short // 5]))},
            unit="calls/s", keys=kids_n,
        ))
    return out


ACK_POLICY = """\
principals:
  admin: {type: user, roles: [ops]}
roles:
  ops:
    - {allow: manage_policy}
    - {allow: [forget, hold]}
    - {allow: subscribe, topic: orders}
    - {allow: [encrypt, decrypt], class: "*"}
"""


def _ack_scenario(root: Path, groups: int, samples: int, notice_interval: float) -> dict[str, Any]:
    """forget -> every one of ``groups`` consumer groups acknowledged (hooks run, keys dropped),
    each group's consumer in its own thread running its ordinary run loop, which answers
    notices every ``notice_interval`` seconds. Baseline: the same forget with no group."""
    import threading

    from eventward._internal.deployment import Deployment

    home = Home(root / "acks")
    Deployment.init(home, policy_yaml=ACK_POLICY).close()
    latencies: list[float] = []
    with Deployment.open(home) as dep:
        dep.transport.create_stream("orders")
        stop = threading.Event()
        consumers = [dep.consumer(ADMIN, "orders", group=f"group-{i}", notice_interval=notice_interval)
                     for i in range(groups)]
        purged: list[str] = []
        for c in consumers:
            c.on_forget(purged.append)  # the application's read model purge

        def loop(c: Any) -> None:
            while not stop.is_set():
                c.run(lambda ev: None, idle_timeout=0.05)

        threads = [threading.Thread(target=loop, args=(c,), daemon=True) for c in consumers]
        for t in threads:
            t.start()
        subjects = iter(range(10**9))
        per_round = max(1, samples // 3)

        def forget_until_acked() -> int:
            for _ in range(per_round):
                subject = f"subject-{next(subjects)}"
                dep.keys.encryption_key(subject, "pii", principal=ADMIN)
                t0 = time.perf_counter()
                ref = dep.forget(subject, principal=ADMIN).receipt.subject_hash
                while dep.notices.status(ref).completed is None:  # type: ignore[union-attr]
                    time.sleep(0.001)
                latencies.append(time.perf_counter() - t0)
            return per_round

        try:
            measured = rate(forget_until_acked, repeats=3)
        finally:
            stop.set()
            for t in threads:
                t.join(10)
            for c in consumers:
                c.close()
        assert len(purged) == groups * 3 * per_round
    bare = Home(root / "acks-bare")
    Deployment.init(bare, policy_yaml=ACK_POLICY).close()
    with Deployment.open(bare) as dep:
        n = iter(range(10**9))

        def forget_alone() -> int:
            for _ in range(per_round):
                subject = f"subject-{next(n)}"
                dep.keys.encryption_key(subject, "pii", principal=ADMIN)
                dep.forget(subject, principal=ADMIN)
            return per_round

        baseline = rate(forget_alone, repeats=3)
    return scenario(
        f"forget -> all {groups} consumer groups acknowledged", measured,
        {"forget + certificate, no consumer group": baseline}, unit="forgets/s",
        groups=groups, notice_interval_s=notice_interval,
        p50_ms=round(statistics.median(latencies) * 1000, 3),
        p99_ms=round(_percentile(latencies, 99) * 1000, 3),
    )


def _create_batch_scenario(root: Path, per_request: int, rounds: int) -> dict[str, Any]:
    """New subjects per second: ``encryption_keys`` (one transaction per request) vs the one-key
    path (one transaction per key), fresh subjects every run, interleaved."""
    authz = _authz()
    svc = KeyService.init(Home(root / "create-batch"), authorizer=authz)
    runs = iter(range(10**9))
    try:
        def batch() -> int:
            tag = next(runs)
            svc.encryption_keys([(f"b{tag}-{i}", "pii", 1) for i in range(per_request)], principal="producer")
            return per_request

        def one_by_one() -> int:
            tag = next(runs)
            for i in range(per_request):
                svc.encryption_key(f"o{tag}-{i}", "pii", principal="producer")
            return per_request

        rates = interleaved({"batch": batch, "one_by_one": one_by_one}, rounds)
    finally:
        svc.close()
    return scenario("key_create_batch", rates.pop("batch"), {"one transaction per key": rates.pop("one_by_one")},
                    unit="subjects/s", per_request=per_request)


def run(quick: bool = False) -> list[dict[str, Any]]:
    sizes, samples = ([1_000], 30) if quick else ([10_000, 100_000, 1_000_000], 300)
    with tempfile.TemporaryDirectory(prefix="ew-bench-keys-") as tmp:
        root = Path(tmp)
        results = [_forget_scenario(root, n, samples) for n in sizes]
        results += _cache_scenarios(root, 200 if quick else 5_000, 2_000 if quick else 100_000)
        results.append(_ack_scenario(root, 10, 9 if quick else 60, 0.05))
        results.append(_create_batch_scenario(root, 500, 3 if quick else 5))
    return results


def main() -> None:
    for res in run(quick="--quick" in sys.argv[1:]):
        print_scenario(res)
        extra = {k: res[k] for k in ("p50_ms", "p99_ms", "hit_rate") if k in res}
        if extra:
            print("    " + "  ".join(f"{k}={v}" for k, v in extra.items()))


if __name__ == "__main__":
    main()
