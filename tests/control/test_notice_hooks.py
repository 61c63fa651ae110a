"""Client mode: a signed erasure notice drops the cached keys and runs the application's
``on_forget(pseudonym)`` hooks; a failing hook is reported by its code (the seam where the
acknowledgement goes), and an unsigned notice runs nothing."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from eventward._internal.control.anchor import Anchor
from eventward._internal.control.client import NoticeFollower
from eventward.errors import SealError

P1, P2 = "a" * 32, "b" * 32


class FakeApi:
    def __init__(self, wire: Any) -> None:
        self.wire = wire

    def notices(self, after: float, wait: float) -> Any:
        return self.wire


class FakeKeys:
    def __init__(self) -> None:
        self.dropped: list[list[str]] = []

    def forget_subjects(self, hashes: list[str]) -> None:
        self.dropped.append(list(hashes))

    def clear(self) -> None:
        return None


class FakeTrust:
    def revoke(self, kids: list[str]) -> None:
        return None


class Down(Exception):
    code = "index_unavailable"


def _follower(wire: Any, key: Ed25519PrivateKey) -> tuple[NoticeFollower, FakeKeys]:
    keys = FakeKeys()
    return NoticeFollower(FakeApi(wire), key.public_key(), keys, FakeTrust(), None, wait=0.0), keys  # type: ignore[arg-type]


def test_signed_notice_drops_keys_runs_hooks_and_acknowledges_by_code():
    key = Ed25519PrivateKey.generate()
    wire = Anchor(key).sign("notice", {"erased": [P1, P2], "revoked": [], "policy": 1, "until": 1.0})
    f, keys = _follower(wire, key)
    seen: list[str] = []
    acks: list[tuple[str, str | None]] = []

    def hook(p: str) -> None:
        seen.append(p)
        if p == P2:
            raise Down("index for alice@example.org is down")

    f.hooks.append(hook)
    f.acknowledge = lambda p, err: acks.append((p, err))
    f.poll(0.0)
    assert keys.dropped == [[P1, P2]] and seen == [P1, P2]
    assert acks == [(P1, None), (P2, "index_unavailable")]


def test_attack_unsigned_notice_runs_no_hook():
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    wire = Anchor(other).sign("notice", {"erased": [P1], "until": 1.0})
    f, keys = _follower(wire, key)
    ran: list[str] = []
    f.hooks.append(ran.append)
    with pytest.raises(SealError):
        f.poll(0.0)
    assert ran == [] and keys.dropped == []
