"""Backup and restore that cannot resurrect: the key state is anchored in the audit log, a restore
replays the erasure ledger before serving and refuses a keyring or ledger older than the anchor,
another deployment's backup, and a backup whose key epoch has ended."""

from __future__ import annotations

import shutil
import sqlite3

import orjson
import pytest
import typer
from typer.testing import CliRunner

from eventward._internal.audit.log import AuditLog
from eventward._internal.backup import ANCHOR_ACTION, anchored_state, backup, key_state, latest_anchor, restore
from eventward._internal.cli import backup as backup_cli
from eventward._internal.cli import common
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward._internal.keys.dek import dek_aad
from eventward._internal.keys.ledger import ErasureLedger
from eventward._internal.keys.service import erasures_log_path
from eventward.errors import AuditIntegrityError, KeyDestroyed, KeyIntegrityError, NotFoundError, RestoreRefused

from .conftest import SENTINEL

POLICY = """\
principals:
  admin: {type: user, roles: [ops]}
roles:
  ops:
    - {allow: manage_policy}
    - {allow: [forget, hold]}
    - {allow: read_audit}
    - {allow: rotate_keys, class: "*"}
    - {allow: [encrypt, decrypt], class: "*"}
"""
OTHER = "bob.other@example.org"


@pytest.fixture
def home(tmp_path) -> Home:
    h = Home(tmp_path / "home")
    Deployment.init(h, policy_yaml=POLICY).close()
    return h


def _keys(home: Home) -> dict[str, str]:
    """subject -> kid of its pii DEK, created now."""
    with Deployment.open(home) as dep:
        return {s: dep.keys.encryption_key(s, "pii", principal="admin")[0] for s in (SENTINEL, OTHER)}


def _row(keys_db, kid: str) -> tuple | None:
    db = sqlite3.connect(f"file:{keys_db}?mode=ro", uri=True)
    try:
        return db.execute(
            "SELECT kid, subject_hash, class, version, kek_id, wrapped, created, fmt FROM deks WHERE kid = ?", (kid,)
        ).fetchone()
    finally:
        db.close()


def _no_sentinel(*paths) -> None:
    for p in paths:
        for f in [p] if p.is_file() else p.rglob("*"):
            if f.is_file():
                assert SENTINEL.encode() not in f.read_bytes(), f


def test_forget_and_rotation_anchor_the_key_state(home):
    _keys(home)
    with Deployment.open(home) as dep:
        dep.forget(SENTINEL, principal="admin", reason="gdpr-art17")
        after_forget = anchored_state(dep.audit)
        assert after_forget == key_state(dep.keys) == latest_anchor(dep.audit) and after_forget.ledger_entries == 1
        dep.keys.rotate_kek("pii", principal="admin")
        after_rotate = anchored_state(dep.audit)
        assert after_rotate.keyring_generation == key_state(dep.keys).keyring_generation
        assert after_rotate.keyring_generation > after_forget.keyring_generation
        assert dep.audit.tail(1)[0].action == ANCHOR_ACTION
        assert latest_anchor(dep.audit) == after_rotate
        dep.audit.attach("keys-anchor", "head", 0, "")  # a forged index row: record 0 is no anchor
        with pytest.raises(AuditIntegrityError, match="not an anchor"):
            latest_anchor(dep.audit)


def test_attack_restore_after_forget_and_kek_rotation_cannot_resurrect(home, tmp_path):
    """Done-when (b): back up, forget, rotate the class KEK (old version destroyed), restore: refused as
    older than the anchored head, the subject stays erased, and the backup's wrapped DEK unwraps under no
    KEK the KMS still holds."""
    kids = _keys(home)
    with Deployment.open(home) as dep:
        backup(dep, tmp_path / "bk", principal="admin")
        dep.forget(SENTINEL, principal="admin", reason="gdpr-art17")
        rep = dep.keys.rotate_kek("pii", principal="admin")
        assert "pii.v1" in rep.destroyed_kek_ids
    copied = _row(tmp_path / "bk" / "home" / "keys.db", kids[SENTINEL])
    assert copied is not None and copied[4] == "pii.v1"  # the backup still holds the wrapped DEK
    with pytest.raises(RestoreRefused) as ei:
        restore(tmp_path / "bk", home, principal="admin")
    msg = ei.value.message
    assert "older than the anchored key state" in msg and "pii.v1" in msg and "unrecoverable" in msg
    assert SENTINEL not in msg
    with Deployment.open(home) as dep:  # nothing was copied: the home still says erased
        with pytest.raises(KeyDestroyed):
            dep.keys.decryption_key(kids[SENTINEL], "pii", principal="admin", subject_hash=copied[1])
        kid, sh, cls, version, kek, wrapped, created, fmt = copied
        with pytest.raises(KeyDestroyed):  # no KEK the KMS still holds unwraps the copied DEK
            dep.keys.kms.unwrap(kek, bytes(wrapped), dek_aad(kid, cls, sh, version, created, fmt=fmt))
        assert all(kek not in dep.keys.kms.versions(c) for c in dep.keys.kms.classes())
        assert dep.keys.decryption_key(kids[OTHER], "pii", principal="admin")  # others were re-wrapped
    # copying the files by hand instead of 'restore' is what the anchor is for: restore still refuses
    shutil.copyfile(tmp_path / "bk" / "home" / "keyring.bin", home.keyring)
    with pytest.raises(RestoreRefused, match="older than the anchored"):
        restore(tmp_path / "bk", home, principal="admin")


