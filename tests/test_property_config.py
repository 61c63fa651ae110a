"""Property tests for ``eventward.yaml`` (the deployment configuration every SDK, CLI and gateway
process reads first): any document is a Config or a ConfigError naming the key, never a
TypeError later at a use site. Values are checked against the field annotations (``str | None``
took anything before; ``null`` made a limit None and a comparison crash), and NaN/Infinity are
refused (``rate_events_per_s: .nan`` compared false with every bound and disabled the quota).
"""

from __future__ import annotations

import math
import os
from dataclasses import FrozenInstanceError, asdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventward._internal.casigner import CAKeyConfig, PkiConfig, ca_key_config
from eventward._internal.config import Config
from eventward._internal.gateway.config import GatewayConfig
from eventward._internal.keys.kms import KmsConfig
from eventward._internal.keys.kms.transit import TransitConfig
from eventward.errors import ConfigError, EventwardError

EXAMPLES = int(os.environ.get("EW_PROPERTY_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

VALID: dict[str, Any] = {**asdict(Config()), "gateway": asdict(GatewayConfig())}
KEYS = sorted(
    {k for section in VALID.values() if isinstance(section, dict) for k in section}
    | set(VALID)
    | set(asdict(GatewayConfig().limits))
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.sampled_from(["embedded", "nats", "kafka", "redact", "token", "mtls", "jwt", "RS256", ""])
    | st.text(max_size=10)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=10,
)


def loads_typed(text: str) -> Config | None:
    """Config.parse and the gateway section's own checks: a config or a ConfigError only."""
    try:
        cfg = Config.parse(text)  # the gateway and kms sections are parsed and checked here, once
    except ConfigError:
        return None
    except EventwardError as e:
        raise AssertionError(f"config raised {type(e).__name__}, expected ConfigError") from e
    assert isinstance(cfg.gateway, GatewayConfig) and isinstance(cfg.kms, KmsConfig)
    assert isinstance(cfg.pki, PkiConfig) and isinstance(cfg.pki.ca_key, CAKeyConfig)
    typed = {**asdict(cfg), "kms": None}  # kafka.extra too: its values are typed scalars now
    for number in _numbers(typed):
        assert math.isfinite(number)
    return cfg


def _numbers(doc: Any) -> list[float]:
    if isinstance(doc, dict):
        return [n for v in doc.values() for n in _numbers(v)]
    if isinstance(doc, list):
        return [n for v in doc for n in _numbers(v)]
    return [doc] if isinstance(doc, float) else []


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """The full default configuration with a few values (at any section) replaced or removed."""
    doc: dict[str, Any] = yaml.safe_load(yaml.safe_dump(VALID))
    for _ in range(draw(st.integers(1, 3))):
        node = doc
        while True:
            key = draw(st.sampled_from(sorted(node)))
            if isinstance(node[key], dict) and node[key] and draw(st.booleans()):
                node = node[key]
                continue
            break
        if draw(st.booleans()):
            node[key] = draw(values)
        else:
            del node[key]
    return doc


@SETTINGS
@given(st.text(st.characters(exclude_categories=()), max_size=200))
def test_property_config_random_text(text: str) -> None:
    cfg = loads_typed(text)
    assert cfg is None or Config.parse(cfg.dump()) == cfg  # whatever is accepted round-trips as itself


@SETTINGS
@given(values)
def test_property_config_random_documents(doc: Any) -> None:
    cfg = loads_typed(yaml.safe_dump(doc))
    assert cfg is None or Config.parse(cfg.dump()) == cfg  # whatever is accepted round-trips as itself


@SETTINGS
@given(mutated())
def test_property_config_mutations_of_a_valid_config(doc: dict[str, Any]) -> None:
    cfg = loads_typed(yaml.safe_dump(doc))
    assert cfg is None or Config.parse(cfg.dump()) == cfg  # whatever is accepted round-trips as itself


def test_property_config_defaults_round_trip() -> None:
    assert loads_typed(yaml.safe_dump(VALID)) is not None
    assert Config.parse(Config().dump()) == Config()


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("consumer: {freshness_s: .nan}", "consumer.freshness_s"),
        ("nats: {timeout_s: .inf}", "nats.timeout_s"),
        ("nats: {servers: [4222]}", "nats.servers"),
        ("nats: {ca: 5}", "nats.ca"),
        ("kafka: {extra: {1: x}}", "kafka.extra"),
        ("kafka: {extra: {linger.ms: {a: 1}}}", "kafka.extra.linger.ms"),
        ("kafka: {extra: {linger.ms: [5]}}", "kafka.extra.linger.ms"),
        ("kafka: {extra: {linger.ms: .inf}}", "kafka.extra.linger.ms"),
        ("{1: a, b: 2}", "unknown key"),
        ("gateway: {limits: {rate_events_per_s: .nan}}", "gateway.limits.rate_events_per_s"),
        ("gateway: {port: [1]}", "gateway.port"),
        ("gateway: {jwt: {algorithms: [1]}}", "gateway.jwt.algorithms"),
        ("gateway: {tls: {cert: {a: 1}}}", "gateway.tls.cert"),
        ("pki: [ca_key]", "pki must be a mapping"),
        ("pki: {ca_key: {backend: 7}}", "pki.ca_key.backend"),
        ("pki: {ca_key: {key: [a]}}", "pki.ca_key.key"),
        ("pki: {ca_key: {backend: file, transit: {url: 'http://v'}}}", "pki.ca_key: unknown key(s) transit"),
        ("pki: {ca_key: {backend: aws, aws: {region: eu-west-1, timeout_s: .nan}}}", "pki.ca_key.aws"),
        ("[" * 3000, "not valid YAML"),
    ],
)
def test_attack_config_bad_values_are_named(text: str, where: str) -> None:
    with pytest.raises(ConfigError) as ei:
        Config.parse(text)
    assert where in str(ei.value)


