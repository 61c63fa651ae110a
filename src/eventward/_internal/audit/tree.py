"""Storage-backed RFC 6962 tree: proofs from stored subtree hashes instead of all leaves.

The log stores the hash of every complete, aligned subtree ``(level, index)``, covering
leaves ``[index * 2**level, (index + 1) * 2**level)``, as soon as it becomes complete.
Any RFC 6962 subtree that appears in a proof is either one of those or a right edge that
splits into O(log n) of them, so proofs read O(log n) stored nodes. Hashing and proof
verification stay in ``eventward._internal.crypto.merkle``; this module only decides which stored
nodes to combine, mirroring ``merkle.inclusion_proof`` / ``merkle.consistency_proof``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from eventward._internal.crypto.merkle import HASH_SIZE, _split, empty_root, node_hash
from eventward.errors import AuditIntegrityError

NodeReader = Callable[[int, int], bytes]  # (level, index) -> hash of that complete subtree
Frontier = list[tuple[int, bytes]]  # (level, hash) of the perfect subtrees of [0, n), left to right


@dataclass(frozen=True)
class InclusionProof:
    """RFC 6962 audit path of leaf ``index`` in the tree of ``tree_size`` leaves."""

    index: int
    tree_size: int
    leaf_hash: bytes
    hashes: tuple[bytes, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "tree_size": self.tree_size,
            "leaf_hash": _b64(self.leaf_hash),
            "hashes": [_b64(h) for h in self.hashes],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InclusionProof:
        _keys(d, {"index", "tree_size", "leaf_hash", "hashes"}, "inclusion proof")
        return cls(
            _int(d["index"], "index"),
            _int(d["tree_size"], "tree_size"),
            _unb64(d["leaf_hash"]),
            _hashes(d["hashes"]),
        )


@dataclass(frozen=True)
class ConsistencyProof:
    """RFC 6962 proof that the tree of ``new_size`` extends the tree of ``old_size``."""

    old_size: int
    new_size: int
    hashes: tuple[bytes, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "old_size": self.old_size,
            "new_size": self.new_size,
            "hashes": [_b64(h) for h in self.hashes],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConsistencyProof:
        _keys(d, {"old_size", "new_size", "hashes"}, "consistency proof")
        return cls(_int(d["old_size"], "old_size"), _int(d["new_size"], "new_size"), _hashes(d["hashes"]))


# Proofs travel as JSON; decoding is strict so a malformed proof is an integrity failure.
def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


def _unb64(v: object) -> bytes:
    try:
        raw = base64.b64decode(v, validate=True) if isinstance(v, str) else b""
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != HASH_SIZE:
        raise AuditIntegrityError("proof: a hash is not 32 bytes of base64")
    return raw


def _hashes(v: object) -> tuple[bytes, ...]:
    if not isinstance(v, list) or len(v) > 128:
        raise AuditIntegrityError("proof: hashes must be a list of at most 128 hashes")
    return tuple(_unb64(h) for h in v)


def _int(v: object, name: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise AuditIntegrityError(f"proof: {name} must be a non-negative integer")
    return v


def _keys(d: Mapping[str, Any], keys: set[str], what: str) -> None:
    if not isinstance(d, Mapping) or set(d) != keys:
        raise AuditIntegrityError(f"{what}: expected exactly the fields " + ", ".join(sorted(keys)))


def perfect_subtrees(lo: int, hi: int) -> list[tuple[int, int]]:
    """Split ``[lo, hi)`` into maximal aligned complete subtrees, left to right."""
    out: list[tuple[int, int]] = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        if lo:
            level = min(level, (lo & -lo).bit_length() - 1)
        out.append((level, lo >> level))
        lo += 1 << level
    return out


def range_root(node: NodeReader, lo: int, hi: int) -> bytes:
    """MTH of leaves ``[lo, hi)`` for a subtree of the RFC 6962 recursion (``lo`` aligned).

    Such a range splits into complete subtrees of strictly decreasing size, and its root
    folds them from the right: H(P1, H(P2, ... Pk)).
    """
    if lo == hi:
        return empty_root()
    parts = perfect_subtrees(lo, hi)
    root = node(*parts[-1])
    for level, index in reversed(parts[:-1]):
        root = node_hash(node(level, index), root)
    return root


def inclusion_path(node: NodeReader, index: int, size: int) -> list[bytes]:
    """PATH(index, D[size]) from stored nodes (RFC 6962 2.1.1)."""
    stack: list[bytes] = []
    lo, hi, m = 0, size, index
    while hi - lo > 1:
        k = _split(hi - lo)
        if m < k:
            stack.append(range_root(node, lo + k, hi))
            hi = lo + k
        else:
            stack.append(range_root(node, lo, lo + k))
            lo, m = lo + k, m - k
    return stack[::-1]


def consistency_path(node: NodeReader, old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old_size, D[new_size]) from stored nodes (RFC 6962 2.1.2), iteratively."""
    if old_size == new_size or old_size == 0:
        return []
    tail: list[bytes] = []  # built outermost-first; the RFC lists it innermost-first
    m, lo, hi, complete = old_size, 0, new_size, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            tail.append(range_root(node, lo + k, hi))
            hi = lo + k
        else:
            tail.append(range_root(node, lo, lo + k))
            m, lo, complete = m - k, lo + k, False
    head = [] if complete else [range_root(node, lo, hi)]
    return head + tail[::-1]


def load_frontier(node: NodeReader, size: int) -> Frontier:
    return [(level, node(level, index)) for level, index in perfect_subtrees(0, size)]


def push_leaf(frontier: Frontier, index: int, leaf: bytes) -> list[tuple[int, int, bytes]]:
    """Append leaf ``index`` to ``frontier`` (in place); return the subtrees it completes."""
    frontier.append((0, leaf))
    if not index & 1:  # an even leaf completes nothing: half of all calls
        return []
    done: list[tuple[int, int, bytes]] = []
    while len(frontier) > 1 and frontier[-1][0] == frontier[-2][0]:
        level, right = frontier.pop()
        _, left = frontier.pop()
        level += 1
        h = node_hash(left, right)
        frontier.append((level, h))
        done.append((level, index >> level, h))
    return done


def frontier_root(frontier: Frontier) -> bytes:
    if not frontier:
        return empty_root()
    root = frontier[-1][1]
    for _, h in reversed(frontier[:-1]):
        root = node_hash(h, root)
    return root
