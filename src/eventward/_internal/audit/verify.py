"""Verifiers anyone can run: the whole log, single proofs, checkpoints.

``verify_log`` trusts nothing it reads. It recomputes every leaf hash from the stored record
bytes, checks each record sits at the index it claims, rebuilds the whole tree and compares
every stored subtree hash, and checks every signed checkpoint (the ones the log issued and
one given from outside) against the rebuilt tree. Memory is O(log n): records and nodes are
streamed in index order from one read snapshot.

``error.index`` is the first record not proven intact. A changed, removed or reordered
record is named exactly. A record rewritten together with its leaf hash is caught by the
first stored subtree over it, so it is localized to that pair of records (``range``). A
log rewritten wholesale (every stored hash recomputed) is only caught by a signed
checkpoint, and localized to the records after the last checkpoint that still matches.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import orjson

from eventward._internal.audit.checkpoint import Checkpoint, verify_checkpoint
from eventward._internal.audit.log import AuditLog
from eventward._internal.audit.records import decode
from eventward._internal.audit.signing import AuditVerifier, PublicKeyLike
from eventward._internal.audit.tree import ConsistencyProof, Frontier, InclusionProof, frontier_root, push_leaf
from eventward._internal.crypto import merkle
from eventward.errors import AuditFork, AuditIntegrityError, AuditRollback, ConfigError

Progress = Callable[[int, int], None]  # (records checked, total records)
PROGRESS_EVERY = 8192

__all__ = [
    "VerifyReport",
    "check_extends",
    "verify_checkpoint",
    "verify_consistency_proof",
    "verify_inclusion_proof",
    "verify_log",
]


@dataclass(frozen=True)
class VerifyReport:
    size: int
    root: bytes
    records_checked: int
    nodes_checked: int
    checkpoints_checked: int
    checkpoint: Checkpoint | None = None  # the outside checkpoint, once verified
    error: AuditIntegrityError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def first_bad_index(self) -> int | None:
        return None if self.error is None else self.error.index

    def raise_for_error(self) -> VerifyReport:
        if self.error is not None:
            raise self.error
        return self


def _root(proof_root: bytes | Checkpoint, size: int, what: str) -> bytes:
    if isinstance(proof_root, Checkpoint):
        if proof_root.size != size:
            raise AuditIntegrityError(f"{what}: proof is for size {size}, checkpoint for {proof_root.size}")
        return proof_root.root
    return proof_root


def verify_inclusion_proof(
    proof: InclusionProof, root: bytes | Checkpoint, *, record: bytes | None = None
) -> None:
    """Check ``proof`` against a root (or verified checkpoint); with ``record``, also that the
    proof's leaf is exactly those stored bytes at the index the proof names."""
    if record is not None:
        if merkle.leaf_hash(record) != proof.leaf_hash:
            raise AuditIntegrityError(
                "inclusion proof: record bytes do not match the leaf", index=proof.index
            )
        decode(record, proof.index)
    target = _root(root, proof.tree_size, "inclusion proof")
    merkle.verify_inclusion(proof.leaf_hash, proof.index, proof.tree_size, proof.hashes, target)


def verify_consistency_proof(
    proof: ConsistencyProof, old: bytes | Checkpoint, new: bytes | Checkpoint
) -> None:
    """Check that the tree behind ``new`` extends the tree behind ``old``."""
    if isinstance(old, Checkpoint) and isinstance(new, Checkpoint) and new.size < old.size:
        raise AuditIntegrityError(f"consistency: size went from {old.size} to {new.size} (rollback)")
    merkle.verify_consistency(
        proof.old_size,
        proof.new_size,
        _root(old, proof.old_size, "consistency proof"),
        _root(new, proof.new_size, "consistency proof"),
        proof.hashes,
    )


