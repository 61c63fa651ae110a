"""The hardening checker finds each planted misconfiguration (one file per checklist item), and
nothing in the good configurations; files that are not configurations are clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventward._internal.harden import eventward_yaml, kafka, nats
from eventward.errors import ConfigError

from .corpus import KAFKA_BAD, KAFKA_BAD_EXTRA, KAFKA_KRAFT, KAFKA_ZK, NATS_BAD, NATS_CLUSTER_GOOD, NATS_GOOD, kafka_bad

# Items whose planted fault necessarily trips another: no client auth also leaves no authorization.
ALSO = {"NATS-002": {"NATS-003"}}


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("text", [KAFKA_KRAFT, KAFKA_ZK], ids=["kraft", "zookeeper"])
def test_good_kafka_configs_have_no_findings(tmp_path: Path, text: str) -> None:
    assert kafka.check_file(write(tmp_path, "server.properties", text)) == []


@pytest.mark.parametrize("rule", sorted(KAFKA_BAD))
def test_each_kafka_checklist_item_is_found(tmp_path: Path, rule: str) -> None:
    text, planted = kafka_bad(rule)
    findings = kafka.check_file(write(tmp_path, f"{rule}.properties", text))
    assert {f.id for f in findings} == {rule}
    (f,) = findings
    assert f.rule.checklist and f.rule.fix and f.rule.severity in ("low", "medium", "high", "critical")
    if planted is None:
        assert f.line is None and f.text == ""  # a missing setting: the fix says what to add
    else:
        assert f.text == planted and text.splitlines()[f.line - 1] == planted


def test_kafka_zookeeper_without_acls_is_found(tmp_path: Path) -> None:
    text, planted = kafka_bad("KAFKA-011", KAFKA_BAD_EXTRA)
    (f,) = kafka.check_file(write(tmp_path, "zk.properties", text))
    assert (f.id, f.text) == ("KAFKA-011", planted)


def test_kafka_properties_syntax(tmp_path: Path) -> None:
    """Continuations, ':' and space separators and '!' comments are read as Kafka reads them."""
    text = KAFKA_KRAFT.replace("allow.everyone.if.no.acl.found=false", "allow.everyone.if.no.acl.found : tr\\\n  ue")
    text = text.replace(
        "auto.create.topics.enable=false", "! auto.create.topics.enable=false\nauto.create.topics.enable true"
    )
    ids = [f.id for f in kafka.check_file(write(tmp_path, "s.properties", text))]
    assert sorted(ids) == ["KAFKA-005", "KAFKA-006"]


@pytest.mark.parametrize("text", [NATS_GOOD, NATS_CLUSTER_GOOD], ids=["single", "cluster"])
def test_good_nats_configs_have_no_findings(tmp_path: Path, text: str) -> None:
    assert nats.check_file(write(tmp_path, "nats.conf", text)) == []


@pytest.mark.parametrize("rule", sorted(NATS_BAD))
def test_each_nats_checklist_item_is_found(tmp_path: Path, rule: str) -> None:
    text, planted = NATS_BAD[rule]
    findings = nats.check_file(write(tmp_path, f"{rule}.conf", text))
    assert {f.id for f in findings} == {rule} | ALSO.get(rule, set())
    f = next(f for f in findings if f.id == rule)
    if planted is not None:
        assert f.text == planted.strip() and text.splitlines()[f.line - 1].strip() == planted.strip()


def test_nats_include_is_followed(tmp_path: Path) -> None:
    write(tmp_path, "auth.conf", 'authorization { users = [ {user: a, password: "plain"} ] }\n')
    conf = write(tmp_path, "nats.conf", 'listen: 127.0.0.1:4222\ninclude "auth.conf"\n')
    ids = {f.id for f in nats.check_file(conf)}
    assert {"NATS-001", "NATS-003", "NATS-004"} <= ids and "NATS-002" not in ids


def test_nats_monitoring_port_without_host_listens_everywhere(tmp_path: Path) -> None:
    ids = {f.id for f in nats.check_file(write(tmp_path, "n.conf", NATS_GOOD + "http_port: 8222\n"))}
    assert ids == {"NATS-006"}
    assert nats.check_file(write(tmp_path, "n.conf", NATS_GOOD + "http_port: 8222\nhttp_host: 127.0.0.1\n")) == []


def test_varz_findings() -> None:
    bad = {"server_id": "X", "tls_required": False, "auth_required": False, "http_host": "0.0.0.0", "http_port": 8222,
           "max_payload": 64 * 1024 * 1024, "cluster": {"port": 6222}}
    assert sorted(f.id for f in nats.check_varz(bad, "http://x/varz")) == [
        "NATS-001", "NATS-002", "NATS-005", "NATS-006", "NATS-007"]
    good = {"server_id": "X", "tls_required": True, "tls_verify": True, "auth_required": True,
            "http_host": "127.0.0.1", "http_port": 8222, "max_payload": 1048576, "cluster": {}}
    assert nats.check_varz(good, "http://x/varz") == []


@pytest.mark.parametrize(
    "content",
    [
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        b"\xff\xfe not utf-8 \xc3\x28",
        b"hello world, this is a letter\nnot a config at all\n",
        b"",
        b'{"json": [1, 2, 3]}',
    ],
    ids=["binary", "latin1", "prose", "empty", "json"],
)
def test_a_file_that_is_not_a_config_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "thing"
    p.write_bytes(content)
    for check, kind in ((kafka.check_file, "Kafka"), (nats.check_file, "NATS")):
        with pytest.raises(ConfigError) as e:
            check(p)
        assert kind in e.value.message and str(p) in e.value.message


def test_nats_syntax_errors_are_clear(tmp_path: Path) -> None:
    for text in ("tls {\n  cert_file: a\n", 'listen: "127.0.0.1\n', "listen: [1, 2\n", "listen:\n"):
        with pytest.raises(ConfigError, match="not a NATS server configuration"):
            nats.check_file(write(tmp_path, "n.conf", text))


def test_missing_and_directory_paths_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        kafka.check_file(tmp_path / "nope.properties")
    with pytest.raises(ConfigError, match="is a directory"):
        nats.check_file(tmp_path)


def test_eventward_yaml_defaults_pass_and_plain_transports_are_found(tmp_path: Path) -> None:
    from eventward._internal.config import Config

    assert eventward_yaml.check_file(write(tmp_path, "eventward.yaml", Config().dump())) == []
    kafka_plain = "transport: kafka\nkafka:\n  bootstrap_servers: k:9092\n  security_protocol: PLAINTEXT\n"
    findings = eventward_yaml.check_file(write(tmp_path, "eventward.yaml", kafka_plain))
    assert {(f.id, f.line) for f in findings} == {("EW-001", 4), ("EW-002", 4)}
    nats_plain = "transport: nats\nnats:\n  servers: [nats://10.0.0.1:4222]\nmax_event_bytes: 100000000\n"
    ids = {f.id for f in eventward_yaml.check_file(write(tmp_path, "eventward.yaml", nats_plain))}
    assert ids == {"EW-001", "EW-002", "EW-004"}
    good_nats = ("transport: nats\nnats:\n  servers: [tls://127.0.0.1:4222]\n  ca: ca.crt\n  cert: c.crt\n"
                 "  key: c.key\n")
    assert eventward_yaml.check_file(write(tmp_path, "eventward.yaml", good_nats)) == []
    off = ("transport: kafka\nkafka:\n  security_protocol: SSL\n  ssl_cert: c\n  ssl_key: k\n"
           "  extra: {enable.ssl.certificate.verification: 'false'}\nconsumer: {freshness_s: 9999999}\n")
    ids = {f.id for f in eventward_yaml.check_file(write(tmp_path, "eventward.yaml", off))}
    assert ids == {"EW-003", "EW-005"}
    with pytest.raises(ConfigError):
        eventward_yaml.check_file(write(tmp_path, "eventward.yaml", "- just\n- a list\n"))
