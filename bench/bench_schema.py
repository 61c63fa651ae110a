"""Schema validation throughput: the registry's compiled validator, alone and before encryption.

Workload: OrderPlaced events (~600 bytes of JSON, bench/workload.py) against
ORDER_JSON_SCHEMA: 7 patterns, 2 formats, 2 enums, nested objects and an items array.

- validate: ``SchemaVersion.validate`` of the active version in a real (SQLite) registry:
  size limit (orjson), fastjsonschema code with every pattern on RE2, strict defaults.
  Baseline ``fastjsonschema_plain``: the same document compiled by fastjsonschema as-is
  (Python ``re``, open objects, no size limit): the cost of the safety is the ratio.
- validate_encrypt: validate, then FieldEncryptor.encrypt with the field spec the registry
  derived from the schema's tags (MemoryKeys). Baseline ``encrypt_only``: the same
  encryption without validation.

    python -m bench.bench_schema [--quick]
"""

from __future__ import annotations

import copy
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import fastjsonschema

from bench.common import interleaved, print_scenario, scenario
from bench.workload import EVENT_TYPE, ORDER_JSON_SCHEMA, ORDER_SPEC, order_placed
from eventward._internal.crypto.fields import FieldEncryptor
from eventward._internal.keys.memory import MemoryKeys
from eventward._internal.policy.base import APPROVE_SCHEMA, PROPOSE_SCHEMA, AllowList
from eventward._internal.schema import Registry, SchemaVersion


def active_version(root: Path) -> SchemaVersion:
    """The workload schema, proposed and approved by two principals in a real registry."""
    authz = AllowList(
        [("author", PROPOSE_SCHEMA, ("Schema", "*")), ("admin", APPROVE_SCHEMA, ("Schema", "*"))]
    )
    with Registry(root / "registry.db", authorizer=authz) as reg:
        p = reg.propose("author", EVENT_TYPE, ORDER_JSON_SCHEMA)
        reg.approve("admin", EVENT_TYPE, p.version)
        version = reg.active(EVENT_TYPE)
    if version.spec != ORDER_SPEC:
        raise AssertionError("the spec derived from the schema tags differs from the workload's ORDER_SPEC")
    return version


def run(quick: bool = False) -> list[dict[str, Any]]:
    n = 2000 if quick else 20_000
    rounds = 2 if quick else 5
    events = [(str(uuid.UUID(int=i + 1)), order_placed(i)) for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        version = active_version(Path(tmp))
    plain_doc = copy.deepcopy(ORDER_JSON_SCHEMA)
    plain_doc["$schema"] = "http://json-schema.org/draft-07/schema#"  # fastjsonschema's newest
    plain = fastjsonschema.compile(plain_doc, use_default=False)
    enc = FieldEncryptor(MemoryKeys())
    spec = version.spec
    validate = version.validate

    def ew_validate() -> int:
        for _, data in events:
            validate(data)
        return n

    def plain_validate() -> int:
        for _, data in events:
            plain(data)
        return n

    def ew_validate_encrypt() -> int:
        for eid, data in events:
            validate(data)
            enc.encrypt(eid, data, spec, principal="producer")
        return n

    def encrypt_only() -> int:
        for eid, data in events:
            enc.encrypt(eid, data, spec, principal="producer")
        return n

    r = interleaved(
        {
            "validate": ew_validate,
            "plain": plain_validate,
            "validate_encrypt": ew_validate_encrypt,
            "encrypt": encrypt_only,
        },
        rounds,
    )
    us = {k: round(1e6 / v["median"], 2) for k, v in r.items()}
    return [
        scenario(
            "schema_validate",
            r["validate"],
            {"fastjsonschema_plain": r["plain"]},
            events=n,
            us_per_event=us["validate"],
            baseline_us_per_event=us["plain"],
        ),
        scenario(
            "schema_validate_encrypt",
            r["validate_encrypt"],
            {"encrypt_only": r["encrypt"]},
            events=n,
            us_per_event=us["validate_encrypt"],
            validation_us_per_event=round(us["validate_encrypt"] - us["encrypt"], 2),
            target_events_per_s=120_000,
        ),
    ]


if __name__ == "__main__":
    for res in run(quick="--quick" in sys.argv):
        print_scenario(res)
        print(f"    {res['us_per_event']} µs/event")
