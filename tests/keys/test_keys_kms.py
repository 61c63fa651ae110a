"""Local KMS: wrapping, rotation, destruction, keyring protection, cross-process safety."""

from __future__ import annotations

import base64
import os

import pytest

from eventward._internal.home import write_secret
from eventward._internal.keys.kms.base import MAC_SUBJECT, parse_kek_id
from eventward._internal.keys.kms.local import LocalKMS, derive_master_key
from eventward.errors import (
    ConflictError,
    KeyDestroyed,
    KeyFilePermissionError,
    KeyIntegrityError,
    KeyNotFound,
    KeyServiceError,
    KMSUnavailable,
)

from .conftest import worker

DEK = bytes(range(32))


@pytest.fixture
def kms(home):
    home.ensure()
    k = LocalKMS.create(home.keyring, master_key_path=home.master_key)
    yield k
    k.close()


def keyring_plaintext(home) -> bytes:
    """Decrypt the keyring file the way an attacker holding the master key would."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    data = home.keyring.read_bytes()
    return AESGCM(home.master_key.read_bytes()).decrypt(data[6:18], data[18:], data[:6])


def test_create_makes_0600_files_and_one_kek_per_default_class(home, kms):
    assert kms.classes() == ["health", "payment", "pii"]
    assert [kms.current(c) for c in kms.classes()] == ["health.v1", "payment.v1", "pii.v1"]
    for p in (home.master_key, home.keyring):
        assert p.stat().st_mode & 0o777 == 0o600
    assert len(home.master_key.read_bytes()) == 32
    with pytest.raises(ConflictError):
        LocalKMS.create(home.keyring, master_key_path=home.master_key)


def test_wrap_unwrap_and_tamper(kms):
    kid, wrapped = kms.wrap("pii", DEK, b"ctx")
    assert kid == "pii.v1" and DEK not in wrapped
    assert kms.unwrap(kid, wrapped, b"ctx") == DEK
    with pytest.raises(KeyIntegrityError):
        kms.unwrap(kid, wrapped, b"other context")
    for i in (0, 5, len(wrapped) - 1):
        bad = bytearray(wrapped)
        bad[i] ^= 1
        with pytest.raises(KeyIntegrityError):
            kms.unwrap(kid, bytes(bad), b"ctx")
    with pytest.raises(KeyIntegrityError):
        kms.unwrap(kid, wrapped[:10], b"ctx")
    # moved to another class's KEK, or a forged KEK id
    with pytest.raises(KeyIntegrityError):
        kms.unwrap("payment.v1", wrapped, b"ctx")
    for forged in ("pii.v9", "nope.v1", "pii", "../pii.v1", "x" * 500):
        with pytest.raises(KeyNotFound):
            kms.unwrap(forged, wrapped, b"ctx")


def test_attack_unwrap_many_refuses_each_tampered_moved_or_destroyed_key_as_unwrap_does(kms):
    """A read batch's one KMS call: every wrapped key is still opened and checked on its own; a
    tampered, moved, forged or destroyed one is that key's refusal, the others are their DEKs."""
    old_kid, old = kms.wrap("pii", DEK, b"old")
    kms.rotate("pii")
    kms.destroy(old_kid)
    kid, wrapped = kms.wrap("pii", DEK, b"ctx")
    bad = bytearray(wrapped)
    bad[-1] ^= 1
    items = [(kid, wrapped, b"ctx"), (kid, bytes(bad), b"ctx"), (kid, wrapped, b"other"),
             ("payment.v1", wrapped, b"ctx"), ("pii.v9", wrapped, b"ctx"), (old_kid, old, b"old"),
             (kid, wrapped[:10], b"ctx"), (kid, wrapped, b"ctx")]
    got = kms.unwrap_many(items)
    assert got[0] == DEK and got[-1] == DEK
    assert [type(g) for g in got[1:-1]] == [KeyIntegrityError, KeyIntegrityError, KeyIntegrityError, KeyNotFound,
                                          KeyDestroyed, KeyIntegrityError]
    for (k, w, a), g in zip(items[1:-1], got[1:-1], strict=True):  # what unwrap alone raises
        with pytest.raises(type(g)):
            kms.unwrap(k, w, a)
    kms.close()
    with pytest.raises(KMSUnavailable):  # an unavailable KMS is an outage, never a refusal
        kms.unwrap_many(items[:1])


def test_user_defined_class_created_on_first_wrap(kms):
    kid, wrapped = kms.wrap("biometric", DEK, b"a")
    assert kid == "biometric.v1" and kms.epoch("biometric") == 1
    assert kms.unwrap(kid, wrapped, b"a") == DEK
    with pytest.raises(KeyNotFound):
        kms.current("unknownclass")


def test_rotate_then_destroy_removes_key_material(home, kms):
    old_kid, wrapped = kms.wrap("pii", DEK, b"a")
    old_key = base64.b64encode(kms._ring.classes["pii"].keys[1])
    assert old_key in keyring_plaintext(home)
    new = kms.rotate("pii")
    assert new == "pii.v2" and kms.epoch("pii") == 2 and kms.versions("pii") == ["pii.v1", "pii.v2"]
    assert kms.unwrap(old_kid, wrapped, b"a") == DEK  # still live until destroyed
    assert kms.wrap("pii", DEK, b"a")[0] == "pii.v2"
    with pytest.raises(ConflictError):
        kms.destroy("pii.v2")  # the current version cannot be destroyed
    kms.destroy("pii.v1")
    kms.destroy("pii.v1")  # idempotent
    with pytest.raises(KeyDestroyed):
        kms.unwrap(old_kid, wrapped, b"a")
    assert kms.destroyed("pii") == ["pii.v1"] and kms.versions("pii") == ["pii.v2"]
    assert old_key not in keyring_plaintext(home)
    # a freshly opened KMS agrees: destruction is persistent
    again = LocalKMS.open(home.keyring, master_key_path=home.master_key)
    with pytest.raises(KeyDestroyed):
        again.unwrap(old_kid, wrapped, b"a")


