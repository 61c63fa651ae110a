"""``eventward scan``, ``schema suggest-tags`` and ``redact run`` through the real entry point:
findings as paths, kinds, counts and schema versions (never a value), a tag proposal that
waits for a second principal, and a pipeline run as its own principal."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from eventward._internal.cli import app, common
from eventward._internal.deployment import Deployment

from .conftest import ORDER, order, publish_schema
from .test_guard_pipeline import ANALYTICS, PIPELINE

PLANTED = ["ops@example.org", "AKIAIOSFODNN7EXAMPL9", "DE89 3704 0044 0532 0130 00"]


def _ew(home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["eventward", "--home", str(home), *args])
    try:
        common.run(app)
        rc = 0
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 0
    out, err = capsys.readouterr()
    return rc, out, err


def _events() -> list[dict[str, Any]]:
    return [
        order(1, notes=f"forward to {PLANTED[0]}"),
        order(2, notes=f"aws {PLANTED[1]}", attrs={"refund_iban": PLANTED[2]}),
        order(3),
    ]


def test_scan_file_and_topic_report_paths_kinds_counts_never_values(
    dep: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_schema(dep, "OrderPlaced", copy.deepcopy(ORDER))
    with dep.producer("orders-svc", "orders") as producer:
        for e in _events():
            producer.send("OrderPlaced", e)
    sample = tmp_path / "sample.jsonl"
    sample.write_text("".join(json.dumps(e) + "\n" for e in _events()) + "not json\n")
    home = dep.home.root

    rc, out, _ = _ew(home, capsys, monkeypatch, "scan", "--file", str(sample), "--type", "OrderPlaced",
                     "--as", "alice", "--json")
    doc = json.loads(out)
    assert rc == 1 and doc["events"] == 3 and doc["skipped"] == 1
    found = {(r["path"], r["kind"]): r["events"] for r in doc["findings"]}
    assert found == {("notes", "email"): 1, ("notes", "aws_access_key"): 1, ("attrs.refund_iban", "iban"): 1}

    rc, out, _ = _ew(home, capsys, monkeypatch, "scan", "orders", "--as", "redactor", "--json")
    doc = json.loads(out)
    assert rc == 1 and doc["events"] == 3
    assert {(r["path"], r["kind"], tuple(r["schema_versions"])) for r in doc["findings"]} >= {
        ("notes", "email", (1,)), ("attrs.refund_iban", "iban", (1,))}
    rc, table, _ = _ew(home, capsys, monkeypatch, "scan", "orders", "--as", "redactor")
    assert rc == 1 and "attrs.refund_iban" in table and "3 events scanned" in table
    for value in PLANTED:
        assert value not in out and value not in table
    assert "user1@example.com" not in out  # the tagged email is a token, and never reported

    rc, _, err = _ew(home, capsys, monkeypatch, "scan", "orders", "--as", "analytics-svc")
    assert rc == 3 and "forbidden" in err  # Subscribe on the topic is required


def test_suggest_tags_proposes_a_change_that_needs_approval(
    dep: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_schema(dep, "OrderPlaced", copy.deepcopy(ORDER))
    sample = tmp_path / "sample.jsonl"
    sample.write_text("".join(json.dumps(e) + "\n" for e in _events()))
    home = dep.home.root
    rc, out, _ = _ew(home, capsys, monkeypatch, "schema", "suggest-tags", "OrderPlaced", str(sample),
                     "--as", "alice", "--dry-run", "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["proposed"] is None
    assert [(a["path"], a["class"]) for a in doc["added"]] == [("notes", "secret")]
    assert [u["path"] for u in doc["unplaceable"]] == ["attrs.refund_iban"]  # a map value: no tag path
    assert doc["document"]["properties"]["notes"]["x-eventward"] == {"class": "secret"}

    rc, out, _ = _ew(home, capsys, monkeypatch, "schema", "suggest-tags", "OrderPlaced", str(sample),
                     "--as", "alice", "--json")
    assert rc == 0 and json.loads(out)["proposed"] == 2
    assert dep.registry.active("OrderPlaced").version == 1  # waits for a second principal
    dep.registry.approve("bob", "OrderPlaced", 2)
    assert "notes" in {r.path for r in dep.registry.active("OrderPlaced").spec.rules}


def test_redact_run_as_the_pipelines_principal(
    dep: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_schema(dep, "OrderPlaced", copy.deepcopy(ORDER))
    publish_schema(dep, "OrderPlacedAnalytics", copy.deepcopy(ANALYTICS))
    with dep.producer("orders-svc", "orders") as producer:
        for i in range(5):
            producer.send("OrderPlaced", order(i, customer={"id": f"c{i}", "email": f"u{i}@example.com",
                                                             "phone": "(415) 555-0134"}))
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(PIPELINE)
    rc, out, err = _ew(dep.home.root, capsys, monkeypatch, "redact", "run", str(pipeline), "--idle-timeout", "0.3",
                       "--json")
    assert rc == 0, err
    assert json.loads(out) == {"pipeline": "orders-analytics", "emitted": 5, "refused": 0}
    assert dep.transport.end_offset("orders.analytics") == 5