def test_attack_restore_after_forget_replays_the_ledger_before_serving(home, tmp_path):
    """Without a rotation the backup's keyring is current: the restore goes ahead, keeps the home's
    newer ledger and audit log, and the replay deletes the forgotten subject's restored DEK."""
    kids = _keys(home)
    with Deployment.open(home) as dep:
        backup(dep, tmp_path / "bk", principal="admin")
        h = dep.forget(SENTINEL, principal="admin", reason="gdpr-art17").receipt.subject_hash
    r = restore(tmp_path / "bk", home, principal="admin")
    assert set(r.kept_live) == {"audit.db", "erasures.log"} and r.erasures_replayed == 1 and r.keys_removed == 1
    assert _row(home.keys_db, kids[SENTINEL]) is None  # the restored row is gone again
    with Deployment.open(home) as dep:
        assert [x.action for x in dep.audit.tail(2)] == [ANCHOR_ACTION, "backup.restore"]
        with pytest.raises(KeyDestroyed):
            dep.keys.decryption_key(kids[SENTINEL], "pii", principal="admin", subject_hash=h)
        assert dep.keys.decryption_key(kids[OTHER], "pii", principal="admin")
    _no_sentinel(tmp_path / "bk", home.root)


def test_attack_truncated_ledger_in_the_backup_is_refused(home, tmp_path):
    """A backup taken after a forget, whose ledger file was then cut back by hand: the home's ledger is
    gone too (disaster), so only the anchor remembers the erasure, and the restore refuses."""
    _keys(home)
    with Deployment.open(home) as dep:
        dep.forget(SENTINEL, principal="admin", reason="gdpr-art17")
        dep.forget(OTHER, principal="admin", reason="gdpr-art17")
        backup(dep, tmp_path / "bk", principal="admin")
    led = tmp_path / "bk" / "home" / "erasures.log"
    led.write_bytes(led.read_bytes().splitlines(keepends=True)[0])
    m = orjson.loads((tmp_path / "bk" / "manifest.json").read_bytes())
    with pytest.raises(RestoreRefused, match="altered"):  # the manifest's hash catches the edit first
        restore(tmp_path / "bk", home, principal="admin")
    assert m["key_state"]["ledger_entries"] == 2


def test_ledger_is_hash_chained(home):
    _keys(home)
    with Deployment.open(home) as dep:
        dep.forget(SENTINEL, principal="admin", reason="gdpr-art17")
        dep.forget(OTHER, principal="admin", reason="gdpr-art17")
        ledger: ErasureLedger = dep.keys.ledger
        head = ledger.head()
        assert head.entries == 2 and head.heads[-1] == head.head
        lines = erasures_log_path(home).read_bytes().splitlines(keepends=True)
        erasures_log_path(home).write_bytes(lines[1])  # the first entry removed: the chain breaks
        with pytest.raises(KeyIntegrityError, match="does not follow"):
            ledger.head()


def test_attack_restore_of_another_deployments_backup_is_refused(home, tmp_path):
    other = Home(tmp_path / "other")
    Deployment.init(other, policy_yaml=POLICY).close()
    with Deployment.open(other) as dep:
        backup(dep, tmp_path / "bk", principal="admin")
    before = home.keys_db.read_bytes()
    with pytest.raises(RestoreRefused, match="belongs to deployment"):
        restore(tmp_path / "bk", home, principal="admin")
    assert home.keys_db.read_bytes() == before


def test_disaster_restore_into_an_empty_home_and_verifier_state(home, tmp_path):
    kids = _keys(home)
    with Deployment.open(home) as dep:
        h = dep.forget(SENTINEL, principal="admin", reason="gdpr-art17").receipt.subject_hash
        backup(dep, tmp_path / "bk", principal="admin")
        state = tmp_path / "state"
        for _ in range(3):
            dep.audit.record("test.grow", principal="admin", resource="Audit::log")
        dep.audit.flush()
        state.write_text(dep.audit.checkpoint().text)
    empty = Home(tmp_path / "fresh")
    with pytest.raises(RestoreRefused, match="roll the audit log back"):  # the verifier saw more records
        restore(tmp_path / "bk", empty, principal="admin", state=state)
    r = restore(tmp_path / "bk", empty, principal="admin")
    assert r.kept_live == [] and r.files > 5
    with Deployment.open(empty) as dep:
        assert dep.keys.decryption_key(kids[OTHER], "pii", principal="admin")
        assert dep.keys.store.erased(h)


