"""RemoteNotices keeps an empty ``erasures_due`` answer while the notice follower says nothing was
erased since it was asked: the Consumer's half-second check is then no HTTPS round trip. Anything
that could hide an erasure (a notice, a failed poll, a stopped follower, an acknowledgement, a
non-empty answer, ``recheck_s``) makes the next check ask the control plane again."""

from __future__ import annotations

import time
from typing import Any

from eventward._internal import demo
from eventward._internal.control.client import LocalControlAPI, RemoteNotices


class _API:
    principal = "shipping-svc"

    def __init__(self) -> None:
        self.asked = 0
        self.due: list[str] = []

    def register_group(self, group: str) -> None:
        pass

    def erasures_due(self, group: str) -> list[str]:
        self.asked += 1
        return list(self.due)

    def acknowledge(self, group: str, pseudonym: str, error: str | None) -> bool:
        return True


class _Follower:
    def __init__(self) -> None:
        self.changes = 0
        self.following = True

    def unchanged_since(self, changes: int) -> bool:
        return self.following and self.changes == changes


class _Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_empty_answer_is_kept_only_while_nothing_could_have_changed() -> None:
    api, follower, clock = _API(), _Follower(), _Clock()
    board = RemoteNotices(api, follower, recheck_s=30.0, clock=clock)  # type: ignore[arg-type]
    assert board.due("g") == [] and api.asked == 1  # the first answer is always asked for
    assert board.due("g") == [] and api.asked == 1
    assert board.due("other") == [] and api.asked == 2  # per group
    follower.changes += 1  # a notice with an erasure (or a failed poll)
    api.due = ["p1"]
    assert board.due("g") == ["p1"] and api.asked == 3
    assert board.due("g") == ["p1"] and api.asked == 4  # a non-empty answer is asked again
    board.acknowledge("p1", "g", principal="shipping-svc")
    api.due = []
    assert board.due("g") == [] and api.asked == 5
    assert board.due("g") == [] and api.asked == 5
    clock.now += 31  # never kept longer than recheck_s
    assert board.due("g") == [] and api.asked == 6
    follower.following = False  # stopped or behind: every check asks
    assert board.due("g") == [] and board.due("g") == [] and api.asked == 8


def test_a_group_whose_hooks_failed_is_always_asked() -> None:
    """Its failures come due again ``retry_s`` later with no notice to announce them."""
    api, follower = _API(), _Follower()
    board = RemoteNotices(api, follower)  # type: ignore[arg-type]
    assert board.due("g") == [] and board.due("g") == [] and api.asked == 1
    board.acknowledge("p1", "g", principal="shipping-svc", error="index_offline")
    for _ in range(3):
        assert board.due("g") == []
    assert api.asked == 4
    assert board.due("h") == [] and board.due("h") == [] and api.asked == 5  # other groups unaffected


def test_without_a_follower_every_check_asks() -> None:
    api = _API()
    board = RemoteNotices(api)  # type: ignore[arg-type]
    for _ in range(3):
        assert board.due("g") == []
    assert api.asked == 3


class _Counting:
    def __init__(self, inner: LocalControlAPI) -> None:
        self.inner, self.principal, self.due_calls = inner, inner.principal, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def erasures_due(self, group: str) -> list[str]:
        self.due_calls += 1
        return self.inner.erasures_due(group)


def test_attack_a_forget_after_an_empty_answer_is_answered_at_the_next_check(world: Any) -> None:
    """The empty answer must not hide a later erasure: once the signed notice is applied, the
    consumer's next check asks, runs its on_forget hook and acknowledges."""
    with world.client(demo.PRODUCER).producer(demo.TOPIC) as p:  # the subject gets keys to destroy
        p.send_many(demo.EVENT_TYPE, [demo.order(i) for i in range(3)])
    api = _Counting(LocalControlAPI(world.plane, demo.SHIPPING))
    shipping = world.client(demo.SHIPPING, api=api)
    consumer = shipping.consumer(demo.TOPIC, group="read-model", from_beginning=True)
    purged: list[str] = []
    consumer.on_forget(purged.append)
    assert consumer.check_notices() == 0 and consumer.check_notices() == 0
    assert api.due_calls == 1  # the second check was answered by the follower's silence
    changes = shipping.notices.changes
    done = world.dep.forget(demo.FORGOTTEN, principal=demo.ADMIN, reason="gdpr-art17")
    deadline = time.monotonic() + 5
    while shipping.notices.changes == changes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert shipping.notices.changes > changes
    assert consumer.check_notices() == 1 and api.due_calls == 2
    assert purged == [done.receipt.subject_hash]
    status = {g.group: g.state for g in world.dep.notices.status(done.receipt.subject_hash).groups}
    assert status[f"{demo.SHIPPING}/read-model"] == "acked"
    consumer.close()
