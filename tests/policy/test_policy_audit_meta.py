"""Audited operations whose metadata grows with the deployment still audit, against a real AuditLog.

The audit log caps every meta string at 256 characters and refuses control characters. Lists
(destroyed KEK versions, deciding policies, erased classes) and caller-chosen text (requested
ids, YAML paths of a refused file) used to go in verbatim: past the cap the record raised
OversizeError *after* the keys were destroyed or instead of the AccessDenied. Now counts are
recorded with a bounded list, text is escaped and cut, and the log still verifies."""

from __future__ import annotations

import pytest

from eventward._internal.audit.base import META_LIST_CHARS, meta_list, meta_text
from eventward._internal.audit.log import AuditLog
from eventward._internal.audit.records import MAX_TEXT
from eventward._internal.audit.verify import verify_log
from eventward._internal.home import Home
from eventward._internal.keys.service import KeyService
from eventward._internal.policy import base
from eventward._internal.policy.engine import PolicyEngine
from eventward._internal.policy.store import PolicyStore
from eventward.errors import AccessDenied, PolicyError

N_FORBIDS = 40
KEYS_POLICY = """
principals:
  admin: {type: user, roles: [admin]}
  writer: {type: service, roles: [writer]}
  mallory: {type: user, roles: [blocked]}
roles:
  admin:
    - {allow: manage_policy}
    - {allow: [forget, hold]}
    - {allow: [rotate_keys, decrypt], class: "*"}
  writer:
    - {allow: encrypt, class: "*"}
  blocked:
""" + "".join("    - {deny: manage_policy}\n" for _ in range(N_FORBIDS))


@pytest.fixture
def deployment(tmp_path):
    home = Home(tmp_path / "deploy").ensure()
    log = AuditLog.open(home, flush_ms=10)
    store = PolicyStore.open(home, audit=log)
    store.init(KEYS_POLICY)
    engine = PolicyEngine.open(home, audit=log)
    yield home, log, store, engine
    engine.close()
    store.close()
    log.close()


def records(log: AuditLog, action: str) -> list:
    log.flush()
    return [r for r in log.tail(500) if r.action == action]


def fits(value: object) -> bool:
    return isinstance(value, str) and len(value) <= MAX_TEXT and value.isprintable()


def test_kek_rotation_destroying_many_versions_is_audited(deployment):
    home, log, _, engine = deployment
    svc = KeyService.init(home, authorizer=engine, audit=log)
    try:
        kid, dek = svc.encryption_key("subject-1", "pii", principal="writer")
        for _ in range(N_FORBIDS):  # versions left behind by rotations interrupted before the destroy step
            svc.kms.rotate("pii")
        report = svc.rotate_kek("pii", principal="admin")
        assert len(report.destroyed_kek_ids) == N_FORBIDS + 1  # v1 (used by the DEK) and every unused version
        assert svc.decryption_key(kid, "pii", principal="admin") == dek  # re-wrapped, nothing lost
    finally:
        svc.close()
    (rec,) = records(log, "key.rotate_kek")
    assert rec.outcome == "ok" and rec.meta["destroyed_count"] == N_FORBIDS + 1
    listed = rec.meta["destroyed"]
    assert fits(listed) and listed.startswith("pii.v1,pii.v2,") and listed.endswith(" more")
    shown = listed.split(",")[:-1]
    assert shown == list(report.destroyed_kek_ids[: len(shown)])  # whole ids, in order, never cut
    assert int(listed.rsplit("+", 1)[1].split()[0]) == N_FORBIDS + 1 - len(shown)
    assert verify_log(log).ok


def test_forgetting_a_subject_in_many_classes_is_audited(tmp_path):
    home = Home(tmp_path / "keys").ensure()
    classes = tuple(f"class-with-a-long-name-{i:02d}" for i in range(12))
    authz = base.AllowList([("admin", base.FORGET, ("Subject", "*")), ("writer", base.ENCRYPT, ("Class", "*"))])
    with AuditLog.open(home, flush_ms=10) as log:
        svc = KeyService.init(home, authorizer=authz, audit=log, classes=classes)
        try:
            for cls in classes:
                svc.encryption_key("subject-2", cls, principal="writer")
            receipt = svc.forget("subject-2", principal="admin")
        finally:
            svc.close()
        assert len(receipt.classes) == 12 and receipt.destroyed == 12
        (rec,) = records(log, "key.forget")
        assert rec.meta["class_count"] == 12 and rec.meta["destroyed"] == 12
        assert fits(rec.meta["classes"]) and rec.meta["classes"].endswith(" more")
        assert fits(rec.meta["kek_epochs"]) and rec.meta["kek_epochs"].endswith(" more")
        assert "subject-2" not in repr(rec)
        assert verify_log(log).ok


