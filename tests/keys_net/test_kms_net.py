"""The KMS contract on the networked backends: OpenBao Transit (real server) and AWS KMS (moto server).

Both run the same contract as the local keyring and the PKCS#11 token: wrap/unwrap bound to the
caller's context, tampering refused, rotation, destruction that is real in the KMS, MAC secrets,
fail-closed when the server cannot answer. Backend-specific attacks follow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest

from eventward._internal.keys.kms import connect_kms
from eventward._internal.keys.kms.aws import AwsKMS, AwsKmsConfig
from eventward._internal.keys.kms.base import MAC_LEDGER, MAC_SUBJECT
from eventward._internal.keys.kms.transit import TransitConfig, TransitKMS
from eventward.errors import (
    ConfigError,
    ConflictError,
    KeyDestroyed,
    KeyIntegrityError,
    KeyNotFound,
    KMSUnavailable,
)
from support_wait import frozen

from .conftest import TOKEN_ENV

DEK = bytes(range(32))


@dataclass
class Backend:
    name: str
    config: Any
    cls: Any
    server: Any

    def create(self, **kw):
        return self.cls.create(self.config, **kw)

    def open(self):
        return self.cls.open(self.config)


@pytest.fixture(params=["transit", "aws"])
def backend(request, prefix, monkeypatch) -> Backend:
    if request.param == "transit":
        bao = request.getfixturevalue("bao")
        monkeypatch.setenv(TOKEN_ENV, bao.token_for(prefix))
        cfg = TransitConfig(url=bao.url, token_env=TOKEN_ENV, key_prefix=prefix, refresh_s=0.0, timeout_s=2.0)
        return Backend("transit", cfg, TransitKMS, bao)
    moto = request.getfixturevalue("moto")
    request.getfixturevalue("aws_env")
    cfg = AwsKmsConfig(region="eu-west-1", endpoint_url=moto.url, key_prefix=prefix, refresh_s=0.0, timeout_s=2.0)
    return Backend("aws", cfg, AwsKMS, moto)


@pytest.fixture
def kms(backend):
    k = backend.create()
    yield k
    k.close()


def test_create_makes_one_kek_per_class_and_refuses_a_second_init(backend, kms):
    assert kms.classes() == ["health", "payment", "pii"]
    assert [kms.current(c) for c in kms.classes()] == ["health.v1", "payment.v1", "pii.v1"]
    assert kms.epoch("pii") == 1 and kms.versions("pii") == ["pii.v1"] and kms.destroyed("pii") == []
    with pytest.raises(ConflictError):
        backend.create()
    again = backend.open()
    assert again.current("pii") == "pii.v1"
    again.close()


def test_wrap_unwrap_is_bound_to_context_and_every_byte(kms):
    kid, wrapped = kms.wrap("pii", DEK, b"ctx")
    assert kid == "pii.v1" and DEK not in wrapped
    assert kms.unwrap(kid, wrapped, b"ctx") == DEK
    with pytest.raises(KeyIntegrityError):
        kms.unwrap(kid, wrapped, b"other context")
    for i in (0, 1, len(wrapped) // 2, len(wrapped) - 3):
        bad = bytearray(wrapped)
        bad[i] ^= 0x04
        with pytest.raises((KeyIntegrityError, KeyNotFound)):
            kms.unwrap(kid, bytes(bad), b"ctx")
    with pytest.raises(KeyIntegrityError):
        kms.unwrap(kid, wrapped[:-4], b"ctx")


def test_attack_wrapped_key_moved_to_another_class_or_version(kms):
    kid, wrapped = kms.wrap("pii", DEK, b"ctx")
    kms.rotate("pii")
    for other in ("payment.v1", "pii.v2"):
        with pytest.raises((KeyIntegrityError, KeyNotFound)):
            kms.unwrap(other, wrapped, b"ctx")
    assert kms.unwrap(kid, wrapped, b"ctx") == DEK


def test_user_defined_class_is_created_on_first_wrap_but_not_on_read(kms):
    with pytest.raises(KeyNotFound):
        kms.current("biometric")
    kid, wrapped = kms.wrap("biometric", DEK, b"c")
    assert kid == "biometric.v1" and "biometric" in kms.classes()
    assert kms.unwrap(kid, wrapped, b"c") == DEK


def test_rotate_then_destroy_ends_the_old_version_in_the_kms(backend, kms):
    old_kid, old = kms.wrap("pii", DEK, b"ctx")
    assert kms.rotate("pii") == "pii.v2" and kms.current("pii") == "pii.v2"
    new_kid, new = kms.wrap("pii", DEK, b"ctx")
    assert new_kid == "pii.v2" and kms.unwrap(old_kid, old, b"ctx") == DEK
    with pytest.raises(ConflictError):
        kms.destroy("pii.v2")  # the current version
    kms.destroy("pii.v1")
    kms.destroy("pii.v1")  # idempotent
    assert kms.versions("pii") == ["pii.v2"] and kms.destroyed("pii") == ["pii.v1"]
    with pytest.raises(KeyDestroyed):
        kms.unwrap(old_kid, old, b"ctx")
    assert kms.unwrap(new_kid, new, b"ctx") == DEK
    # A fresh process (no cache) sees the same, and so does the server itself.
    fresh = backend.open()
    with pytest.raises(KeyDestroyed):
        fresh.unwrap(old_kid, old, b"ctx")
    fresh.close()
    if backend.name == "transit":
        data = backend.server.root().secrets.transit.read_key(f"{backend.config.key_prefix}.kek.pii")["data"]
        assert sorted(int(v) for v in data["keys"]) == [2]  # version 1's material is gone from the server
    else:
        import boto3

        client = boto3.client("kms", region_name="eu-west-1", endpoint_url=backend.config.endpoint_url)
        aliases = {a["AliasName"]: a.get("TargetKeyId") for a in client.list_aliases()["Aliases"]}
        meta = client.describe_key(KeyId=aliases[f"alias/{backend.config.key_prefix}/pii/v1"])["KeyMetadata"]
        assert meta["KeyState"] == "PendingDeletion" and meta["Enabled"] is False


def test_versions_are_destroyed_oldest_first(backend, kms):
    kms.rotate("pii")
    kms.rotate("pii")
    if backend.name == "transit":
        with pytest.raises(ConflictError, match="oldest first"):
            kms.destroy("pii.v2")
    kms.destroy("pii.v1")
    kms.destroy("pii.v2")
    assert kms.versions("pii") == ["pii.v3"] and kms.destroyed("pii") == ["pii.v1", "pii.v2"]


def test_mac_secrets_are_stable_distinct_and_deployment_bound(backend, kms):
    a = kms.mac(MAC_SUBJECT, b"alice")
    assert len(a) == 32 and kms.mac(MAC_SUBJECT, b"alice") == a
    assert kms.mac(MAC_LEDGER, b"alice") != a and kms.mac(MAC_SUBJECT, b"bob") != a
    fresh = backend.open()
    assert fresh.mac(MAC_SUBJECT, b"alice") == a  # not a per-process secret
    fresh.close()
    with pytest.raises(KeyNotFound):
        kms.mac("other", b"x")


def test_open_refuses_an_uninitialised_prefix(backend):
    with pytest.raises(KMSUnavailable, match="initialise"):
        backend.open()


def test_attack_kms_unreachable_fails_closed_then_recovers(backend, kms):
    kid, wrapped = kms.wrap("pii", DEK, b"ctx")
    with frozen(backend.server.proc.pid):  # the server stops answering: connections hang, then time out
        with pytest.raises(KMSUnavailable):
            kms.unwrap(kid, wrapped, b"ctx")
        with pytest.raises(KMSUnavailable):
            kms.wrap("pii", DEK, b"ctx2")
    assert kms.unwrap(kid, wrapped, b"ctx") == DEK  # the same object works again: nothing was lost


def test_attack_closed_port_is_unavailable_not_missing(backend):
    from .conftest import free_port

    cfg = backend.config
    dead = f"http://127.0.0.1:{free_port()}"
    if backend.name == "transit":
        bad = TransitConfig(url=dead, token_env=TOKEN_ENV, key_prefix=cfg.key_prefix, timeout_s=1.0)
    else:
        bad = AwsKmsConfig(region="eu-west-1", endpoint_url=dead, key_prefix=cfg.key_prefix, timeout_s=1.0)
    with pytest.raises(KMSUnavailable):
        backend.cls.open(bad)


def test_attack_revoked_transit_token_is_refused(bao, prefix, monkeypatch):
    token = bao.token_for(prefix)
    monkeypatch.setenv(TOKEN_ENV, token)
    kms = TransitKMS.create(TransitConfig(url=bao.url, token_env=TOKEN_ENV, key_prefix=prefix, refresh_s=0.0))
    kid, wrapped = kms.wrap("pii", DEK, b"ctx")
    bao.root().auth.token.revoke(token)
    with pytest.raises(KMSUnavailable, match="refused the token"):
        kms.unwrap(kid, wrapped, b"ctx")
    assert token not in repr(kms)
    kms.close()


def test_attack_transit_token_cannot_reach_other_prefixes(bao, prefix, monkeypatch):
    """The least-privilege token of one deployment cannot use another deployment's KEKs."""
    other = prefix + "x"
    monkeypatch.setenv(TOKEN_ENV, bao.token_for(other))
    victim = TransitKMS.create(TransitConfig(url=bao.url, token_env=TOKEN_ENV, key_prefix=other))
    kid, wrapped = victim.wrap("pii", DEK, b"ctx")
    monkeypatch.setenv(TOKEN_ENV, bao.token_for(prefix))
    TransitKMS.create(TransitConfig(url=bao.url, token_env=TOKEN_ENV, key_prefix=prefix)).close()
    thief = TransitKMS(TransitConfig(url=bao.url, token_env=TOKEN_ENV, key_prefix=other))
    with pytest.raises(KMSUnavailable):
        thief.unwrap(kid, wrapped, b"ctx")
    victim.close()
    thief.close()


