"""Field encryption throughput: eventward's FieldEncryptor against two baselines, same run.

Workload: OrderPlaced events (~600 bytes of JSON, bench/workload.py), 3 PII fields, 1,000
customers as data subjects. Every implementation takes the event's ``data`` dict and returns
a new dict with the three fields as URL-safe strings (and back), leaving its input intact.

- eventward: FieldEncryptor over MemoryKeys: per-subject DEKs, AES-256-GCM with context-bound
  associated data, one key-source call per event. ``field_decrypt_cleared`` adds the reader's
  clearance check (a deny-by-default AllowList asked on every event); the Cedar engine and the
  SQLite/KMS key service have their own benchmarks (bench_policy, bench_keys).
- fernet_per_field: the naive approach, one Fernet key per customer, each field encrypted on
  its own (AES-128-CBC + HMAC-SHA256, no context binding).
- aesgcm_floor: bare AES-256-GCM + orjson + base64url with one key, no associated data and no
  key lookup (os.urandom nonce per field, as usually written): the cost of the crypto and
  serialization alone, the ceiling for any per-field AEAD design in Python.

    python -m bench.bench_fields [--quick]
"""

from __future__ import annotations

import binascii
import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench.common import interleaved, print_scenario, scenario
from bench.workload import ORDER_SPEC, order_placed
from eventward._internal.crypto import fields as _fields
from eventward._internal.crypto import tokens
from eventward._internal.crypto.fields import FieldEncryptor
from eventward._internal.keys.memory import MemoryKeys
from eventward._internal.policy.base import DECRYPT, AllowList

PII = ("name", "email", "phone")
CUSTOMERS = 1000
_TO_URL = bytes.maketrans(b"+/", b"-_")
_FROM_URL = bytes.maketrans(b"-_", b"+/")


def _events(n: int) -> list[tuple[str, dict[str, Any]]]:
    return [(str(uuid.UUID(int=i + 1)), order_placed(i, CUSTOMERS)) for i in range(n)]


class FernetPerField:
    """The naive baseline: one Fernet key per subject, every field encrypted on its own."""

    def __init__(self) -> None:
        self._keys: dict[str, Fernet] = {}

    def _key(self, subject: str) -> Fernet:
        f = self._keys.get(subject)
        if f is None:
            f = self._keys[subject] = Fernet(Fernet.generate_key())
        return f

    def encrypt(self, data: dict[str, Any]) -> dict[str, Any]:
        c = data["customer"]
        f = self._key(c["id"])
        nc = dict(c)
        for name in PII:
            nc[name] = f.encrypt(orjson.dumps(c[name])).decode()
        return {**data, "customer": nc}

    def decrypt(self, data: dict[str, Any]) -> dict[str, Any]:
        c = data["customer"]
        f = self._key(c["id"])
        nc = dict(c)
        for name in PII:
            nc[name] = orjson.loads(f.decrypt(c[name]))
        return {**data, "customer": nc}


class AesGcmFloor:
    """Bare AES-256-GCM + orjson + base64url, one key, no AD, no key lookup."""

    def __init__(self) -> None:
        self._gcm = AESGCM(os.urandom(32))

    def encrypt(self, data: dict[str, Any]) -> dict[str, Any]:
        c = data["customer"]
        nc = dict(c)
        for name in PII:
            nonce = os.urandom(12)
            blob = nonce + self._gcm.encrypt(nonce, orjson.dumps(c[name]), None)
            nc[name] = binascii.b2a_base64(blob, newline=False).translate(_TO_URL).rstrip(b"=").decode()
        return {**data, "customer": nc}

    def decrypt(self, data: dict[str, Any]) -> dict[str, Any]:
        c = data["customer"]
        nc = dict(c)
        for name in PII:
            text = c[name]
            blob = binascii.a2b_base64(text.encode().translate(_FROM_URL) + b"=" * (-len(text) % 4))
            nc[name] = orjson.loads(self._gcm.decrypt(blob[:12], blob[12:], None))
        return {**data, "customer": nc}


def _cpu_us(step: Callable[[str, dict[str, Any]], object], sample: list[tuple[str, dict[str, Any]]]) -> float:
    """CPU microseconds per event (best of 3): thread time, so other work on the machine
    does not count, only what the step itself costs."""
    best = float("inf")
    for _ in range(3):
        t0 = time.thread_time()
        for eid, data in sample:
            step(eid, data)
        best = min(best, time.thread_time() - t0)
    return best / len(sample) * 1e6


def _with_rest(steps: dict[str, float]) -> dict[str, float]:
    measured = sum(v for k, v in steps.items() if k != "total")
    steps["rest (associated data, loop, report)"] = steps["total"] - measured
    return {k: round(v, 2) for k, v in steps.items()}