def check_extends(kept: Checkpoint | None, new: Checkpoint, proof: ConsistencyProof | None, *,
                  kept_by: str = "this verifier kept") -> None:
    """That ``new`` (already signature-checked) extends ``kept``, the last checkpoint this party
    verified (None: first use, nothing to check). ``proof`` is the consistency proof from
    ``kept.size`` to ``new.size`` (None only when the sizes are equal). The rule a witness cosigns
    by and a client-mode verifier accepts by. Raises AuditRollback (a smaller tree), AuditFork
    (another root at the same size, or a proof that fails) and AuditIntegrityError (no proof, or
    one between other sizes)."""
    if kept is None:
        return
    if new.size < kept.size:
        raise AuditRollback(
            f"rollback: checkpoint of size {new.size} is older than the size {kept.size} {kept_by} "
            "(records were removed or the log was restored from a backup)", index=new.size)
    if new.size == kept.size:
        if new.root != kept.root:
            raise AuditFork(f"fork: a different tree of the same size {new.size} than the one {kept_by}")
        return
    if proof is None:
        raise AuditIntegrityError(f"no consistency proof from size {kept.size} (the last {kept_by}) to {new.size}")
    if (proof.old_size, proof.new_size) != (kept.size, new.size):
        raise AuditIntegrityError(
            f"the proof is from {proof.old_size} to {proof.new_size}, not from {kept.size} to {new.size}")
    try:
        verify_consistency_proof(proof, kept, new)
    except AuditIntegrityError:
        raise AuditFork(f"fork: inconsistent: the tree of size {new.size} does not extend the tree of size "
                        f"{kept.size} {kept_by} (history was rewritten)", index=kept.size) from None


class _TreeCheck:
    """Rebuilds the tree leaf by leaf and compares it with what is stored."""

    def __init__(self, reader: AuditLog, root_sizes: set[int]) -> None:
        self._reader = reader
        self._levels: dict[int, Iterator[tuple[int, bytes]]] = {}
        self.frontier: Frontier = []
        self.roots: dict[int, bytes] = {0: merkle.empty_root()} if 0 in root_sizes else {}
        self._root_sizes = root_sizes
        self.nodes = 0

    def leaf(self, i: int, stored_leaf: bytes, body: bytes) -> None:
        if merkle.leaf_hash(body) != stored_leaf:
            raise AuditIntegrityError(f"audit record {i}: bytes do not match the stored leaf hash", index=i)
        try:
            decode(body, i)
        except AuditIntegrityError as e:
            raise _displaced(e, i, body) from None
        for level, j, h in push_leaf(self.frontier, i, stored_leaf):
            self._node(level, j, h)
        if i + 1 in self._root_sizes:
            self.roots[i + 1] = frontier_root(self.frontier)

    def _node(self, level: int, j: int, h: bytes) -> None:
        rows = self._levels.setdefault(level, self._reader.scan_nodes(level))
        row = next(rows, None)
        self.nodes += 1
        first, end = j << level, (j + 1) << level
        if row is None or row[0] != j:
            raise AuditIntegrityError(
                f"audit tree node (level {level}, index {j}) over records {first}..{end - 1} is missing",
                index=first,
                level=level,
                range=(first, end),
            )
        if bytes(row[1]) != h:
            what = "records were rewritten" if level == 1 else "the stored node was altered"
            raise AuditIntegrityError(
                f"audit tree node (level {level}, index {j}) over records {first}..{end - 1} "
                f"does not match ({what})",
                index=first,
                level=level,
                range=(first, end),
            )