def test_other_process_rotation_is_seen_and_concurrent_rotations_never_lose_updates(home, kms):
    from .conftest import spawn

    procs = [spawn("rotate", str(home.root), "5") for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    # 1 + 2 * 5 rotations, none lost to a read-modify-write race; this process sees them
    assert kms.current("pii") == "pii.v11"
    assert len(kms.versions("pii")) == 11
    assert worker("rotate", str(home.root), "1").stdout.strip() == "pii.v12"
    assert kms.epoch("pii") == 12


def test_mac_is_stable_per_keyring_and_secret(home, kms, tmp_path):
    a = kms.mac(MAC_SUBJECT, b"x")
    assert LocalKMS.open(home.keyring, master_key_path=home.master_key).mac(MAC_SUBJECT, b"x") == a
    other = LocalKMS.create(tmp_path / "k2", master_key_path=tmp_path / "m2")
    assert other.mac(MAC_SUBJECT, b"x") != a


def test_group_readable_master_key_or_keyring_is_refused(home, kms):
    os.chmod(home.master_key, 0o644)
    with pytest.raises(KeyFilePermissionError, match="chmod 600"):
        LocalKMS.open(home.keyring, master_key_path=home.master_key)
    os.chmod(home.master_key, 0o600)
    os.chmod(home.keyring, 0o640)
    with pytest.raises(KeyFilePermissionError):
        LocalKMS.open(home.keyring, master_key_path=home.master_key)


def test_wrong_master_key_is_a_typed_error_without_key_bytes(home, kms):
    real = home.master_key.read_bytes()
    wrong = os.urandom(32)
    write_secret(home.master_key, wrong)
    with pytest.raises(KMSUnavailable, match="wrong master key") as ei:
        LocalKMS.open(home.keyring, master_key_path=home.master_key)
    text = str(ei.value) + repr(ei.value) + repr(ei.value.details)
    for secret in (real, wrong):
        assert secret.hex() not in text and base64.b64encode(secret).decode() not in text
    write_secret(home.master_key, b"short")
    with pytest.raises(KMSUnavailable, match="32 bytes"):
        LocalKMS.open(home.keyring, master_key_path=home.master_key)
    home.master_key.unlink()
    with pytest.raises(KMSUnavailable, match="does not exist"):
        LocalKMS.open(home.keyring, master_key_path=home.master_key)


@pytest.mark.parametrize("damage", ["garbage", "truncate", "flip", "empty", "directory"])
def test_damaged_keyring_is_refused_with_a_typed_error(home, kms, damage):
    data = home.keyring.read_bytes()
    if damage == "garbage":
        write_secret(home.keyring, os.urandom(len(data)))
    elif damage == "truncate":
        write_secret(home.keyring, data[:20])
    elif damage == "flip":
        write_secret(home.keyring, data[:-5] + bytes([data[-5] ^ 0x80]) + data[-4:])
    elif damage == "empty":
        write_secret(home.keyring, b"")
    else:
        home.keyring.unlink()
        home.keyring.mkdir(mode=0o700)
    with pytest.raises(KMSUnavailable):
        LocalKMS.open(home.keyring, master_key_path=home.master_key)
    # an already-open KMS notices the replaced file and fails closed too, never a raw OSError
    with pytest.raises(KeyServiceError):
        kms.current("pii")


def test_passphrase_mode(home):
    home.ensure()
    pw = "correct horse battery staple"
    k = LocalKMS.create(home.keyring, passphrase=pw)
    kid, wrapped = k.wrap("pii", DEK, b"a")
    assert not home.master_key.exists()  # no key file in passphrase mode
    assert LocalKMS.open(home.keyring, passphrase=pw).unwrap(kid, wrapped, b"a") == DEK
    with pytest.raises(KMSUnavailable, match="wrong passphrase") as ei:
        LocalKMS.open(home.keyring, passphrase="Correct horse battery staple")
    text = f"{ei.value} {ei.value!r} {ei.value.details!r}"
    assert pw not in text and "Correct horse" not in text
    derived = derive_master_key(pw, k._header.salt, k._header.cost)
    assert derived.hex() not in text and base64.b64encode(derived).decode() not in text
    with pytest.raises(KMSUnavailable, match="passphrase-protected"):
        LocalKMS.open(home.keyring, master_key_path=home.master_key)


def test_passphrase_keyring_refuses_a_downgraded_or_absurd_scrypt_cost(home):
    home.ensure()
    LocalKMS.create(home.keyring, passphrase="pw")
    data = bytearray(home.keyring.read_bytes())
    cost_at = 6 + 16
    assert data[cost_at] == 17  # n = 2**17
    for log2n in (10, 31):
        data[cost_at] = log2n
        write_secret(home.keyring, bytes(data))
        with pytest.raises(KMSUnavailable, match="scrypt log2 n"):
            LocalKMS.open(home.keyring, passphrase="pw")


def test_kek_ids_parse_strictly():
    assert parse_kek_id("pii.v3") == ("pii", 3)
    for bad in ("pii.v0", "pii.v-1", "PII.v1", "pii.v1 ", "pii.v01"):
        with pytest.raises(KeyNotFound):
            parse_kek_id(bad)