def breakdown(events: list[tuple[str, dict[str, Any]]], keys: MemoryKeys) -> dict[str, dict[str, float]]:
    """Where encrypt's and decrypt's time goes, in CPU microseconds per event, by timing each
    step of the pipeline on its own over the same events."""
    enc = FieldEncryptor(keys)
    plan = enc._plan(ORDER_SPEC)
    sample = events[:3000]
    sealed = {eid: enc.encrypt(eid, data, ORDER_SPEC, principal="bench") for eid, data in sample}
    parsed: dict[str, list[tuple[Any, str, bytes, bytes]]] = {}
    for eid, (out, shash) in sealed.items():
        parsed[eid] = []
        for name in PII:
            alg, kid, blob = tokens.split(out["customer"][name])
            h = enc._cipher.handle(kid, keys.decryption_key(kid, "pii", principal="bench"))
            ad = tokens.associated_data(alg, kid, "pii", shash, f"customer.{name}", eid)
            parsed[eid].append((h, alg, blob, ad))
    nonce, ad = os.urandom(12), parsed[sample[0][0]][0][3]

    def seal3(eid: str, data: dict[str, Any]) -> None:
        for (h, _, _, _), name in zip(parsed[eid], PII, strict=True):
            h.seal(data["customer"][name], ad, nonce)

    def parse3(eid: str, _: dict[str, Any]) -> None:
        # As decrypt does it: the three tokens share one header (one key), parsed once.
        customer = sealed[eid][0]["customer"]
        alg, _, start = tokens.parse_header(customer[PII[0]])
        for name in PII:
            tokens.decode_payload(customer[name], start, alg)

    def open3(eid: str, _: dict[str, Any]) -> None:
        for h, alg, blob, ad in parsed[eid]:
            h.open(alg, blob, ad)

    def first_kid(eid: str) -> str:
        return parsed[eid][0][0].kid

    def decrypt(eid: str) -> object:
        out, shash = sealed[eid]
        return enc.decrypt(eid, out, ORDER_SPEC, shash, principal="bench")

    return {
        "encrypt": _with_rest({
            "total": _cpu_us(lambda eid, d: enc.encrypt(eid, d, ORDER_SPEC, principal="bench"), sample),
            "seal 3 fields (orjson, AES-GCM, base64url)": _cpu_us(seal3, sample),
            "key source (subject hash, DEK lookup)": _cpu_us(
                lambda _, d: (keys.subject_hash(d["customer"]["id"]),
                              keys.encryption_key(d["customer"]["id"], "pii", principal="bench")),
                sample,
            ),
            "find + copy-on-write (spec walk)": _cpu_us(
                lambda _, d: _fields._locate(ORDER_SPEC, plan, d), sample
            ),
            "nonces (one os.urandom per event)": _cpu_us(lambda _, d: os.urandom(36), sample),
        }),
        "decrypt": _with_rest({
            "total": _cpu_us(lambda eid, _: decrypt(eid), sample),
            "parse 3 tokens (1 header, 3 canonical base64url)": _cpu_us(parse3, sample),
            "open 3 tokens (AES-GCM verify, orjson)": _cpu_us(open3, sample),
            "key source (DEK lookup)": _cpu_us(
                lambda eid, _: keys.decryption_key(first_kid(eid), "pii", principal="bench"), sample
            ),
            "find + copy-on-write (spec walk)": _cpu_us(
                lambda eid, _: _fields._locate(ORDER_SPEC, plan, sealed[eid][0]), sample
            ),
        }),
    }


def run(quick: bool = False) -> list[dict[str, Any]]:
    n = 2000 if quick else 20_000
    rounds = 3 if quick else 5
    events = _events(n)
    keys = MemoryKeys()
    enc = FieldEncryptor(keys)
    auth = AllowList([("reader", DECRYPT, ("Class", "pii"))])
    cleared = FieldEncryptor(MemoryKeys(auth))
    cleared_in = [(eid, *cleared.encrypt(eid, d, ORDER_SPEC, principal="producer")) for eid, d in events]
    fernet, floor = FernetPerField(), AesGcmFloor()

    encrypted: list[tuple[str, dict[str, Any], str | None]] = []

    def ew_encrypt() -> int:
        encrypted.clear()
        for eid, data in events:
            out, shash = enc.encrypt(eid, data, ORDER_SPEC, principal="producer")
            encrypted.append((eid, out, shash))
        return n

    def ew_decrypt() -> int:
        for eid, data, shash in encrypted:
            enc.decrypt(eid, data, ORDER_SPEC, shash, principal="reader")
        return n

    def ew_decrypt_cleared() -> int:
        for eid, data, shash in cleared_in:
            cleared.decrypt(eid, data, ORDER_SPEC, shash, principal="reader")
        return n

    def baseline(impl: FernetPerField | AesGcmFloor) -> tuple[Callable[[], int], Callable[[], int]]:
        outs: list[dict[str, Any]] = []

        def encrypt() -> int:
            outs.clear()
            outs.extend(impl.encrypt(data) for _, data in events)
            return n

        def decrypt() -> int:
            for data in outs:
                impl.decrypt(data)
            return n

        return encrypt, decrypt

    f_enc, f_dec = baseline(fernet)
    g_enc, g_dec = baseline(floor)
    e = interleaved({"eventward": ew_encrypt, "fernet_per_field": f_enc, "aesgcm_floor": g_enc}, rounds)
    d = interleaved(
        {"eventward": ew_decrypt, "cleared": ew_decrypt_cleared, "fernet_per_field": f_dec,
         "aesgcm_floor": g_dec},
        rounds,
    )
    d_cleared = d.pop("cleared")

    # Sanity: what was measured actually round-trips.
    eid, out, shash = encrypted[-1]
    if enc.decrypt(eid, out, ORDER_SPEC, shash, principal="reader")[0] != events[-1][1]:
        raise AssertionError("field benchmark: eventward round trip failed")

    where = breakdown(events, keys)
    common = {"events": n, "customers": CUSTOMERS, "pii_fields": len(PII), "event_bytes": _avg_size(events)}
    return [
        scenario("field_encrypt", e.pop("eventward"), e, breakdown_us=where["encrypt"], **common),
        scenario("field_decrypt", d.pop("eventward"), d, breakdown_us=where["decrypt"], **common),
        scenario("field_decrypt_cleared", d_cleared, d, clearance="MemoryKeys + AllowList", **common),
    ]


def _avg_size(events: list[tuple[str, dict[str, Any]]]) -> int:
    sample = events[:200]
    return sum(len(orjson.dumps(d)) for _, d in sample) // len(sample)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for res in run(quick="--quick" in args):
        print_scenario(res)
        for step, us in res.get("breakdown_us", {}).items():
            print(f"      {step:<46} {us:>7.2f} us/event (CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
