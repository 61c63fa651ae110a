"""One service process in client mode (run by test_client_mode_processes as a subprocess).

    python client_mode_proc.py produce DIR N START
    python client_mode_proc.py consume DIR GROUP N IDLE
    python client_mode_proc.py unwrap DIR KID      (a direct key request, as an attacker would)
    python client_mode_proc.py raw DIR N           (raw broker read with the service's own NATS identity)

Prints one JSON document on stdout; a typed eventward error is {"error": code} with exit 3.
"""

from __future__ import annotations

import sys

import orjson

from eventward._internal import demo
from eventward._internal.control.connect import connect
from eventward.errors import EventwardError


def main(argv: list[str]) -> dict:
    what, directory = argv[0], argv[1]
    client = connect(directory, follow_notices=what == "consume")
    try:
        if what == "produce":
            n, start = int(argv[2]), int(argv[3])
            with client.producer(demo.TOPIC) as p:
                ids = [p.send(demo.EVENT_TYPE, demo.order(start + i)) for i in range(n)]
                p.flush()
            return {"ids": ids}
        if what == "consume":
            group, n, idle = argv[2], int(argv[3]), float(argv[4])
            seen: list = []
            consumer = client.consumer(demo.TOPIC, group=group, from_beginning=True)
            try:
                consumer.run(seen.append, idle_timeout=idle, max_events=n)
            finally:
                consumer.close()
            return {"events": [{"id": e.id, "name": e.data["customer"]["name"]} for e in seen]}
        if what == "unwrap":
            got = client.api.decryption_keys(demo.TOPIC, demo.EVENT_TYPE, [(argv[2], "pii", None)])
            return {"answer": {k: v if isinstance(v, str) else "DEK" for k, v in got.items()}}
        if what == "raw":
            recs = client.transport.read(demo.TOPIC, 0, int(argv[2]))
            return {"raw": [r.data.decode() for r in recs]}
        raise SystemExit(f"unknown command {what}")
    finally:
        client.close()
        client.transport.close()


if __name__ == "__main__":
    try:
        out = main(sys.argv[1:])
    except EventwardError as e:
        print(orjson.dumps({"error": e.code}).decode())
        sys.exit(3)
    print(orjson.dumps(out).decode())