def test_attack_exportable_kek_planted_under_our_name_is_refused(bao, prefix, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, bao.token_for(prefix))
    cfg = TransitConfig(url=bao.url, token_env=TOKEN_ENV, key_prefix=prefix)
    TransitKMS.create(cfg).close()
    bao.root().secrets.transit.create_key(f"{prefix}.kek.biometric", exportable=True, key_type="aes256-gcm96")
    with pytest.raises(KeyIntegrityError, match="exportable"):
        TransitKMS.open(cfg)


def test_attack_aws_disabled_key_is_dead_even_if_the_server_would_decrypt(moto, prefix, aws_env):
    """moto does not enforce key state; eventward checks it itself before asking."""
    import boto3

    cfg = AwsKmsConfig(region="eu-west-1", endpoint_url=moto.url, key_prefix=prefix, refresh_s=0.0)
    kms = AwsKMS.create(cfg)
    kid, wrapped = kms.wrap("pii", DEK, b"ctx")
    client = boto3.client("kms", region_name="eu-west-1", endpoint_url=moto.url)
    key_id = {a["AliasName"]: a["TargetKeyId"] for a in client.list_aliases()["Aliases"]}[f"alias/{prefix}/pii/v1"]
    client.disable_key(KeyId=key_id)  # an operator (or attacker) disables the KEK outside eventward
    with pytest.raises(KeyDestroyed):
        kms.unwrap(kid, wrapped, b"ctx")
    with pytest.raises(KMSUnavailable, match="not enabled"):
        kms.wrap("pii", DEK, b"ctx")
    kms.close()


