"""RFC 6962 / RFC 9162 Merkle vectors from certificate-transparency-go, through eventward.

The reference tree (8 leaves), its 8 incremental roots, its audit paths and consistency
proofs are Go literals in certificate-transparency-go's ``merkletree/merkle_verifier_test.go``
(Debian: golang-github-google-certificate-transparency-dev). They are parsed from the installed
file at test time, never copied here. Each vector is checked both ways: eventward builds the
same root and proof, and its verifier accepts it; then every mutation the upstream test applies
(wrong index, size, leaf or root, a changed, dropped, added or empty proof entry) must be
refused. The degenerate inputs the upstream verifier accepts but RFC 9162 leaves undefined are
counted as refused by design (docs/CONFORMANCE.md).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from eventward._internal.crypto import merkle
from eventward.errors import AuditIntegrityError

EMPTY = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


def go_literal(source: str, func: str) -> Any:
    """The composite literal a Go test function returns, as nested lists of ints and hex strings."""
    m = re.search(r"func " + func + r"\(\)[^{]*\{\s*return [^{]*(\{.*?)\n\}\n", source, re.S)
    assert m, f"{func} not found in the Go test file"
    body = re.sub(r"\[\d*\]proofTestVector", "", m.group(1))
    body = re.sub(r'dh\("([0-9a-f]*)"\)', r'"\1"', body)
    body = body.replace("{", "[").replace("}", "]")
    body = re.sub(r",(\s*)\]", r"\1]", body)
    return json.loads(body)


def vectors(source: str) -> dict[str, Any]:
    inputs = [bytes.fromhex(h) for h, _ in go_literal(source, "getInputs")]
    roots = [bytes.fromhex(h) for h, _ in go_literal(source, "getRoots")]
    inclusion = [
        (leaf, size, [bytes.fromhex(h) for h, _ in proof[:n]])
        for leaf, size, n, proof in go_literal(source, "getInclusionTestVector")
    ]
    consistency = [
        (m, n, [bytes.fromhex(h) for h, _ in proof[:k]])
        for m, n, k, proof in go_literal(source, "getConsistencyProofs")
    ]
    return {"inputs": inputs, "roots": roots, "inclusion": inclusion, "consistency": consistency}


def refused(fn: Callable[..., None], *args: Any) -> bool:
    try:
        fn(*args)
    except AuditIntegrityError:
        return True
    return False


def inclusion_mutations(index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes) -> list[tuple]:
    """The wrong inputs upstream's verifierCheck tries (index is 0-based here)."""
    out: list[tuple] = [
        (index - 1, size, proof, root, leaf),
        (index + 1, size, proof, root, leaf),
        (index ^ 2, size, proof, root, leaf),
        (index, size * 2, proof, root, leaf),
        (index, size // 2, proof, root, leaf),
        (index, size, proof, root, merkle.leaf_hash(b"WrongLeaf")),
        (index, size, proof, EMPTY, leaf),
        (index, size, [*proof, b""], root, leaf),
        (index, size, [*proof, root], root, leaf),
        (index, size, [b"", *proof], root, leaf),
        (index, size, [root, *proof], root, leaf),
    ]
    out += [(index, size, [*proof[:i], EMPTY, *proof[i + 1 :]], root, leaf) for i in range(len(proof))]
    if proof:
        out.append((index, size, proof[:-1], root, leaf))
    return [m for m in out if m[0] >= 0]


def consistency_mutations(m: int, n: int, r1: bytes, r2: bytes, proof: list[bytes]) -> list[tuple]:
    """The wrong inputs upstream's verifierConsistencyCheck tries."""
    out: list[tuple] = [
        (m - 1, n, r1, r2, proof),
        (m + 1, n, r1, r2, proof),
        (m ^ 2, n, r1, r2, proof),
        (m, n * 2, r1, r2, proof),
        (m, n // 2, r1, r2, proof),
        (m, n, b"WrongRoot", r2, proof),
        (m, n, r1, b"WrongRoot", proof),
        (m, n, merkle.leaf_hash(b"WrongRoot"), r2, proof),
        (m, n, r1, merkle.leaf_hash(b"WrongRoot"), proof),
        (m, n * 2, r2, r1, proof),
        (m, n, r2, r1, []),
        (m, n, r1, r2, []),
        (m, n, r1, r2, [*proof, b""]),
        (m, n, r1, r2, [*proof, r1]),
        (m, n, r1, r2, proof[:-1]),
        (m, n, r1, r2, [b"", *proof]),
        (m, n, r1, r2, [proof[0], *proof]),
    ]
    out += [(m, n, r1, r2, [*proof[:i], EMPTY, *proof[i + 1 :]]) for i in range(len(proof))]
    return [x for x in out if x[0] >= 0 and x[1] >= 0]


def test_rfc6962_reference_tree_vectors(ct_merkle_tests: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    source, tree_source = ct_merkle_tests
    v = vectors(source)
    counts: Counter[str] = Counter()
    problems: list[str] = []

    def check(ok: bool, what: str) -> None:
        counts["agree" if ok else "disagree"] += 1
        if not ok:
            problems.append(what)

    leaves = [merkle.leaf_hash(d) for d in v["inputs"]]
    assert len(leaves) == 8 and len(v["roots"]) == 8
    for size in range(1, 9):
        check(merkle.root_from_leaf_hashes(leaves[:size]) == v["roots"][size - 1], f"root of {size}")
    check(merkle.root_from_leaf_hashes([]) == EMPTY, "empty root")
    # merkle_tree_test.go states the same roots again (rootForTestLeaves(i): the root after i+1 leaves).
    tree_roots = re.findall(r'case (\d+):\s*return mustDecode\("([0-9a-f]{64})"\)', tree_source)
    assert len(tree_roots) == 8, "rootForTestLeaves not found in merkle_tree_test.go"
    for i, h in tree_roots:
        check(merkle.root_from_leaf_hashes(leaves[: int(i) + 1]) == bytes.fromhex(h), f"tree test root {i}")

    for leaf, size, proof in v["inclusion"]:
        index = leaf - 1  # upstream numbers leaves from 1
        if not 0 <= index < size:  # upstream's first vector: leaf 0 of the empty tree
            check(refused(merkle.verify_inclusion, merkle.leaf_hash(b""), index, size, proof, EMPTY), "leaf 0/0")
            continue
        root = v["roots"][size - 1]
        check(merkle.inclusion_proof(leaves[:size], index) == proof, f"path {leaf}/{size}")
        check(not refused(merkle.verify_inclusion, leaves[index], index, size, proof, root), f"verify {leaf}/{size}")
        for args in inclusion_mutations(index, size, proof, root, leaves[index]):
            check(refused(merkle.verify_inclusion, *args), f"mutated inclusion {leaf}/{size}: {args[:2]}")

    for m, n, proof in v["consistency"]:
        r1, r2 = v["roots"][m - 1], v["roots"][n - 1]
        check(merkle.consistency_proof(leaves[:n], m) == proof, f"proof {m}->{n}")
        check(not refused(merkle.verify_consistency, m, n, r1, r2, proof), f"verify {m}->{n}")
        if proof:  # upstream mutates only non-trivial proofs
            for args in consistency_mutations(m, n, r1, r2, proof):
                check(refused(merkle.verify_consistency, *args), f"mutated consistency {m}->{n}: {args[:2]}")

    # Upstream's degenerate cases (TestVerifyConsistencyProof / TestVerifyInclusionProof).
    dont_care = b"don't care"
    for m, n in ((0, 0), (0, 1), (1, 1)):  # upstream: "always consistent", with any roots
        if refused(merkle.verify_consistency, m, n, dont_care, dont_care, []):
            counts["refused by design: roots that are not hashes"] += 1
        else:
            check(False, f"{m}->{n} with non-hash roots accepted")
    check(not refused(merkle.verify_consistency, 0, 5, EMPTY, v["roots"][4], []), "0->5 from the empty root")
    check(refused(merkle.verify_consistency, 1, 0, v["roots"][0], EMPTY, []), "time travel 1->0")
    check(refused(merkle.verify_consistency, 2, 1, v["roots"][1], v["roots"][0], []), "time travel 2->1")
    check(refused(merkle.verify_consistency, 1, 2, v["roots"][0], v["roots"][1], []), "empty proof 1->2")
    for m, n in ((0, 0), (0, 1), (1, 1)):
        check(refused(merkle.verify_consistency, m, n, EMPTY, EMPTY, [EMPTY]), f"non-empty proof {m}->{n}")
    for index, size in ((0, 0), (0, 1), (1, 0), (2, 1)):
        check(refused(merkle.verify_inclusion, b"", index, size, [], b""), f"invalid path {index}/{size}")
        check(refused(merkle.verify_inclusion, b"", index, size, [], EMPTY), f"invalid root {index}/{size}")

    line = (
        f"RFC 6962/9162 Merkle vectors (certificate-transparency-go): agree {counts['agree']} / refused by design "
        f"{sum(n for k, n in counts.items() if k.startswith('refused'))} / disagree {counts['disagree']}"
    )
    with capsys.disabled():
        print("\n" + line)
    assert counts["disagree"] == 0, "\n".join([line, *problems[:20]])
    assert counts["agree"] > 150, line
