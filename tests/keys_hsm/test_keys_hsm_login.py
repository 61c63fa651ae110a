"""Reaching the token: PIN sources, wrong PINs, missing modules and tokens. The PIN never leaks."""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest

from eventward._internal.home import write_secret
from eventward._internal.keys.kms.pkcs11 import Pkcs11Config, Pkcs11KMS
from eventward.errors import ConfigError, KeyFilePermissionError, KMSUnavailable

from .conftest import LOCKED_TOKEN, PIN, TOKEN

WRONG_PIN = "ew-wrong-pin-5e2d"


def _leaks(err: BaseException, secret: str) -> bool:
    text = "".join(traceback.format_exception(err)) + repr(err) + repr(getattr(err, "details", ""))
    return secret in text


def test_wrong_pin_is_kms_unavailable_without_the_pin(softhsm, monkeypatch):
    monkeypatch.setenv("EW_WRONG_PIN", WRONG_PIN)
    with pytest.raises(KMSUnavailable, match="incorrect PIN") as e:
        Pkcs11KMS.open(softhsm.config(LOCKED_TOKEN, pin_env="EW_WRONG_PIN"))
    assert not _leaks(e.value, WRONG_PIN) and not _leaks(e.value, PIN)
    assert e.value.__cause__ is None and e.value.__suppress_context__


def test_a_different_pin_while_logged_in_is_refused(softhsm, cfg, kms, monkeypatch):
    """PKCS#11 login is per process: a second KMS with another PIN must not ride on the first login."""
    monkeypatch.setenv("EW_WRONG_PIN", WRONG_PIN)
    with pytest.raises(KMSUnavailable, match="PIN differs") as e:
        Pkcs11KMS.open(softhsm.config(TOKEN, pin_env="EW_WRONG_PIN"))
    assert not _leaks(e.value, WRONG_PIN)
    assert kms.classes() == ["health", "payment", "pii"]  # the refused attempt logged nobody out


def test_closing_one_kms_keeps_the_other_logged_in(cfg, kms, closing):
    second = closing(Pkcs11KMS.open(cfg))
    kid, wrapped = kms.wrap("pii", b"k" * 32, b"ctx")
    second.close()
    assert kms.unwrap(kid, wrapped, b"ctx") == b"k" * 32


def test_pin_from_a_0600_file_works_and_a_readable_file_is_refused(softhsm, cfg, tmp_path):
    pin_file = tmp_path / "hsm.pin"
    write_secret(pin_file, (PIN + "\n").encode())
    kms = Pkcs11KMS.create(softhsm.config(pin_env=None, pin_file=pin_file))
    try:
        assert kms.current("pii") == "pii.v1"
    finally:
        kms.close()
    pin_file.chmod(0o644)
    with pytest.raises(KeyFilePermissionError, match=r"hsm\.pin") as e:
        Pkcs11KMS.open(softhsm.config(pin_env=None, pin_file=pin_file))
    assert not _leaks(e.value, PIN)


def test_missing_pin_sources_module_and_token_are_typed(softhsm, tmp_path, monkeypatch):
    monkeypatch.delenv("EW_UNSET_PIN", raising=False)
    with pytest.raises(KMSUnavailable, match="pin_env"):
        Pkcs11KMS.open(softhsm.config(pin_env="EW_UNSET_PIN"))
    with pytest.raises(ConfigError, match="does not exist"):
        Pkcs11KMS.open(softhsm.config(pin_env=None, pin_file=tmp_path / "absent.pin"))
    with pytest.raises(KMSUnavailable, match="no PKCS#11 token labelled 'no-such-token'"):
        Pkcs11KMS.open(softhsm.config("no-such-token"))
    with pytest.raises(KMSUnavailable, match="cannot load PKCS#11 module"):
        Pkcs11KMS.open(Pkcs11Config(module=str(tmp_path / "nope.so"), token_label=TOKEN, pin_env="X"))
    not_a_module = tmp_path / "fake.so"
    not_a_module.write_bytes(b"\x7fELF garbage")
    with pytest.raises(KMSUnavailable, match="cannot load"):
        Pkcs11KMS.open(Pkcs11Config(module=str(not_a_module), token_label=TOKEN, pin_env="X"))


@pytest.mark.parametrize(("doc", "message"), [
    ({"module": "/m.so", "token_label": "t", "pin": PIN}, "never put the PIN"),
    ({"module": "/m.so", "token_label": "t", "user_pin": PIN}, "never put the PIN"),
    ({"module": "/m.so", "token_label": "t", "pin_env": "A", "pin_file": "/p"}, "exactly one PIN source"),
    ({"module": "/m.so", "token_label": "t"}, "exactly one PIN source"),
    ({"module": "/m.so", "token_label": "t", "pin_env": PIN}, "not hold the PIN"),
    ({"module": "/m.so", "token_label": "t", "pin_env": "A", "refresh_s": "1"}, "refresh_s"),
    ({"module": "/m.so", "token_label": "t", "pin_env": "A", "mac_cache": -1}, "mac_cache"),
    ({"module": "relative.so", "token_label": "t", "pin_env": "A"}, "absolute path"),
    ({"module": "/m.so", "token_label": "", "pin_env": "A"}, "token_label"),
    ({"module": "/m.so", "token_label": "t", "pin_env": "A", "slot": 3}, "unknown key.*slot"),
    ({"token_label": "t", "pin_env": "A"}, "required"),
    (["not", "a", "mapping"], "mapping"),
])
def test_config_refuses_literal_pins_and_typos(doc, message):
    with pytest.raises(ConfigError, match=message) as e:
        Pkcs11Config.from_mapping(doc)
    assert not _leaks(e.value, PIN)


def test_config_from_mapping_and_reprs_carry_no_pin(softhsm, cfg, kms):
    doc = {"module": softhsm.module, "token_label": TOKEN, "pin_file": "/run/hsm.pin"}
    c = Pkcs11Config.from_mapping(doc)
    assert c.pin_file == Path("/run/hsm.pin")
    for obj in (cfg, kms, c):
        assert PIN not in repr(obj) and PIN not in str(obj)
