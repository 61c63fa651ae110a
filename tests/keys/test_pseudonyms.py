"""Pseudonymous subjects and KEK epochs that really end (issue 18, items 1 and 2).

Events carry a random per-subject pseudonym (``ewsubject``), made with the subject's first key
and destroyed by ``forget``; the subject field itself is encrypted unless the schema marks it
public on purpose. After ``forget`` nothing in the home links the events to the person: not the
id, not its keyed hash, not a pseudonym row. ``keys rotate --due`` and ``forget --now`` end KEK
epochs, and the receipt says from when residual copies are unrecoverable.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest
import typer
from typer.testing import CliRunner

from eventward._internal import demo
from eventward._internal.cli import common
from eventward._internal.cli import keys as keys_cli
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward._internal.keys.epochs import SCHEDULER, EpochKeeper
from eventward._internal.schema.json_schema import TAG_KEY
from eventward._internal.schema.tags import json_spec, parse_tag
from eventward.errors import AccessDenied, KeyDestroyed, SchemaError

SUBJECT = demo.FORGOTTEN  # cust-1002


@pytest.fixture
def shop(tmp_path) -> Home:
    """The demo's shop: policy, trust, the example schema (customer.id a pii subject), 6 orders."""
    home = Home(tmp_path / "home")
    dep = Deployment.init(home, admin=demo.ADMIN)
    try:
        demo.setup(dep, lambda *a: None)
        demo.schemas(dep, demo.DemoResult(), lambda *a: None)
        demo.produce(dep, demo.DemoResult(), lambda *a: None)
    finally:
        dep.close()
    return home


def _home_bytes(home: Home) -> bytes:
    """Every byte of every file in the home (databases, WAL, ledger, keyring, certificates)."""
    return b"".join(p.read_bytes() for p in sorted(home.root.rglob("*")) if p.is_file())


def _envelopes(dep: Deployment) -> list[dict]:
    return [orjson.loads(r.data) for r in dep.transport.read(demo.TOPIC, 0, 100)]


def test_events_carry_a_random_pseudonym_and_the_subject_field_encrypted(shop):
    with Deployment.open(shop) as dep:
        lookup = dep.keys._lookup(SUBJECT)
        pseudonym = dep.keys.known_subject(SUBJECT)
        mine = [e for e in _envelopes(dep) if e["ewsubject"] == pseudonym]
        assert pseudonym is not None and pseudonym != lookup and len(mine) == 2
        assert all(e["data"]["customer"]["id"].startswith("ew1.") for e in _envelopes(dep))  # a token
        stored = b"".join(r.data for r in dep.transport.read(demo.TOPIC, 0, 100))
        assert SUBJECT.encode() not in stored and lookup.encode() not in stored
        # a consumer cleared for pii still reads the id: the pseudonym is its subject_hash
        seen = dep.consumer(demo.SHIPPING, demo.TOPIC, group="g", from_beginning=True).poll(100)
        assert {e.data["customer"]["id"] for e in seen} == {c[0] for c in demo.CUSTOMERS}
        assert {e.data["customer"]["id"] for e in seen if e.attributes.get("ewsubject") == pseudonym} == {SUBJECT}


def test_attack_relink_forgotten_subject_via_pseudonym(shop):
    """An attacker holding every byte of the home after the forget (and the KMS's subject secret)
    looks for the person: the id, its keyed hash and the pseudonym's row are gone, so the
    pseudonym still in the events names nobody."""
    with Deployment.open(shop) as dep:
        lookup = dep.keys._lookup(SUBJECT)
        pseudonym = dep.keys.known_subject(SUBJECT)
        done = dep.forget(SUBJECT, principal=demo.ADMIN, reason="gdpr-art17")
        assert done.receipt.subject_hash == pseudonym
        assert dep.keys.known_subject(SUBJECT) is None
        # the attacker recomputes the keyed lookup with the deployment's own secret: it finds nothing
        assert dep.keys.store.pseudonym(dep.keys._lookup(SUBJECT)) is None
        assert not dep.keys.store.pseudonym_live(pseudonym)
        erased = [e for e in dep.consumer(demo.SHIPPING, demo.TOPIC, group="after", from_beginning=True).poll(100)
                  if e.attributes.get("ewsubject") == pseudonym]
        assert len(erased) == 2 and all(e.data["customer"]["id"] == "[erased]" for e in erased)
        # the subject seen again gets a new pseudonym: old and new events do not link
        assert dep.keys.subject_hash(SUBJECT) != pseudonym
        dep.forget(SUBJECT, principal=demo.ADMIN)
    raw = _home_bytes(shop)
    assert SUBJECT.encode() not in raw
    assert lookup.encode() not in raw and bytes.fromhex(lookup) not in raw


