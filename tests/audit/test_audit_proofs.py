"""Inclusion and consistency proofs: forgeries are rejected, and proofs read O(log n) stored rows."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from eventward._internal.audit.log import AuditLog
from eventward._internal.audit.tree import ConsistencyProof, InclusionProof
from eventward._internal.audit.verify import verify_consistency_proof, verify_inclusion_proof
from eventward._internal.crypto import merkle
from eventward._internal.home import Home
from eventward.errors import AuditIntegrityError

from .helpers import events, fill

N = 77


@pytest.fixture
def tree(log):
    fill(log, N)
    cp = log.checkpoint()
    return log, cp


def test_genuine_proofs_verify_against_root_and_checkpoint(tree):
    log, cp = tree
    for i in (0, 1, 38, 63, 64, N - 1):
        p = log.prove(i)
        verify_inclusion_proof(p, cp, record=log.get(i).body)
        verify_inclusion_proof(p, log.root())
        assert InclusionProof.from_dict(p.to_dict()) == p
    for m in (1, 2, 31, 32, 33, N):
        c = log.consistency(m)
        verify_consistency_proof(c, log.root(m), cp)
        assert ConsistencyProof.from_dict(c.to_dict()) == c


def _other(h: bytes) -> bytes:
    return bytes([h[0] ^ 1]) + h[1:]


@pytest.mark.parametrize("i", [0, 5, 40, N - 1])
def test_forged_inclusion_proofs_are_rejected(tree, i):
    log, cp = tree
    p = log.prove(i)
    forgeries = {
        "wrong sibling": replace(p, hashes=(_other(p.hashes[0]), *p.hashes[1:])),
        "wrong top sibling": replace(p, hashes=(*p.hashes[:-1], _other(p.hashes[-1]))),
        "extra hash": replace(p, hashes=(*p.hashes, p.hashes[-1])),
        "missing hash": replace(p, hashes=p.hashes[:-1]),
        "no hashes": replace(p, hashes=()),
        "wrong index": replace(p, index=i ^ 1),
        "index past size": replace(p, index=N),
        "wrong leaf": replace(p, leaf_hash=_other(p.leaf_hash)),
        "swapped order": replace(p, hashes=tuple(reversed(p.hashes))),
    }
    for name, forged in forgeries.items():
        with pytest.raises(AuditIntegrityError):
            verify_inclusion_proof(forged, cp)
            pytest.fail(f"accepted a proof with {name}")
    # Wrong size. A bare root does not bind a size (for leaf 0 the path of 77 and 78 leaves has
    # the same shape), which is why proofs are checked against signed checkpoints.
    for size in (N - 1, N + 1, 2 * N):
        with pytest.raises(AuditIntegrityError):
            verify_inclusion_proof(replace(p, tree_size=size), cp)
    # The right proof for the wrong record bytes.
    with pytest.raises(AuditIntegrityError):
        verify_inclusion_proof(p, cp, record=log.get((i + 1) % N).body)


def test_forged_consistency_proofs_are_rejected(tree):
    log, cp = tree
    for m in (1, 13, 32, 50):
        c = log.consistency(m)
        old = log.root(m)
        forgeries = [
            replace(c, hashes=(_other(c.hashes[0]), *c.hashes[1:])),
            replace(c, hashes=(*c.hashes, c.hashes[-1])),
            replace(c, hashes=c.hashes[:-1]),
            replace(c, hashes=()),
            replace(c, old_size=m + 1),
            replace(c, new_size=N - 1),
        ]
        for forged in forgeries:
            with pytest.raises(AuditIntegrityError):
                verify_consistency_proof(forged, old, cp)
        with pytest.raises(AuditIntegrityError):  # roots swapped
            verify_consistency_proof(c, cp.root, old)
        with pytest.raises(AuditIntegrityError):  # another old root (a fork)
            verify_consistency_proof(c, _other(old), cp.root)
    with pytest.raises(AuditIntegrityError, match="rollback"):
        verify_consistency_proof(ConsistencyProof(N, 10, ()), cp.root, log.root(10))


@pytest.mark.parametrize(
    "doc",
    [
        {"index": 0, "tree_size": 1, "leaf_hash": "AAAA", "hashes": []},
        {"index": -1, "tree_size": 1, "leaf_hash": "A" * 43 + "=", "hashes": []},
        {"index": True, "tree_size": 1, "leaf_hash": "A" * 43 + "=", "hashes": []},
        {"index": 0, "tree_size": 1, "leaf_hash": "A" * 43 + "=", "hashes": "nope"},
        {"index": 0, "tree_size": 1, "leaf_hash": "A" * 43 + "=", "hashes": ["@" * 44]},
        {"index": 0, "tree_size": 1, "leaf_hash": "A" * 43 + "=", "hashes": [], "root": "x"},
        {"index": 0, "tree_size": 1, "leaf_hash": "A" * 43 + "=", "hashes": ["A" * 43 + "="] * 129},
    ],
)
def test_malformed_proof_documents_are_integrity_errors(doc):
    with pytest.raises(AuditIntegrityError):
        InclusionProof.from_dict(doc)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    home = Home(tmp_path_factory.mktemp("big") / "home")
    with AuditLog.open(home) as log:
        batch = events(10_000)
        for _ in range(10):
            log.append_many(batch)
        yield log


def _count_statements(log: AuditLog) -> list[str]:
    seen: list[str] = []
    log._conn.set_trace_callback(seen.append)
    return seen


@pytest.mark.slow  # scale/fault-injection: `make bench` runs it (`pytest -m slow`)
def test_proofs_at_100k_records_read_o_log_n_stored_nodes(big):
    n = big.size()
    assert n == 100_000
    bound = 2 * math.ceil(math.log2(n)) + 2
    root = big.root()
    for i in (0, 1, 4_095, 50_000, 65_536, 99_998, n - 1):
        big.node_reads = 0
        statements = _count_statements(big)
        proof = big.prove(i)
        big._conn.set_trace_callback(None)
        assert big.node_reads <= bound, (i, big.node_reads)
        lookups = [s for s in statements if s.startswith("SELECT") and "WHERE" in s and "max(idx)" not in s]
        assert len(lookups) == big.node_reads  # every row read is counted...
        assert all("idx = " in s for s in lookups)  # ...and is a point lookup, never a scan
        assert len(statements) <= big.node_reads + 2  # plus the size query (and nothing else)
        merkle.verify_inclusion(proof.leaf_hash, i, n, proof.hashes, root)
    for m in (1, 777, 65_536, 99_999):
        big.node_reads = 0
        c = big.consistency(m)
        assert big.node_reads <= bound
        merkle.verify_consistency(m, n, big.root(m), root, c.hashes)


@pytest.mark.slow  # scale/fault-injection: `make bench` runs it (`pytest -m slow`)
def test_the_stored_tree_at_100k_matches_a_full_recomputation(big):
    leaves = [merkle.leaf_hash(body) for _, _, body in big.scan()]
    assert len(leaves) == 100_000
    assert big.root() == merkle.root_from_leaf_hashes(leaves)
    assert big.root(65_537) == merkle.root_from_leaf_hashes(leaves[:65_537])
