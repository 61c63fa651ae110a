"""Degenerate Merkle proofs that RFC 9162 rejects (issue 23), each pinned by its attack.

The RFC 6962 reference vectors run in tests/conformance/test_merkle_vectors.py; these are the
inputs outside the algorithms' preconditions that the verifiers used to accept.
"""

from __future__ import annotations

import hashlib

import pytest

from eventward._internal.crypto import merkle
from eventward.errors import AuditIntegrityError

LEAVES = [merkle.leaf_hash(bytes([i])) for i in range(5)]
ROOT5 = merkle.root_from_leaf_hashes(LEAVES)


def test_attack_consistency_proof_from_empty_tree() -> None:
    """Size 0 has one root, SHA-256(""); any other "old root" was accepted with an empty proof."""
    forged_old = hashlib.sha256(b"a history that never was").digest()
    with pytest.raises(AuditIntegrityError, match="empty tree"):
        merkle.verify_consistency(0, 5, forged_old, ROOT5, [])
    merkle.verify_consistency(0, 5, merkle.empty_root(), ROOT5, [])  # the real empty tree extends to anything


def test_attack_consistency_between_two_empty_trees_with_a_forged_root() -> None:
    forged = hashlib.sha256(b"not the empty tree").digest()
    with pytest.raises(AuditIntegrityError, match="empty tree"):
        merkle.verify_consistency(0, 0, forged, forged, [])
    merkle.verify_consistency(0, 0, merkle.empty_root(), merkle.empty_root(), [])


def test_consistency_from_empty_tree_with_hashes_refused() -> None:
    with pytest.raises(AuditIntegrityError):
        merkle.verify_consistency(0, 5, merkle.empty_root(), ROOT5, [LEAVES[0]])


def test_attack_inclusion_zero_length_leaf() -> None:
    """An empty "leaf hash" equal to an empty "root" proved itself in a tree of one."""
    with pytest.raises(AuditIntegrityError, match="32-byte"):
        merkle.verify_inclusion(b"", 0, 1, [], b"")


@pytest.mark.parametrize("short", [b"x", b"\x00" * 31, b"\x00" * 33])
def test_attack_inclusion_wrong_length_leaf_and_root(short: bytes) -> None:
    with pytest.raises(AuditIntegrityError):
        merkle.verify_inclusion(short, 0, 1, [], short)


def test_attack_consistency_same_size_non_hash_roots() -> None:
    with pytest.raises(AuditIntegrityError, match="32-byte"):
        merkle.verify_consistency(3, 3, b"don't care", b"don't care", [])


def test_attack_inclusion_sizes_that_are_not_integers() -> None:
    """JSON ``true``/``false`` decode to bools, which Python compares as 1/0."""
    with pytest.raises(AuditIntegrityError):
        merkle.verify_inclusion(LEAVES[0], False, True, [], LEAVES[0])


@pytest.mark.parametrize(("index", "size"), [(5, 5), (6, 5), (0, 0), (-1, 5)])
def test_inclusion_index_outside_the_tree_refused(index: int, size: int) -> None:
    with pytest.raises(AuditIntegrityError):
        merkle.verify_inclusion(LEAVES[0], index, size, merkle.inclusion_proof(LEAVES, 0), ROOT5)


def test_every_proof_of_small_trees_verifies_and_no_neighbour_does() -> None:
    """Exhaustive for trees up to 17 leaves: each inclusion and consistency proof eventward
    builds verifies, and the same proof under a neighbouring size or index does not."""
    leaves = [merkle.leaf_hash(i.to_bytes(2, "big")) for i in range(17)]
    roots = [merkle.root_from_leaf_hashes(leaves[:n]) for n in range(18)]
    for n in range(1, 18):
        for i in range(n):
            proof = merkle.inclusion_proof(leaves[:n], i)
            merkle.verify_inclusion(leaves[i], i, n, proof, roots[n])
            for j in {i - 1, i + 1} - {i}:
                if 0 <= j < n and proof != merkle.inclusion_proof(leaves[:n], j):
                    with pytest.raises(AuditIntegrityError):
                        merkle.verify_inclusion(leaves[i], j, n, proof, roots[n])
        for m in range(1, n + 1):
            proof = merkle.consistency_proof(leaves[:n], m)
            merkle.verify_consistency(m, n, roots[m], roots[n], proof)
            if m < n:
                with pytest.raises(AuditIntegrityError):
                    merkle.verify_consistency(m, n, roots[m - 1] if m > 1 else merkle.empty_root(), roots[n], proof)