def test_backup_cli_and_bad_input(home, tmp_path, monkeypatch):
    monkeypatch.setattr(common.STATE, "home", str(home.root))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        return None

    backup_cli.register(app)
    run = CliRunner()
    r = run.invoke(app, ["backup", str(tmp_path / "bk"), "--json"])
    assert r.exit_code == 0, r.output
    doc = orjson.loads(r.stdout)
    assert doc["files"] > 5 and doc["deployment"].startswith("eventward.audit/")
    r = run.invoke(app, ["restore", str(tmp_path / "bk"), "--json"])
    assert r.exit_code == 0, r.output
    assert "audit.db" in orjson.loads(r.stdout)["kept_live"]
    r = run.invoke(app, ["restore", str(tmp_path / "nothing")])
    assert isinstance(r.exception, NotFoundError)
    (tmp_path / "bk" / "manifest.json").write_text("{")
    r = run.invoke(app, ["restore", str(tmp_path / "bk")])
    assert isinstance(r.exception, RestoreRefused) and common.exit_code(r.exception) == common.EXIT_REFUSED
    with AuditLog.open(home) as log:
        assert "backup.create" in [x.action for x in log.tail(20)]


def test_attack_restore_attack_through_the_cli(home, tmp_path, monkeypatch):
    """The same attack as an operator would run it: backup, forget, keys rotate --class pii (and every
    other class the subject had keys in), restore: refused (exit 8), naming the ended epoch."""
    from eventward._internal.cli import keys as keys_cli

    kids = _keys(home)
    monkeypatch.setattr(common.STATE, "home", str(home.root))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("EVENTWARD_PRINCIPAL", raising=False)
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        return None

    backup_cli.register(app)
    keys_cli.register(app)
    run = CliRunner()
    assert run.invoke(app, ["backup", str(tmp_path / "bk")]).exit_code == 0
    r = run.invoke(app, ["forget", SENTINEL, "--reason", "gdpr-art17", "--json"])
    assert r.exit_code == 0, r.output
    h = orjson.loads(r.stdout)["subject_hash"]
    r = run.invoke(app, ["keys", "rotate", "--class", "pii"])
    assert r.exit_code == 0, r.output
    r = run.invoke(app, ["restore", str(tmp_path / "bk")])
    assert isinstance(r.exception, RestoreRefused) and common.exit_code(r.exception) == common.EXIT_REFUSED
    assert "pii.v1" in r.exception.message and SENTINEL not in r.exception.message
    with Deployment.open(home) as dep, pytest.raises(KeyDestroyed):
        dep.keys.decryption_key(kids[SENTINEL], "pii", principal="admin", subject_hash=h)


def _raw_audit(db, *statements: tuple) -> None:
    """Edit the audit database as someone with the file would: triggers dropped, tree rebuilt."""
    from eventward._internal.audit.tree import push_leaf

    conn = sqlite3.connect(db, isolation_level=None)
    try:
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            conn.execute(f"DROP TRIGGER {name}")
        for sql, *args in statements:
            conn.execute(sql, args)
        conn.execute("DELETE FROM nodes")
        frontier: list = []
        rows = []
        for idx, leaf in conn.execute("SELECT idx, leaf FROM records ORDER BY idx").fetchall():
            rows.extend(push_leaf(frontier, idx, bytes(leaf)))
        conn.executemany("INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)", rows)
    finally:
        conn.close()


def test_attack_restore_never_replaces_a_diverged_audit_log(home, tmp_path):
    """A home whose audit log is shorter than the backup's is restored from the backup only if the
    backup extends it; a rewritten (forked) home log is refused rather than papered over."""
    with Deployment.open(home) as dep:
        backup(dep, tmp_path / "bk", principal="admin")
    with AuditLog.open_readonly(tmp_path / "bk" / "home" / "audit.db") as copy:
        b_size = copy.size()
    _raw_audit(home.audit_db, ("DELETE FROM records WHERE idx >= ?", b_size - 2), ("DELETE FROM checkpoints",))
    r = restore(tmp_path / "bk", home, principal="admin")  # a prefix of the backup's log: taken from it
    assert "audit.db" not in r.kept_live
    with AuditLog.open(home) as log:
        assert log.size() > b_size
    shutil.rmtree(tmp_path / "bk")
    with Deployment.open(home) as dep:
        backup(dep, tmp_path / "bk", principal="admin")
    with AuditLog.open_readonly(tmp_path / "bk" / "home" / "audit.db") as copy:
        b_size = copy.size()
    _raw_audit(home.audit_db, ("DELETE FROM records WHERE idx >= ?", b_size - 3),
               ("UPDATE records SET leaf = ? WHERE idx = ?", b"\x07" * 32, b_size - 4),
               ("DELETE FROM checkpoints",))
    with pytest.raises(RestoreRefused, match="diverged"):
        restore(tmp_path / "bk", home, principal="admin")