def test_attack_config_null_means_default() -> None:
    """``port:`` left empty used to make the port None (a TypeError in the range check)."""
    cfg = Config.parse("max_event_bytes:\ngateway: {port: null, limits: {max_body_bytes: null}}\nkms:\n")
    assert cfg.max_event_bytes == Config().max_event_bytes and cfg.kms == Config().kms
    gw = cfg.gateway
    assert gw.port == GatewayConfig().port and gw.limits.max_body_bytes == GatewayConfig().limits.max_body_bytes


def test_attack_config_unreadable_file_is_typed(tmp_path: Path) -> None:
    bad = tmp_path / "eventward.yaml"
    bad.write_bytes(b"transport: \xff\xfe embedded\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        Config.load(bad)
    folder = tmp_path / "dir.yaml"
    folder.mkdir()
    with pytest.raises(ConfigError, match="cannot read"):
        Config.load(folder)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("kms: {backend: transit, transit: {url: 'http://127.0.0.1:8200', token_env: T, tokn_file: x}}",
         "tokn_file"),
        ("kms: {backend: transit}", "kms.transit: url is required"),
        ("kms: {backend: aws, aws: {region: eu-west-1}, transitt: {}}", "transitt"),
        ("kms: {backend: local, transit: {url: 'http://127.0.0.1:8200', token: hunter2-secret}}", "kms.transit"),
        ("kms: [transit]", "kms must be a mapping"),
    ],
)
def test_attack_kms_section_refused_by_name_at_load(text: str, where: str) -> None:
    """kms was a dict[str, Any] checked only when a KMS was opened: a typo (or a secret) in a
    section of another backend, or one opened later, passed every other command silently."""
    with pytest.raises(ConfigError) as ei:
        Config.parse(text)
    assert where in str(ei.value) and "hunter2" not in str(ei.value)


def test_kms_and_gateway_sections_are_typed_and_frozen() -> None:
    cfg = Config.parse(
        "kms: {backend: transit, transit: {url: 'http://127.0.0.1:8200', token_env: BAO_TOKEN}}\n"
        "gateway: {port: 9443, limits: {max_batch_events: 100}}\n")
    assert isinstance(cfg.kms.transit, TransitConfig) and cfg.kms.transit.token_env == "BAO_TOKEN"
    assert cfg.kms.backend == "transit" and cfg.kms["transit"]["url"] == "http://127.0.0.1:8200"  # as written
    assert cfg.gateway.port == 9443 and cfg.gateway.limits.max_batch_events == 100
    with pytest.raises(FrozenInstanceError):
        cfg.gateway.limits.max_batch_events = 10_000  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        cfg.kms.backend = "local"  # type: ignore[misc]
    assert Config.parse(cfg.dump()) == cfg  # the dump round-trips, typed sections included


PKI_VALID = [
    "pki: {ca_key: {backend: file, key: ew-ca}}\n",
    "pki: {ca_key: {backend: transit, key: ca, transit: {url: 'http://127.0.0.1:8200', token_env: T}}}\n",
    "pki: {ca_key: {backend: pkcs11, pkcs11: {module: /m.so, token_label: t, pin_file: /run/pin}}}\n",
    "kms: {backend: aws, aws: {region: eu-west-1}}\npki: {ca_key: {backend: aws}}\n",
]


@SETTINGS
@given(st.sampled_from(PKI_VALID), st.sampled_from(["backend", "key", "transit", "pkcs11", "aws", "ca_key"]), values)
def test_property_pki_section_typed_or_refused_by_name(base: str, key: str, value: Any) -> None:
    """pki was a dict[str, Any] whose ca_key was re-parsed at every use: any replacement of one of its
    values is now a frozen PkiConfig that round-trips, or a ConfigError naming pki."""
    doc = yaml.safe_load(base)
    target = doc["pki"] if key == "ca_key" else doc["pki"]["ca_key"]
    target[key] = value
    try:
        cfg = Config.parse(yaml.safe_dump(doc))
    except ConfigError as e:
        assert "pki" in str(e)
        return
    assert isinstance(cfg.pki, PkiConfig) and isinstance(cfg.pki.ca_key, CAKeyConfig)
    assert Config.parse(cfg.dump()) == cfg


@pytest.mark.parametrize("text", PKI_VALID)
def test_pki_section_is_typed_frozen_and_round_trips(text: str) -> None:
    cfg = Config.parse(text)
    key = cfg.pki.ca_key
    assert key.backend in ("file", "transit", "pkcs11", "aws")
    section = ca_key_config(cfg.pki, cfg.kms).section
    assert (section is None) == (key.backend == "file")
    if key.backend == "transit":
        assert isinstance(section, TransitConfig) and section.token_env == "T"
    with pytest.raises(FrozenInstanceError):
        cfg.pki.ca_key = CAKeyConfig()  # type: ignore[misc]
    assert Config.parse(cfg.dump()) == cfg
