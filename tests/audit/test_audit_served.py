"""``verify_served``: a checkpoint served from elsewhere (client mode's ``audit verify``) is held to
the rule a witness cosigns by (``check_extends``): signed by the pinned key, and extending the
checkpoint this verifier kept. Nothing is remembered from an answer that fails."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from eventward._internal.audit.checkpoint import sign_checkpoint
from eventward._internal.audit.log import AuditLog
from eventward._internal.audit.signing import AuditSigner, load_signer
from eventward._internal.audit.state import verify_served
from eventward._internal.audit.tree import ConsistencyProof
from eventward._internal.home import Home
from eventward.errors import AuditFork, AuditIntegrityError, AuditRollback


def _grow(log: AuditLog, n: int) -> None:
    for i in range(n):
        log.record("test.event", principal="ops", resource=f"Thing::{i}")


def _honest(log: AuditLog):
    def fetch(from_size: int) -> tuple[str, ConsistencyProof | None]:
        cp = log.checkpoint()
        return cp.text, log.consistency(from_size, cp.size) if 0 < from_size < cp.size else None

    return fetch


def test_served_checkpoints_extend_the_kept_one(home: Home, log: AuditLog, tmp_path: Path) -> None:
    state = tmp_path / "state" / "cp"
    verifier = load_signer(home.audit_key).verifier
    _grow(log, 5)
    first = verify_served(verifier, _honest(log), state=state)
    assert first.remembered is None and first.saved and state.read_text() == first.checkpoint.text
    _grow(log, 9)
    asked: list[int] = []

    def fetch(from_size: int) -> tuple[str, ConsistencyProof | None]:
        asked.append(from_size)
        return _honest(log)(from_size)

    second = verify_served(verifier, fetch, state=state)
    assert asked == [first.checkpoint.size] and second.remembered == first.checkpoint
    assert second.checkpoint.size == first.checkpoint.size + 9 and state.read_text() == second.checkpoint.text
    assert verify_served(verifier, _honest(log), state=None).saved is False  # --no-state


@pytest.mark.parametrize("attack", ["other_key", "rollback", "same_size_fork", "bad_proof", "no_proof",
                                    "proof_between_other_sizes"])
def test_attack_served_checkpoint_refused_and_state_kept(
    home: Home, log: AuditLog, tmp_path: Path, attack: str
) -> None:
    state = tmp_path / "cp"
    signer = load_signer(home.audit_key)
    _grow(log, 6)
    old = log.checkpoint()
    _grow(log, 6)
    kept = verify_served(signer.verifier, _honest(log), state=state).checkpoint
    fake_root = os.urandom(32)
    answers: dict[str, tuple[str, ConsistencyProof | None, type[Exception]]] = {
        "other_key": (sign_checkpoint(AuditSigner(Ed25519PrivateKey.generate()), kept.size + 1, fake_root,
                                      kept.time).text, None, AuditIntegrityError),
        "rollback": (old.text, None, AuditRollback),
        "same_size_fork": (sign_checkpoint(signer, kept.size, fake_root, kept.time).text, None, AuditFork),
        "bad_proof": (sign_checkpoint(signer, kept.size + 4, fake_root, kept.time).text,
                      ConsistencyProof(kept.size, kept.size + 4, tuple(os.urandom(32) for _ in range(3))), AuditFork),
        "no_proof": (sign_checkpoint(signer, kept.size + 4, fake_root, kept.time).text, None, AuditIntegrityError),
        "proof_between_other_sizes": (sign_checkpoint(signer, kept.size + 4, fake_root, kept.time).text,
                                      ConsistencyProof(1, 2, ()), AuditIntegrityError),
    }
    text, proof, error = answers[attack]
    with pytest.raises(error) as ei:
        verify_served(signer.verifier, lambda _: (text, proof), state=state)
    assert type(ei.value) is error  # exactly: a rollback is not reported as a fork, nor either as a bad answer
    assert state.read_text() == kept.text  # nothing remembered from a refused answer
