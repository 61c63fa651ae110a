"""Consuming needs no manual key step, and authorization comes first.

A principal not allowed to Subscribe is told so before anything else (not "no signing key", not
"no such stream"), and no key is made for it. A principal that may Subscribe gets its
dead-letter key on first use (the first dead letter it writes), audited; that key seals dead
letters only, so making it automatically grants nothing consuming did not."""

from __future__ import annotations

import subprocess
import sys

import pytest

from eventward._internal.client import dlq as dlq_mod
from eventward._internal.client.trust import DEAD_LETTER
from eventward._internal.crypto import seal as sealing
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward._internal.policy.spec import YAML_ACTIONS
from eventward.errors import AccessDenied, NotFoundError

from .client_world import SCHEMA, TOPIC, TYPE, customer

# field encryption is its own grant where the policy language has it
_ENCRYPT = "    - {allow: encrypt, class: pii}\n" if "encrypt" in YAML_ACTIONS else ""
POLICY = """\
principals:
  admin: {type: user, roles: [eventward-admin]}
  alice: {type: user, roles: [schema-author]}
  bob: {type: user, roles: [schema-admin]}
  signup: {type: service, roles: [writer]}
  billing: {type: service, roles: [reader, pii-reader]}
  intruder: {type: service, roles: []}
roles:
  eventward-admin:
    - {allow: manage_policy}
    - {allow: rotate_keys, producer: "*"}
    - {allow: read_audit}
  schema-author: [{allow: propose_schema, schema: "*"}]
  schema-admin: [{allow: approve_schema, schema: "*"}]
  writer:
    - {allow: publish, topic: customers, event_types: [CustomerRegistered]}
  reader: [{allow: subscribe, topic: customers}]
  pii-reader: [{allow: decrypt, class: pii}]
""".replace("  reader:", _ENCRYPT + "  reader:")
CLI = [sys.executable, "-c", "from eventward._internal.cli import main; main()"]


@pytest.fixture
def home(tmp_path) -> Home:
    """Only the producer is registered; consumers never are."""
    h = Home(tmp_path / "home")
    with Deployment.init(h, policy_yaml=POLICY) as dep:
        dep.registry.propose("alice", TYPE, SCHEMA)
        dep.registry.approve("bob", TYPE, 1)
        dep.trust.register("signup", by="admin")
        with dep.producer("signup", TOPIC) as p:
            for i in range(3):
                p.send(TYPE, customer(i))
    return h


def _cli(home: Home, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "--home", str(home.root), *args], capture_output=True, text=True, timeout=60,
                          check=False)


def _keys(home: Home, principal: str) -> list:
    with Deployment.open(home) as dep:
        return dep.trust.list(principal)


def test_attack_principal_outside_the_policy_is_told_forbidden_first(home: Home) -> None:
    """Old code answered 'no signing key' (or 'no stream'), revealing what exists before deciding."""
    for topic in (TOPIC, "no-such-topic"):
        r = _cli(home, "consume", topic, "--as", "intruder", "--from-beginning")
        assert r.returncode == 3, r.stderr  # forbidden
        assert r.stderr.startswith("error (forbidden)") and r.stderr.count("\n") == 1
        assert "signing key" not in r.stderr and "no stream" not in r.stderr
    r = _cli(home, "consume", TOPIC, "--as", "nobody-at-all")
    assert r.returncode == 3 and r.stderr.startswith("error (forbidden)")
    assert _keys(home, "intruder") == [] and _keys(home, "nobody-at-all") == []


def test_attack_sdk_consumer_for_a_denied_principal_fails_before_any_key_step(home: Home) -> None:
    with Deployment.open(home) as dep, pytest.raises(AccessDenied):
        dep.consumer("intruder", TOPIC)
    assert _keys(home, "intruder") == []


def test_consume_needs_no_registration(home: Home) -> None:
    r = _cli(home, "consume", TOPIC, "--as", "billing", "--from-beginning")
    assert r.returncode == 0, r.stderr
    assert len([x for x in r.stdout.splitlines() if x.startswith("{")]) == 3
    assert _keys(home, "billing") == []  # nothing went wrong, so no dead letter and no key yet
    r = _cli(home, "dlq", "list", TOPIC, "--as", "billing", "--json")
    assert r.returncode == 0 and '"entries": []' in r.stdout


def test_the_first_dead_letter_creates_a_dead_letter_key_audited_and_limited(home: Home) -> None:
    with Deployment.open(home) as dep:
        consumer = dep.consumer("billing", TOPIC, from_beginning=True)

        def fail(event: object) -> None:
            raise RuntimeError("handler failed")

        stats = consumer.run(fail, idle_timeout=0.2)
        assert stats.dead_lettered == 3
        keys = dep.trust.list("billing")
        assert [(k.purpose, k.status, k.changed_by) for k in keys] == [(DEAD_LETTER, "active", "billing")]
        entries = dep.dead_letters("billing", TOPIC).list(principal="billing")
        assert len(entries) == 3 and {e.by for e in entries} == {"billing"}
        records = [r for r in dep.audit.tail(200) if r.action == "trust.register"]
        assert any(r.resource == "Producer::billing" and r.meta.get("purpose") == DEAD_LETTER for r in records)
        # a second consumer run reuses the key (no rotation, no second key)
        dep.consumer("billing", TOPIC, group="again", from_beginning=True).run(fail, idle_timeout=0.2)
        assert len(dep.trust.list("billing")) == 1


def test_two_processes_making_the_first_key_at_once_end_with_one_key(home: Home) -> None:
    """B looked for a key before A made one: B's write transaction sees A's and keeps it."""
    with Deployment.open(home) as a, Deployment.open(home) as b:
        real = b.trust.dead_letter_signer
        looked: list[str] = []

        def before_a(principal: str):  # the lookup B did before A's insert
            if not looked:
                looked.append(principal)
                raise NotFoundError("no key yet")
            return real(principal)

        first = a.trust.first_dead_letter_key("billing")
        b.trust.dead_letter_signer = before_a  # type: ignore[method-assign]
        second = b.trust.first_dead_letter_key("billing")
        assert looked == ["billing"]
        assert second.kid == first.kid
        assert [k.kid for k in a.trust.list("billing")] == [first.kid]
        assert [p.name for p in home.producer_keys.glob("billing.*")] == [f"billing.{first.kid}.key"]


def test_attack_first_use_dead_letter_key_cannot_seal_events_on_the_topic(home: Home) -> None:
    """The key a consumer gets without an administrator must not let it forge topic events."""
    with Deployment.open(home) as dep:
        signer = dep.trust.first_dead_letter_key("billing")
        raw = b'{"specversion":"1.0"}'
        blob = sealing.seal(signer, instance="x", stream=TOPIC, batch="forged-1", first_seq=0, events=[raw],
                            time=1.0)
        dep.transport.append(TOPIC, "forged-1", [raw], blob)
        reader = dep.consumer("billing", TOPIC, group="check", from_beginning=True)
        stats = reader.run(lambda e: None, idle_timeout=0.2)
        assert stats.delivered == 3
        assert stats.refused.get("dead_letter_key") == 1
        assert dlq_mod.dlq_stream(TOPIC).endswith(".dlq")
