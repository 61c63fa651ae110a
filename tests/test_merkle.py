"""RFC 6962 Merkle tree: roots, proofs and strict verification (forged proofs must fail)."""

import hashlib

import pytest

from eventward._internal.crypto import merkle
from eventward.errors import AuditIntegrityError


def mth(leaves: list[bytes]) -> bytes:
    """The RFC 6962 recursive definition, as the reference."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return merkle.leaf_hash(leaves[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return merkle.node_hash(mth(leaves[:k]), mth(leaves[k:]))


def data(n: int) -> list[bytes]:
    return [f"record-{i}".encode() for i in range(n)]


@pytest.mark.parametrize("n", range(0, 34))
def test_root_matches_reference(n):
    d = data(n)
    assert merkle.root_from_leaf_hashes([merkle.leaf_hash(x) for x in d]) == mth(d)


def test_every_inclusion_proof_verifies_and_forgeries_fail():
    for n in range(1, 34):
        hashes = [merkle.leaf_hash(x) for x in data(n)]
        root = merkle.root_from_leaf_hashes(hashes)
        for i in range(n):
            proof = merkle.inclusion_proof(hashes, i)
            merkle.verify_inclusion(hashes[i], i, n, proof, root)
            with pytest.raises(AuditIntegrityError):
                merkle.verify_inclusion(hashes[i], i, n, [*proof, b"\x00" * 32], root)
            if proof:
                with pytest.raises(AuditIntegrityError):
                    merkle.verify_inclusion(hashes[i], i, n, proof[:-1], root)
                bad = list(proof)
                bad[0] = bytes(32)
                with pytest.raises(AuditIntegrityError):
                    merkle.verify_inclusion(hashes[i], i, n, bad, root)
            if n > 1:
                with pytest.raises(AuditIntegrityError):
                    merkle.verify_inclusion(hashes[i], (i + 1) % n, n, proof, root)


def test_every_consistency_proof_verifies_and_forgeries_fail():
    for n in range(1, 34):
        hashes = [merkle.leaf_hash(x) for x in data(n)]
        new_root = merkle.root_from_leaf_hashes(hashes)
        for m in range(1, n + 1):
            old_root = merkle.root_from_leaf_hashes(hashes[:m])
            proof = merkle.consistency_proof(hashes, m)
            merkle.verify_consistency(m, n, old_root, new_root, proof)
            if m < n:
                with pytest.raises(AuditIntegrityError):
                    merkle.verify_consistency(m, n, old_root, new_root, [*proof, bytes(32)])
                with pytest.raises(AuditIntegrityError):
                    merkle.verify_consistency(m, n, bytes(32), new_root, proof)
                with pytest.raises(AuditIntegrityError):
                    merkle.verify_consistency(m, n, old_root, new_root, proof[:-1])
    with pytest.raises(AuditIntegrityError, match="rollback"):
        merkle.verify_consistency(5, 4, bytes(32), bytes(32), [])


def test_leaf_cannot_pose_as_node():
    a, b = merkle.leaf_hash(b"a"), merkle.leaf_hash(b"b")
    forged = a + b  # the 64 bytes an interior node hashes
    assert merkle.leaf_hash(forged) != merkle.node_hash(a, b)
