"""Seal suites: hybrid Ed25519 + ML-DSA-65 (FIPS 204) against Ed25519 alone.

    python -m bench.bench_seals [--quick]

A producer signs one seal per flushed batch and a consumer verifies one per batch, so the
cost of the post-quantum suite is per batch, not per event: sign (seal a 500-event batch,
digests included), verify (parse + signature(s) + Merkle root), and the bytes a seal adds to
a batch. Both suites run interleaved in the same rounds (bench.common.interleaved), so the
ratio is what the hybrid suite costs on this machine now. The seal blob grows by the fixed
ML-DSA-65 signature (3309 bytes) whatever the batch size; per event that is 3309/batch size.
"""

from __future__ import annotations

import sys
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey

from bench.common import interleaved, print_scenario, scenario
from eventward._internal.crypto import seal as sealing

EVENT = b'{"specversion":"1.0","type":"OrderPlaced","source":"/orders","id":"%06d","data":{"n":%06d}}'


def _events(n: int) -> list[bytes]:
    return [EVENT % (i, i) for i in range(n)]


def _blob(signer: sealing.Signer, events: list[bytes]) -> bytes:
    return sealing.seal(signer, instance="bench", stream="orders", batch="b-1", first_seq=0, events=events)


def run(quick: bool = False) -> list[dict[str, Any]]:
    batch = 100 if quick else 500
    rounds = 3 if quick else 7
    per_round = 20 if quick else 200  # batches per timed run
    events = _events(batch)
    ed = sealing.Signer("orders-svc", Ed25519PrivateKey.generate())
    hy = sealing.Signer("orders-svc", Ed25519PrivateKey.generate(), MLDSA65PrivateKey.generate())
    blobs = {"ed": _blob(ed, events), "hy": _blob(hy, events)}
    keys = {"ed": (ed.public_key(), None), "hy": (hy.public_key(), hy.pq_public_key())}

    def signing(s: sealing.Signer) -> Any:
        def fn() -> int:
            for _ in range(per_round):
                _blob(s, events)
            return per_round
        return fn

    def verifying(which: str) -> Any:
        blob, (pub, pq) = blobs[which], keys[which]

        def fn() -> int:
            for _ in range(per_round):
                sealing.verify(sealing.parse(blob), pub, pq)
            return per_round
        return fn

    sign = interleaved({"ed": signing(ed), "hy": signing(hy)}, rounds)
    verify = interleaved({"ed": verifying("ed"), "hy": verifying("hy")}, rounds)
    sizes = {n: (len(_blob(ed, _events(n))), len(_blob(hy, _events(n)))) for n in (1, 100, batch)}
    size_extra = {
        "batch_events": batch,
        "seal_bytes": {str(n): {"ed25519": e, "hybrid": h, "hybrid_extra_per_event": (h - e) / n}
                       for n, (e, h) in sizes.items()},
        "hybrid_extra_bytes_per_batch": sizes[batch][1] - sizes[batch][0],
    }
    unit = f"batches/s ({batch} events)"
    return [
        scenario("seal sign (Ed25519)", sign["ed"], unit=unit, **size_extra),
        scenario("seal sign (hybrid Ed25519+ML-DSA-65)", sign["hy"], {"Ed25519 alone": sign["ed"]}, unit=unit,
                 **size_extra),
        scenario("seal verify (Ed25519)", verify["ed"], unit=unit, **size_extra),
        scenario("seal verify (hybrid Ed25519+ML-DSA-65)", verify["hy"], {"Ed25519 alone": verify["ed"]},
                 unit=unit, **size_extra),
    ]


if __name__ == "__main__":
    for res in run(quick="--quick" in sys.argv):
        print_scenario(res)
    b = res["seal_bytes"]
    for n, row in b.items():
        print(f"  seal bytes, {n:>4} events: Ed25519 {row['ed25519']:>7,}  hybrid {row['hybrid']:>7,}"
              f"  (+{row['hybrid_extra_per_event']:.1f} B/event)")
