"""Secret files and databases: private from the first byte, never written through a planted link."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from eventward._internal.deployment import Deployment
from eventward._internal.home import Home, read_secret, write_secret
from eventward._internal.keys.kms import local
from eventward._internal.keys.kms.local import LocalKMS
from eventward.errors import KeyFilePermissionError, KMSUnavailable


def test_attack_secret_symlink(tmp_path):
    target = tmp_path / "attacker-readable"
    target.write_bytes(b"")
    secret = tmp_path / "home" / "master.key"
    secret.parent.mkdir()
    # the round-1 temp name was predictable: a link planted there received the secret
    os.symlink(target, secret.with_name(secret.name + ".tmp"))
    write_secret(secret, b"s" * 32)
    assert target.read_bytes() == b"" and read_secret(secret) == b"s" * 32
    assert not [p for p in secret.parent.iterdir() if p.name.startswith(".master.key")]  # no temp left
    # a secret path that is itself a link is refused, even when the link's target is private
    private = tmp_path / "private.key"
    write_secret(private, b"k" * 32)
    link = tmp_path / "link.key"
    os.symlink(private, link)
    with pytest.raises(KeyFilePermissionError, match="symbolic link"):
        read_secret(link)


def test_attack_world_readable_databases(tmp_path):
    old = os.umask(0o022)  # the usual umask: files SQLite creates itself would be 0644
    try:
        home = Home(tmp_path / "home")
        with Deployment.init(home) as dep:
            dep.trust.ensure("admin", by="admin")
        files = [p for p in home.root.rglob("*") if p.is_file() and (".db" in p.name or p.suffix in (".key", ".bin"))]
    finally:
        os.umask(old)
    assert {p.name for p in files} >= {"keys.db", "log.db", "registry.db", "trust.db", "audit.db", "keyring.bin"}
    loose = {str(p.relative_to(home.root)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files
             if stat.S_IMODE(p.stat().st_mode) & 0o077}
    assert loose == {}


def test_old_scrypt_cost_keyrings_still_open_and_new_ones_use_the_current_cost(tmp_path, monkeypatch):
    path = tmp_path / "keyring.bin"
    monkeypatch.setattr(local, "SCRYPT_LOG2_N", 15)  # a keyring made before the cost was raised
    LocalKMS.create(path, passphrase="pw").close()
    monkeypatch.undo()
    kms = LocalKMS.open(path, passphrase="pw")
    assert kms._header.cost == (15, 8, 1) and kms.classes()
    kms.close()
    with pytest.raises(KMSUnavailable, match="wrong passphrase"):
        LocalKMS.open(path, passphrase="not it")
    assert local.SCRYPT_LOG2_N == 17 and (local.SCRYPT_R, local.SCRYPT_P) == (8, 1)


def test_read_secret_judges_the_opened_file(tmp_path):
    p = Path(tmp_path / "s.key")
    write_secret(p, b"x")
    os.chmod(p, 0o644)
    with pytest.raises(KeyFilePermissionError):
        read_secret(p)
