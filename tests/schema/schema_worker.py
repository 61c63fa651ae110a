"""Run by the multi-process tests: one registry operation in a separate process.

usage: schema_worker.py DB propose|approve|activate TYPE [VERSION|MAXLEN]
Prints one JSON line: {"ok": true, ...} or {"ok": false, "code": <error code>}.
"""

from __future__ import annotations

import sys

import orjson

from eventward._internal.policy.base import APPROVE_SCHEMA, APPROVE_SECURITY, PROPOSE_SCHEMA, AllowList
from eventward._internal.schema import Registry
from eventward.errors import EventwardError


def doc(max_length: int) -> dict:
    return {"type": "object", "properties": {"a": {"type": "string", "maxLength": max_length}}}


def main() -> None:
    db, op, type_, arg = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    grants = [
        (p, a, ("Schema", "*"))
        for p in ("w1", "w2")
        for a in (PROPOSE_SCHEMA, APPROVE_SCHEMA, APPROVE_SECURITY)
    ] + [("w3", APPROVE_SECURITY, ("Schema", "*"))]
    with Registry(db, authorizer=AllowList(grants)) as reg:
        try:
            if op == "propose":
                out = {"version": reg.propose("w1", type_, doc(arg)).version}
            elif op == "activate":
                p = reg.propose("w1", type_, doc(arg))
                v = reg.approve("w2", type_, p.version)
                if p.needs_security_approval:  # from a third principal (separation of duties)
                    v = reg.approve("w3", type_, p.version, security=True)
                out = {"version": v.version}
            else:
                out = {"state": str(reg.approve("w2", type_, arg).state)}
        except EventwardError as e:
            print(orjson.dumps({"ok": False, "code": e.code}).decode())
            return
    print(orjson.dumps({"ok": True, **out}).decode())


if __name__ == "__main__":
    main()