def test_attack_forget_race_never_reuses_a_forgotten_pseudonym(shop):
    """A producer process whose memo still holds the old pseudonym cannot mint a key under it."""
    with Deployment.open(shop) as writer, Deployment.open(shop) as admin:
        old = writer.keys.subject_hash(SUBJECT)
        admin.forget(SUBJECT, principal=demo.ADMIN)
        with pytest.raises(KeyDestroyed):
            writer.keys._create(old, "pii", 9, demo.PRODUCER)
        writer.keys._drop_caches()
        assert writer.keys.subject_hash(SUBJECT) != old


def test_forget_of_an_unknown_subject_is_an_explicit_nothing_to_erase_record(shop):
    with Deployment.open(shop) as dep:
        done = dep.forget("never-seen@example.org", principal=demo.ADMIN)
        r = done.receipt
        assert r.nothing_to_erase and r.destroyed == 0 and "nothing to erase" in r.statement()
        assert "never-seen" not in r.statement() + repr(r)
        assert dep.keys.known_subject("never-seen@example.org") is None  # the lookup left nothing
        assert done.certificate.claims["dek_versions_destroyed"] == 0
        assert dep.notices.status(r.subject_hash) is None  # no notice storm for nothing
    assert b"never-seen@example.org" not in _home_bytes(shop)


def test_schema_refuses_a_clear_subject_unless_public_on_purpose():
    with pytest.raises(SchemaError, match="in clear in every event") as e:
        parse_tag({"subject": True}, "$.customer.id")
    assert "public" in e.value.message
    assert parse_tag({"subject": True, "public": True}, "$.id").subject
    with pytest.raises(SchemaError, match="public"):
        parse_tag({"subject": True, "class": "pii", "public": True}, "$.id")
    with pytest.raises(SchemaError, match="boolean"):
        parse_tag({"subject": True, "public": "yes"}, "$.id")
    tree = {"type": "object", "required": ["id"], "properties": {
        "id": {"type": "string", TAG_KEY: {"subject": True, "class": "pii"}}}}
    spec = json_spec(tree)
    assert spec.subject_path == "id" and [r.path for r in spec.rules] == ["id"]


def test_legacy_subject_keyed_by_its_hash_keeps_its_keys(shop):
    """Keys made before pseudonyms (rows keyed by the keyed hash) still belong to the subject,
    and forget erases them."""
    with Deployment.open(shop) as dep:
        lookup = dep.keys._lookup("legacy-1")
        rec = dep.keys.wrap_record("k" * 22, lookup, "pii", 1, b"\x01" * 32, 1.0)
        dep.keys.store.insert_dek(rec)
        assert dep.keys.known_subject("legacy-1") == lookup
        assert dep.forget("legacy-1", principal=demo.ADMIN).receipt.destroyed == 1
        assert dep.keys.known_subject("legacy-1") is None


# --- item 2: KEK epochs that really end ------------------------------------------------------


def _wrapped_row(keys_db: Path, kid: str) -> tuple:
    db = sqlite3.connect(keys_db)
    try:
        return db.execute("SELECT kid, subject_hash, class, version, kek_id, wrapped, created, fmt FROM deks "
                          "WHERE kid = ?", (kid,)).fetchone()
    finally:
        db.close()


def test_attack_forget_now_closes_the_epoch_for_residual_copies(shop):
    """A copy of the subject's wrapped DEK taken before the forget (a backup, a freed page) unwraps
    under no KEK the KMS still holds once ``forget --now`` returns."""
    from eventward._internal.keys.service import _row_aad
    from eventward._internal.keys.store_base import DekRecord

    with Deployment.open(shop) as dep:
        p = dep.keys.known_subject(SUBJECT)
        kid = dep.keys.store.current_dek(p, "pii").kid
    copied = DekRecord(*_wrapped_row(shop.keys_db, kid)[:6], created=_wrapped_row(shop.keys_db, kid)[6],
                       fmt=_wrapped_row(shop.keys_db, kid)[7])
    with Deployment.open(shop) as dep:
        r = dep.forget(SUBJECT, principal=demo.ADMIN, close_epoch=True).receipt
        assert r.epoch_closed() and copied.kek_id in r.closed_keks
        assert "unrecoverable since" in r.statement()
        with pytest.raises(KeyDestroyed):
            dep.keys.kms.unwrap(copied.kek_id, copied.wrapped, _row_aad(copied))
        # everyone else's keys were re-wrapped and still decrypt
        seen = dep.consumer(demo.SHIPPING, demo.TOPIC, group="g2", from_beginning=True).poll(100)
        assert sum(e.data["customer"]["name"] != "[erased]" for e in seen) == 4