def test_denial_by_many_forbids_stays_access_denied(deployment):
    _, log, store, engine = deployment
    with pytest.raises(AccessDenied) as ei:
        store.apply("mallory", KEYS_POLICY + "    - {allow: manage_policy}\n")
    assert len(ei.value.explanation.policies) == N_FORBIDS
    assert store.active_version() == 1
    d = engine.decide("mallory", base.MANAGE_POLICY, ("Policy", "active"))  # audited, not raised
    assert not d.allowed and len(d.policies) == N_FORBIDS
    applied = [r for r in records(log, "policy.apply") if r.outcome == "denied"]
    (rec,) = applied
    assert rec.meta["policy_count"] == N_FORBIDS and fits(rec.meta["policies"])
    shown = rec.meta["policies"].split(",")[:-1]
    assert len(shown) > 3 and shown == list(ei.value.explanation.policies[: len(shown)])
    (auth,) = [r for r in records(log, "authorize") if r.principal == "mallory"]
    assert auth.meta["policy_count"] == N_FORBIDS and fits(auth.meta["policies"])
    assert verify_log(log).ok


def test_policy_with_many_policies_applies_and_audits(deployment):
    _, log, store, _ = deployment
    many = KEYS_POLICY + "  readers:\n" + "".join(
        f"    - {{allow: subscribe, topic: topic-number-{i:04d}}}\n" for i in range(300)
    )
    assert store.apply("admin", many) == 2
    ok = [r for r in records(log, "policy.apply") if r.outcome == "ok"]
    assert [r.meta["policies"] for r in ok] == [N_FORBIDS + 4, N_FORBIDS + 4 + 300]
    assert verify_log(log).ok


def test_hostile_requested_ids_are_denied_and_audited(deployment):
    """The caller chooses the principal and resource id: any length, any characters."""
    _, log, _, engine = deployment
    long_schema = "S" + "x" * 254  # a valid schema name, too long for "Schema::<id>" in one audit string
    principal = "mallory\n\u202eforged line" + "m" * 300
    for who, resource in (("admin", ("Schema", long_schema)), (principal, ("Topic", "orders"))):
        assert not engine.decide(who, base.PUBLISH, resource).allowed
    denials = records(log, "authorize")
    assert len(denials) == 2
    for r in denials:
        assert fits(r.principal) and fits(r.resource) and r.outcome == "denied"
    assert denials[0].resource.startswith("Schema::Sxxx") and denials[0].resource.endswith("...")
    assert "\n" not in denials[1].principal and "\\n" in denials[1].principal
    assert verify_log(log).ok


def test_refused_policy_file_is_audited_with_a_safe_path(deployment):
    _, log, store, _ = deployment
    hostile_key = "k\nINJECTED" + "k" * 400  # a role name: "roles.<key>" is the error's path
    with pytest.raises(PolicyError) as ei:
        store.apply("admin", KEYS_POLICY + f'  "{hostile_key.encode("unicode_escape").decode()}": 7\n')
    assert ei.value.path == "roles." + hostile_key
    (rec,) = [r for r in records(log, "policy.apply") if r.outcome == "error"]
    assert fits(rec.meta["path"]) and rec.meta["path"].startswith("roles.k\\nINJECTEDkkk")
    assert store.active_version() == 1


@pytest.mark.parametrize("bad_id", ["a,b", "line\\nbreak", "x" * 200])
def test_hand_written_policy_ids_must_be_safe_to_list(deployment, bad_id):
    _, _, store, _ = deployment
    cedar = f'@id("{bad_id}")\npermit (principal, action, resource) when {{ false }};\n'
    with pytest.raises(PolicyError) as ei:
        store.apply("admin", KEYS_POLICY, {"odd.cedar": cedar})
    assert ei.value.path == "odd.cedar" and "@id" in ei.value.message
    assert store.active_version() == 1


# --- the helpers themselves ------------------------------------------------------------------


def test_meta_list_keeps_whole_ids_and_counts_the_rest():
    assert meta_list([]) == "" and meta_list(["a", "b"]) == "a,b"
    ids = [f"role:r:{i}" for i in range(500)]
    out = meta_list(ids)
    assert len(out) <= META_LIST_CHARS and out.endswith(" more")
    kept = out.split(",")[:-1]
    assert kept == ids[: len(kept)] and out.endswith(f"+{500 - len(kept)} more")
    assert meta_list(["x" * 500, "b"]) == "+2 more"  # an id too long to show is never cut


def test_meta_text_escapes_and_cuts():
    assert meta_text("orders") == "orders"
    assert meta_text("a\nb\x00\u202e") == "a\\nb\\x00\\u202e"
    long = meta_text("é" * 1000)
    assert len(long) == META_LIST_CHARS and long.endswith("...")
