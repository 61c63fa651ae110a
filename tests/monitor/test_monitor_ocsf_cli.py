"""OCSF export validated against the OCSF 1.5.0 classes it claims (JSON Schemas generated from the
definitions in the ``ocsf-json-schema`` package), and the monitoring commands end to end:
``monitor`` (offline rules, ``--record``), ``alerts``, ``siem`` to a file and to a NATS subject,
``lag``; a principal without read_audit gets nothing."""

from __future__ import annotations

import asyncio
import json
import uuid
from functools import cache
from pathlib import Path

import jsonschema
import nats
import pytest
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema
from typer.testing import CliRunner

from eventward._internal.audit.records import AuditRecord, format_time
from eventward._internal.cli import app, common
from eventward._internal.log import natsserver
from eventward._internal.monitor.ocsf import OCSF_VERSION, Sink, api_activity, detection_finding
from eventward._internal.monitor.rules import Alert
from eventward.errors import AccessDenied, ConfigError, EventwardError

from .world import free_port_block, make_home


@cache
def _validator(class_name: str) -> jsonschema.Draft202012Validator:
    schema = OcsfJsonSchemaEmbedded(get_ocsf_schema(version=OCSF_VERSION)).get_class_schema(
        class_name=class_name, profiles=[]
    )
    return jsonschema.Draft202012Validator(schema)


def validate(doc: dict) -> None:
    name = {6003: "api_activity", 2004: "detection_finding"}[doc["class_uid"]]
    errors = sorted(_validator(name).iter_errors(doc), key=str)
    assert not errors, [e.message for e in errors[:3]]


def _rec(action: str, outcome: str = "ok", reason: str = "", resource: str = "Topic::orders", **meta) -> AuditRecord:
    return AuditRecord(7, format_time(1_800_000_000.5), "orders-svc", action, resource, outcome, reason, meta)


@pytest.mark.parametrize("rec", [
    _rec("Publish", count=3, batch="b-1"),
    _rec("Subscribe", "error", "bad_signature", code="bad_seal"),
    _rec("authorize", "denied", "no_permit", requested="Publish"),
    _rec("key.forget", resource="subject:0123456789abcdef0123", subject_hash="0123456789abcdef0123"),
    _rec("witness.cosign", resource="Audit::log"),  # an action without a CRUD verb: Other (99)
])
def test_audit_records_are_valid_api_activity(rec: AuditRecord) -> None:
    doc = api_activity(rec)
    validate(doc)
    assert doc["time"] == 1_800_000_000_500 and doc["metadata"]["version"] == "1.5.0"
    assert doc["type_uid"] == 600300 + doc["activity_id"]


def test_alerts_are_valid_detection_findings() -> None:
    for sev in ("low", "medium", "high", "critical"):
        doc = detection_finding(Alert("denial_burst", sev, 1_800_000_000.0, "Topic::orders", "burst", 12,
                                      {"count": 20, "threshold": 20}), 40)
        validate(doc)
        assert doc["finding_info"]["uid"] == "alert-40" and doc["is_alert"] is True


def test_an_invalid_document_is_caught_by_the_validator() -> None:
    doc = api_activity(_rec("Publish"))
    del doc["src_endpoint"]
    with pytest.raises(AssertionError):
        validate(doc)


def test_sink_targets_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Sink("nats://127.0.0.1:4222")
    with pytest.raises(ConfigError):
        Sink(str(tmp_path / "missing-dir" / "x.jsonl"))


class _Ran:
    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = code, stdout, stderr


def _ew(home: Path, *args: str) -> _Ran:
    """The CLI in this process (CliRunner): the same commands, without a Python start per call."""
    r = CliRunner().invoke(app, ["--home", str(home), *args], catch_exceptions=True)
    if isinstance(r.exception, EventwardError):  # what common.run maps to an exit code
        return _Ran(common.exit_code(r.exception), r.stdout, str(r.exception))
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return _Ran(r.exit_code, r.stdout, r.stderr)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mon-cli")
    dep = make_home(root)
    with dep.producer("orders-svc", "orders") as p:
        for i in range(5):
            p.send("Order", {"order_id": f"ord-{i}", "amount": i})
    with dep.producer("rogue-svc", "orders") as p:
        p.send("Order", {"order_id": "ord-x", "amount": 1})
    for _ in range(25):  # a denial burst (default threshold 20)
        with pytest.raises(AccessDenied), dep.producer("mallory", "orders") as p:
            p.send("Order", {"order_id": "ord-m", "amount": 1})
    c = dep.consumer("shipping", "orders", group="ship-team", from_beginning=True)
    assert len(c.poll(max_events=2)) == 2
    dep.forget("customer-42@example.org", principal="admin", reason="gdpr-art17")
    dep.close()
    return root / "home"


