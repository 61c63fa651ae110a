"""Forget and hold reasons are short codes at the SDK too, not only in the CLI: free text (which
invites "asked by jane@example.org on the phone" into the tamper-evident, never-erased audit
log) is refused with a typed InputError by KeyService and Deployment, so every client gets the
rule. Nothing is held, forgotten or audited on a refusal, and the text is never echoed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward.errors import InputError

SUBJECT = "cust-4711"
FREE_TEXT = (
    "asked by jane.doe@example.org on the phone",
    "Case 42",
    "gdpr art.17",
    "x" * 65,
    "-leading-dash",
    "hold-me\n",
)


@pytest.fixture
def dep(tmp_path: Path) -> Iterator[Deployment]:
    d = Deployment.init(Home(tmp_path / "home"), admin="admin")
    yield d
    d.close()


def _audited(dep: Deployment) -> str:
    dep.audit.flush()
    return repr(dep.audit.tail(10_000))


@pytest.mark.parametrize("reason", FREE_TEXT)
def test_attack_free_text_reason_sdk(dep: Deployment, reason: str) -> None:
    for attempt in (
        lambda: dep.keys.hold(SUBJECT, principal="admin", reason=reason),
        lambda: dep.keys.forget(SUBJECT, principal="admin", reason=reason),
        lambda: dep.forget(SUBJECT, principal="admin", reason=reason),
    ):
        with pytest.raises(InputError) as ei:
            attempt()
        assert ei.value.details.get("rule") == "reason_code"
        assert reason.strip() not in str(ei.value) and reason.strip() not in repr(ei.value.details)
    assert not dep.keys.is_held(SUBJECT)
    audited = _audited(dep)
    assert "key.forget" not in audited and "key.hold" not in audited
    assert reason.strip() not in audited


def test_reason_codes_are_accepted_and_recorded(dep: Deployment) -> None:
    dep.keys.hold(SUBJECT, principal="admin", reason="litigation-2026.17")
    assert dep.keys.is_held(SUBJECT)
    assert dep.keys.release(SUBJECT, principal="admin")
    done = dep.forget(SUBJECT, principal="admin", reason="gdpr-art17")
    assert done.certificate.claims["reason_code"] == "gdpr-art17"
    done = dep.forget("cust-4712", principal="admin")  # no reason: the generic code
    assert done.certificate.claims["reason_code"] == "erasure-request"
    assert "litigation-2026.17" in _audited(dep)


def test_attack_hold_needs_a_reason_code(dep: Deployment) -> None:
    for empty in ("", "   "):
        with pytest.raises(InputError):
            dep.keys.hold(SUBJECT, principal="admin", reason=empty)
    with pytest.raises(InputError):
        dep.keys.hold(SUBJECT, principal="admin", reason=None)  # type: ignore[arg-type]
    assert not dep.keys.is_held(SUBJECT)