def _displaced(e: AuditIntegrityError, i: int, body: bytes) -> AuditIntegrityError:
    """A record claiming an earlier index means something was inserted at or after that index."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return e
    claimed = obj.get("index") if isinstance(obj, dict) else None
    if isinstance(claimed, int) and not isinstance(claimed, bool) and 0 <= claimed < i:
        return AuditIntegrityError(
            f"audit record {i} belongs at {claimed}: records were inserted at or after {claimed}",
            index=claimed,
            range=(claimed, i + 1),
        )
    return e


def _verifier(
    source: AuditLog | str | os.PathLike[str], public_key: PublicKeyLike | None
) -> AuditVerifier | None:
    if public_key is not None:
        return AuditVerifier.of(public_key)
    if isinstance(source, AuditLog):
        try:
            return source.verifier
        except ConfigError:
            return None
    return None


def verify_log(
    source: AuditLog | str | os.PathLike[str],
    *,
    checkpoint: str | None = None,
    public_key: PublicKeyLike | None = None,
    progress: Progress | None = None,
) -> VerifyReport:
    """Verify the whole log (an open AuditLog or a database file) and report the first bad index.

    With ``checkpoint`` (a checkpoint text published earlier) also verify its signature and
    that the log still extends it: a smaller log is a rollback, a different root a fork.
    ``public_key`` defaults to the log's own key when ``source`` is an AuditLog with one.
    """
    verifier = _verifier(source, public_key)
    if checkpoint is not None and verifier is None:
        raise ConfigError("verifying against a checkpoint needs the audit public key")
    reader = source.reader() if isinstance(source, AuditLog) else AuditLog.open_readonly(source)
    with reader, reader.snapshot():
        return _verify(reader, checkpoint, verifier, progress)


def _verify(
    reader: AuditLog, outside: str | None, verifier: AuditVerifier | None, progress: Progress | None
) -> VerifyReport:
    size = reader.size()
    empty = VerifyReport(size, b"", 0, 0, 0)
    # Signatures first: a checkpoint that does not verify is worthless as evidence.
    try:
        given = verify_checkpoint(outside, verifier) if outside is not None and verifier else None
    except AuditIntegrityError as e:
        return replace(empty, error=e)
    stored: list[Checkpoint] = []
    if verifier is not None:
        for k, text in enumerate(reader.checkpoints()):
            try:
                stored.append(verify_checkpoint(text, verifier))
            except AuditIntegrityError as e:
                return replace(empty, error=AuditIntegrityError(f"stored checkpoint #{k + 1}: {e.message}"))
    evidence = sorted([*stored, *([given] if given else [])], key=lambda c: c.size)

    tree = _TreeCheck(reader, {c.size for c in evidence if c.size <= size} | {size})
    checked = 0
    try:
        for i, stored_leaf, body in reader.scan():
            if i != checked:
                what = "is missing" if i > checked else f"is preceded by a record stored at {i}"
                raise AuditIntegrityError(f"audit record {checked} {what}", index=checked)
            tree.leaf(i, bytes(stored_leaf), bytes(body))
            checked += 1
            if progress is not None and checked % PROGRESS_EVERY == 0:
                progress(checked, size)
        if checked != size:
            raise AuditIntegrityError(f"audit record {checked} is missing", index=checked)
        expected_nodes = sum(size >> level for level in range(1, size.bit_length()))
        if reader.node_count() != expected_nodes:
            raise AuditIntegrityError("audit tree has stored nodes beyond its records", index=size)
    except AuditIntegrityError as e:
        return VerifyReport(size, b"", checked, tree.nodes, 0, error=e)
    if progress is not None:
        progress(checked, size)
    root = tree.roots.get(size, merkle.empty_root())
    report = VerifyReport(size, root, checked, tree.nodes, len(evidence), checkpoint=given)
    error = _against_checkpoints(evidence, tree.roots, size) or _consistent(reader, given, root, size)
    return replace(report, error=error) if error else report


def _against_checkpoints(
    evidence: list[Checkpoint], roots: dict[int, bytes], size: int
) -> AuditIntegrityError | None:
    intact = 0  # every record below this is proven by a matching signed checkpoint
    for cp in evidence:
        if cp.size > size:
            return AuditIntegrityError(
                f"rollback: the log has {size} records but a signed checkpoint has {cp.size}", index=size
            )
        if roots[cp.size] != cp.root:
            return AuditIntegrityError(
                f"fork: records {intact}..{cp.size - 1} differ from the signed checkpoint of size {cp.size}",
                index=intact,
                range=(intact, cp.size),
            )
        intact = cp.size
    return None


def _consistent(
    reader: AuditLog, given: Checkpoint | None, root: bytes, size: int
) -> AuditIntegrityError | None:
    """Check the published consistency proof from the outside checkpoint to now, as a client would."""
    if given is None:
        return None
    try:
        proof = reader.consistency(given.size, size)
        verify_consistency_proof(proof, given, root)
    except AuditIntegrityError as e:
        return e
    return None