def test_monitor_offline_records_once_and_alerts_lists(home: Path) -> None:
    r = _ew(home, "monitor", "--json")
    assert r.returncode == 1, r.stderr  # alerts found
    rules = sorted(a["rule"] for a in json.loads(r.stdout)["alerts"])
    assert rules.count("new_producer") == 1 and rules.count("denial_burst") == 1
    assert json.loads(r.stdout)["recorded"] == 0
    r = _ew(home, "alerts", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["alerts"] == []
    r = _ew(home, "monitor", "--record", "--json")
    assert json.loads(r.stdout)["recorded"] == len(rules)
    r = _ew(home, "monitor", "--record", "--json")  # a second run records nothing new
    assert json.loads(r.stdout)["recorded"] == 0
    listed = json.loads(_ew(home, "alerts", "--json").stdout)["alerts"]
    assert sorted(a["rule"] for a in listed) == rules
    assert all(a["index"] is not None and a["severity"] in ("medium", "high") for a in listed)


def test_siem_export_file_validates_and_carries_no_subject(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit.ocsf.jsonl"
    r = _ew(home, "siem", "--to", str(out))
    assert r.returncode == 0, r.stderr
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(docs) > 30 and {d["class_uid"] for d in docs} >= {6003}
    for d in docs:
        validate(d)
    text = out.read_text()
    assert "customer-42" not in text and "example.org" not in text
    ops = {d["api"]["operation"] for d in docs if d["class_uid"] == 6003}
    assert {"Publish", "key.forget"} <= ops


def test_attack_reader_without_read_audit_gets_nothing(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.jsonl"
    for args in (["monitor"], ["alerts"], ["lag"], ["siem", "--to", str(out)]):
        r = _ew(home, *args, "--as", "mallory")
        assert r.returncode == 3, (args, r.stdout, r.stderr)
        assert "Publish" not in r.stdout
    assert not out.exists() or out.read_text() == ""


def test_lag_cli_embedded(home: Path) -> None:
    r = _ew(home, "lag", "--json")
    assert r.returncode == 0, r.stderr
    [g] = [g for g in json.loads(r.stdout)["groups"] if g["group"] == "ship-team"]
    assert (g["stream"], g["committed"], g["end"], g["lag"], g["behind"]) == ("orders", 2, 6, 4, False)
    r = _ew(home, "lag", "--threshold", "3", "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["groups"][0]["behind"] is True


def test_siem_export_to_nats_subject(home: Path, tmp_path: Path) -> None:
    assert _ew(home, "monitor", "--record").returncode == 1  # alerts exist (recorded once, idempotent)
    node = natsserver.start_all(tmp_path / "nats", size=1, port=free_port_block(1))[0]
    try:
        subject = f"security.ocsf.{uuid.uuid4().hex[:8]}"
        url = node.url(tls=False)
        got: list[bytes] = []

        async def run() -> _Ran:
            nc = await nats.connect(url)
            sub = await nc.subscribe(subject)
            proc = await asyncio.to_thread(_ew, home, "siem", "--alerts-only", "--to", f"{url}/{subject}")
            while True:
                try:
                    msg = await sub.next_msg(timeout=2)
                except nats.errors.TimeoutError:
                    break
                got.append(msg.data)
            await nc.close()
            return proc

        proc = asyncio.run(run())
        assert proc.returncode == 0, proc.stderr
        docs = [json.loads(b) for b in got]
        assert docs and all(d["class_uid"] == 2004 for d in docs)
        for d in docs:
            validate(d)
    finally:
        natsserver.stop(node)