def test_forget_now_needs_rotate_keys_before_anything_is_erased(tmp_path):
    home = Home(tmp_path / "h")
    policy = ("principals:\n  admin: {type: user, roles: [ops]}\n  dpo: {type: user, roles: [dpo]}\n"
              "roles:\n  ops:\n    - {allow: manage_policy}\n    - {allow: [encrypt, decrypt], class: \"*\"}\n"
              "  dpo:\n    - {allow: [forget]}\n")
    Deployment.init(home, policy_yaml=policy).close()
    with Deployment.open(home) as dep:
        dep.keys.encryption_key("s1", "pii", principal="admin")
        with pytest.raises(AccessDenied):
            dep.forget("s1", principal="dpo", close_epoch=True)
        assert dep.keys.known_subject("s1") is not None  # refused before anything was erased


def test_rotate_due_rotates_only_old_epochs_and_the_scheduler_does_the_same(shop):
    with Deployment.open(shop) as dep:
        keys = dep.keys
        assert keys.due_classes(3600.0) == []  # init started every epoch now
        keys.store.set_meta_text("kek_since:pii", repr(keys._clock() - 7200.0))
        assert keys.due_classes(3600.0) == ["pii"]
        before = keys.kms.current("pii")
        reports = keys.rotate_due(3600.0, principal=demo.ADMIN)
        assert [r.cls for r in reports] == ["pii"] and before in reports[0].destroyed_kek_ids
        assert keys.due_classes(3600.0) == []
        keys.store.set_meta_text("kek_since:payment", "0")
        keeper = EpochKeeper(keys, max_age_days=1.0, interval=3600.0)
        done = keeper.tick()
        assert [r.cls for r in done] == ["payment"] and keeper.rotations == 1 and keeper.last_error is None
        rotations = [r for r in dep.audit.tail(50) if r.action == "key.rotate_kek"]
        assert rotations[-1].principal == SCHEDULER
        seen = dep.consumer(demo.SHIPPING, demo.TOPIC, group="g3", from_beginning=True).poll(100)
        assert len(seen) == 6 and "[erased]" not in {e.data["customer"]["name"] for e in seen}


def test_cli_rotate_due_and_forget_now(shop, monkeypatch):
    monkeypatch.setattr(common.STATE, "home", str(shop.root))
    monkeypatch.delenv("EVENTWARD_PRINCIPAL", raising=False)
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        return None

    keys_cli.register(app)
    run = CliRunner().invoke
    r = run(app, ["keys", "rotate", "--due", "--json", "--as", demo.ADMIN])
    assert r.exit_code == 0, r.output
    assert orjson.loads(r.stdout) == {"rotated": []}
    assert run(app, ["keys", "rotate", "--as", demo.ADMIN]).exit_code != 0  # neither --class nor --due
    shop.config.write_text("keys:\n  kek_max_age_days: 0.000001\n")
    r = run(app, ["keys", "rotate", "--due", "--json", "--as", demo.ADMIN])
    assert r.exit_code == 0, r.output
    assert {x["class"] for x in orjson.loads(r.stdout)["rotated"]} >= {"pii", "payment"}
    r = run(app, ["forget", SUBJECT, "--now", "--json", "--as", demo.ADMIN])
    assert r.exit_code == 0, r.output
    doc = orjson.loads(r.stdout)
    assert doc["epoch_closed"] and doc["destroyed_keks"] and SUBJECT not in r.stdout
    r = run(app, ["forget", SUBJECT, "--json", "--as", demo.ADMIN])
    assert r.exit_code == 0 and orjson.loads(r.stdout)["nothing_to_erase"]


def test_attack_keyring_copied_back_by_hand_is_refused_at_open(shop):
    """A keyring file from before a rotation (it still holds the destroyed KEK) copied over the
    live one without ``restore``: the key store remembers the ended epoch, so open refuses it."""
    from eventward.errors import KeyStoreUnavailable

    old = shop.keyring.read_bytes()
    with Deployment.open(shop) as dep:
        dep.keys.rotate_kek("pii", principal=demo.ADMIN)
    new = shop.keyring.read_bytes()
    shop.keyring.write_bytes(old)
    with pytest.raises(KeyStoreUnavailable, match=r"pii\.v1") as e:
        Deployment.open(shop)
    assert "rolled back" in e.value.message
    shop.keyring.write_bytes(new)
    with Deployment.open(shop) as dep:
        assert len(dep.consumer(demo.SHIPPING, demo.TOPIC, group="g4", from_beginning=True).poll(100)) == 6
