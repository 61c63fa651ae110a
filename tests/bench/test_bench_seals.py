"""The seal-suite benchmark produces well-formed scenarios and the byte counts the format implies."""

from __future__ import annotations

from bench import bench_seals, run
from eventward._internal.crypto import seal as sealing


def test_quick_seal_suite_bench_is_well_formed() -> None:
    results = bench_seals.run(quick=True)
    for res in results:
        run.check_result(res)
    names = [r["name"] for r in results]
    assert names == ["seal sign (Ed25519)", "seal sign (hybrid Ed25519+ML-DSA-65)", "seal verify (Ed25519)",
                     "seal verify (hybrid Ed25519+ML-DSA-65)"]
    sizes = results[0]["seal_bytes"]
    # The hybrid seal adds the ML-DSA-65 signature and the suite byte, nothing per event.
    extra = sealing.MLDSA65_SIGNATURE_SIZE + 1
    assert all(row["hybrid"] - row["ed25519"] == extra for row in sizes.values())
    assert results[0]["hybrid_extra_bytes_per_batch"] == extra
    assert "seals" in run.AREAS
