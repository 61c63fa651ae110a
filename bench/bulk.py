"""One sealed event per data subject, written in bulk: the setup of the million-subject benchmark.

Each worker process loads one pii DEK per subject of its range (bench/subjects.py) and seals
one OrderPlaced per subject into the embedded log the way the Producer builds events
(FieldEncryptor tokens, CloudEvents envelope, Ed25519 seal per batch), under a producer
instance of its own, so the consumer sees ordinary sealed batches from one trusted producer.
Skipped on purpose: schema validation and per-event key lookups (the keys were just created;
bench_schema and bench_keys measure those). Workers share the home as producers do: SQLite
serializes their commits.
"""

from __future__ import annotations

import functools
import time
import uuid
from pathlib import Path

from bench import deployed, subjects
from bench.common import in_parallel
from bench.workload import EVENT_TYPE, SOURCE, customer, order_placed
from eventward._internal import envelope
from eventward._internal.client.envelopes import EnvelopeBuilder
from eventward._internal.crypto import seal as sealing
from eventward._internal.crypto.fields import FieldEncryptor
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home

BATCH = 500


class _LoadedKeys:
    """A DekSource over keys just bulk-loaded: encrypting with them needs no unwrap round trip."""

    def __init__(self, chunk: list[subjects.Loaded]) -> None:
        self._by_subject = {k.subject: k for k in chunk}
        self._by_kid = {k.kid: k for k in chunk}

    def subject_hash(self, subject: str) -> str:
        return self._by_subject[subject].subject_hash

    def encryption_key(self, subject: str | None, cls: str, *, principal: str) -> tuple[str, bytes]:
        k = self._by_subject[subject or ""]
        if k.cls != cls:
            raise KeyError(cls)
        return k.kid, k.dek

    def decryption_key(self, kid: str, cls: str, *, principal: str) -> bytes:
        return self._by_kid[kid].dek


def write_range(root: Path, start: int, stop: int, customers: int) -> int:
    """Keys and one sealed event for customers ``start .. stop - 1``; returns the events written."""
    with Deployment.open(Home(root)) as d:
        subjects.patient(d.keys)
        # setup, not measured: the log's commits need not wait for the disk (a crash loses the
        # benchmark, not data); the consumer measured afterwards opens it with its own settings
        d.transport._db.execute("PRAGMA synchronous = OFF")  # type: ignore[attr-defined]
        version = d.registry.active(EVENT_TYPE)
        signer = d.trust.signer_for(deployed.PRODUCER)
        builder = EnvelopeBuilder(deployed.PRODUCER)
        instance = uuid.uuid4().hex
        d.transport.create_stream(deployed.TOPIC)
        seq = 0
        raws: list[bytes] = []

        def flush() -> None:
            nonlocal seq, raws
            batch = f"{instance}-{seq}"
            blob = sealing.seal(signer, instance=instance, stream=deployed.TOPIC, batch=batch, first_seq=seq,
                                events=raws, time=time.time())
            d.transport.append(deployed.TOPIC, batch, raws, blob)
            seq, raws = seq + len(raws), []

        ids = (customer(c)["id"] for c in range(start, stop))
        for chunk in subjects.load(d.keys, ids, ("pii",), chunk=subjects.SHARED_CHUNK):
            enc = FieldEncryptor(_LoadedKeys(chunk))
            for k in chunk:
                data = order_placed(int(k.subject.removeprefix("cust-")), customers=customers)
                event_id = builder.new_id()
                sealed, shash = enc.encrypt(event_id, data, version.spec, principal=deployed.PRODUCER)
                env = builder.build(EVENT_TYPE, SOURCE, sealed, id_=event_id, seq=seq + len(raws),
                                    schema_version=version.version, subject_hash=shash, subject=None,
                                    now=time.time())
                raws.append(envelope.encode(env, max_bytes=version.max_event_bytes))
                if len(raws) == BATCH:
                    flush()
        if raws:
            flush()
        return seq


def write(home: Home, n: int, workers: int | None = None) -> int:
    """Customers 0 .. n - 1, one event each, written by worker processes in parallel."""
    return in_parallel(functools.partial(write_range, home.root, customers=n), n, workers)
