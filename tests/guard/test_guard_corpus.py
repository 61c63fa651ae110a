"""The detectors against a labelled corpus (bench/pii_corpus.py): planted PII and secrets of
every kind, alone and inside sentences, and realistic values that are not PII. Recall per kind
>= 0.99 for the checksum-validated kinds and >= 0.95 for the others; false positives <= 1% of
the non-PII values. The confusion table is printed (pytest -s shows it)."""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import pytest
from bench.pii_corpus import corpus

from eventward._internal.guard import detectors as k
from eventward._internal.guard.detectors import Detector, Detectors, compile_detector_pattern, default_detectors
from eventward.errors import SchemaSecurityError


def test_corpus_recall_and_false_positives() -> None:
    det = default_detectors()
    plants, clean = corpus(seed=19, per_kind=300, clean=6000)
    total: Counter[str] = Counter()
    found: dict[str, Counter[str]] = defaultdict(Counter)
    for kind, value in plants:
        total[kind] += 1
        for got in det.kinds(value) or {"(none)"}:
            found[kind][got] += 1
    fp: Counter[str] = Counter()
    fp_values = 0
    for value in clean:
        kinds = det.kinds_of(value)
        fp_values += bool(kinds)
        for got in kinds:
            fp[got] += 1
    columns = sorted(set(total) | {"(none)"})
    print("\nconfusion (rows: planted kind, columns: detected kinds; a value may have several)")
    print(f"{'':16}" + "".join(f"{c[:10]:>11}" for c in columns) + f"{'recall':>9}")
    recall = {}
    for kind in sorted(total):
        recall[kind] = found[kind][kind] / total[kind]
        print(f"{kind:16}" + "".join(f"{found[kind][c]:>11}" for c in columns) + f"{recall[kind]:>9.3f}")
    print(f"{'non-PII':16}" + "".join(f"{fp[c]:>11}" for c in columns) + f"   fp rate {fp_values / len(clean):.4f}")
    for kind, r in recall.items():
        assert r >= (0.99 if kind in k.CHECKSUM_KINDS else 0.95), (kind, r)
    assert fp_values / len(clean) <= 0.01
    assert set(total) == set(k.CLASS_OF)  # every kind is in the corpus


def test_check_digits_are_what_decides() -> None:
    det = default_detectors()
    assert det.kinds("DE89 3704 0044 0532 0130 00") == {k.IBAN}
    assert det.kinds("DE88 3704 0044 0532 0130 00") == set()  # one check digit off
    assert det.kinds("4111 1111 1111 1111") == {k.CARD}
    assert det.kinds("4111 1111 1111 1112") == set()  # Luhn fails
    assert det.kinds("54362315K") == {k.NATIONAL_ID} and det.kinds("54362315A") == set()


def test_attack_redos_pattern_in_detector() -> None:
    """A pattern that needs backtracking cannot become a detector, and the detectors' cost on
    inputs built to explode backtracking engines stays linear."""
    for evil in (r"(a+)+$", r"(\w+\s?)*@", r"(x|x)*y"):
        compile_detector_pattern(evil)  # RE2 runs these in linear time: accepted and harmless
    for needs_backtracking in (r"(a)\1", r"(?=secret)\w+", r"(?<!x)y"):
        with pytest.raises(SchemaSecurityError):
            compile_detector_pattern(needs_backtracking)
    slow = Detectors((Detector("evil", r"(a+)+$", lambda _: True, "test"),))
    det = default_detectors()
    for n in (20_000, 80_000):
        attacks = ["a" * n + "!", "1" * n + "@", "@" * n, "a:" * n, "eyJ" + "a." * n, "-" * n + "x"]
        t0 = time.perf_counter()
        for text in attacks:
            det.kinds(text)
            slow.kinds(text)
        elapsed = time.perf_counter() - t0
        if n == 20_000:
            small = elapsed
    assert elapsed < max(1.0, 12 * small)  # 4x the input, about 4x the time: no blow-up


def test_attack_detect_secrets_plugins_never_run_on_backtracking_re() -> None:
    """Plugins whose patterns RE2 cannot run (GitLab's lookaheads) are left out, not run on `re`."""
    det = default_detectors()
    assert all("(?!" not in d.pattern for d in det)
    assert {d.kind for d in det} >= {k.AWS_KEY, k.JWT, k.PRIVATE_KEY, k.URL_PASSWORD, k.API_TOKEN}