@pytest.mark.parametrize(("backend_name", "doc", "message"), [
    ("transit", {"url": "http://127.0.0.1:1", "token": "s.secret-value"}, "never put the token"),
    ("transit", {"url": "http://127.0.0.1:1", "token_env": "s.secret-value"}, "name an environment variable"),
    ("transit", {"url": "ftp://x", "token_env": "T"}, "http"),
    ("transit", {"url": "http://x", "token_env": "T", "extra": 1}, "unknown key"),
    ("aws", {"region": "eu-west-1", "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG"}, "never put AWS credentials"),
    ("aws", {"region": "mars"}, "region"),
    ("aws", {"region": "eu-west-1", "deletion_window_days": 1}, "7 to 30"),
    ("aws", {}, "region is required"),
])
def test_bad_kms_configuration_is_refused_by_name_without_echoing_secrets(backend_name, doc, message):
    with pytest.raises(ConfigError, match=message) as e:
        connect_kms({"backend": backend_name, backend_name: doc}, create=False)
    assert "secret-value" not in str(e.value) and "wJalr" not in str(e.value)
    with pytest.raises(ConfigError, match=r"kms\.backend"):
        connect_kms({"backend": "vault9"}, create=False)


def test_transit_rotation_by_another_replica_is_seen_within_refresh(bao, prefix, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, bao.token_for(prefix))
    cfg = TransitConfig(url=bao.url, token_env=TOKEN_ENV, key_prefix=prefix, refresh_s=0.2)
    a, b = TransitKMS.create(cfg), TransitKMS.open(cfg)
    assert b.current("pii") == "pii.v1"
    a.rotate("pii")
    deadline = time.monotonic() + 5
    while b.current("pii") != "pii.v2" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert b.wrap("pii", DEK, b"c")[0] == "pii.v2"
    a.close()
    b.close()
