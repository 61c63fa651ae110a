"""Policy changes: versioned, authorized by the current policy, audited, atomic; invalid or
unauthorized changes are refused and the old policy stays in force; changes made by another
engine or another process reach a running engine within 1 s."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from eventward._internal.policy import base
from eventward._internal.policy.engine import PolicyEngine
from eventward._internal.policy.store import PolicyStore
from eventward.errors import AccessDenied, ConflictError, NotFoundError, PolicyError
from support_wait import wait_until

from .support import ABAC, POLICY

ORDERS = ("shipping-svc", base.SUBSCRIBE, ("Topic", "orders"), None)
# v2: shipping loses orders, gains payments.
POLICY_V2 = POLICY.replace("{allow: subscribe, topic: orders}", "{allow: subscribe, topic: payments}")


def test_versions_are_stored_and_listed(store, audit):
    assert store.active_version() == 1
    v2 = store.apply("alice", POLICY_V2, {"abac.cedar": ABAC})
    assert v2 == 2 and store.active_version() == 2
    rows = store.versions()
    listed = [(v.version, v.principal, active) for v, active in rows]
    assert listed == [(1, "bootstrap", False), (2, "alice", True)]
    assert store.get(1).yaml == POLICY and store.get().yaml == POLICY_V2
    assert store.get(2).cedar == {"abac.cedar": ABAC}
    applied = [e for e in audit.events if e.action == "policy.apply" and e.outcome == "ok"]
    assert [(e.principal, e.meta["version"], e.meta["bootstrap"]) for e in applied] == [
        ("bootstrap", 1, True),
        ("alice", 2, False),
    ]
    assert all(len(e.meta["sha256"]) == 64 and e.resource == "Policy::active" for e in applied)
    with pytest.raises(NotFoundError):
        store.get(99)


def test_store_file_is_private(store):
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600


def test_bootstrap_only_once(store):
    with pytest.raises(ConflictError):
        store.init(POLICY)
    assert store.active_version() == 1


def test_apply_before_init_is_refused(tmp_path):
    s = PolicyStore(tmp_path / "p")
    try:
        with pytest.raises(ConflictError, match="policy init"):
            s.apply("alice", POLICY)
        assert s.active_version() == 0
    finally:
        s.close()


def test_engine_without_policy_denies_everything(tmp_path):
    e = PolicyEngine(PolicyStore(tmp_path / "p"))
    try:
        d = e.decide("alice", base.MANAGE_POLICY, ("Policy", "active"))
        assert not d.allowed and "eventward policy init" in d.missing
    finally:
        e.close()


@pytest.mark.parametrize("who", ["auditor", "shipping-svc", "mallory", "bootstrap"])
def test_change_needs_manage_policy(store, engine, audit, who):
    with pytest.raises(AccessDenied) as ei:
        store.apply(who, POLICY_V2, {"abac.cedar": ABAC})
    assert ei.value.explanation.action == base.MANAGE_POLICY and ei.value.explanation.missing
    assert store.active_version() == 1
    assert engine.decide(*ORDERS).allowed
    denied = [e for e in audit.events if e.action == "policy.apply" and e.outcome == "denied"]
    assert denied and denied[-1].principal == who


SHIP0 = "{allow: subscribe, topic: orders}"


def edit(old: str, new: str) -> str:
    assert old in POLICY
    return POLICY.replace(old, new)


def grant0(new: str) -> str:
    return edit(SHIP0, new)


def cedar(name: str, text: str) -> dict[str, str]:
    return {name: text}


ANALYTICS_ATTRS = "attributes: {zone: external}"
SCHEMA_ERR = "fails Cedar schema validation"

# (yaml, cedar files, expected PolicyError path, message fragment)
INVALID = [
    (
        edit("roles: [order-writer]", "rolez: [order-writer]"),
        {},
        "principals.orders-svc.rolez",
        "unknown key",
    ),
    (POLICY + "\nextra: 1\n", {}, "extra", "unknown key"),
    (grant0("{allow: subscribe, topik: orders}"), {}, "roles.shipping[0].topik", "unknown key"),
    (grant0("{allow: teleport, topic: orders}"), {}, "roles.shipping[0].allow[0]", "unknown action"),
    (grant0("{allow: subscribe, topic: orders, deny: publish}"), {}, "roles.shipping[0]", "exactly one of"),
    (edit("roles: [shipping]", "roles: [shiping]"), {}, "principals.shipping-svc.roles[0]", "not defined"),
    (grant0("{allow: subscribe, topic: 'a..b'}"), {}, "roles.shipping[0].topic[0]", "not a valid topic"),
    (
        grant0('{allow: subscribe, topic: "*", match: prefixed}'),
        {},
        "roles.shipping[0].match",
        "literal wildcard",
    ),
    (grant0("{allow: subscribe, class: pii}"), {}, "roles.shipping[0].class", "does not apply"),
    (
        grant0("{allow: [subscribe, decrypt], topic: orders}"),
        {},
        "roles.shipping[0].allow",
        "same resource kind",
    ),
    (grant0("{allow: subscribe}"), {}, "roles.shipping[0]", "missing topic"),
    (
        edit(ANALYTICS_ATTRS, "attributes: {zone: 7}"),
        {},
        "principals.analytics-svc.attributes.zone",
        "differs",
    ),
    (
        edit(ANALYTICS_ATTRS, "attributes: {name: evil}"),
        {},
        "principals.analytics-svc.attributes.name",
        "reserved",
    ),
    (edit("roles:\n  order-writer", "roles: [\n  order-writer"), {}, "policy.yaml", "not valid YAML"),
    ("- just\n- a list\n", {}, "", "must be a mapping"),
    # Cedar syntax error
    (POLICY, cedar("bad.cedar", "permit(principal, action resource);"), "bad.cedar", "Cedar syntax error"),
    # Cedar schema violations: unknown attribute, optional attribute without `has`, unknown action and
    # entity type, wrong type
    (
        POLICY,
        cedar("s.cedar", 'permit(principal, action, resource) when { principal.clearance == "top" };'),
        "s.cedar",
        SCHEMA_ERR,
    ),
    (
        POLICY,
        cedar("s.cedar", 'permit(principal, action, resource) when { context.zone == "internal" };'),
        "s.cedar",
        SCHEMA_ERR,
    ),
    (
        POLICY,
        cedar("s.cedar", 'permit(principal, action == Eventward::Action::"Fly", resource);'),
        "s.cedar",
        SCHEMA_ERR,
    ),
    (
        POLICY,
        cedar("s.cedar", 'permit(principal == Eventward::Robot::"r2", action, resource);'),
        "s.cedar",
        SCHEMA_ERR,
    ),
    (
        POLICY,
        cedar("s.cedar", 'permit(principal, action, resource) when { context.hour == "noon" };'),
        "s.cedar",
        SCHEMA_ERR,
    ),
    # id games: impersonating a YAML grant id, duplicates, templates
    (
        POLICY,
        cedar("s.cedar", '@id("role:analytics:0") forbid(principal, action, resource);'),
        "s.cedar",
        "reserved",
    ),
    (
        POLICY,
        {
            "a.cedar": '@id("x") permit(principal, action, resource);',
            "b.cedar": '@id("x") forbid(principal, action, resource);',
        },
        "b.cedar",
        "already used",
    ),
    (POLICY, cedar("t.cedar", "permit(principal == ?principal, action, resource);"), "t.cedar", "templates"),
    # lockout: nobody could change the policy again
    (edit("policy-admin: [{allow: manage_policy}]", "policy-admin: []"), {}, "roles", "manage policy"),
]


@pytest.mark.parametrize(("yaml_text", "files", "path", "fragment"), INVALID)
def test_invalid_change_is_refused_and_old_policy_stays(
    store, engine, audit, yaml_text, files, path, fragment
):
    before = engine.decide(*ORDERS)
    assert before.allowed
    with pytest.raises(PolicyError) as ei:
        store.apply("alice", yaml_text, files)
    assert ei.value.path == path, ei.value.message
    assert fragment in ei.value.message
    assert store.active_version() == 1 and len(store.versions()) == 1
    engine.refresh()
    assert engine.version == 1 and engine.decide(*ORDERS).allowed
    err = [e for e in audit.events if e.action == "policy.apply" and e.outcome == "error"]
    assert err and err[-1].reason == "bad_policy" and err[-1].meta["path"] == path


def test_rollback_restores_an_old_version(store, engine):
    store.apply("alice", POLICY_V2, {"abac.cedar": ABAC})
    engine.refresh()
    assert not engine.decide(*ORDERS).allowed
    v3 = store.rollback("alice", 1)
    assert v3 == 3 and store.get(3).yaml == POLICY
    engine.refresh()
    assert engine.decide(*ORDERS).allowed


def _wait_for_flip(engine: PolicyEngine, timeout: float = 3.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if not engine.decide(*ORDERS).allowed:
            return time.monotonic() - t0
        time.sleep(0.005)
    raise AssertionError("policy change not seen")


def test_change_by_another_engine_takes_effect_within_one_second(home, store, engine):
    assert engine.decide(*ORDERS).allowed  # cached allow
    other_store = PolicyStore.open(home)
    other = PolicyEngine(other_store)
    try:
        other_store.apply("alice", POLICY_V2, {"abac.cedar": ABAC})
        assert not other.explain(*ORDERS).allowed
        elapsed = _wait_for_flip(engine)
    finally:
        other.close()
    assert elapsed < 1.0, elapsed
    assert engine.version == 2
    assert engine.decide("shipping-svc", base.SUBSCRIBE, ("Topic", "payments")).allowed


def test_change_by_another_process_takes_effect_within_one_second(home, store, engine):
    assert engine.decide(*ORDERS).allowed
    script = textwrap.dedent(
        """
        import sys
        from eventward._internal.home import Home
        from eventward._internal.policy.store import PolicyStore
        s = PolicyStore.open(Home.resolve(sys.argv[1]))
        print(s.apply("alice", sys.stdin.read(), {}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(home.root)],
        input=POLICY_V2,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "2"
    elapsed = _wait_for_flip(engine)
    assert elapsed < 1.0, elapsed


def test_tampered_store_row_keeps_last_good_policy(store, engine, caplog):
    assert engine.decide(*ORDERS).allowed
    # Someone with file access plants an invalid version and points `active` at it.
    db = sqlite3.connect(store.path)
    db.execute(
        "INSERT INTO versions VALUES (2, 0, 'mallory', 'x', 'principals: {mallory: {type: god}}', '{}')"
    )
    db.execute("UPDATE active SET version = 2")
    db.commit()
    db.close()
    engine.refresh()
    assert engine.version == 1 and engine.decide(*ORDERS).allowed
    assert not engine.decide("mallory", base.MANAGE_POLICY, ("Policy", "active")).allowed
    assert "policy reload failed" in caplog.text


def test_concurrent_applies_get_distinct_versions(home, store):
    import threading

    stores = [PolicyStore.open(home) for _ in range(4)]
    got, errors = [], []

    def apply(s):
        try:
            got.append(s.apply("alice", POLICY_V2, {"abac.cedar": ABAC}))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=apply, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert not errors and sorted(got) == [2, 3, 4, 5]
    assert store.active_version() == 5


def test_threads_deciding_during_a_change_see_old_or_new_never_garbage(store, engine):
    import threading

    stop = threading.Event()
    seen, errors = set(), []

    def hammer():
        while not stop.is_set():
            try:
                d = engine.decide(*ORDERS)
                seen.add((d.allowed, d.extra["version"]))
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    store.apply("alice", POLICY_V2, {"abac.cedar": ABAC})
    try:
        wait_until(lambda: (False, 2) in seen, timeout=5, what="version 2 decided")
    finally:
        stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert seen <= {(True, 1), (False, 2)} and (False, 2) in seen


def test_corrupt_store_is_a_typed_error(tmp_path):
    from eventward.errors import ConfigError

    d = tmp_path / "p"
    d.mkdir()
    (d / "policy.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match=r"policy store .* unavailable"):
        PolicyStore(d)
