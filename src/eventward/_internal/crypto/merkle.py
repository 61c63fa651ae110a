"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs and their verification.

Used by producer seals (leaves are SHA-256 digests of stored event bytes) and by the
audit log. Domain separation (0x00 leaf, 0x01 node) stops a leaf being passed off as an
interior node. Verifiers follow RFC 9162 section 2.1.3.2 and 2.1.4.2 to the letter and
reject proofs with missing or extra hashes: accepting "close enough" proofs is how
immudb once accepted forgeries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from eventward.errors import AuditIntegrityError

HASH_SIZE = 32
_LEAF = b"\x00"
_NODE = b"\x01"
_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    return _sha256(_LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(_NODE + left + right).digest()


def empty_root() -> bytes:
    return _sha256(b"").digest()


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) computed bottom-up; carrying an odd last node up equals RFC 6962's split."""
    if not hashes:
        return empty_root()
    level = list(hashes)
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def _split(n: int) -> int:
    """Largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_proof(hashes: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(m, D[n]) over leaf hashes, RFC 6962 section 2.1.1."""
    n = len(hashes)
    if not 0 <= index < n:
        raise IndexError(f"leaf index {index} outside tree of size {n}")
    proof: list[bytes] = []
    lo, hi, m = 0, n, index
    stack: list[bytes] = []
    while hi - lo > 1:
        k = _split(hi - lo)
        if m < k:
            stack.append(root_from_leaf_hashes(hashes[lo + k : hi]))
            hi = lo + k
        else:
            stack.append(root_from_leaf_hashes(hashes[lo : lo + k]))
            lo, m = lo + k, m - k
    proof.extend(reversed(stack))
    return proof


def consistency_proof(hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """PROOF(m, D[n]), RFC 6962 section 2.1.2."""
    n = len(hashes)
    if not 0 < old_size <= n:
        raise IndexError(f"old size {old_size} outside 1..{n}")
    return _subproof(hashes, old_size, 0, n, True)


def _subproof(hashes: Sequence[bytes], m: int, lo: int, hi: int, complete: bool) -> list[bytes]:
    n = hi - lo
    if m == n:
        return [] if complete else [root_from_leaf_hashes(hashes[lo:hi])]
    k = _split(n)
    if m <= k:
        return [*_subproof(hashes, m, lo, lo + k, complete), root_from_leaf_hashes(hashes[lo + k : hi])]
    return [*_subproof(hashes, m - k, lo + k, hi, False), root_from_leaf_hashes(hashes[lo : lo + k])]


def _is_size(n: object) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**64


def _is_hash(h: object) -> bool:
    return isinstance(h, bytes) and len(h) == HASH_SIZE


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """RFC 9162 2.1.3.2. ``leaf`` is the leaf *hash*. Raises AuditIntegrityError on any mismatch.

    Every input is checked first: sizes are integers in 0..2^64-1, ``leaf``, ``root`` and each
    proof entry exactly one SHA-256 output (a zero-length "leaf hash" equal to a zero-length
    root would otherwise prove itself in a tree of one).
    """
    if not _is_size(index) or not _is_size(size):
        raise AuditIntegrityError("inclusion proof: index and size must be integers in 0..2^64-1")
    if index >= size:
        raise AuditIntegrityError(f"inclusion proof: index {index} outside tree of size {size}", index=index)
    if not _is_hash(leaf) or not _is_hash(root):
        raise AuditIntegrityError("inclusion proof: leaf hash and root must be 32-byte hashes", index=index)
    if not all(_is_hash(p) for p in proof):
        raise AuditIntegrityError("inclusion proof: malformed hash", index=index)
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            raise AuditIntegrityError("inclusion proof: too many hashes", index=index)
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise AuditIntegrityError("inclusion proof: too few hashes", index=index)
    if r != root:
        raise AuditIntegrityError("inclusion proof: root mismatch", index=index)


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 2.1.4.2: the tree of ``new_size`` extends the tree of ``old_size``.

    The algorithm is defined for 0 < old_size < new_size and is followed step by step. The two
    edges it leaves out are decided strictly: equal sizes need an empty proof and equal roots;
    the empty tree (size 0) has exactly one root, MTH({}) = SHA-256(""), so a proof from size 0
    needs an empty proof and that root (any other "old root" is a forgery, not a tree).
    """
    if not _is_size(old_size) or not _is_size(new_size):
        raise AuditIntegrityError("consistency proof: sizes must be integers in 0..2^64-1")
    if new_size < old_size:
        raise AuditIntegrityError(f"consistency: size went from {old_size} to {new_size} (rollback)")
    if not _is_hash(old_root) or not _is_hash(new_root):
        raise AuditIntegrityError("consistency proof: roots must be 32-byte hashes")
    if not all(_is_hash(p) for p in proof):
        raise AuditIntegrityError("consistency proof: malformed hash")
    if old_size == 0:
        if proof:
            raise AuditIntegrityError("consistency proof: expected no hashes from the empty tree")
        if old_root != empty_root():
            raise AuditIntegrityError("consistency: the old root is not the empty tree's root")
    if old_size == new_size:
        if proof:
            raise AuditIntegrityError("consistency proof: expected no hashes for equal sizes")
        if old_root != new_root:
            raise AuditIntegrityError("consistency: same size, different root (fork)")
        return
    if old_size == 0:
        return
    if not proof:  # step 1
        raise AuditIntegrityError("consistency proof: empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # exact power of two: the old root is the first node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise AuditIntegrityError("consistency proof: too many hashes")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise AuditIntegrityError("consistency proof: too few hashes")
    if fr != old_root:
        raise AuditIntegrityError("consistency: old root does not match (fork or rewrite)")
    if sr != new_root:
        raise AuditIntegrityError("consistency: new root does not match")
