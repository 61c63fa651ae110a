"""Confluent client-side field-level encryption (CSFLE), measured in its own interpreter.

    .venv-csfle/bin/python bench/csfle_anchor.py EVENTS.json ROUNDS
    .venv-csfle/bin/python bench/csfle_anchor.py EVENTS.json --serve

``--serve`` (what bench_anchors runs): set up and warm up, print ``ready``, then measure one
round per line read from stdin and print its rates as one JSON line, so that the caller can
interleave these rounds with its own (noise from other work on the machine then hits both).

Runs offline: confluent-kafka's mock schema registry (``mock://``, which also serves the DEK
registry) and its ``local-kms`` driver (a KEK derived from a local secret). The three PII
fields carry the ``PII`` tag and an ENCRYPT rule (WRITEREAD), so serializing encrypts them
and deserializing decrypts them, JSON Schema and Avro alike. Schema validation is off on the
JSON serializer (eventward's field-encryption numbers do not validate either).

It needs ``confluent-kafka[schemaregistry,rules]``, whose rules extra pins google-re2 below
the version eventward uses: hence a separate virtualenv (``make bench`` builds
``.venv-csfle``) and a process of its own. Imports nothing from eventward; reads the
workload's events from a JSON file and prints one JSON line of events/s per round.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from collections.abc import Callable
from typing import Any

PII = ("name", "email", "phone")
TOPIC = "orders"


def _json_schema() -> dict[str, Any]:
    pii = {"type": "string", "confluent:tags": ["PII"]}
    return {
        "type": "object",
        "properties": {
            "order_id": {"type": "string"},
            "placed_at": {"type": "string"},
            "customer": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    **{f: pii for f in PII},
                    "address": {"type": "object"},
                    "tier": {"type": "string"},
                },
            },
            "items": {"type": "array", "items": {"type": "object"}},
            "currency": {"type": "string"},
            "totals": {"type": "object"},
            "channel": {"type": "string"},
        },
    }


def _avro_schema() -> dict[str, Any]:
    def s(name: str) -> dict[str, Any]:
        return {"name": name, "type": "string"}

    def pii(name: str) -> dict[str, Any]:
        return {"name": name, "type": "string", "confluent:tags": ["PII"]}

    address = {"type": "record", "name": "Address", "fields": [s("city"), s("postcode"), s("country")]}
    customer = {
        "type": "record",
        "name": "Customer",
        "fields": [s("id"), *(pii(f) for f in PII), {"name": "address", "type": address}, s("tier")],
    }
    item = {
        "type": "record",
        "name": "Item",
        "fields": [s("sku"), s("name"), {"name": "quantity", "type": "long"}, {"name": "unit_price", "type": "long"}],
    }
    totals = {
        "type": "record",
        "name": "Totals",
        "fields": [{"name": k, "type": "long"} for k in ("subtotal", "tax", "shipping", "total")],
    }
    return {
        "type": "record",
        "name": "OrderPlaced",
        "fields": [
            s("order_id"), s("placed_at"), {"name": "customer", "type": customer},
            {"name": "items", "type": {"type": "array", "items": item}}, s("currency"),
            {"name": "totals", "type": totals}, s("channel"),
        ],
    }


def _serdes(kind: str) -> tuple[Any, Any, Any]:
    from confluent_kafka.schema_registry import Rule, RuleKind, RuleMode, RuleParams, RuleSet, Schema
    from confluent_kafka.schema_registry.schema_registry_client import SchemaRegistryClient
    from confluent_kafka.serialization import MessageField, SerializationContext

    client = SchemaRegistryClient.new_client({"url": "mock://"})
    rule = Rule(
        "encrypt-pii", "", RuleKind.TRANSFORM, RuleMode.WRITEREAD, "ENCRYPT", ["PII"],
        RuleParams({"encrypt.kek.name": f"kek-{kind}", "encrypt.kms.type": "local-kms",
                    "encrypt.kms.key.id": "bench"}),
        None, None, "ERROR,NONE", False,
    )
    subject = f"{TOPIC}-{kind}-value"
    doc = json.dumps(_json_schema() if kind == "json" else _avro_schema())
    client.register_schema(subject, Schema(doc, "JSON" if kind == "json" else "AVRO", [], None, RuleSet(None, [rule])))
    conf = {"auto.register.schemas": False, "use.latest.version": True,
            "subject.name.strategy": lambda ctx, record_name: subject}
    rule_conf = {"secret": "bench-local-kms-secret"}
    if kind == "json":
        from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer

        ser = JSONSerializer(doc, client, conf={**conf, "validate": False}, rule_conf=rule_conf)
        de = JSONDeserializer(None, schema_registry_client=client, rule_conf=rule_conf,
                              conf={"subject.name.strategy": lambda ctx, record_name: subject, "validate": False})
    else:
        from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer

        ser = AvroSerializer(client, doc, conf=conf, rule_conf=rule_conf)
        de = AvroDeserializer(client, rule_conf=rule_conf,
                              conf={"subject.name.strategy": lambda ctx, record_name: subject})
    return ser, de, SerializationContext(TOPIC, MessageField.VALUE)


def prepare(events: list[dict[str, Any]]) -> tuple[Callable[[], dict[str, float]], Callable[[str, str, int], float]]:
    """Serializers set up and warmed up (DEKs created and cached, round trip checked); returns
    one round (events/s of CSFLE encrypt (serialize) and decrypt (deserialize), JSON and Avro)
    and one operation's short round (``one_op``).
    The serializers encrypt their input in place, so each round gets fresh copies (untimed).
    The objects alive after the warm-up (inputs, serializers, caches) are moved out of the
    garbage collector's sight, as bench.common.interleaved does for eventward's contenders."""
    from confluent_kafka.schema_registry.rules.encryption.encrypt_executor import FieldEncryptionExecutor
    from confluent_kafka.schema_registry.rules.encryption.localkms.local_driver import LocalKmsDriver

    FieldEncryptionExecutor.register()
    LocalKmsDriver.register()
    raw = json.dumps(events)
    kinds = []
    sealed: dict[str, list[bytes]] = {}  # each kind's warm-up output: what a short decrypt round reads
    for kind in ("json", "avro"):
        ser, de, ctx = _serdes(kind)
        blobs = [ser(e, ctx) for e in json.loads(raw)]  # warm-up: DEK created and cached
        for b in blobs:
            de(b, ctx)
        back = de(blobs[0], ctx)
        name = events[0]["customer"]["name"]
        if back["customer"]["name"] != name or name.encode() in blobs[0]:
            raise RuntimeError(f"CSFLE {kind}: the PII field did not round-trip encrypted")
        kinds.append((kind, ser, de, ctx))
        sealed[kind] = blobs
    gc.collect()
    gc.freeze()

    def one_round() -> dict[str, float]:
        out: dict[str, float] = {}
        for kind, ser, de, ctx in kinds:
            fresh = json.loads(raw)
            t0 = time.perf_counter()
            blobs = [ser(e, ctx) for e in fresh]
            out[f"{kind}_encrypt"] = len(events) / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            for b in blobs:
                de(b, ctx)
            out[f"{kind}_decrypt"] = len(events) / (time.perf_counter() - t0)
        return out

    def one_op(kind: str, op: str, count: int) -> float:
        """events/s of one operation over the first ``count`` events: a short round, to pair with
        a short round of eventward's run just before it (the machine's speed drifts in seconds)."""
        _, ser, de, ctx = next(k for k in kinds if k[0] == kind)
        if op == "encrypt":
            fresh = json.loads(raw)[:count]
            t0 = time.perf_counter()
            for e in fresh:
                ser(e, ctx)
        else:
            blobs = sealed[kind][:count]
            t0 = time.perf_counter()
            for b in blobs:
                de(b, ctx)
        return count / (time.perf_counter() - t0)

    return one_round, one_op


def measure(events: list[dict[str, Any]], rounds: int) -> dict[str, list[float]]:
    """events/s per round (``prepare``), ``rounds`` rounds in a row."""
    one_round, _ = prepare(events)
    out: dict[str, list[float]] = {}
    for _ in range(rounds):
        for k, v in one_round().items():
            out.setdefault(k, []).append(v)
    return out


def main(argv: list[str]) -> int:
    with open(argv[1]) as f:
        events = json.load(f)
    if argv[2] != "--serve":
        print(json.dumps(measure(events, int(argv[2]))))
        return 0
    one_round, one_op = prepare(events)
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()  # "round", or "op KIND OP COUNT"
        if words[:1] == ["op"] and len(words) == 4:
            print(json.dumps({"rate": one_op(words[1], words[2], int(words[3]))}), flush=True)
        else:
            print(json.dumps(one_round()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
